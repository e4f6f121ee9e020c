"""Ctrl-C on a running ``lab train``: it stops within seconds, leaves no process, registers
nothing, and the platform's node charges what it released (installed ``lab``, real runtime)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from lab.demo import publish_feature_set, synthesize
from tests.conftest import EXPERIMENTS, TEST_KEY_POLICY, sme_parties

pytestmark = pytest.mark.slow

LAB = str(Path(sys.executable).parent / "lab")


@contextmanager
def _started(args: list[str], home: Path) -> Iterator[subprocess.Popen[str]]:
    """Run the installed ``lab``; whatever the test's outcome, nothing it started survives it."""
    env = {**os.environ, "LAB_HOME": str(home)}
    job = subprocess.Popen(
        [LAB, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen: set[int] = set()
    try:
        yield job
    finally:
        seen |= _family(job.pid)
        for pid in [job.pid, *sorted(seen)]:
            with suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        with suppress(subprocess.TimeoutExpired):
            job.communicate(timeout=30)


def _runs_a_party(process: psutil.Process) -> bool:
    """Whether ``process`` is a Ray worker acting for a party (zombies and the gone: no)."""
    try:
        return "ClientAppActor" in " ".join(process.cmdline()) or process.name().startswith(
            "ray::ClientApp"
        )
    except psutil.Error:
        return False


def _family(pid: int) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def _wait_for(condition: object, job: subprocess.Popen[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert job.poll() is None, job.communicate()
        assert time.monotonic() < deadline, "the job never got there"
        time.sleep(0.2)


def _interrupt(job: subprocess.Popen[str]) -> tuple[float, str, set[int]]:
    """SIGINT the job; return seconds to exit, its stderr, and the processes it had started."""
    family = _family(job.pid)
    started = time.monotonic()
    job.send_signal(signal.SIGINT)
    try:
        _, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    return time.monotonic() - started, err, family


def _registered(home: Path) -> list[object]:
    from mlflow.tracking import MlflowClient

    if not (home / "mlflow.db").exists():
        return []
    return list(
        MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}").search_registered_models()
    )


def test_ctrl_c_stops_an_embedded_job_and_every_process_it_started(lab_home: Path) -> None:
    args = ["train", str(EXPERIMENTS / "breast_secureboost.yaml"), "--set", "model.n_estimators=60"]
    with _started(args, lab_home) as job:
        # Mid-training: Ray's workers act for the parties.
        _wait_for(
            lambda: any(_runs_a_party(p) for p in psutil.Process(job.pid).children(recursive=True)),
            job,
        )
        time.sleep(8)
        seconds, err, family = _interrupt(job)
    assert job.returncode == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: job 'breast-secureboost' interrupted"), err
    assert "Traceback" not in err
    assert family
    assert not [pid for pid in family if psutil.pid_exists(pid) and _alive(pid)]
    assert _registered(lab_home) == []
    print(f"interrupted embedded job exited after {seconds:.1f} s")  # figure for the issue note


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _governed(tmp_path: Path, lab_home: Path, ref: str, model: dict[str, object]) -> Path:
    """A published synthetic set every enterprise authorised, a cap of 50, and a job on it."""
    from lab.governance.authorizations import AuthorizationRegistry
    from lab.governance.ledger import BudgetLedger
    from lab.governance.policy import set_policy

    folder = tmp_path / "sme"
    synthesize(folder, n_enterprises=1500, n_banks=1, bank_size=700, unmatched_rate=0.1, seed=9)
    publish_feature_set(folder, ref)
    set_policy(list(TEST_KEY_POLICY), lab_home)
    ids = pd.read_csv(folder / "platform.csv", usecols=["enterprise_id"], dtype=str)
    groups = sorted(
        {
            str(v["group"])
            for v in json.loads((folder / "columns.json").read_text()).values()
            if v.get("party") == "platform"
        }
    )
    today = datetime.now(UTC).date()
    pd.DataFrame(
        {
            "enterprise_id": ids["enterprise_id"],
            "bank": "bank",
            "purpose": "credit_risk_modeling",
            "valid_from": (today - timedelta(days=1)).isoformat(),
            "valid_to": (today + timedelta(days=30)).isoformat(),
            "groups": ";".join(groups),
            "personal_consent": "true",
        }
    ).to_csv(folder / "auth.csv", index=False)
    with AuthorizationRegistry() as registry:
        registry.import_csv(folder / "auth.csv")
    with BudgetLedger() as ledger:
        ledger.set_cap(ref, "bank", epsilon=50.0, delta=1e-5)
    config = {
        "name": "stopped",
        "kind": "vertical",
        "parties": sme_parties(),
        "model": model,
        "crypto": {"key_bits": 512, "insecure_test_keys": True},
        "alignment": {"id_scheme": "uscc", "min_intersection": 10},
    }
    (folder / "stopped.yaml").write_text(yaml.safe_dump(config))
    return folder / "stopped.yaml"


def _stop_after_alignment(config: Path, lab_home: Path) -> tuple[float, str, set[int], int]:
    """Ctrl-C a running job 3 s after its alignment was audited."""
    from lab.governance.audit import AuditLog

    log = AuditLog()
    with _started(["train", str(config)], lab_home) as job:
        _wait_for(
            lambda: log.head() is not None and any(True for _ in log.entries("alignment")), job
        )
        time.sleep(3)
        seconds, err, family = _interrupt(job)
    return seconds, err, family, int(job.returncode)


def _audited_job(lab_home: Path, tmp_path: Path) -> tuple[dict[str, object], str]:
    """The one job of the audit log as the auditor's report shows it, and the report's text."""
    import html

    from lab.governance.audit import AuditLog
    from lab.governance.report import jobs_from_audit, write_report

    [job] = jobs_from_audit(AuditLog())
    return job, html.unescape(write_report(tmp_path / "report.html").read_text())


def test_ctrl_c_on_a_governed_job_commits_what_the_platform_released(
    tmp_path: Path, lab_home: Path
) -> None:
    from lab.governance.audit import AuditLog
    from lab.governance.ledger import BudgetLedger

    ref = "sme_stop@1"
    model = {"type": "secureboost", "n_estimators": 200, "max_depth": 3, "max_bin": 8}
    config = _governed(tmp_path, lab_home, ref, {**model, "dp_epsilon": 8.0})
    seconds, err, family, code = _stop_after_alignment(config, lab_home)
    assert code == 1, err
    assert "interrupted" in err.strip().splitlines()[-1]
    assert not [pid for pid in family if _alive(pid)]
    assert _registered(lab_home) == []
    # The platform's node heard job/end and committed the releases it had made, as failed.
    with BudgetLedger() as ledger:
        [record] = ledger.jobs()
        _, spent = ledger.epsilon_of(record)
    assert (record.state, record.outcome) == ("committed", "failed")
    assert record.actual_events is not None
    made = sum(e.steps for e in record.actual_events)
    assert 0 < made < sum(e.steps for e in record.planned_events)
    types = [e.type for e in AuditLog().entries()]
    assert "job_failed" in types
    assert "model_registered" not in types
    # The auditor sees how it ended and what it was charged: those releases, not the plan.
    job, report = _audited_job(lab_home, tmp_path)
    assert job["status"] == "interrupted"
    assert spent is not None
    assert f"ε={spent:.3f} ({ref})" in report
    print(f"interrupted governed job exited after {seconds:.1f} s, {made} releases charged")


def test_ctrl_c_before_the_first_release_charges_nothing(tmp_path: Path, lab_home: Path) -> None:
    from lab.governance.ledger import BudgetLedger

    ref = "sme_stop@1"
    model = {"type": "secureboost", "n_estimators": 200, "max_depth": 3, "max_bin": 8}
    config = _governed(tmp_path, lab_home, ref, {**model, "dp_epsilon": 8.0})
    journal = lab_home / "node-jobs"
    with _started(["train", str(config)], lab_home) as job:
        # The platform's node reserved at hello (and journaled it, no release yet); alignment,
        # the split, the baseline and the model's set-up still come before its first release.
        _wait_for(lambda: journal.is_dir() and any(journal.iterdir()), job)
        _, err, family = _interrupt(job)
    assert job.returncode == 1, err
    assert "interrupted" in err.strip().splitlines()[-1]
    assert not [pid for pid in family if _alive(pid)]
    with BudgetLedger() as ledger:
        [record] = ledger.jobs()
        [status] = ledger.status()
    # Released if it stopped before PSI, else committed with no release: either way, nothing.
    assert record.state in ("released", "committed")
    assert not record.actual_events
    assert (status.spent_epsilon, status.reserved_epsilon, status.remaining_epsilon) == (0, 0, 50)
    job_seen, report = _audited_job(lab_home, tmp_path)
    assert job_seen["status"] == "interrupted"
    assert f"ε=0.000{', released' if record.state == 'released' else ''} ({ref})" in report
