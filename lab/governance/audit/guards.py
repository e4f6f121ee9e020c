"""What an append checks before it writes, under the lock: the log fails closed.

An append builds only on a log whose last entry matches the head anchor and is signed by this
log's key (:func:`anchored_tail`), and that is not behind the witness in its key folder
(:func:`signing_state`, which also creates the key pair for a log that has none). Anything
else (a torn line, an unanchored entry, a truncation, a missing key folder) is refused with
the fix: ``lab audit verify``, then ``lab audit recover`` or a restore from backup.
"""

from __future__ import annotations

import json
from pathlib import Path

from lab.governance.audit.entries import AuditEntry, Head, entry_hash
from lab.governance.audit.files import read_head, read_last_line
from lab.governance.errors import AuditIntegrityError, AuditKeyError
from lab.governance.signing import KEYS_ENV, AuditKeys, PublicKey, Witness


def anchored_tail(
    path: Path, head_path: Path, keys: AuditKeys
) -> tuple[Head | None, AuditEntry | None]:
    """Return the head and last entry after checking that they match (under the lock)."""
    head = read_head(head_path)
    raw = read_last_line(path)
    fix = (
        "run `lab audit verify`; after a crash `lab audit recover` repairs an interrupted "
        f"append, anything else needs {path.name} restored from backup"
    )
    if head is None and raw is None:
        if head_path.exists():
            raise AuditIntegrityError(f"{head_path} is unreadable; {fix}")
        return None, None
    if head is None:
        raise AuditIntegrityError(
            f"{path} has entries but its head anchor is missing or unreadable; {fix}"
        )
    if raw is None:
        raise AuditIntegrityError(
            f"{path} is empty or missing but the head anchors seq {head.seq}; {fix}"
        )
    try:
        entry = AuditEntry.from_dict(json.loads(raw))
    except (ValueError, UnicodeDecodeError) as exc:
        raise AuditIntegrityError(f"{path}: the last line is not an entry; {fix}") from exc
    if (
        entry.seq != head.seq
        or entry.hash != head.hash
        or entry_hash(entry.to_dict()) != entry.hash
    ):
        raise AuditIntegrityError(
            f"{path}: the last entry (seq {entry.seq}) does not match the head anchor "
            f"(seq {head.seq}); refusing to append; {fix}"
        )
    if entry.signed:
        public = keys.public()
        if public is not None and not (
            entry.key == public.fingerprint and public.verify(entry.sig or "", entry.hash)
        ):
            raise AuditIntegrityError(
                f"{path}: the last entry (seq {entry.seq}) is not signed by this log's "
                f"key {public.fingerprint}; refusing to append; {fix}"
            )
    return head, entry


def signing_state(
    path: Path, keys: AuditKeys, head: Head | None, last: AuditEntry | None, seq: int
) -> tuple[PublicKey, Witness]:
    """The key to sign with and the witness, creating both for a log that has none."""
    fix = (
        "run `lab audit verify`; restore the log (or the key folder) from backup, or point "
        f"{KEYS_ENV} at this log's key folder"
    )
    public = keys.public()
    if public is None:
        if last is not None and last.signed:
            raise AuditKeyError(
                f"{path} is signed (key {last.key}) but its key folder "
                f"{keys.folder} has no key; refusing to append; {fix}"
            )
        public = keys.create(signed_from=seq)
    witness = keys.witness()
    if witness is None:
        raise AuditKeyError(f"the witness {keys.witness_path} is missing; {fix}")
    n = 0 if head is None else head.seq
    rewritten = (
        head is not None
        and witness.seq == n
        and witness.seq >= witness.signed_from
        and witness.hash != head.hash
    )
    if witness.seq > n or rewritten:
        raise AuditIntegrityError(
            f"{path} ends at seq {n} but the witness {keys.witness_path} records "
            f"seq {witness.seq}: the log was truncated, rewritten or deleted; refusing to "
            f"append; {fix}"
        )
    if last is not None and last.signed and last.key != public.fingerprint:
        raise AuditKeyError(
            f"{path}: the last entry is signed by key {last.key}, not by this log's key "
            f"{public.fingerprint}; refusing to append; {fix}"
        )
    return public, witness
