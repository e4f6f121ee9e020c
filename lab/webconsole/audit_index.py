"""An index of a growing audit log that reads each byte once.

The audit log is append-only, so the console follows it like ``tail -f``: every request
:meth:`AuditIndex.refresh`-es the index, which reads only the bytes appended since the last
refresh and folds the new entries into what the pages need (the jobs of
:class:`~lab.governance.report.JobsFold`, the alerts, counts per event type, peer heads and the
byte offset of every line for paging). A log that shrank, was replaced (another inode) or whose
last indexed bytes changed is indexed again from the start. The index is for display; whether
the log is intact is :mod:`lab.webconsole.verification`'s question.
"""

from __future__ import annotations

import json
import threading
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

from lab.governance.audit import AuditEntry
from lab.governance.report import JobsFold

#: Audit events an auditor should look at first (as ``lab audit alerts``).
ALERT_TYPES = ("psi_probe_suspected", "job_refused")
#: Bytes before the indexed end that must be unchanged for the index to be extended.
_TAIL_CHECK = 256


class AuditIndex:
    """What the console's pages read from one audit log, kept up to date incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._offset = 0
        self._inode: int | None = None
        self._tail = b""
        self.offsets = array("q")  # byte offset of every indexed line
        self.hashes: list[str] = []  # hash of every indexed entry (seq n at n - 1)
        self.jobs = JobsFold()
        self.alerts: list[AuditEntry] = []
        self.peer_heads: list[AuditEntry] = []
        self.counts: Counter[str] = Counter()
        self.last: AuditEntry | None = None
        self.error: str | None = None

    @property
    def n_entries(self) -> int:
        """Entries indexed."""
        return len(self.offsets)

    @property
    def indexed_bytes(self) -> int:
        """Bytes of the log indexed (complete lines only)."""
        return self._offset

    def refresh(self) -> None:
        """Read what was appended since the last refresh (everything, if the log changed)."""
        with self._lock:
            try:
                st = self.path.stat()
            except FileNotFoundError:
                self._reset()
                return
            with self.path.open("rb") as fh:
                if st.st_ino != self._inode or st.st_size < self._offset or not self._tail_ok(fh):
                    self._reset()
                    self._inode = st.st_ino
                if self.error is not None or st.st_size == self._offset:
                    return
                fh.seek(self._offset)
                data = fh.read(st.st_size - self._offset)
            self._index(data)

    def _tail_ok(self, fh: Any) -> bool:
        if self._offset == 0:
            return True
        start = max(0, self._offset - _TAIL_CHECK)
        fh.seek(start)
        return bool(fh.read(self._offset - start) == self._tail)

    def _index(self, data: bytes) -> None:
        end = data.rfind(b"\n") + 1  # a torn last line waits for its end
        position = 0
        while position < end:
            stop = data.index(b"\n", position)
            raw = data[position:stop]
            try:
                entry = AuditEntry.from_dict(json.loads(raw))
            except (ValueError, UnicodeDecodeError) as exc:
                self.error = f"line {len(self.offsets) + 1} is not an audit entry ({exc})"
                end = position
                break
            self.offsets.append(self._offset + position)
            self._fold(entry)
            position = stop + 1
        consumed = data[:end]
        self._offset += len(consumed)
        self._tail = (self._tail + consumed)[-_TAIL_CHECK:]

    def _fold(self, entry: AuditEntry) -> None:
        self.hashes.append(entry.hash)
        self.counts[entry.type] += 1
        self.jobs.add(entry)
        if entry.type in ALERT_TYPES:
            self.alerts.append(entry)
        elif entry.type == "peer_head":
            self.peer_heads.append(entry)
        self.last = entry

    def hash_of(self, seq: int) -> str | None:
        """The hash of the entry at line ``seq`` (``None`` beyond the index)."""
        return self.hashes[seq - 1] if 0 < seq <= len(self.hashes) else None

    def entries(self, start: int, stop: int) -> list[AuditEntry]:
        """Entries ``start`` to ``stop - 1`` (0-based line numbers) read from the file."""
        with self._lock:
            stop = min(stop, len(self.offsets))
            offsets = self.offsets[max(0, start) : stop]
            end = self.offsets[stop] if stop < len(self.offsets) else self._offset
        if not offsets:
            return []
        out = []
        with self.path.open("rb") as fh:  # only the lines asked for
            fh.seek(offsets[0])
            block = fh.read(end - offsets[0])
        for line in block.split(b"\n")[: len(offsets)]:
            out.append(AuditEntry.from_dict(json.loads(line)))
        return out
