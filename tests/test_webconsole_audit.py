"""The console's view of the audit log: followed incrementally, verified incrementally.

What an outsider who can write ``$LAB_HOME`` might try while the console runs (edit an entry
already verified, append a forged one, cut the log) must show on the Audit page at once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.governance import events
from lab.governance.audit import AuditLog
from lab.governance.report import jobs_from_audit
from lab.webconsole.audit_index import AuditIndex
from lab.webconsole.verification import ChainVerifier


def _jobs(log: AuditLog, first: int, n: int) -> None:
    for k in range(first, first + n):
        job = f"job-{k}"
        events.job_started(
            log,
            job_id=job,
            config_hash="sha256:" + "0" * 64,
            kind="vertical",
            model="secureboost",
            feature_sets=["fs@1"],
            banks=["bank"],
            purpose="credit_risk_modeling",
            privacy={"key_bits": 2048},
        )
        if k % 3 == 2:
            events.job_refused_before_start(
                log,
                job_id=f"refused-{k}",
                party="platform",
                bank="bank",
                purpose="credit_risk_modeling",
                feature_sets=["fs@1"],
                reason="budget",
            )
        events.job_finished(log, job_id=job, metrics={"test_auc": 0.7})


def test_the_index_reads_only_what_was_appended_and_agrees_with_the_report(
    lab_home: Path,
) -> None:
    log = AuditLog()
    _jobs(log, 0, 4)
    index = AuditIndex(log.path)
    index.refresh()
    assert index.jobs.jobs() == jobs_from_audit(log)
    indexed = index.indexed_bytes
    _jobs(log, 4, 3)
    index.refresh()
    assert index.indexed_bytes > indexed
    assert index.jobs.jobs() == jobs_from_audit(log)
    assert index.n_entries == len(list(log.entries()))
    assert len(index.alerts) == 2
    [entry] = index.entries(index.n_entries - 1, index.n_entries)
    assert entry.seq == index.n_entries
    # A log replaced by a shorter one is indexed again from the start.
    lines = log.path.read_bytes().splitlines(keepends=True)
    log.path.write_bytes(b"".join(lines[:3]))
    index.refresh()
    assert index.n_entries == 3


def test_appended_entries_are_verified_and_an_edit_is_caught_at_once(lab_home: Path) -> None:
    log = AuditLog()
    _jobs(log, 0, 3)
    verifier = ChainVerifier(log.path)
    verifier.start()
    assert verifier.wait(60).status == "intact"
    _jobs(log, 3, 2)
    state = verifier.check()
    assert state.status == "intact"
    assert state.entries == len(list(log.entries()))
    # Someone edits an entry that was already verified (and recomputes nothing).
    data = log.path.read_bytes()
    edited = data.replace(b'"test_auc":0.7', b'"test_auc":0.9', 1)
    assert edited != data
    log.path.write_bytes(edited)
    assert verifier.check().status == "tampered"
    final = verifier.wait(60)
    assert final.status == "tampered"
    assert "edited" in final.summary or "hash" in final.summary


def test_a_forged_appended_entry_is_caught(lab_home: Path) -> None:
    log = AuditLog()
    _jobs(log, 0, 2)
    verifier = ChainVerifier(log.path)
    verifier.start()
    assert verifier.wait(60).status == "intact"
    last = json.loads(log.path.read_bytes().splitlines()[-1])
    forged = {**last, "seq": last["seq"] + 1, "prev": last["hash"], "type": "job_finished"}
    with log.path.open("ab") as fh:
        fh.write(json.dumps(forged).encode() + b"\n")
    assert verifier.check().status == "tampered"
    assert verifier.wait(60).status == "tampered"


@pytest.mark.slow
def test_appends_during_a_full_verification_are_not_read_as_a_truncation(
    lab_home: Path,
) -> None:
    """The witness is read with the log (it once was read after: a page view appended in
    between left it ahead of the snapshot, and the console said TRUNCATED)."""
    import threading

    log = AuditLog()
    _jobs(log, 0, 150)
    stop = threading.Event()

    def append() -> None:
        while not stop.is_set():
            log.record("console_page_view", {"page": "audit", "path": "/audit"}, actor="ada")

    writer = threading.Thread(target=append)
    writer.start()
    try:
        reports = [log.verify() for _ in range(20)]
    finally:
        stop.set()
        writer.join()
    assert all(r.ok for r in reports), [r.summary() for r in reports]
