"""Floods of cheap refusals (401, 429) audited as counts per window, not one entry per call.

Anyone who can reach the scoring endpoint can send calls without a valid token, and a bank can
keep calling past its rate limit. Writing (and ``fsync``-ing) one audit entry per such call lets
them grow the platform's log without bound and slow every genuine call. These refusals reveal
nothing and cost the platform nothing beyond the refusal, so :class:`RefusalWindow` counts them
per ``(caller, outcome, HTTP status)`` and writes one ``scoring_calls_aggregated`` entry per
key and window: each such call is audited exactly once, as one of ``n_calls``.

Every other call (answered, or refused after authentication for any other reason, 500s
included) is still audited on its own, before the answer leaves.

What it gives up: the counts of the current window live in memory until it is flushed (every
``window_s`` seconds and when the endpoint stops); if the process is killed they are lost, and
the log shows per window, not per call, when they happened.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from lab.governance._common import iso, utc_now
from lab.governance.audit import AuditLog
from lab.governance.errors import AuditError

logger = logging.getLogger(__name__)

#: Seconds of 401/429 refusals summed into one audit entry (per caller and outcome).
DEFAULT_WINDOW_S = 10.0


@dataclass
class _Count:
    n: int
    first: datetime
    last: datetime


class RefusalWindow:
    """Counts of aggregated refusals, flushed to the audit log once per window.

    Parameters
    ----------
    log : AuditLog
        The platform's audit log.
    actor : str
        Who the entries name (the endpoint).
    window_s : float
        Seconds per window (> 0).
    clock : callable, optional
        Returns the current aware UTC datetime (tests).
    """

    def __init__(
        self,
        log: AuditLog,
        actor: str,
        window_s: float = DEFAULT_WINDOW_S,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0 seconds, got {window_s}")
        self.log = log
        self.actor = actor
        self.window_s = float(window_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._counts: dict[tuple[str, str, int], _Count] = {}
        self._opened = time.monotonic()

    def add(self, caller: str, outcome: str, status: int) -> None:
        """Count one refused call (thread-safe; no I/O)."""
        now = self._clock()
        with self._lock:
            count = self._counts.get((caller, outcome, status))
            if count is None:
                self._counts[(caller, outcome, status)] = _Count(1, now, now)
            else:
                count.n += 1
                count.last = now

    def pending(self) -> int:
        """Calls counted but not yet written."""
        with self._lock:
            return sum(c.n for c in self._counts.values())

    def due(self) -> bool:
        """Whether the current window is over."""
        return time.monotonic() - self._opened >= self.window_s

    def flush(self) -> int:
        """Write one entry per (caller, outcome, status) counted since the last flush.

        Returns the number of entries written. If the log refuses an entry, its count is kept
        for the next flush (and logged): nothing counted is dropped while the process lives.
        """
        with self._flush_lock:
            with self._lock:
                counts, self._counts = self._counts, {}
                self._opened = time.monotonic()
            written = 0
            for index, ((caller, outcome, status), count) in enumerate(sorted(counts.items())):
                try:
                    self.log.record(
                        "scoring_calls_aggregated",
                        {
                            "caller": caller,
                            "outcome": outcome,
                            "http_status": status,
                            "n_calls": count.n,
                            "first": iso(count.first),
                            "last": iso(count.last),
                            "window_s": self.window_s,
                        },
                        self.actor,
                    )
                    written += 1
                except AuditError as exc:
                    logger.error("audit log refused aggregated refusals: %s", exc)
                    self._restore(dict(sorted(counts.items())[index:]))
                    break
            return written

    def _restore(self, counts: dict[tuple[str, str, int], _Count]) -> None:
        with self._lock:
            for key, count in counts.items():
                current = self._counts.get(key)
                if current is None:
                    self._counts[key] = count
                else:
                    current.n += count.n
                    current.first = min(current.first, count.first)
