"""Encode protocol envelopes into Flower records and back, without pickle.

One Flower ``Message`` per node per hop carries every envelope for that node: envelope ``i``
becomes a ``ConfigRecord`` ``e<i>`` (routing fields and scalar payload entries) and, if it has
arrays, an ``ArrayRecord`` ``e<i>.a`` (Flower serialises arrays with ``numpy.save`` and
``allow_pickle=False``). Integers must fit in 64 bits: big integers (ciphertexts) travel as
``bytes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from models.protocol import Envelope, PayloadValue, ProtocolError

_ROUTING = ("protocol", "stage", "sender", "recipient")
_COUNT = "lab.count"
_INT64 = (-(2**63), 2**63 - 1)


def encode(envelopes: Sequence[Envelope]) -> RecordDict:
    """Pack envelopes into a ``RecordDict``."""
    records: dict[str, Any] = {_COUNT: ConfigRecord({"n": len(envelopes)})}
    for i, env in enumerate(envelopes):
        config: dict[str, Any] = {f"_{k}": getattr(env, k) for k in _ROUTING}
        arrays: dict[str, Array] = {}
        for key, value in env.payload.items():
            if isinstance(value, np.ndarray):
                if value.dtype.hasobject:
                    raise ProtocolError(f"payload '{key}' is an object array; use a typed array")
                arrays[key] = Array(np.ascontiguousarray(value))
            else:
                _check_scalar(key, value)
                config[f"p.{key}"] = value
        records[f"e{i}"] = ConfigRecord(config)
        if arrays:
            records[f"e{i}.a"] = ArrayRecord(arrays)
    return RecordDict(records)


def decode(content: RecordDict) -> list[Envelope]:
    """Unpack the envelopes of a ``RecordDict`` made by :func:`encode`."""
    try:
        count = int(content.config_records[_COUNT]["n"])  # type: ignore[arg-type]
    except KeyError as exc:
        raise ProtocolError("message carries no lab envelopes") from exc
    envelopes = []
    for i in range(count):
        config = content.config_records[f"e{i}"]
        payload: dict[str, PayloadValue] = {
            k[2:]: v for k, v in config.items() if k.startswith("p.")
        }
        array_record = content.array_records.get(f"e{i}.a")
        if array_record is not None:
            for key, array in array_record.items():
                payload[key] = array.numpy()
        routing = {k: str(config[f"_{k}"]) for k in _ROUTING}
        envelopes.append(Envelope(payload=payload, **routing))
    return envelopes


def _check_scalar(key: str, value: object) -> None:
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        raise ProtocolError(f"payload '{key}' is an empty list; send an empty array instead")
    for item in items:
        if isinstance(item, bool):
            continue
        if isinstance(item, int) and not _INT64[0] <= item <= _INT64[1]:
            raise ProtocolError(f"payload '{key}' holds an integer beyond 64 bits; send bytes")
        if not isinstance(item, int | float | str | bytes):
            raise ProtocolError(f"payload '{key}' has unsupported type {type(item).__name__}")
