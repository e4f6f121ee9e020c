"""Anchored audit logs: attacks on the log and the ledger, caught by the installed ``lab``.

Each attack edits a real lab home the way someone with write access to ``$LAB_HOME`` (but not
to the key folder, ``$LAB_KEYS``) could, then runs ``.venv/bin/lab audit verify`` in a
subprocess: it must exit non-zero, name the kind of damage and what it compared against.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lab.governance import anchors
from lab.governance._common import canonical_json
from lab.governance.audit import GENESIS, AuditLog, Head, Tamper, entry_hash
from lab.governance.errors import AuditIntegrityError, AuditKeyError
from lab.governance.ledger import BudgetLedger
from lab.governance.reconcile import reconcile
from lab.governance.signing import KEYS_ENV, fingerprint
from models.privacy import PrivacyEvent
from tests.cli_helpers import run_lab

FS = "sme_platform@1"
EVENT = PrivacyEvent(1.0, 0.01, 100, unit="enterprise", mechanism="dp-sgd")


def _governed(home: Path) -> AuditLog:
    """A lab home with a cap, two spent jobs, one released, one open, and scoring calls."""
    log = AuditLog()
    with BudgetLedger() as ledger:
        ledger.set_cap(FS, "bank_1", epsilon=50.0, delta=1e-5)
        for job in ("job-a", "job-b", "job-c", "job-d"):
            ledger.reserve(FS, "bank_1", job, [EVENT])
        ledger.commit("job-a", [EVENT])
        ledger.commit("job-b", [EVENT], outcome="failed")
        ledger.release("job-c")
    for i in range(4):
        log.record("scoring_call", {"n_scored": i, "caller": "bank_1"})
    return log


def _lines(log: AuditLog) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.path.read_text().splitlines()]


def _write(log: AuditLog, entries: list[dict[str, Any]]) -> None:
    log.path.write_text("".join(canonical_json(e) + "\n" for e in entries))
    head = {"seq": entries[-1]["seq"], "hash": entries[-1]["hash"]} if entries else None
    if head is None:
        log.head_path.unlink(missing_ok=True)
    else:
        log.head_path.write_text(canonical_json(head) + "\n")


def _chain(entries: list[dict[str, Any]], sign: Callable[[str], str] | None = None) -> None:
    """Recompute prev/hash (and signatures, given a key) of every entry, in place."""
    prev = GENESIS
    for e in entries:
        e["prev"] = prev
        e["hash"] = entry_hash(e)
        if sign is not None:
            e["sig"] = sign(e["hash"])
        prev = e["hash"]


# -- the attacks of the issue, and a few more ------------------------------------------------


def truncate_and_rewrite_head(log: AuditLog) -> None:
    _write(log, _lines(log)[:-3])


def forge_whole_chain_unsigned(log: AuditLog) -> None:
    entries = [{k: v for k, v in e.items() if k not in ("key", "sig")} for e in _lines(log)[:5]]
    for e in entries:
        e["payload"] = {"n_scored": 0}
        e["type"] = "scoring_call"
    _chain(entries)
    _write(log, entries)


def forge_whole_chain_with_own_key(log: AuditLog) -> None:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    entries = _lines(log)
    for e in entries:
        e["key"] = fingerprint(raw)
    _chain(
        entries,
        lambda digest: base64.b64encode(key.sign(bytes.fromhex(digest))).decode(),
    )
    _write(log, entries)


def edit_middle_and_rechain(log: AuditLog) -> None:
    entries = _lines(log)
    entries[5]["payload"]["outcome"] = "failed"  # pretend job-a failed
    _chain(entries)  # every later hash recomputed, signatures kept
    _write(log, entries)


def delete_both_files(log: AuditLog) -> None:
    log.path.unlink()
    log.head_path.unlink()


def replace_with_empty_log(log: AuditLog) -> None:
    log.path.write_text("")
    log.head_path.unlink()


def release_a_spent_job_in_the_ledger(log: AuditLog) -> None:
    _sql("UPDATE budget_jobs SET state = 'released', outcome = NULL WHERE job_id = 'job-a'")


def delete_a_spend_from_the_ledger(log: AuditLog) -> None:
    _sql("DELETE FROM budget_jobs WHERE job_id = 'job-b'")


def raise_the_cap_in_the_ledger(log: AuditLog) -> None:
    _sql("UPDATE budget_caps SET epsilon = 500")


def _sql(statement: str) -> None:
    conn = sqlite3.connect(Path(os.environ["LAB_HOME"]) / "governance.db")
    with conn:
        conn.execute(statement)
    conn.close()


ATTACKS: list[tuple[Callable[[AuditLog], None], str]] = [
    (truncate_and_rewrite_head, "TAMPERED: truncated"),
    (forge_whole_chain_unsigned, "TAMPERED: forged at line 1"),
    (forge_whole_chain_with_own_key, "TAMPERED: forged at line 1"),
    (edit_middle_and_rechain, "TAMPERED: forged at line 6"),
    (delete_both_files, "TAMPERED: deleted"),
    (replace_with_empty_log, "TAMPERED: deleted"),
    (release_a_spent_job_in_the_ledger, "LEDGER EDITED: job job-a: state is 'released'"),
    (delete_a_spend_from_the_ledger, "LEDGER EDITED: job job-b: in the audit log"),
    (raise_the_cap_in_the_ledger, "LEDGER EDITED: cap sme_platform@1 x bank_1: epsilon is 500"),
]


@pytest.mark.parametrize(("attack", "shown"), ATTACKS, ids=[a.__name__ for a, _ in ATTACKS])
def test_the_installed_verify_detects_the_attack(
    attack: Callable[[AuditLog], None], shown: str, lab_home: Path
) -> None:
    log = _governed(lab_home)
    before = run_lab(["audit", "verify"], home=lab_home)
    assert before.returncode == 0, before.stdout + before.stderr
    assert "ok: governance.db matches the audit log" in before.stdout
    attack(log)
    done = run_lab(["audit", "verify"], home=lab_home)
    assert done.returncode == 1, done.stdout + done.stderr
    assert shown in " ".join(done.stdout.split()), done.stdout
    assert "compared against:" in done.stdout
    assert "Ed25519 signatures" in done.stdout


def test_verify_names_what_it_compared_against(lab_home: Path) -> None:
    log = _governed(lab_home)
    done = run_lab(["audit", "verify"], home=lab_home)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert f"hash chain of 12 entries in {log.path}" in text
    assert f"head file {log.head_path} (seq 12)" in text
    assert f"Ed25519 signatures (seq 1..12) with key {log.key_fingerprint()}" in text
    assert f"witness {log.keys.witness_path} (seq 12)" in text
    assert "2 cap(s)" not in text
    assert "1 cap(s) and 4 job(s)" in text


def test_ledger_edits_are_listed_by_reconcile(lab_home: Path) -> None:
    log = _governed(lab_home)
    release_a_spent_job_in_the_ledger(log)
    raise_the_cap_in_the_ledger(log)
    with BudgetLedger() as ledger:
        report = reconcile(ledger)
    assert {(d.subject, d.field) for d in report.differences} == {
        ("cap sme_platform@1 x bank_1", "epsilon"),
        ("job job-a", "state"),
        ("job job-a", "outcome"),
    }
    done = run_lab(["audit", "reconcile", "--json"], home=lab_home)
    assert done.returncode == 1
    body = json.loads(done.stdout)
    assert not body["ok"]
    assert len(body["differences"]) == 3
    job_a = next(d for d in body["differences"] if d["field"] == "state")
    assert job_a["evidence"].endswith("(budget_spent)")


def test_appends_fail_closed_after_truncation_or_deletion(lab_home: Path) -> None:
    log = _governed(lab_home)
    truncate_and_rewrite_head(log)
    with pytest.raises(AuditIntegrityError, match="witness"):
        log.record("scoring_call", {"n_scored": 1})
    delete_both_files(log)
    with pytest.raises(AuditIntegrityError, match="witness"):
        log.record("scoring_call", {"n_scored": 1})


def test_a_log_without_its_key_folder_is_unverified_and_refuses_appends(lab_home: Path) -> None:
    log = _governed(lab_home)
    shutil.rmtree(log.keys.folder)
    done = run_lab(["audit", "verify"], home=lab_home)
    assert done.returncode == 1
    assert "TAMPERED: unverified" in done.stdout
    with pytest.raises(AuditKeyError, match="signed"):
        log.record("scoring_call", {"n_scored": 1})


def _rewrite_as_key_holder(log: AuditLog) -> None:
    """Rewrite job-a's spend as failed with the key, and the witness: only anchors notice."""
    entries = _lines(log)
    entries[5]["payload"]["outcome"] = "failed"
    _chain(entries, log.keys.sign)
    _write(log, entries)
    witness = json.loads(log.keys.witness_path.read_text())
    witness["hash"] = entries[-1]["hash"]
    log.keys.witness_path.write_text(json.dumps(witness))
    assert log.verify().ok


def test_an_anchor_file_catches_a_key_holder_and_works_without_the_key_folder(
    lab_home: Path, tmp_path: Path
) -> None:
    log = _governed(lab_home)
    anchor = tmp_path / "elsewhere" / "anchor.json"
    anchor.parent.mkdir()
    done = run_lab(["audit", "anchor", "--out", str(anchor)], home=lab_home)
    assert done.returncode == 0
    body = json.loads(anchor.read_text())
    assert (body["seq"], body["key"]) == (12, log.key_fingerprint())
    assert "PRIVATE" not in anchor.read_text()
    assert run_lab(["audit", "anchor", "--out", str(anchor)], home=lab_home).returncode == 2
    # An auditor on another machine: no key folder, the anchor carries the public key.
    elsewhere = {KEYS_ENV: str(tmp_path / "no-keys-here")}
    done = run_lab(["audit", "verify", "--anchor", str(anchor)], home=lab_home, env=elsewhere)
    assert done.returncode == 0, done.stdout
    assert f"anchor file {anchor} (seq 12)" in " ".join(done.stdout.split())
    _rewrite_as_key_holder(log)
    done = run_lab(["audit", "verify", "--anchor", str(anchor)], home=lab_home)
    assert done.returncode == 1
    assert "does not have the hash anchored in file" in " ".join(done.stdout.split())


def test_the_job_runs_mlflow_head_catches_a_key_holder(lab_home: Path) -> None:
    from lab import tracking

    log = _governed(lab_home)
    tags = anchors.run_tags()
    assert tags == {
        tracking.TAG_AUDIT_HEAD: str(log.head()),
        tracking.TAG_AUDIT_KEY: log.key_fingerprint(),
    }
    assert anchors.from_mlflow(tracking.default_tracking_uri(), tags[tracking.TAG_AUDIT_KEY]) == []
    assert not (lab_home / "mlflow.db").exists()  # looking did not create a store
    target = tracking.target_for(None, "anchoring")
    with tracking.open_run(target, "job-1", tags):
        pass
    done = run_lab(["audit", "verify", "--mlflow"], home=lab_home)
    assert done.returncode == 0, done.stdout
    assert "anchor MLflow run" in done.stdout
    _rewrite_as_key_holder(log)
    done = run_lab(["audit", "verify", "--mlflow"], home=lab_home)
    assert done.returncode == 1
    assert "anchored in MLflow run" in " ".join(done.stdout.split())


def test_peer_heads_recorded_by_the_other_party_catch_a_key_holder(
    lab_home: Path, tmp_path: Path
) -> None:
    log = _governed(lab_home)
    peer = AuditLog(tmp_path / "bank_home" / "audit" / "log.jsonl")
    # What the job protocol does on the peer's side, at the start and end of a job.
    peer.record_peer_head(
        "platform", str(log.head()), "start", job_id="j1", key=log.key_fingerprint()
    )
    log.record("scoring_call", {"n_scored": 9})
    head = log.head()
    assert head is not None
    peer.record_peer_head("platform", head, "end", job_id="j1", key=log.key_fingerprint())
    recorded = peer.peer_heads(party="platform")
    assert [(h.seq, h.when, h.job_id) for h in recorded] == [(12, "start", "j1"), (13, "end", "j1")]
    assert anchors.from_peer_log(peer, "0" * 32) == []
    done = run_lab(["audit", "verify", "--peer-log", str(peer.path)], home=lab_home)
    assert done.returncode == 0, done.stdout
    assert done.stdout.count(f"anchor {peer.path} seq") == 2
    _rewrite_as_key_holder(log)
    done = run_lab(["audit", "verify", "--peer-log", str(peer.path)], home=lab_home)
    assert done.returncode == 1
    assert f"anchored in {peer.path} seq 1 (platform, job j1, start)" in " ".join(
        done.stdout.split()
    )


def test_peer_head_arguments_are_checked(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit" / "log.jsonl")
    head = Head(3, "a" * 64)
    with pytest.raises(ValueError, match="moment"):
        log.record_peer_head("bank_1", head, "middle", job_id="j")
    with pytest.raises(ValueError, match="fingerprint"):
        log.record_peer_head("bank_1", head, "start", job_id="j", key="xyz")
    with pytest.raises(ValueError, match="party name"):
        log.record_peer_head("../bank", head, "start", job_id="j")
    with pytest.raises(ValueError, match="SEQ:HASH"):
        log.record_peer_head("bank_1", "3:zz", "start", job_id="j")


def test_key_material_stays_in_the_key_folder(lab_home: Path) -> None:
    log = _governed(lab_home)
    keys = log.keys
    assert not keys.folder.is_relative_to(lab_home)
    assert stat.S_IMODE(keys.private_path.stat().st_mode) == 0o600
    private = keys.private_path.read_text()
    pem_body = "".join(private.splitlines()[1:-1])
    for path in lab_home.rglob("*"):
        if path.is_file():
            assert pem_body not in path.read_text(errors="ignore"), path
    assert "PRIVATE" not in keys.witness_path.read_text()


def test_a_key_folder_inside_the_audited_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEYS_ENV, str(tmp_path / "audit" / "keys"))
    with pytest.raises(AuditKeyError, match="inside the audited folder"):
        AuditLog(tmp_path / "audit" / "log.jsonl")


def test_a_log_written_before_signing_is_signed_from_its_next_entry(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit" / "log.jsonl")
    log.path.parent.mkdir(parents=True)
    legacy = [
        {"seq": i, "ts": "2026-01-01T00:00:00.000000Z", "type": "scoring_call",
         "actor": "old", "payload": {"n_scored": i}}
        for i in (1, 2)
    ]  # fmt: skip
    _chain(legacy)
    _write(log, legacy)
    report = log.verify()
    assert report.problem is not None
    assert report.problem.kind is Tamper.UNVERIFIED
    log.record("scoring_call", {"n_scored": 3})
    report = log.verify()
    assert report.ok, report.summary()
    assert "Ed25519 signatures (seq 3..3)" in " ".join(report.compared)
    # The unsigned prefix cannot be rewritten: entry 3 signs its predecessor's hash.
    entries = _lines(log)
    entries[0]["payload"] = {"n_scored": 100}
    _chain(entries[:2])
    _write(log, entries)
    assert log.verify().problem is not None
