"""Plumbing shared by the governance stores: canonical JSON, UTC time, file locks, sqlite.

Durability rules used everywhere: a file that must survive a crash is written to a temporary
file in the same directory, flushed with ``fsync``, renamed (or hard-linked, to refuse
overwriting) into place, and the directory is ``fsync``-ed so the rename itself is durable.
Cross-process mutual exclusion uses ``fcntl.flock`` (POSIX hosts only) or sqlite's
``BEGIN IMMEDIATE`` write lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import math
import os
import secrets
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: Environment variable naming who acts (a person or a service account), else the OS user.
ACTOR_ENV = "LAB_ACTOR"

#: sqlite busy timeout: how long one attempt waits for another process's lock, seconds. Nothing
#: slow runs under the write lock (budget checks compose events before taking it), so a writer
#: holds it for milliseconds: one audit append.
SQLITE_TIMEOUT_S = 10.0

#: Attempts to take the write lock (each waiting up to :data:`SQLITE_TIMEOUT_S`) before a
#: :class:`~lab.governance.errors.StoreBusyError` tells the user to retry.
BUSY_ATTEMPTS = 3


def canonical_json(value: Any) -> str:
    """Serialise ``value`` to canonical JSON: sorted keys, no spaces, UTF-8, no NaN/Infinity.

    Hashes are computed over this form, so it must never change for a given value.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def sha256_hex(data: bytes | str) -> str:
    """Return the hex SHA-256 of ``data`` (strings are UTF-8 encoded)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()


def utc_now() -> datetime:
    """Return the current time, timezone-aware UTC."""
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    """Format an aware datetime as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (sortable as text)."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    """Inverse of :func:`iso`."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def default_actor() -> str:
    """Return who is acting: ``$LAB_ACTOR`` if set, else the operating-system user."""
    actor = os.environ.get(ACTOR_ENV, "").strip()
    if actor:
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return f"uid:{os.getuid()}"


def is_finite_json(value: Any) -> bool:
    """Return whether every float inside ``value`` is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(is_finite_json(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(is_finite_json(v) for v in value)
    return True


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (after creating, renaming or linking a file in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(directory: Path, data: bytes) -> Path:
    fd, name = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def atomic_replace(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably, replacing any previous content."""
    tmp = _write_temp(path.parent, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_create(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` atomically and durably unless ``path`` already exists.

    Returns
    -------
    bool
        ``True`` if the file was created, ``False`` if it existed (it is left untouched).
    """
    tmp = _write_temp(path.parent, data)
    try:
        os.link(tmp, path)  # fails if path exists: no window in which a writer could clobber it
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the ``with`` block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def connect(path: Path) -> sqlite3.Connection:
    """Open a governance sqlite database in autocommit mode (transactions are explicit).

    ``synchronous=FULL``: a committed spend or authorization survives a power cut.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether sqlite refused because another connection holds a lock."""
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def database_path(conn: sqlite3.Connection) -> str:
    """The file of a connection's main database (for messages)."""
    for row in conn.execute("PRAGMA database_list"):
        if row[1] == "main":
            return str(row[2])
    return "<sqlite>"  # pragma: no cover - every connection has a main database


def begin_immediate(conn: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``, retried a few times when busy, else a clear error.

    Raises
    ------
    StoreBusyError
        If another process held the write lock through every attempt.
    """
    from lab.governance.errors import StoreBusyError

    for attempt in range(1, BUSY_ATTEMPTS + 1):
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
            if attempt == BUSY_ATTEMPTS:
                waited = BUSY_ATTEMPTS * SQLITE_TIMEOUT_S
                path = database_path(conn)
                raise StoreBusyError(
                    f"{path} is busy: another process held its write lock for more than "
                    f"{waited:g} s; nothing was changed; retry the command, and if it stays "
                    f"busy find the process holding the file (e.g. `fuser {path}`)"
                ) from exc
            time.sleep((50 + secrets.randbelow(200)) / 1000)  # jitter, then wait again


@contextlib.contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block in ``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception).

    ``BEGIN IMMEDIATE`` takes the database's write lock at once, before anything is read, so
    a read-decide-write sequence inside the block is serialised across processes. Keep the
    block short: every other writer waits for it.

    Raises
    ------
    StoreBusyError
        If the write lock could not be taken (see :func:`begin_immediate`).
    """
    begin_immediate(conn)
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


@contextlib.contextmanager
def read_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block's reads against one consistent snapshot (``BEGIN`` ... ``COMMIT``)."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")
