"""File stamps and a cache of values derived from files, recomputed only when a file changes.

A stamp is ``(size, mtime_ns, inode)`` of each file (``None`` when absent); a sqlite database's
stamp includes its ``-wal`` file, where committed changes sit until a checkpoint. A value is
recomputed when the stamp of any of its files differs from the one it was computed at, so a
page shows what the files hold now, at the cost of one ``stat`` per file per request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

Stamp = tuple[tuple[int, int, int] | None, ...]


def stamp(paths: Sequence[Path]) -> Stamp:
    """The stamp of ``paths`` (absent files stamp as ``None``)."""
    out: list[tuple[int, int, int] | None] = []
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:
            out.append(None)
        else:
            out.append((st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


def sqlite_files(db: Path) -> tuple[Path, Path]:
    """A sqlite database and its write-ahead log (committed data may sit in either)."""
    return db, db.with_name(db.name + "-wal")


class StampedCache:
    """Values keyed by name, each valid while its files' stamp (and extra key) is unchanged."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[Hashable, Any]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(
        self,
        name: str,
        paths: Sequence[Path],
        compute: Callable[[], Any],
        *,
        extra: Hashable = None,
    ) -> Any:
        """Return the cached value of ``name``, computing it if ``paths`` changed since."""
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:  # one computation per name at a time; others wait and reuse it
            key = (stamp(paths), extra)
            cached = self._values.get(name)
            if cached is not None and cached[0] == key:
                return cached[1]
            value = compute()
            # Stamp taken before computing: a change during the computation recomputes next time.
            self._values[name] = (key, value)
            return value
