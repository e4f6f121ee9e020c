"""The hash chain and the head file: find the first divergence and say what it was.

:func:`find_problem` walks the log's lines from the first, checks every entry's hash, seq and
link to its predecessor, then the head anchor (and optionally one external head), and
classifies the first divergence as a :class:`~lab.governance.audit.report.Tamper` kind:
edited, deleted, inserted, reordered, truncated, a head mismatch or a malformed line.
:func:`ahead_of` tells an intact chain that merely runs past its head (an append interrupted
before the head was replaced) from everything else.
"""

from __future__ import annotations

import json

from lab.governance.audit.entries import GENESIS, AuditEntry, Head, entry_hash
from lab.governance.audit.report import Problem, Tamper


def ahead_of(lines: list[bytes], head: Head | None) -> Head | None:
    """If the log is an intact chain that merely continues past ``head``, return its last entry."""
    if not lines:
        return None
    try:
        last = AuditEntry.from_dict(json.loads(lines[-1]))
    except (ValueError, UnicodeDecodeError):
        return None
    tip = Head(last.seq, last.hash)
    if find_problem(lines, False, tip, head) is not None:
        return None  # broken somewhere, or does not contain the old head
    if head is not None and head.seq >= last.seq:
        return None
    return tip


def find_problem(
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


def entries_of(lines: list[bytes]) -> list[AuditEntry]:
    """Parse lines already known to be entries (after :func:`find_problem` passed)."""
    return [AuditEntry.from_dict(json.loads(raw)) for raw in lines]
