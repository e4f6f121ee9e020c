"""Append-only, hash-chained audit log: what every party did to shared data, and when.

The log is JSON Lines at ``$LAB_HOME/audit/log.jsonl``. Entry ``n`` is one line::

    {"seq": n, "ts": "...Z", "type": "...", "actor": "...", "payload": {...},
     "prev": "<hash of entry n-1>", "hash": "<sha256 of this entry without 'hash'>"}

where the hash is taken over the canonical JSON of the other six fields (sorted keys, no
spaces, UTF-8) and ``prev`` of entry 1 is 64 zeros. A *head anchor* ``log.head`` holds the seq
and hash of the last entry and is replaced in the same critical section as every append.

What this proves, and what it does not
--------------------------------------
The chain makes any edit, deletion, insertion or reordering of entries visible, and the head
anchor makes deleting entries from the end visible too. Someone who can write both files can
still rewrite the whole log consistently from some point on; only an anchor kept elsewhere
defeats that: note :meth:`AuditLog.head` (``lab audit head``) in a report, a ticket or an
MLflow run, and pass it back as ``verify(expected_head=...)``.

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
from collections.abc import Iterator, Mapping
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
from lab.governance.errors import AuditIntegrityError, AuditPayloadError
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
]
#: Every event type the lab writes.
EVENT_TYPES: tuple[str, ...] = get_args(EventType)

#: ``prev`` of the first entry.
GENESIS = "0" * 64

#: The fields of an entry, in display order.
ENTRY_FIELDS = ("seq", "ts", "type", "actor", "payload", "prev", "hash")

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
    """One line of the log (see the module docstring for the fields)."""

    seq: int
    ts: str
    type: str
    actor: str
    payload: dict[str, Any]
    prev: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """Return the entry as a JSON-ready dict."""
        return {
            "seq": self.seq,
            "ts": self.ts,
            "type": self.type,
            "actor": self.actor,
            "payload": self.payload,
            "prev": self.prev,
            "hash": self.hash,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditEntry:
        """Build an entry from a parsed line.

        Raises
        ------
        ValueError
            If a field is missing, extra or of the wrong type.
        """
        keys = set(data)
        if keys != set(ENTRY_FIELDS):
            missing = sorted(set(ENTRY_FIELDS) - keys)
            extra = sorted(keys - set(ENTRY_FIELDS))
            raise ValueError(f"fields missing {missing} / unexpected {extra}")
        seq = data["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise ValueError(f"seq must be an integer, got {seq!r}")
        for name in ("ts", "type", "actor", "prev", "hash"):
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
        )


def entry_hash(entry: Mapping[str, Any]) -> str:
    """Return the hash an entry must carry: SHA-256 of its canonical JSON without ``hash``."""
    return sha256_hex(canonical_json({k: v for k, v in entry.items() if k != "hash"}))


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
    """Entries are missing from the middle (a gap in seq, the chain skips them)."""
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
    """

    kind: Tamper
    line: int | None
    seq: int | None
    detail: str


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
    """

    path: Path
    entries: int
    head: Head | None
    problem: Problem | None

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
        where = f"line {p.line}" if p.line is not None else str(self.path.with_suffix(".head"))
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
            },
        }


class AuditLog:
    """The audit log of one lab home (or of an explicit path).

    Parameters
    ----------
    path : Path, optional
        The JSON Lines file; default ``$LAB_HOME/audit/log.jsonl``. The head anchor and the lock
        live beside it (``.head``, ``.lock``). Nothing is created until the first append.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = (path if path is not None else lab_home() / "audit" / "log.jsonl").resolve()
        self.head_path = self.path.with_suffix(".head")
        self.lock_path = self.path.with_suffix(".lock")

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    # -- writing ------------------------------------------------------------------------------

    def record(self, type: str, payload: Mapping[str, Any], actor: str | None = None) -> AuditEntry:
        """Append one entry and return it (durable when this returns).

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
            If the log's last entry does not match the head anchor (run :meth:`verify`).
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
            head = self._anchored_tail()
            fields: dict[str, Any] = {
                "seq": 1 if head is None else head.seq + 1,
                "ts": iso(utc_now()),
                "type": type,
                "actor": who,
                "payload": body,
                "prev": GENESIS if head is None else head.hash,
            }
            fields["hash"] = entry_hash(fields)
            entry = AuditEntry.from_dict(fields)
            self._append_line((canonical_json(fields) + "\n").encode("utf-8"), new=head is None)
            atomic_replace(
                self.head_path,
                (canonical_json({"seq": entry.seq, "hash": entry.hash}) + "\n").encode(),
            )
        logger.debug("audit %s seq=%d", type, entry.seq)
        return entry

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

    def _anchored_tail(self) -> Head | None:
        """Return the head after checking the log's last line matches it (under the lock)."""
        head = _read_head(self.head_path)
        last = _read_last_line(self.path)
        fix = (
            "run `lab audit verify`; after a crash `lab audit recover` repairs an interrupted "
            f"append, anything else needs {self.path.name} restored from backup"
        )
        if head is None and last is None:
            if self.head_path.exists():
                raise AuditIntegrityError(f"{self.head_path} is unreadable; {fix}")
            return None
        if head is None:
            raise AuditIntegrityError(
                f"{self.path} has entries but its head anchor is missing or unreadable; {fix}"
            )
        if last is None:
            raise AuditIntegrityError(
                f"{self.path} is empty or missing but the head anchors seq {head.seq}; {fix}"
            )
        try:
            entry = AuditEntry.from_dict(json.loads(last))
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
        return head

    def recover(self, adopt: Head | None = None, *, actor: str | None = None) -> list[str]:
        """Repair the log after a crash interrupted an append; refuse anything else.

        Two states are repairable, and both only when every earlier entry is intact:

        - a torn last line (the writer died mid-line): the partial bytes were never
          acknowledged and are dropped;
        - complete entries after the head anchor (the writer died before replacing the head):
          they are adopted only if ``adopt`` names the last of them (``SEQ:HASH``), so that a
          person has looked at them (``lab audit log``) and vouches for them.

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
                atomic_replace(self.head_path, (canonical_json(vars(last)) + "\n").encode())
                done.append(f"adopted entries up to seq {last.seq} after the head anchor")
        if done:
            self.record("audit_recovered", {"actions": done}, actor)
            logger.warning("audit log recovered: %s", "; ".join(done))
        return done

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

    def verify(self, expected_head: Head | None = None) -> VerifyReport:
        """Check the chain and the head; name the first bad entry and the kind of tampering.

        Parameters
        ----------
        expected_head : Head, optional
            An anchor kept outside the lab home: the log must still contain that entry.

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
        problem = _find_problem(lines, torn, head_or_bad, expected_head)
        head = head_or_bad if isinstance(head_or_bad, Head) else None
        return VerifyReport(path=self.path, entries=len(lines), head=head, problem=problem)


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
