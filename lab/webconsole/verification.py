"""Is the audit chain intact? A full verification once, then only what was appended.

A full :meth:`lab.governance.audit.AuditLog.verify` (hash chain, head file, every signature,
the witness: what ``lab audit verify --no-ledger`` checks) of a 100,000-entry log takes about
20 s here, and every page an auditor views appends an entry, so it cannot run per request.
:class:`ChainVerifier` runs it once in a background thread and remembers the verified prefix
of the file: its length and SHA-256. A later check (:meth:`ChainVerifier.check`) re-hashes that
prefix (it must be byte-for-byte unchanged: an edit anywhere in it is caught) and verifies only
the entries appended since as the full check would (content hash, seq, link to the
predecessor, Ed25519 signature with the log's key, the head file naming the last entry, the
witness not ahead of it), then extends the prefix. Any difference makes the verifier run the
full verification again, which names the damage.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lab.governance._common import iso, utc_now
from lab.governance.audit import AuditEntry, AuditLog, entry_hash
from lab.governance.audit.files import read_head
from lab.governance.errors import AuditKeyError
from lab.governance.signing import AuditKeys, PublicKey, Witness

Status = Literal["verifying", "intact", "tampered", "unverified", "empty"]


@dataclass(frozen=True)
class ChainState:
    """What the console says about the chain.

    Attributes
    ----------
    status : {"verifying", "intact", "tampered", "unverified", "empty"}
        ``verifying`` until the first full verification ends.
    summary : str
        The verification's words (the damage when tampered).
    compared : tuple of str
        What the full verification compared against.
    entries : int
        Entries covered by the last check.
    full_at, checked_at : str or None
        When the last full verification ended; when the last (incremental) check ran.
    full_seconds : float
        How long the last full verification took.
    """

    status: Status
    summary: str
    compared: tuple[str, ...] = ()
    entries: int = 0
    full_at: str | None = None
    checked_at: str | None = None
    full_seconds: float = 0.0


@dataclass
class _Prefix:
    length: int
    digest: bytes
    seq: int
    last_hash: str
    public: PublicKey | None


class ChainVerifier:
    """Verification state of one audit log, kept current at the cost of the appended entries."""

    def __init__(self, log_path: Path, keys_root: Path | None = None) -> None:
        self.log = AuditLog(log_path, keys_root=keys_root)
        self.keys = AuditKeys(self.log.path, keys_root)
        self._lock = threading.Lock()
        self._check_lock = threading.Lock()
        self._prefix: _Prefix | None = None
        self._state = ChainState("verifying", "the first full verification is running")
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> ChainState:
        """The last known state (no file is read)."""
        return self._state

    def start(self) -> None:
        """Run a full verification in the background unless one is running."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._full, name="audit-verify", daemon=True)
            self._thread.start()

    def wait(self, timeout: float | None = None) -> ChainState:
        """Wait for a running full verification (tests, benchmarks) and return the state."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self._state

    def _full(self) -> None:
        started = time.perf_counter()
        if not self.log.path.exists():
            self._prefix = None
            self._state = ChainState("empty", "no audit log yet", checked_at=iso(utc_now()))
            return
        report = self.log.verify()
        took = time.perf_counter() - started
        now = iso(utc_now())
        if not report.ok:
            status: Status = "unverified" if "unverified" in report.summary() else "tampered"
            self._prefix = None
            self._state = ChainState(
                status, report.summary(), report.compared, report.entries, now, now, took
            )
            return
        data = self.log.path.read_bytes()
        length = _end_of_line(data, report.entries)
        lines = data[:length].split(b"\n")
        last = AuditEntry.from_dict(json.loads(lines[-2])) if report.entries else None
        try:
            public = self.keys.public()
        except AuditKeyError:
            public = None
        hasher = hashlib.sha256(data[:length])
        self._prefix = _Prefix(
            length,
            hasher.digest(),
            last.seq if last else 0,
            last.hash if last else "",
            public,
        )
        self._state = ChainState(
            "intact", report.summary(), report.compared, report.entries, now, now, took
        )

    def check(self) -> ChainState:
        """Re-hash the verified prefix and verify the entries appended since (see module doc)."""
        with self._check_lock:  # one check at a time: each extends the verified prefix
            return self._check()

    def _check(self) -> ChainState:
        prefix = self._prefix
        if prefix is None:
            if self._state.status in ("verifying", "empty"):
                self.start()
            return self._state
        try:  # the witness first: read after the log, an append in between would put it ahead
            witness = self.keys.witness()
        except AuditKeyError as exc:
            return self._damaged(str(exc))
        try:
            data = self.log.path.read_bytes()
        except FileNotFoundError:
            data = b""
        hasher = hashlib.sha256(data[: prefix.length])
        if len(data) < prefix.length or hasher.digest() != prefix.digest:
            return self._damaged("the verified part of the log changed since it was verified")
        tail = data[prefix.length :]
        end = tail.rfind(b"\n") + 1
        problem = self._check_tail(prefix, tail[:end], witness)
        if problem is not None:
            return self._damaged(problem)
        if end:  # _check_tail moved seq and hash on; the bytes follow
            hasher.update(tail[:end])
            prefix.length += end
            prefix.digest = hasher.digest()
        entries = prefix.seq
        state = self._state
        self._state = ChainState(
            "intact",
            f"ok: {entries} entries, chain and head intact",
            state.compared,
            entries,
            state.full_at,
            iso(utc_now()),
            state.full_seconds,
        )
        return self._state

    def _check_tail(self, prefix: _Prefix, block: bytes, witness: Witness | None) -> str | None:
        seq, last_hash = prefix.seq, prefix.last_hash
        for raw in block.split(b"\n")[:-1] if block else []:
            try:
                entry = AuditEntry.from_dict(json.loads(raw))
            except (ValueError, UnicodeDecodeError):
                return f"entry after seq {seq} is not an audit entry"
            if entry_hash(entry.to_dict()) != entry.hash:
                return f"seq {entry.seq}: the entry's content does not match its hash"
            if entry.seq != seq + 1 or entry.prev != last_hash:
                return f"seq {entry.seq} does not follow seq {seq}"
            if prefix.public is not None and (
                entry.sig is None
                or entry.key != prefix.public.fingerprint
                or not prefix.public.verify(entry.sig, entry.hash)
            ):
                return f"seq {entry.seq}: the signature does not verify with the log's key"
            seq, last_hash = entry.seq, entry.hash
        try:
            head = read_head(self.log.head_path)
        except (OSError, ValueError) as exc:
            return f"the head file is unreadable ({exc})"
        if head is not None and (head.seq, head.hash) != (seq, last_hash) and head.seq <= seq:
            return f"the head file names seq {head.seq}, the log ends at seq {seq}"
        if witness is not None and witness.seq > seq:
            return f"the witness records seq {witness.seq}, the log ends at seq {seq}"
        prefix.seq, prefix.last_hash = seq, last_hash
        return None

    def _damaged(self, why: str) -> ChainState:
        """Something changed: say so now and let a full verification name the damage."""
        self._prefix = None
        state = self._state
        self._state = ChainState(
            "tampered",
            f"{why}; a full verification is running to name the damage",
            state.compared,
            state.entries,
            state.full_at,
            iso(utc_now()),
            state.full_seconds,
        )
        self.start()
        return self._state


def _end_of_line(data: bytes, n: int) -> int:
    """Byte offset just after the ``n``-th newline of ``data``."""
    position = 0
    for _ in range(n):
        position = data.index(b"\n", position) + 1
    return position
