"""Payload checks: what an entry may carry.

Payloads carry sizes, digests and parameters, never enterprise ids: :func:`check_payload`
refuses keys that name ids (:data:`FORBIDDEN_KEYS`), long lists and large payloads, so a
careless caller cannot copy an id list into a log that auditors read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from lab.governance._common import canonical_json
from lab.governance.errors import AuditPayloadError

#: Payload keys (at any depth) refused because they would carry enterprise ids or rows.
FORBIDDEN_KEYS = frozenset(
    {"id", "ids", "enterprise_id", "enterprise_ids", "aligned_ids", "row", "rows", "records"}
)

#: Largest payload accepted, bytes of canonical JSON. An entry records sizes and parameters;
#: anything larger is almost certainly data that belongs in the party's own domain.
MAX_PAYLOAD_BYTES = 64 * 1024

#: Longest list accepted anywhere in a payload (privacy events, column names, ...).
MAX_LIST_LENGTH = 1000


def check_payload(payload: dict[str, Any], type: str) -> dict[str, Any]:
    """Return a deep copy of ``payload`` after checking it can go into a ``type`` entry.

    Raises
    ------
    AuditPayloadError
        A non-JSON value, an id-like key, a list or payload too large.
    """
    _check_value(payload, f"{type} payload")
    try:
        blob = canonical_json(payload)
    except (TypeError, ValueError) as exc:  # pragma: no cover - _check_value is stricter
        raise AuditPayloadError(f"{type} payload is not JSON: {exc}") from exc
    if len(blob.encode("utf-8")) > MAX_PAYLOAD_BYTES:
        raise AuditPayloadError(
            f"{type} payload is {len(blob)} bytes (> {MAX_PAYLOAD_BYTES}); log sizes, digests "
            "and parameters, not data"
        )
    loaded: dict[str, Any] = json.loads(blob)  # a deep copy the caller cannot mutate later
    return loaded


def _check_value(value: Any, where: str) -> None:
    if value is None or isinstance(value, bool | int | str):
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise AuditPayloadError(f"{where} is {value}; log finite numbers or null")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise AuditPayloadError(f"{where} has a non-string key {key!r}")
            if key.lower() in FORBIDDEN_KEYS:
                raise AuditPayloadError(
                    f"{where} has key {key!r}, which would carry enterprise ids or rows; the "
                    "audit log records sizes only (e.g. n_aligned)"
                )
            _check_value(item, f"{where}.{key}")
        return
    if isinstance(value, list | tuple):
        if len(value) > MAX_LIST_LENGTH:
            raise AuditPayloadError(
                f"{where} is a list of {len(value)} items (> {MAX_LIST_LENGTH}); log its size"
            )
        for index, item in enumerate(value):
            _check_value(item, f"{where}[{index}]")
        return
    raise AuditPayloadError(
        f"{where} is a {type(value).__name__}, not a JSON value; convert it (e.g. int(), "
        "float(), str()) before logging"
    )
