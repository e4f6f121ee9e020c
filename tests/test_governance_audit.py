"""The audit log: every kind of tampering is detected and located; appends are safe."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.governance import events
from lab.governance._common import canonical_json
from lab.governance.audit import GENESIS, AuditLog, Head, Tamper, VerifyReport, entry_hash
from lab.governance.errors import AuditIntegrityError, AuditPayloadError
from lab.governance.signing import PublicKey

N = 6


def _fill(log: AuditLog, n: int = N) -> None:
    for i in range(n):
        log.record("alignment", {"job_id": f"job-{i}", "n_aligned": 100 + i}, "tester")


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    log = AuditLog(tmp_path / "audit" / "log.jsonl")
    _fill(log)
    return log


def _lines(log: AuditLog) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.path.read_text().splitlines()]


def _write(log: AuditLog, entries: list[dict[str, Any]]) -> None:
    log.path.write_text("".join(canonical_json(e) + "\n" for e in entries))


def _rehash(entry: dict[str, Any]) -> dict[str, Any]:
    entry = dict(entry)
    entry["hash"] = entry_hash(entry)
    return entry


def _problem(log: AuditLog) -> tuple[Tamper, int | None, int | None]:
    report = log.verify()
    assert not report.ok, "tampering went unnoticed"
    assert report.problem is not None
    assert "TAMPERED" in report.summary()
    return report.problem.kind, report.problem.line, report.problem.seq


def test_intact_log_verifies_and_entries_chain(log: AuditLog) -> None:
    report = log.verify()
    assert report.ok, report.summary()
    assert report.entries == N
    entries = list(log.entries())
    assert [e.seq for e in entries] == list(range(1, N + 1))
    assert entries[0].prev == GENESIS
    assert all(b.prev == a.hash for a, b in itertools.pairwise(entries))
    assert log.head() == Head(N, entries[-1].hash)
    assert entries[0].ts.endswith("Z")
    assert entries[0].actor == "tester"


def test_default_location_is_lab_home(lab_home: Path) -> None:
    log = AuditLog()
    log.record("scoring_call", {"n_scored": 3})
    assert (lab_home / "audit" / "log.jsonl").is_file()
    assert (lab_home / "audit" / "log.head").is_file()


def test_empty_log_is_ok(tmp_path: Path) -> None:
    assert AuditLog(tmp_path / "log.jsonl").verify().ok


def test_edited_field_is_located(log: AuditLog) -> None:
    entries = _lines(log)
    entries[2]["payload"]["n_aligned"] = 999
    _write(log, entries)
    assert _problem(log) == (Tamper.EDITED, 3, 3)


def test_edit_with_recomputed_hash_is_located(log: AuditLog) -> None:
    entries = _lines(log)
    entries[2]["actor"] = "someone-else"
    entries[2] = _rehash(entries[2])
    _write(log, entries)
    assert _problem(log) == (Tamper.EDITED, 3, 3)


def test_deleted_middle_entry_is_located(log: AuditLog) -> None:
    entries = _lines(log)
    del entries[2]
    _write(log, entries)
    kind, line, seq = _problem(log)
    assert (kind, line, seq) == (Tamper.DELETED, 3, 3)
    assert "seq 3 missing" in log.verify().summary()


def test_deleted_last_entry_is_detected_by_the_head(log: AuditLog) -> None:
    entries = _lines(log)
    _write(log, entries[:-1])
    assert _problem(log) == (Tamper.TRUNCATED, N, N)


def test_truncated_to_a_line_boundary(log: AuditLog) -> None:
    entries = _lines(log)
    _write(log, entries[:3])
    kind, _, seq = _problem(log)
    assert (kind, seq) == (Tamper.TRUNCATED, 4)
    assert "seq 4..6 were removed" in log.verify().summary()


def test_truncated_mid_line(log: AuditLog) -> None:
    data = log.path.read_bytes()
    log.path.write_bytes(data[: len(data) // 2])
    kind, line, _ = _problem(log)
    assert kind is Tamper.TRUNCATED
    assert line == data[: len(data) // 2].count(b"\n") + 1


def test_truncated_to_nothing(log: AuditLog) -> None:
    log.path.write_bytes(b"")
    assert _problem(log) == (Tamper.TRUNCATED, 1, 1)


def test_forged_insertion_with_recomputed_hash_is_located(log: AuditLog) -> None:
    entries = _lines(log)
    forged = {
        "seq": 4,
        "ts": entries[3]["ts"],
        "type": "budget_spent",
        "actor": "mallory",
        "payload": {"job_id": "ghost", "epsilon": 0.0},
        "prev": entries[2]["hash"],
    }
    entries.insert(3, _rehash(forged))
    _write(log, entries)
    assert _problem(log) == (Tamper.INSERTED, 4, 4)


def test_forged_twin_after_the_genuine_entry(log: AuditLog) -> None:
    entries = _lines(log)
    twin = _rehash({**entries[2], "actor": "mallory"})
    entries.insert(3, twin)
    _write(log, entries)
    assert _problem(log) == (Tamper.INSERTED, 4, 3)


def test_duplicated_entry_is_an_insertion(log: AuditLog) -> None:
    entries = _lines(log)
    entries.insert(4, entries[1])
    _write(log, entries)
    assert _problem(log) == (Tamper.INSERTED, 5, 2)


def test_forged_entry_with_an_unused_seq(log: AuditLog) -> None:
    entries = _lines(log)
    forged = _rehash({**entries[3], "seq": 99, "prev": entries[2]["hash"], "actor": "mallory"})
    entries.insert(3, forged)
    _write(log, entries)
    assert _problem(log) == (Tamper.INSERTED, 4, 99)


def test_appended_forgery_is_caught_by_the_head(log: AuditLog) -> None:
    entries = _lines(log)
    forged = _rehash({**entries[-1], "seq": N + 1, "prev": entries[-1]["hash"]})
    _write(log, [*entries, forged])
    assert _problem(log) == (Tamper.INSERTED, N + 1, N + 1)


@pytest.mark.parametrize(("first", "second"), [(2, 3), (1, 4), (0, N - 1)])
def test_swapped_entries_are_reordered(log: AuditLog, first: int, second: int) -> None:
    entries = _lines(log)
    entries[first], entries[second] = entries[second], entries[first]
    _write(log, entries)
    kind, line, seq = _problem(log)
    assert kind is Tamper.REORDERED
    assert line == first + 1
    assert seq == second + 1


def test_edited_head_hash(log: AuditLog) -> None:
    head = json.loads(log.head_path.read_text())
    head["hash"] = "f" * 64
    log.head_path.write_text(json.dumps(head))
    kind, _, _ = _problem(log)
    assert kind is Tamper.HEAD_MISMATCH


@pytest.mark.parametrize("seq", [N - 2, N + 3])
def test_edited_head_seq(log: AuditLog, seq: int) -> None:
    head = json.loads(log.head_path.read_text())
    head["seq"] = seq
    log.head_path.write_text(json.dumps(head))
    kind, _, _ = _problem(log)
    assert kind is Tamper.HEAD_MISMATCH


def test_missing_or_garbled_head(log: AuditLog) -> None:
    log.head_path.write_text("not json")
    assert _problem(log)[0] is Tamper.HEAD_MISMATCH
    log.head_path.unlink()
    assert _problem(log)[0] is Tamper.HEAD_MISMATCH


def test_last_entry_rewritten_with_recomputed_hash(log: AuditLog) -> None:
    entries = _lines(log)
    entries[-1] = _rehash({**entries[-1], "payload": {"n_aligned": 0}})
    _write(log, entries)
    assert _problem(log)[0] is Tamper.HEAD_MISMATCH


def test_malformed_line_in_the_middle(log: AuditLog) -> None:
    raw = log.path.read_text().splitlines()
    raw[1] = "{not json"
    log.path.write_text("\n".join(raw) + "\n")
    assert _problem(log) == (Tamper.MALFORMED, 2, 2)


def _rewrite_from_seq_3(log: AuditLog, *, sign: bool) -> None:
    """Rewrite from seq 3 on, recomputing every hash and the head (and, with the key, the sigs)."""
    entries = _lines(log)
    for i in range(2, N):
        entries[i]["payload"]["n_aligned"] = 0
        entries[i]["prev"] = entries[i - 1]["hash"]
        entries[i] = _rehash(entries[i])
        if sign:
            entries[i]["sig"] = log.keys.sign(entries[i]["hash"])
    _write(log, entries)
    log.head_path.write_text(canonical_json({"seq": N, "hash": entries[-1]["hash"]}))


def test_consistent_rewrite_breaks_the_signatures(log: AuditLog) -> None:
    _rewrite_from_seq_3(log, sign=False)
    kind, line, seq = _problem(log)
    assert (kind, line, seq) == (Tamper.FORGED, 3, 3)
    assert "does not verify" in str(log.verify().problem)


def test_a_signature_in_another_base64_spelling_is_refused(log: AuditLog) -> None:
    """Base64's last character before the padding has unused bits: ``...w==`` and ``...0==``
    decode to the same 64 bytes. Found by :func:`test_any_damage_is_detected` (a byte changed
    to ``0`` went unnoticed); only the canonical spelling verifies now."""
    entries = _lines(log)
    sig = entries[2]["sig"]
    assert sig.endswith("==")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(sig[-3])
    other = alphabet[(last & ~0b1111) | ((last + 1) & 0b1111)]  # same 2 high bits: same bytes
    entries[2]["sig"] = sig[:-3] + other + "=="
    _write(log, entries)
    kind, line, seq = _problem(log)
    assert (kind, line, seq) == (Tamper.FORGED, 3, 3)


def test_rewrite_by_a_key_holder_needs_the_witness_or_an_external_anchor(log: AuditLog) -> None:
    anchor = log.head()
    assert anchor is not None
    _rewrite_from_seq_3(log, sign=True)
    # The witness in the key folder still names the genuine last entry.
    assert _problem(log)[0] is Tamper.HEAD_MISMATCH
    assert "witness" in str(log.verify().problem)
    # Whoever can also rewrite the witness is caught only by an anchor kept elsewhere.
    witness = json.loads(log.keys.witness_path.read_text())
    witness["hash"] = _lines(log)[-1]["hash"]
    log.keys.witness_path.write_text(json.dumps(witness))
    assert log.verify().ok
    report = log.verify(expected_head=anchor)
    assert report.problem is not None
    assert report.problem.kind is Tamper.HEAD_MISMATCH
    assert report.problem.seq == N
    assert "--expect-head" in report.problem.detail


def test_external_anchor_parsing() -> None:
    head = Head.parse(f"12:{'a' * 64}")
    assert head == Head(12, "a" * 64)
    assert Head.parse(str(head)) == head
    for bad in ("12", "x:" + "a" * 64, "0:" + "a" * 64, "3:abc"):
        with pytest.raises(AuditPayloadError, match="SEQ:HASH"):
            Head.parse(bad)


def test_append_refused_after_tampering(log: AuditLog) -> None:
    entries = _lines(log)
    _write(log, entries[:-1])
    with pytest.raises(AuditIntegrityError, match="does not match the head"):
        log.record("alignment", {"n_aligned": 1})
    log.path.write_bytes(log.path.read_bytes()[:-5])  # torn last line
    with pytest.raises(AuditIntegrityError):
        log.record("alignment", {"n_aligned": 1})


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"ids": ["E1", "E2"]}, "enterprise ids"),
        ({"nested": {"enterprise_id": "E1"}}, "enterprise ids"),
        ({"n": float("nan")}, "finite"),
        ({"n": object()}, "not a JSON value"),
        ({"sizes": list(range(5000))}, "list of 5000"),
        ({"blob": "x" * 100_000}, "bytes"),
        ({1: "x"}, "non-string key"),
    ],
)
def test_payloads_that_must_not_be_logged(
    tmp_path: Path, payload: dict[Any, Any], match: str
) -> None:
    log = AuditLog(tmp_path / "log.jsonl")
    with pytest.raises(AuditPayloadError, match=match):
        log.record("alignment", payload)
    assert not log.path.exists()


def test_unknown_type_and_empty_actor(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "log.jsonl")
    with pytest.raises(AuditPayloadError, match="unknown audit event type 'oops'"):
        log.record("oops", {})
    with pytest.raises(AuditPayloadError, match="actor is empty"):
        log.record("alignment", {}, actor="  ")


def test_payload_is_copied(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "log.jsonl")
    payload: dict[str, Any] = {"sizes": [1, 2]}
    entry = log.record("alignment", payload)
    payload["sizes"].append(3)
    assert entry.payload == {"sizes": [1, 2]}
    assert log.verify().ok


def test_typed_event_helpers(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "log.jsonl")
    events.job_started(
        log,
        job_id="j1",
        config_hash="sha256:" + "0" * 64,
        kind="vertical",
        model="secureboost",
        feature_sets=["sme@1"],
        banks=["bank_1"],
        purpose="credit_risk_modeling",
        privacy={"key_bits": 2048, "psi_reveal": "both"},
    )
    events.alignment(
        log, job_id="j1", n_platform=100, n_authorized=90, n_bank=50, n_aligned=40, reveal="both"
    )
    events.model_registered(log, job_id="j1", registry="bank_1", model_name="m", version="1")
    events.job_finished(log, job_id="j1", metrics={"test_auc": 0.7}, wall_seconds=1.5)
    events.job_failed(log, job_id="j2", stage="psi", error="boom", data_touched=True)
    events.scoring_call(log, model="m/1", caller="bank_1", purpose="pre_loan_screening", n_scored=3)
    types = [e.type for e in log.entries()]
    assert types == [
        "job_started",
        "alignment",
        "model_registered",
        "job_finished",
        "job_failed",
        "scoring_call",
    ]
    assert next(log.entries("alignment")).payload["n_unauthorized_dropped"] == 10
    assert log.verify().ok


def _append_many(path: str, worker: int, count: int) -> None:
    log = AuditLog(Path(path))
    for i in range(count):
        log.record("scoring_call", {"worker": worker, "i": i, "n_scored": 1}, f"w{worker}")


def test_concurrent_appends_from_processes_keep_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "log.jsonl"
    workers, per_worker = 4, 25
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_append_many, args=(str(path), w, per_worker)) for w in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    log = AuditLog(path)
    report = log.verify()
    assert report.ok, report.summary()
    entries = list(log.entries())
    assert [e.seq for e in entries] == list(range(1, workers * per_worker + 1))
    seen = {(e.payload["worker"], e.payload["i"]) for e in entries}
    assert len(seen) == workers * per_worker


# -- property: any single-point damage is detected ----------------------------------------------


def _pristine() -> tuple[bytes, bytes, PublicKey]:
    # Built at import, before any fixture: its key folder is explicit (never ~/.config).
    with tempfile.TemporaryDirectory() as folder:
        log = AuditLog(Path(folder) / "audit" / "log.jsonl", keys_root=Path(folder) / "keys")
        _fill(log, 5)
        public = log.keys.public()
        assert public is not None
        return log.path.read_bytes(), log.head_path.read_bytes(), public


PRISTINE = _pristine()


def _verify_copy(raw: bytes, head: bytes) -> VerifyReport:
    """Verify a copy of the pristine log elsewhere, with its public key (as from an anchor)."""
    with tempfile.TemporaryDirectory() as folder:
        log = AuditLog(Path(folder) / "audit" / "log.jsonl", keys_root=Path(folder) / "keys")
        log.path.parent.mkdir()
        log.path.write_bytes(raw)
        log.head_path.write_bytes(head)
        return log.verify(public_key=PRISTINE[2])


def test_an_undamaged_copy_verifies() -> None:
    report = _verify_copy(PRISTINE[0], PRISTINE[1])
    assert report.ok, report.summary()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_damage_is_detected(data: st.DataObject) -> None:
    raw, head, _ = PRISTINE
    lines = raw.decode().splitlines(keepends=True)
    op = data.draw(st.sampled_from(["byte", "delete", "swap", "duplicate", "truncate"]))
    if op == "byte":
        pos = data.draw(st.integers(0, len(raw) - 2))
        char = data.draw(st.sampled_from(b"0123456789abcdefxyz"))
        if raw[pos] == char or raw[pos : pos + 1] == b"\n":
            return
        damaged = raw[:pos] + bytes([char]) + raw[pos + 1 :]
    elif op == "delete":
        i = data.draw(st.integers(0, len(lines) - 1))
        damaged = "".join(lines[:i] + lines[i + 1 :]).encode()
    elif op == "swap":
        i = data.draw(st.integers(0, len(lines) - 2))
        j = data.draw(st.integers(i + 1, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
        damaged = "".join(lines).encode()
    elif op == "duplicate":
        i = data.draw(st.integers(0, len(lines) - 1))
        j = data.draw(st.integers(0, len(lines)))
        damaged = "".join([*lines[:j], lines[i], *lines[j:]]).encode()
    else:
        damaged = raw[: data.draw(st.integers(0, len(raw) - 1))]
    report = _verify_copy(damaged, head)
    assert not report.ok, f"{op} went unnoticed"
    assert report.problem is not None
    assert report.problem.kind is not Tamper.UNVERIFIED


# -- recovery after a crash -----------------------------------------------------------------------


def test_recover_drops_a_torn_line(log: AuditLog) -> None:
    with log.path.open("ab") as fh:
        fh.write(b'{"seq":7,"ts":"2026')  # the writer died mid-line
    with pytest.raises(AuditIntegrityError, match="lab audit recover"):
        log.record("alignment", {"n_aligned": 1})
    done = log.recover()
    assert done == ["dropped a torn last line of 19 bytes"]
    assert log.verify().ok
    last = list(log.entries())[-1]
    assert (last.seq, last.type) == (N + 1, "audit_recovered")
    log.record("alignment", {"n_aligned": 1})
    assert log.verify().ok


def test_recover_adopts_unanchored_entries_only_when_named(log: AuditLog) -> None:
    entries = _lines(log)
    unanchored = _rehash({**entries[-1], "seq": N + 1, "prev": entries[-1]["hash"]})
    forged = dict(unanchored)
    _write(log, [*entries, forged])  # an unanchored entry nobody signed is never adopted
    with pytest.raises(AuditIntegrityError, match="signature does not verify"):
        log.recover(Head(N + 1, forged["hash"]))
    unanchored["sig"] = log.keys.sign(unanchored["hash"])
    _write(log, [*entries, unanchored])  # appended, then the writer died before the head
    assert _problem(log)[0] is Tamper.INSERTED
    with pytest.raises(AuditIntegrityError, match=f"--adopt {N + 1}:{unanchored['hash']}"):
        log.recover()
    with pytest.raises(AuditIntegrityError):
        log.recover(Head(N + 1, "0" * 64))
    assert log.recover(Head(N + 1, unanchored["hash"])) == [
        f"adopted entries up to seq {N + 1} after the head anchor"
    ]
    assert log.verify().ok


@pytest.mark.parametrize("damage", ["delete_middle", "edit", "truncate"])
def test_recover_refuses_real_tampering(log: AuditLog, damage: str) -> None:
    entries = _lines(log)
    if damage == "delete_middle":
        del entries[2]
    elif damage == "edit":
        entries[1]["actor"] = "mallory"
    else:
        entries = entries[:-2]
    _write(log, entries)
    with pytest.raises(AuditIntegrityError, match="restore from backup"):
        log.recover()
    assert not log.verify().ok


def test_recover_on_an_intact_log_does_nothing(log: AuditLog) -> None:
    assert log.recover() == []
    assert len(list(log.entries())) == N
