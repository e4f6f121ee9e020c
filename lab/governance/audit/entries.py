"""Audit entries: the event types, the fields of a line, its hash, and the head anchor.

Entry ``n`` of the log is one line of JSON::

    {"seq": n, "ts": "...Z", "type": "...", "actor": "...", "payload": {...},
     "prev": "<hash of entry n-1>", "hash": "<sha256 of this entry without 'hash'>"}

where the hash is taken over the canonical JSON of the other six fields (sorted keys, no
spaces, UTF-8) and ``prev`` of entry 1 is 64 zeros (:data:`GENESIS`). Signed entries carry two
more fields: ``key``, the fingerprint of the writer's Ed25519 public key (hashed like the
others), and ``sig``, the signature of the entry's hash (not hashed). The head anchor
(:class:`Head`) holds the seq and hash of the last entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from lab.governance._common import canonical_json, sha256_hex
from lab.governance.errors import AuditPayloadError

EventType = Literal[
    "feature_set_published",
    "authorizations_imported",
    "authorization_revoked",
    "budget_set",
    "budget_checked",
    "budget_refused",
    "budget_spent",
    "budget_released",
    "job_started",
    "job_finished",
    "job_failed",
    "job_resumed",
    "alignment",
    "model_registered",
    "model_promoted",
    "scoring_call",
    "scoring_token_issued",
    "audit_recovered",
    "policy_set",
    "job_served",
    "job_refused",
    "job_closed",
    "reservation_settled",
    "psi_probe_suspected",
    "peer_head",
    "scoring_calls_aggregated",
    "model_part_bound",
    "validation_rows",
    "validation_released",
    "group_attribution_released",
    "screening_window",
    "monitoring_window",
    "monitoring_served",
    "monitoring_run",
    "monitoring_alert",
    "console_page_view",
    "node_initialized",
]
#: Every event type the lab writes.
EVENT_TYPES: tuple[str, ...] = get_args(EventType)

#: ``prev`` of the first entry.
GENESIS = "0" * 64

#: The fields of an entry, in display order.
ENTRY_FIELDS = ("seq", "ts", "type", "actor", "payload", "prev", "hash")

#: The fields of a signed entry: ``key`` is hashed with the others, ``sig`` signs the hash.
SIGNED_FIELDS = (*ENTRY_FIELDS, "key", "sig")

#: ``format`` of an anchor file written by ``lab audit anchor``.
ANCHOR_FORMAT = "lab-audit-anchor/1"

#: Moments at which a party records its peer's head (:meth:`AuditLog.record_peer_head`).
PEER_HEAD_MOMENTS = ("start", "end")


@dataclass(frozen=True)
class AuditEntry:
    """One line of the log (see the module docstring for the fields).

    ``key`` and ``sig`` are ``None`` for entries written before the log had a signing key.
    """

    seq: int
    ts: str
    type: str
    actor: str
    payload: dict[str, Any]
    prev: str
    hash: str
    key: str | None = None
    sig: str | None = None

    @property
    def signed(self) -> bool:
        """Whether the entry carries a signature."""
        return self.sig is not None

    def to_dict(self) -> dict[str, Any]:
        """Return the entry as a JSON-ready dict (``key``/``sig`` only when signed)."""
        out: dict[str, Any] = {
            "seq": self.seq,
            "ts": self.ts,
            "type": self.type,
            "actor": self.actor,
            "payload": self.payload,
            "prev": self.prev,
            "hash": self.hash,
        }
        if self.key is not None:
            out["key"] = self.key
        if self.sig is not None:
            out["sig"] = self.sig
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditEntry:
        """Build an entry from a parsed line.

        Raises
        ------
        ValueError
            If a field is missing, extra or of the wrong type.
        """
        keys = set(data)
        if keys != set(ENTRY_FIELDS) and keys != set(SIGNED_FIELDS):
            missing = sorted(set(ENTRY_FIELDS) - keys)
            extra = sorted(keys - set(SIGNED_FIELDS))
            if not missing and not extra:
                raise ValueError("a signed entry needs both 'key' and 'sig'")
            raise ValueError(f"fields missing {missing} / unexpected {extra}")
        seq = data["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise ValueError(f"seq must be an integer, got {seq!r}")
        names = ("ts", "type", "actor", "prev", "hash") + (("key", "sig") if "sig" in data else ())
        for name in names:
            if not isinstance(data[name], str):
                raise ValueError(f"{name} must be a string, got {data[name]!r}")
        if not isinstance(data["payload"], dict):
            raise ValueError("payload must be an object")
        return cls(
            seq=seq,
            ts=data["ts"],
            type=data["type"],
            actor=data["actor"],
            payload=data["payload"],
            prev=data["prev"],
            hash=data["hash"],
            key=data.get("key"),
            sig=data.get("sig"),
        )


def entry_hash(entry: Mapping[str, Any]) -> str:
    """Return the hash an entry must carry: SHA-256 of its canonical JSON without ``hash``/``sig``.

    ``key`` (the signer's fingerprint) is hashed like any other field; ``sig`` signs the hash.
    """
    return sha256_hex(canonical_json({k: v for k, v in entry.items() if k not in ("hash", "sig")}))


@dataclass(frozen=True)
class Head:
    """The anchor: seq and hash of the last entry written."""

    seq: int
    hash: str

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"

    @classmethod
    def parse(cls, text: str) -> Head:
        """Parse ``SEQ:HASH`` (as printed by ``lab audit head``).

        Raises
        ------
        AuditPayloadError
            If the text is not ``SEQ:HASH`` with a positive seq and a 64-digit hex hash.
        """
        seq, _, digest = text.strip().partition(":")
        if not seq.isdigit() or int(seq) < 1 or len(digest) != 64 or not is_hex(digest):
            raise AuditPayloadError(
                f"head anchor {text!r} is not SEQ:HASH (a positive integer, ':', 64 hex "
                "digits); copy it from `lab audit head`"
            )
        return cls(int(seq), digest.lower())


def is_hex(text: str) -> bool:
    """Whether ``text`` holds only hexadecimal digits."""
    return all(c in "0123456789abcdefABCDEF" for c in text)
