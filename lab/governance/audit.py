"""Append-only, hash-chained audit log: what every party did to shared data, and when.

The log is JSON Lines at ``$LAB_HOME/audit/log.jsonl``. Entry ``n`` is one line::

    {"seq": n, "ts": "...Z", "type": "...", "actor": "...", "payload": {...},
     "prev": "<hash of entry n-1>", "hash": "<sha256 of this entry without 'hash'>"}

where the hash is taken over the canonical JSON of the other six fields (sorted keys, no
spaces, UTF-8) and ``prev`` of entry 1 is 64 zeros. A *head anchor* ``log.head`` holds the seq
and hash of the last entry and is replaced in the same critical section as every append.

Signed entries (since the key was created) carry two more fields: ``key``, the fingerprint of
the writer's Ed25519 public key (hashed like the others), and ``sig``, the signature of the
entry's hash (not hashed). The key pair and a witness of the last entry live outside the
audited folder (:mod:`lab.governance.signing`).

What this proves, and what it does not
--------------------------------------
The chain makes any edit, deletion, insertion or reordering of entries visible, and the head
anchor makes deleting entries from the end visible too. Someone who can write both files can
rewrite the log consistently from some point on; the signatures defeat that unless they also
hold the private key, and the witness in the key folder reveals a truncation (with the head
rewritten to match) or the deletion of both files. Against whoever holds the key folder too,
only anchors kept elsewhere help: :meth:`AuditLog.anchor` (``lab audit anchor``), the head the
lab writes into every job's MLflow run, and the heads the peer party records in its own log
(:meth:`AuditLog.record_peer_head`); :meth:`AuditLog.verify` checks the log against each one it
is given and names them all.

Payloads carry sizes, digests and parameters, never enterprise ids: :meth:`AuditLog.record`
refuses keys that name ids (:data:`FORBIDDEN_KEYS`), long lists and large payloads, so a
careless caller cannot copy an id list into a log that auditors read.

Concurrency and durability
--------------------------
Appends from any number of processes are serialised by ``flock`` on ``log.lock``. Inside the
lock an append checks that the log's last line matches the head (else it refuses to write:
:class:`~lab.governance.errors.AuditIntegrityError`), writes the whole line with one
``write`` on an ``O_APPEND`` descriptor, ``fsync``-s it, then replaces the head atomically
(temporary file, ``fsync``, ``rename``, directory ``fsync``). A crash mid-line or between the
two leaves a torn line or one unanchored entry, which :meth:`AuditLog.verify` reports and
appends refuse to build on: the log fails closed. :meth:`AuditLog.recover` (``lab audit
recover``) drops a torn line and adopts unanchored entries only when a person names the last
one, and records that it did so. POSIX hosts only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, get_args

from lab.governance._common import (
    atomic_replace,
    canonical_json,
    default_actor,
    file_lock,
    fsync_dir,
    iso,
    sha256_hex,
    utc_now,
)
from lab.governance.errors import (
    AuditAnchorError,
    AuditIntegrityError,
    AuditKeyError,
    AuditPayloadError,
)
from lab.governance.signing import (
    FINGERPRINT_HEX,
    KEYS_ENV,
    AuditKeys,
    PublicKey,
    Witness,
)
from lab.governance.vocabulary import check_name
from lab.home import lab_home

logger = logging.getLogger(__name__)

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
    "psi_probe_suspected",
    "peer_head",
    "scoring_calls_aggregated",
    "model_part_bound",
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

#: Payload keys (at any depth) refused because they would carry enterprise ids or rows.
FORBIDDEN_KEYS = frozenset(
    {"id", "ids", "enterprise_id", "enterprise_ids", "aligned_ids", "row", "rows", "records"}
)

#: Largest payload accepted, bytes of canonical JSON. An entry records sizes and parameters;
#: anything larger is almost certainly data that belongs in the party's own domain.
MAX_PAYLOAD_BYTES = 64 * 1024

#: Longest list accepted anywhere in a payload (privacy events, column names, ...).
MAX_LIST_LENGTH = 1000


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
        if not seq.isdigit() or int(seq) < 1 or len(digest) != 64 or not _is_hex(digest):
            raise AuditPayloadError(
                f"head anchor {text!r} is not SEQ:HASH (a positive integer, ':', 64 hex "
                "digits); copy it from `lab audit head`"
            )
        return cls(int(seq), digest.lower())


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


class AuditLog:
    """The audit log of one lab home (or of an explicit path).

    Parameters
    ----------
    path : Path, optional
        The JSON Lines file; default ``$LAB_HOME/audit/log.jsonl``. The head anchor and the lock
        live beside it (``.head``, ``.lock``). Nothing is created until the first append.
    keys_root : Path, optional
        Folder of the audit key folders; default ``$LAB_KEYS`` (see
        :mod:`lab.governance.signing`). The first append creates this log's key pair there.

    Raises
    ------
    AuditKeyError
        If the key folder would lie inside the audited folder.
    """

    def __init__(self, path: Path | None = None, *, keys_root: Path | None = None) -> None:
        self.path = (path if path is not None else lab_home() / "audit" / "log.jsonl").resolve()
        self.head_path = self.path.with_suffix(".head")
        self.lock_path = self.path.with_suffix(".lock")
        self.keys = AuditKeys(self.path, keys_root)

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    # -- writing ------------------------------------------------------------------------------

    def record(self, type: str, payload: Mapping[str, Any], actor: str | None = None) -> AuditEntry:
        """Append one signed entry and return it (durable when this returns).

        Parameters
        ----------
        type : str
            One of :data:`EVENT_TYPES`.
        payload : Mapping
            JSON values only (finite numbers); sizes, digests and parameters, never ids.
        actor : str, optional
            Who acted; default ``$LAB_ACTOR`` or the OS user.

        Raises
        ------
        AuditPayloadError
            Unknown type, a non-JSON value, an id-like key, a list or payload too large.
        AuditIntegrityError
            If the log's last entry does not match the head anchor, or the log is behind the
            witness in its key folder (run :meth:`verify`).
        AuditKeyError
            If the log is signed but its key folder is missing or unreadable.
        """
        if type not in EVENT_TYPES:
            raise AuditPayloadError(
                f"unknown audit event type {type!r}; use one of {', '.join(EVENT_TYPES)}"
            )
        body = _check_payload(dict(payload), type)
        who = (actor or default_actor()).strip()
        if not who:
            raise AuditPayloadError("actor is empty; pass who acts or set LAB_ACTOR")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(self.lock_path):
            head, last = self._anchored_tail()
            seq = 1 if head is None else head.seq + 1
            public, witness = self._signing_state(head, last, seq)
            fields: dict[str, Any] = {
                "seq": seq,
                "ts": iso(utc_now()),
                "type": type,
                "actor": who,
                "payload": body,
                "prev": GENESIS if head is None else head.hash,
                "key": public.fingerprint,
            }
            fields["hash"] = entry_hash(fields)
            fields["sig"] = self.keys.sign(fields["hash"])
            entry = AuditEntry.from_dict(fields)
            self._append_line((canonical_json(fields) + "\n").encode("utf-8"), new=head is None)
            atomic_replace(
                self.head_path,
                (canonical_json({"seq": entry.seq, "hash": entry.hash}) + "\n").encode(),
            )
            self.keys.write_witness(
                Witness(entry.seq, entry.hash, witness.signed_from, public.fingerprint, witness.log)
            )
        logger.debug("audit %s seq=%d", type, entry.seq)
        return entry

    def _signing_state(
        self, head: Head | None, last: AuditEntry | None, seq: int
    ) -> tuple[PublicKey, Witness]:
        """The key to sign with and the witness, creating both for a log that has none."""
        fix = (
            "run `lab audit verify`; restore the log (or the key folder) from backup, or point "
            f"{KEYS_ENV} at this log's key folder"
        )
        public = self.keys.public()
        if public is None:
            if last is not None and last.signed:
                raise AuditKeyError(
                    f"{self.path} is signed (key {last.key}) but its key folder "
                    f"{self.keys.folder} has no key; refusing to append; {fix}"
                )
            public = self.keys.create(signed_from=seq)
        witness = self.keys.witness()
        if witness is None:
            raise AuditKeyError(f"the witness {self.keys.witness_path} is missing; {fix}")
        n = 0 if head is None else head.seq
        rewritten = (
            head is not None
            and witness.seq == n
            and witness.seq >= witness.signed_from
            and witness.hash != head.hash
        )
        if witness.seq > n or rewritten:
            raise AuditIntegrityError(
                f"{self.path} ends at seq {n} but the witness {self.keys.witness_path} records "
                f"seq {witness.seq}: the log was truncated, rewritten or deleted; refusing to "
                f"append; {fix}"
            )
        if last is not None and last.signed and last.key != public.fingerprint:
            raise AuditKeyError(
                f"{self.path}: the last entry is signed by key {last.key}, not by this log's key "
                f"{public.fingerprint}; refusing to append; {fix}"
            )
        return public, witness

    def _append_line(self, line: bytes, *, new: bool) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(line)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            fsync_dir(self.path.parent)

    def _anchored_tail(self) -> tuple[Head | None, AuditEntry | None]:
        """Return the head and last entry after checking that they match (under the lock)."""
        head = _read_head(self.head_path)
        raw = _read_last_line(self.path)
        fix = (
            "run `lab audit verify`; after a crash `lab audit recover` repairs an interrupted "
            f"append, anything else needs {self.path.name} restored from backup"
        )
        if head is None and raw is None:
            if self.head_path.exists():
                raise AuditIntegrityError(f"{self.head_path} is unreadable; {fix}")
            return None, None
        if head is None:
            raise AuditIntegrityError(
                f"{self.path} has entries but its head anchor is missing or unreadable; {fix}"
            )
        if raw is None:
            raise AuditIntegrityError(
                f"{self.path} is empty or missing but the head anchors seq {head.seq}; {fix}"
            )
        try:
            entry = AuditEntry.from_dict(json.loads(raw))
        except (ValueError, UnicodeDecodeError) as exc:
            raise AuditIntegrityError(f"{self.path}: the last line is not an entry; {fix}") from exc
        if (
            entry.seq != head.seq
            or entry.hash != head.hash
            or entry_hash(entry.to_dict()) != entry.hash
        ):
            raise AuditIntegrityError(
                f"{self.path}: the last entry (seq {entry.seq}) does not match the head anchor "
                f"(seq {head.seq}); refusing to append; {fix}"
            )
        if entry.signed:
            public = self.keys.public()
            if public is not None and not (
                entry.key == public.fingerprint and public.verify(entry.sig or "", entry.hash)
            ):
                raise AuditIntegrityError(
                    f"{self.path}: the last entry (seq {entry.seq}) is not signed by this log's "
                    f"key {public.fingerprint}; refusing to append; {fix}"
                )
        return head, entry

    def recover(self, adopt: Head | None = None, *, actor: str | None = None) -> list[str]:
        """Repair the log after a crash interrupted an append; refuse anything else.

        Two states are repairable, and both only when every earlier entry is intact:

        - a torn last line (the writer died mid-line): the partial bytes were never
          acknowledged and are dropped;
        - complete entries after the head anchor (the writer died before replacing the head):
          they are adopted only if ``adopt`` names the last of them (``SEQ:HASH``), so that a
          person has looked at them (``lab audit log``) and vouches for them; their signatures
          must verify.

        The repair itself is then recorded as an ``audit_recovered`` entry.

        Returns
        -------
        list of str
            What was done (empty if the log needed nothing).

        Raises
        ------
        AuditIntegrityError
            If the damage is anything else (see :meth:`verify`), or ``adopt`` does not name the
            last entry.
        """
        done: list[str] = []
        with file_lock(self.lock_path):
            data, head_text = self._read_both()
            head = _parse_head(head_text)
            if isinstance(head, str):
                raise AuditIntegrityError(f"{self.head_path}: {head}; restore it from backup")
            if data and not data.endswith(b"\n"):
                keep = data[: data.rfind(b"\n") + 1]
                lines = keep.split(b"\n")[:-1]
                if _find_problem(lines, False, head, None) is not None and not _ahead_of(
                    lines, head
                ):
                    raise AuditIntegrityError(
                        f"{self.path}: the last line is torn but earlier entries are damaged "
                        "too; run `lab audit verify` and restore from backup"
                    )
                with self.path.open("r+b") as fh:
                    fh.truncate(len(keep))
                    fh.flush()
                    os.fsync(fh.fileno())
                done.append(f"dropped a torn last line of {len(data) - len(keep)} bytes")
                data = keep
            lines = data.split(b"\n")[:-1] if data else []
            if _find_problem(lines, False, head, None) is not None:
                last = _ahead_of(lines, head)
                if last is None:
                    raise AuditIntegrityError(
                        f"{self.path} is not merely behind its head anchor: run `lab audit "
                        "verify` and restore from backup"
                    )
                if adopt != last:
                    raise AuditIntegrityError(
                        f"{self.path} has entries after its head anchor up to seq {last.seq}; "
                        f"inspect them (`lab audit log`) and adopt them with `lab audit recover "
                        f"--adopt {last}`"
                    )
                bad = _check_signatures(_entries_of(lines), self.keys.public(), None)
                if bad is not None:
                    raise AuditIntegrityError(
                        f"{self.path}: cannot adopt entries after the head: {bad.detail} "
                        f"(line {bad.line}); restore from backup"
                    )
                atomic_replace(self.head_path, (canonical_json(vars(last)) + "\n").encode())
                done.append(f"adopted entries up to seq {last.seq} after the head anchor")
        if done:
            self.record("audit_recovered", {"actions": done}, actor)
            logger.warning("audit log recovered: %s", "; ".join(done))
        return done

    # -- anchors and peers --------------------------------------------------------------------

    def anchor(self) -> dict[str, Any] | None:
        """An anchor of the current head to keep outside the lab home (``lab audit anchor``).

        Returns
        -------
        dict or None
            ``{"format", "log", "seq", "hash", "key", "public_key", "ts"}`` (JSON-ready; the
            public key lets a verifier without the key folder check signatures), or ``None``
            for an empty log.
        """
        head = self.head()
        if head is None:
            return None
        public = self.keys.public()
        return {
            "format": ANCHOR_FORMAT,
            "log": str(self.path),
            "seq": head.seq,
            "hash": head.hash,
            "key": None if public is None else public.fingerprint,
            "public_key": None if public is None else public.b64,
            "ts": iso(utc_now()),
        }

    def key_fingerprint(self) -> str | None:
        """Fingerprint of this log's signing key (``None`` before the first signed append)."""
        public = self.keys.public()
        return None if public is None else public.fingerprint

    def record_peer_head(
        self,
        party: str,
        head: Head | ExternalHead | str,
        when: str,
        *,
        job_id: str,
        key: str | None = None,
        actor: str | None = None,
    ) -> AuditEntry:
        """Record the peer party's audit head in this log (at a job's start or end).

        The job protocol calls it on each side with the head the other side sent, so each
        party's log holds anchors of the other's: an editor of one home cannot rewrite its log
        without disagreeing with the peer's (``lab audit verify --peer-log``).

        Parameters
        ----------
        party : str
            The peer's name.
        head : Head, ExternalHead or str
            The peer's head (``SEQ:HASH`` as :meth:`head` prints it).
        when : {"start", "end"}
            Which moment of the job.
        job_id : str
            The job.
        key : str, optional
            Fingerprint of the peer's signing key (:meth:`key_fingerprint` on its side);
            taken from ``head`` when it is an :class:`ExternalHead` that names one.
        actor : str, optional
            Who records; default ``$LAB_ACTOR`` or the OS user.

        Raises
        ------
        AuditPayloadError
            If ``when`` or the head is malformed.
        """
        parsed = Head.parse(head) if isinstance(head, str) else head
        if when not in PEER_HEAD_MOMENTS:
            raise AuditPayloadError(
                f"peer head moment {when!r} must be one of {', '.join(PEER_HEAD_MOMENTS)}"
            )
        fp = key if key is not None else getattr(parsed, "key", None)
        if fp is not None and (len(fp) != FINGERPRINT_HEX or not _is_hex(fp)):
            raise AuditPayloadError(
                f"peer key {fp!r} is not a key fingerprint ({FINGERPRINT_HEX} hex digits)"
            )
        check_name(party, "party name")
        payload = {
            "party": party,
            "seq": parsed.seq,
            "hash": parsed.hash,
            "key": fp,
            "when": when,
            "job_id": job_id,
        }
        return self.record("peer_head", payload, actor)

    def peer_heads(self, party: str | None = None, key: str | None = None) -> list[PeerHead]:
        """The peers' heads recorded in this log, optionally of one party or one key."""
        found: list[PeerHead] = []
        for entry in self.entries("peer_head"):
            p = entry.payload
            try:
                head = PeerHead(
                    party=str(p["party"]),
                    seq=int(p["seq"]),
                    hash=str(p["hash"]),
                    key=None if p.get("key") is None else str(p["key"]),
                    when=str(p["when"]),
                    job_id=str(p["job_id"]),
                    ts=entry.ts,
                    recorded_at=entry.seq,
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise AuditAnchorError(
                    f"{self.path}: peer_head entry seq {entry.seq} is malformed ({exc})"
                ) from exc
            if (party is None or head.party == party) and (key is None or head.key == key):
                found.append(head)
        return found

    # -- reading ------------------------------------------------------------------------------

    def head(self) -> Head | None:
        """Return the current head anchor (``None`` for an empty log)."""
        return _read_head(self.head_path)

    def entries(self, type: str | None = None) -> Iterator[AuditEntry]:
        """Yield the entries in file order, optionally only those of one type.

        This reads; it does not verify (use :meth:`verify`).

        Raises
        ------
        AuditIntegrityError
            If a line is not a well-formed entry.
        """
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                try:
                    entry = AuditEntry.from_dict(json.loads(raw))
                except (ValueError, UnicodeDecodeError) as exc:
                    raise AuditIntegrityError(
                        f"{self.path}: line {number} is not an audit entry ({exc}); run "
                        "`lab audit verify`"
                    ) from exc
                if type is None or entry.type == type:
                    yield entry

    def _snapshot(self) -> tuple[bytes, str | None]:
        """Read log and head together, under the lock when we may take it (auditors may not)."""
        try:
            lock: contextlib.AbstractContextManager[None] = (
                file_lock(self.lock_path) if self.path.parent.exists() else contextlib.nullcontext()
            )
            with lock:
                return self._read_both()
        except PermissionError:
            return self._read_both()

    def _read_both(self) -> tuple[bytes, str | None]:
        data = self.path.read_bytes() if self.path.exists() else b""
        head_text = self.head_path.read_text("utf-8") if self.head_path.exists() else None
        return data, head_text

    def verify(
        self,
        expected_head: Head | None = None,
        *,
        anchors: Sequence[ExternalHead] = (),
        public_key: PublicKey | None = None,
    ) -> VerifyReport:
        """Check the log against everything that vouches for it; name the first bad entry.

        In order: the hash chain, the head file, every entry's Ed25519 signature (with the
        key from this log's key folder, else ``public_key``), the witness in the key folder,
        then each external anchor. The report lists what was compared.

        Parameters
        ----------
        expected_head : Head, optional
            An anchor kept outside the lab home (``--expect-head``): the log must still
            contain that entry.
        anchors : sequence of ExternalHead
            More such anchors (anchor files, MLflow runs, a peer's log).
        public_key : PublicKey, optional
            The key to check signatures with when the key folder is absent (from an anchor
            file); if both exist they must agree.

        Returns
        -------
        VerifyReport
        """
        data, head_text = self._snapshot()
        lines = data.split(b"\n")
        torn = lines[-1] != b""
        if not torn:
            lines.pop()
        head_or_bad = _parse_head(head_text)
        head = head_or_bad if isinstance(head_or_bad, Head) else None
        compared = [f"hash chain of {len(lines)} entries in {self.path}"]
        compared.append(
            f"head file {self.head_path}" + (f" (seq {head.seq})" if head else " (absent)")
        )
        external = list(anchors)
        if expected_head is not None:
            external.insert(0, ExternalHead(expected_head.seq, expected_head.hash, "--expect-head"))

        def report(problem: Problem | None) -> VerifyReport:
            return VerifyReport(self.path, len(lines), head, problem, tuple(compared))

        problem = _find_problem(lines, torn, head_or_bad, None)
        if problem is not None:
            return report(problem)
        entries = _entries_of(lines)
        try:
            public, witness = self._trusted_key(public_key)
        except AuditKeyError as exc:
            return report(
                Problem(Tamper.UNVERIFIED, None, None, str(exc), where=str(self.keys.folder))
            )
        signed = [e for e in entries if e.signed]
        if public is not None:
            span = f"seq {signed[0].seq}..{signed[-1].seq}" if signed else "no signed entries"
            compared.append(
                f"Ed25519 signatures ({span}) with key {public.fingerprint} from {public.source}"
            )
        problem = _check_signatures(entries, public, witness)
        if problem is not None:
            return report(problem)
        if witness is not None:
            compared.append(f"witness {self.keys.witness_path} (seq {witness.seq})")
            problem = _check_witness(witness, entries, self.keys.witness_path)
            if problem is not None:
                return report(problem)
        for anchor in external:
            compared.append(f"anchor {anchor.source} (seq {anchor.seq})")
            problem = _check_anchor(anchor, entries, public)
            if problem is not None:
                return report(problem)
        return report(None)

    def _trusted_key(self, given: PublicKey | None) -> tuple[PublicKey | None, Witness | None]:
        """The key to verify with (key folder, else ``given``) and the witness, if any.

        Raises
        ------
        AuditKeyError
            If the key folder's key and ``given`` disagree, or a key file is unreadable.
        """
        try:
            public = self.keys.public()
            witness = self.keys.witness()
        except PermissionError as exc:  # pragma: no cover - depends on the auditor's account
            raise AuditKeyError(f"cannot read the key folder {self.keys.folder}: {exc}") from exc
        if public is not None and given is not None and public.raw != given.raw:
            raise AuditKeyError(
                f"the key folder's public key {public.fingerprint} ({public.source}) is not the "
                f"anchored key {given.fingerprint} ({given.source}): the key was replaced"
            )
        return public or given, witness


# -- payload checks ---------------------------------------------------------------------------


def _check_payload(payload: dict[str, Any], type: str) -> dict[str, Any]:
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


# -- head and tail ----------------------------------------------------------------------------


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _parse_head(text: str | None) -> Head | str | None:
    """Return the head, ``None`` if absent, or a string saying why it is unreadable."""
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return "the head file is not JSON"
    if (
        not isinstance(data, dict)
        or set(data) != {"seq", "hash"}
        or not isinstance(data["seq"], int)
        or isinstance(data["seq"], bool)
        or data["seq"] < 1
        or not isinstance(data["hash"], str)
        or len(data["hash"]) != 64
        or not _is_hex(data["hash"])
    ):
        return "the head file is not {seq: positive int, hash: 64 hex digits}"
    return Head(data["seq"], data["hash"])


def _read_head(path: Path) -> Head | None:
    if not path.exists():
        return None
    parsed = _parse_head(path.read_text("utf-8"))
    return parsed if isinstance(parsed, Head) else None


def _read_last_line(path: Path) -> bytes | None:
    """Return the last complete line (without its newline), ``None`` if empty or torn."""
    if not path.exists():
        return None
    with path.open("rb") as fh:
        end = fh.seek(0, os.SEEK_END)
        if end == 0:
            return None
        fh.seek(end - 1)
        if fh.read(1) != b"\n":
            return b""  # torn: a partial line; parsing it fails and the append is refused
        pos = end - 1  # the final newline; read backwards from just before it
        buf = b""
        while pos > 0:
            step = min(4096, pos)
            pos -= step
            fh.seek(pos)
            buf = fh.read(step) + buf
            cut = buf.rfind(b"\n")
            if cut != -1:
                return buf[cut + 1 :]
        return buf


# -- verification -----------------------------------------------------------------------------


def _ahead_of(lines: list[bytes], head: Head | None) -> Head | None:
    """If the log is an intact chain that merely continues past ``head``, return its last entry."""
    if not lines:
        return None
    try:
        last = AuditEntry.from_dict(json.loads(lines[-1]))
    except (ValueError, UnicodeDecodeError):
        return None
    tip = Head(last.seq, last.hash)
    if _find_problem(lines, False, tip, head) is not None:
        return None  # broken somewhere, or does not contain the old head
    if head is not None and head.seq >= last.seq:
        return None
    return tip


def _find_problem(
    lines: list[bytes],
    torn: bool,
    head: Head | str | None,
    expected_head: Head | None,
) -> Problem | None:
    """Walk the chain; classify the first divergence (see :class:`Tamper`)."""
    parsed: list[AuditEntry | str] = []
    for raw in lines:
        try:
            parsed.append(AuditEntry.from_dict(json.loads(raw)))
        except (ValueError, UnicodeDecodeError) as exc:
            parsed.append(str(exc) or "not JSON")
    entries = [e for e in parsed if isinstance(e, AuditEntry)]
    seq_lines: dict[int, list[int]] = {}
    for number, item in enumerate(parsed, start=1):
        if isinstance(item, AuditEntry):
            seq_lines.setdefault(item.seq, []).append(number)
    claimed = {e.hash for e in entries}
    hash_of_seq: dict[int, str] = {}
    for e in entries:
        hash_of_seq.setdefault(e.seq, e.hash)

    prev_hash, expected = GENESIS, 1
    last_good: tuple[int, AuditEntry] | None = None
    for index, item in enumerate(parsed):
        line = index + 1
        if isinstance(item, str):
            if index == len(parsed) - 1 and torn:
                return Problem(
                    Tamper.TRUNCATED,
                    line,
                    expected,
                    "the last line is incomplete: the file was cut (or a write was torn)",
                )
            return Problem(Tamper.MALFORMED, line, expected, f"not an audit entry ({item})")
        e = item
        if entry_hash(e.to_dict()) != e.hash:
            return Problem(
                Tamper.EDITED, line, e.seq, "the entry's content does not match its hash"
            )
        if e.seq == expected and e.prev == prev_hash:
            last_good, prev_hash, expected = (line, e), e.hash, e.seq + 1
            continue
        return _classify(parsed, index, e, expected, last_good, seq_lines, claimed, hash_of_seq)
    if torn and parsed:
        return Problem(
            Tamper.TRUNCATED,
            len(parsed),
            entries[-1].seq if entries else None,
            "the last line lacks its line terminator: the file was cut",
        )
    last = last_good[1] if last_good else None
    return _check_head(head, last, seq_lines, hash_of_seq, len(parsed)) or _check_expected(
        expected_head, last, hash_of_seq
    )


def _classify(
    parsed: list[AuditEntry | str],
    index: int,
    e: AuditEntry,
    expected: int,
    last_good: tuple[int, AuditEntry] | None,
    seq_lines: dict[int, list[int]],
    claimed: set[str],
    hash_of_seq: dict[int, str],
) -> Problem:
    line = index + 1
    if e.seq == expected:
        # Right position, wrong link.
        if len(seq_lines[e.seq]) > 1:
            other = next(n for n in seq_lines[e.seq] if n != line)
            return Problem(
                Tamper.INSERTED,
                line,
                e.seq,
                f"seq {e.seq} is claimed again at line {other}, and this entry does not chain "
                "from the one before it",
            )
        if last_good is None:
            return Problem(Tamper.EDITED, line, e.seq, "the first entry does not start the chain")
        prev_line, prev_entry = last_good
        return Problem(
            Tamper.EDITED,
            prev_line,
            prev_entry.seq,
            f"the entry was rewritten with a recomputed hash: the next entry (line {line}) "
            "still names its original hash",
        )
    if e.seq > expected:
        pred = hash_of_seq.get(e.seq - 1)
        if pred is not None and e.prev == pred and len(seq_lines[e.seq]) == 1:
            return Problem(
                Tamper.REORDERED,
                line,
                e.seq,
                f"seq {e.seq} stands where seq {expected} belongs; its predecessor is at line "
                f"{seq_lines[e.seq - 1][0]}",
            )
        missing = range(expected, e.seq)
        if e.prev not in claimed and not any(s in seq_lines for s in missing):
            span = str(expected) if e.seq - expected == 1 else f"{expected}..{e.seq - 1}"
            return Problem(Tamper.DELETED, line, expected, f"seq {span} missing before line {line}")
        return Problem(
            Tamper.INSERTED,
            line,
            e.seq,
            f"seq {e.seq} does not continue the chain after seq {expected - 1} and is not a "
            "moved genuine entry",
        )
    # e.seq < expected: a seq seen before, or going backwards.
    earlier = [n for n in seq_lines.get(e.seq, []) if n < line]
    if earlier:
        first = parsed[earlier[0] - 1]
        if isinstance(first, AuditEntry):
            if first.hash == e.hash:
                return Problem(
                    Tamper.INSERTED, line, e.seq, f"a copy of the entry at line {earlier[0]}"
                )
            if first.prev == e.prev:
                # Twins claiming the same predecessor: the genuine one is named by its successor.
                nxt = parsed[index + 1] if index + 1 < len(parsed) else None
                if isinstance(nxt, AuditEntry) and nxt.prev == e.hash:
                    return Problem(
                        Tamper.INSERTED,
                        earlier[0],
                        e.seq,
                        f"a forged entry with a recomputed hash: seq {e.seq} appears again at "
                        f"line {line}, and only that one is chained to by its successor",
                    )
                return Problem(
                    Tamper.INSERTED,
                    line,
                    e.seq,
                    f"a forged entry with a recomputed hash: seq {e.seq} already appears at "
                    f"line {earlier[0]}",
                )
    pred = hash_of_seq.get(e.seq - 1)
    if pred is not None and e.prev == pred and len(seq_lines[e.seq]) == 1:
        return Problem(Tamper.REORDERED, line, e.seq, f"seq {e.seq} comes after seq {expected - 1}")
    return Problem(
        Tamper.INSERTED, line, e.seq, f"seq {e.seq} goes backwards after seq {expected - 1}"
    )


def _check_head(
    head: Head | str | None,
    last: AuditEntry | None,
    seq_lines: dict[int, list[int]],
    hash_of_seq: dict[int, str],
    n_lines: int,
) -> Problem | None:
    if isinstance(head, str):
        return Problem(Tamper.HEAD_MISMATCH, None, None, head)
    if head is None:
        if last is None:
            return None
        return Problem(
            Tamper.HEAD_MISMATCH,
            None,
            None,
            f"the head anchor is missing although the log has {n_lines} entries",
        )
    n = 0 if last is None else last.seq
    moved = [s for s, h in hash_of_seq.items() if h == head.hash and s != head.seq]
    if moved:
        return Problem(
            Tamper.HEAD_MISMATCH,
            None,
            head.seq,
            f"the head anchor was edited: it names the hash of seq {moved[0]} but claims seq "
            f"{head.seq}",
        )
    if head.seq > n:
        span = str(head.seq) if head.seq == n + 1 else f"{n + 1}..{head.seq}"
        return Problem(
            Tamper.TRUNCATED,
            n_lines + 1,
            n + 1,
            f"the log ends at seq {n} but the head anchors seq {head.seq}: seq {span} were "
            "removed from the end",
        )
    if head.seq < n:
        if hash_of_seq.get(head.seq) == head.hash:
            after = head.seq + 1
            return Problem(
                Tamper.INSERTED,
                seq_lines[after][0],
                after,
                f"entries after the head anchor (seq {head.seq}): appended outside the lab, or "
                "an append was interrupted before anchoring",
            )
        return Problem(
            Tamper.HEAD_MISMATCH,
            None,
            head.seq,
            f"the head anchors seq {head.seq} with a hash no entry has",
        )
    if last is not None and head.hash != last.hash:
        return Problem(
            Tamper.HEAD_MISMATCH,
            n_lines,
            n,
            f"the last entry (seq {n}) was rewritten, or the head anchor was edited: their "
            "hashes differ",
        )
    return None


def _check_expected(
    expected: Head | None, last: AuditEntry | None, hash_of_seq: dict[int, str]
) -> Problem | None:
    if expected is None:
        return None
    n = 0 if last is None else last.seq
    if expected.seq > n:
        return Problem(
            Tamper.TRUNCATED,
            None,
            n + 1,
            f"the external anchor names seq {expected.seq} but the log ends at seq {n}",
        )
    if hash_of_seq.get(expected.seq) != expected.hash:
        return Problem(
            Tamper.HEAD_MISMATCH,
            None,
            expected.seq,
            f"seq {expected.seq} does not have the externally anchored hash: the log was "
            "rewritten from there on",
        )
    return None


# -- signatures, witness and anchors ------------------------------------------------------------


def _entries_of(lines: list[bytes]) -> list[AuditEntry]:
    """Parse lines already known to be entries (after :func:`_find_problem` passed)."""
    return [AuditEntry.from_dict(json.loads(raw)) for raw in lines]


def _check_signatures(
    entries: list[AuditEntry], public: PublicKey | None, witness: Witness | None
) -> Problem | None:
    """Every entry from the first signed one (or the witness's ``signed_from``) must verify."""
    signed_from = witness.signed_from if witness is not None else None
    if signed_from is None:
        signed_from = next((e.seq for e in entries if e.signed), None)
    if public is None:
        if signed_from is not None:
            return Problem(
                Tamper.UNVERIFIED,
                None,
                signed_from,
                f"entries from seq {signed_from} are signed but no public key is available: "
                "the key folder is missing; pass the anchor file of `lab audit anchor` "
                "(--anchor) or restore the key folder",
                where="the key folder",
            )
        if entries:
            return Problem(
                Tamper.UNVERIFIED,
                None,
                None,
                f"the log's {len(entries)} entries are unsigned and it has no signing key, so "
                "nothing outside the home vouches for them; the next append creates the key",
                where="the key folder",
            )
        return None
    for line, e in enumerate(entries, start=1):
        if signed_from is None or e.seq < signed_from:
            if e.signed:
                return Problem(
                    Tamper.FORGED,
                    line,
                    e.seq,
                    f"a signed entry before signing began (seq {signed_from})",
                )
            continue
        if not e.signed:
            return Problem(
                Tamper.FORGED,
                line,
                e.seq,
                f"the entry is unsigned but every entry from seq {signed_from} is signed with "
                f"key {public.fingerprint}",
            )
        if e.key != public.fingerprint:
            return Problem(
                Tamper.FORGED,
                line,
                e.seq,
                f"the entry names key {e.key}, not the log's key {public.fingerprint} "
                f"({public.source})",
            )
        if not public.verify(e.sig or "", e.hash):
            return Problem(
                Tamper.FORGED,
                line,
                e.seq,
                f"the signature does not verify with key {public.fingerprint} ({public.source}): "
                "the entry was forged or re-chained",
            )
    return None


def _check_witness(witness: Witness, entries: list[AuditEntry], where: Path) -> Problem | None:
    """The log must still hold the last entry its writer signed (as the witness remembers)."""
    if witness.seq < 1:
        return None
    n = entries[-1].seq if entries else 0
    if not entries:
        return Problem(
            Tamper.DELETED,
            None,
            1,
            f"the log and its head are gone (or empty) but the witness {where} records seq "
            f"{witness.seq}: the whole log was deleted",
            where=f"witness {where}",
        )
    if witness.seq > n:
        span = str(witness.seq) if witness.seq == n + 1 else f"{n + 1}..{witness.seq}"
        return Problem(
            Tamper.TRUNCATED,
            len(entries) + 1,
            n + 1,
            f"the log ends at seq {n} but the witness {where} records seq {witness.seq}: seq "
            f"{span} were removed from the end (and the head rewritten to match)",
        )
    if witness.seq < witness.signed_from:
        return None  # nothing signed yet: the witness only records where the log stood
    found = next((e for e in entries if e.seq == witness.seq), None)
    if found is None or found.hash != witness.hash:
        return Problem(
            Tamper.HEAD_MISMATCH,
            None,
            witness.seq,
            f"seq {witness.seq} does not have the hash the witness {where} records: the log "
            "was rewritten",
            where=f"witness {where}",
        )
    return None


def _check_anchor(
    anchor: ExternalHead, entries: list[AuditEntry], public: PublicKey | None
) -> Problem | None:
    """The log must still contain the anchored entry (and be signed by the anchored key)."""
    n = entries[-1].seq if entries else 0
    if anchor.key is not None and public is not None and anchor.key != public.fingerprint:
        return Problem(
            Tamper.FORGED,
            None,
            anchor.seq,
            f"the anchor {anchor.source} names signing key {anchor.key}, the log is checked "
            f"with key {public.fingerprint}: the key was replaced",
            where=f"anchor {anchor.source}",
        )
    if anchor.seq > n:
        what = "the log is empty or missing" if n == 0 else f"the log ends at seq {n}"
        return Problem(
            Tamper.DELETED if n == 0 else Tamper.TRUNCATED,
            None,
            n + 1,
            f"the anchor {anchor.source} names seq {anchor.seq} but {what}",
            where=f"anchor {anchor.source}",
        )
    found = next((e for e in entries if e.seq == anchor.seq), None)
    if found is None or found.hash != anchor.hash:
        return Problem(
            Tamper.HEAD_MISMATCH,
            None,
            anchor.seq,
            f"seq {anchor.seq} does not have the hash anchored in {anchor.source}: the log was "
            "rewritten from there on",
            where=f"anchor {anchor.source}",
        )
    return None
