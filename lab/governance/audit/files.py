"""The log's files: reading the head anchor and the last line, appending a line, snapshots.

The log is JSON Lines (``log.jsonl``) with its head anchor beside it (``log.head``, the
canonical JSON ``{"hash": ..., "seq": ...}`` of the last entry). These functions do the file
IO and nothing else; the locking and the checks are the caller's
(:class:`~lab.governance.audit.AuditLog`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lab.governance._common import fsync_dir
from lab.governance.audit.entries import Head, is_hex


def parse_head(text: str | None) -> Head | str | None:
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
        or not is_hex(data["hash"])
    ):
        return "the head file is not {seq: positive int, hash: 64 hex digits}"
    return Head(data["seq"], data["hash"])


def read_head(path: Path) -> Head | None:
    """Return the head anchor in ``path``, ``None`` if it is absent or unreadable."""
    if not path.exists():
        return None
    parsed = parse_head(path.read_text("utf-8"))
    return parsed if isinstance(parsed, Head) else None


def read_last_line(path: Path) -> bytes | None:
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


def append_line(path: Path, line: bytes, *, new: bool) -> None:
    """Append ``line`` with one ``write`` on an ``O_APPEND`` descriptor and ``fsync`` it.

    ``new`` (the file did not exist) also ``fsync``-s the folder, so the new file survives a
    crash.
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(line)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:
        fsync_dir(path.parent)


def read_both(path: Path, head_path: Path) -> tuple[bytes, str | None]:
    """Return the log's bytes (empty if absent) and the head file's text (``None`` if absent)."""
    data = path.read_bytes() if path.exists() else b""
    head_text = head_path.read_text("utf-8") if head_path.exists() else None
    return data, head_text
