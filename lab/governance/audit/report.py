"""What verification reports: the kinds of damage, the first problem found, and the anchors.

:class:`Tamper` names the kinds of damage :meth:`AuditLog.verify
<lab.governance.audit.AuditLog.verify>` tells apart, :class:`Problem` the first one found and
:class:`VerifyReport` the outcome with everything the log was compared against.
:class:`ExternalHead` is a head kept outside the lab home (an anchor file, an MLflow run, a
peer's log) and :class:`PeerHead` a peer's head as recorded in this log.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from lab.governance.audit.entries import Head


class Tamper(StrEnum):
    """Kinds of damage :meth:`AuditLog.verify` tells apart."""

    EDITED = "edited"
    """An entry's content changed (its hash no longer matches, or it was recomputed)."""
    DELETED = "deleted"
    """Entries are missing from the middle (a gap in seq), or the whole log and head are gone."""
    INSERTED = "inserted"
    """An entry that was never appended by the lab (forged, duplicated, or after the head)."""
    REORDERED = "reordered"
    """Genuine entries appear out of order."""
    TRUNCATED = "truncated"
    """Entries are missing from the end (the head anchors a later entry), or a line was cut."""
    HEAD_MISMATCH = "head_mismatch"
    """The head anchor is missing, malformed, or does not match the log's last entry."""
    MALFORMED = "malformed"
    """A line is not a well-formed entry."""
    FORGED = "forged"
    """An entry's signature is missing, made with another key, or does not verify."""
    UNVERIFIED = "unverified"
    """Signatures cannot be checked: no public key is available for a log that needs one."""


@dataclass(frozen=True)
class ExternalHead:
    """A (seq, hash) of this log kept somewhere its editor cannot rewrite.

    Attributes
    ----------
    seq, hash : int, str
        The entry the log must still contain.
    source : str
        Where it was kept (``--expect-head``, an anchor file, an MLflow run, a peer's log).
    key : str or None
        Fingerprint of the signing key the anchor names, if it names one.
    """

    seq: int
    hash: str
    source: str
    key: str | None = None


@dataclass(frozen=True)
class PeerHead:
    """A peer party's head as recorded in this log (a ``peer_head`` entry).

    Attributes
    ----------
    party : str
        The peer.
    seq, hash : int, str
        Its log's head at that moment.
    key : str or None
        Fingerprint of the peer's signing key, if it sent one.
    when : str
        ``start`` or ``end`` of the job.
    job_id : str
        The job.
    ts : str
        When it was recorded here.
    recorded_at : int
        The seq of the ``peer_head`` entry in this log.
    """

    party: str
    seq: int
    hash: str
    key: str | None
    when: str
    job_id: str
    ts: str
    recorded_at: int


@dataclass(frozen=True)
class Problem:
    """The first damage found.

    Attributes
    ----------
    kind : Tamper
        What happened.
    line : int or None
        1-based line of the log at fault (``None`` for the head file).
    seq : int or None
        The seq of the entry at fault, or of the first missing one.
    detail : str
        One sentence for the auditor.
    where : str or None
        What disagreed when it is not a line of the log (the witness, an anchor, the key
        folder); ``None`` with ``line`` ``None`` means the head file.
    """

    kind: Tamper
    line: int | None
    seq: int | None
    detail: str
    where: str | None = None


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of :meth:`AuditLog.verify`.

    Attributes
    ----------
    path : Path
        The log file checked.
    entries : int
        Lines in the log.
    head : Head or None
        The head anchor found (``None`` if missing or unreadable).
    problem : Problem or None
        The first bad entry and the kind of tampering; ``None`` if the log is intact.
    compared : tuple of str
        Everything the log was checked against (chain, head, signatures and key, witness,
        external anchors), in the order checked.
    """

    path: Path
    entries: int
    head: Head | None
    problem: Problem | None
    compared: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the log and its head are intact."""
        return self.problem is None

    def summary(self) -> str:
        """One line for people."""
        if self.problem is None:
            anchor = f"head {self.head}" if self.head else "empty"
            return f"ok: {self.entries} entries, chain and head intact ({anchor})"
        p = self.problem
        if p.line is not None:
            where = f"line {p.line}"
        else:
            where = p.where or str(self.path.with_suffix(".head"))
        seq = f" (seq {p.seq})" if p.seq is not None else ""
        return f"TAMPERED: {p.kind.value} at {where}{seq}: {p.detail}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "path": str(self.path),
            "ok": self.ok,
            "entries": self.entries,
            "head": None if self.head is None else {"seq": self.head.seq, "hash": self.head.hash},
            "problem": None
            if self.problem is None
            else {
                "kind": self.problem.kind.value,
                "line": self.problem.line,
                "seq": self.problem.seq,
                "detail": self.problem.detail,
                "where": self.problem.where,
            },
            "compared": list(self.compared),
        }
