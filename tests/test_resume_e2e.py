"""A party killed mid-job, then ``lab train --resume``: the same model as an uninterrupted run.

Real processes, real runtimes: the embedded runtime (Flower simulation, Ray workers) killed as a
whole with SIGKILL (coordinator and every party), and a ``lab up`` deployment on loopback whose
platform SuperNode and ClientApp worker are killed with SIGKILL, then the coordinator restarted
(``lab down``/``lab up``). Small data, 512-bit test keys; the reference model is the same job
run uninterrupted through the in-process transport. Bad input to ``--resume`` is checked
through the installed ``lab`` in a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest
import yaml
from mlflow.tracking import MlflowClient

from federated.driver import run_job
from federated.party import DictStore, PartyRuntime
from federated.protocols import party_protocols
from federated.transport import InProcessTransport
from lab.cli import EXIT_INPUT, run
from lab.deploy import processes
from lab.deploy.deployment import down
from lab.deploy.state import DeploymentState
from tests.conftest import TEST_LIMITS, allow_test_keys, make_vertical, vertical_config

LAB = str(Path(sys.executable).parent / "lab")
#: Trees of the job: killed after the first, so the resumed run still has three to train.
TREES = 4


def _experiment(folder: Path) -> Path:
    make_vertical(folder, n=300)
    config = vertical_config()
    config["model"] = {"type": "secureboost", "n_estimators": TREES, "max_depth": 2, "max_bin": 8}
    config["crypto"] = {"key_bits": 512, "insecure_test_keys": True}
    config["runtime"] = {"message_timeout": 120.0}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _reference_trees(experiment: Path, stores: Path) -> list[Any]:
    """The bank's trees of the same job run uninterrupted (in-process transport)."""
    from lab.config import load_experiment

    exp = load_experiment(experiment, [])
    spec = exp.job_spec(job_id="0000000000000000")
    runtimes = {
        p.name: PartyRuntime(
            p.__class__(p.name, p.role, p.data, store=stores / p.name),
            DictStore(),
            party_protocols(),  # type: ignore[arg-type]
            disclose_errors=True,
            limits=TEST_LIMITS,
        )
        for p in exp.bindings()
    }
    result = run_job(spec, InProcessTransport(runtimes))
    trees: list[Any] = json.loads(Path(result.joint.details["bank_part"]["path"]).read_text())[
        "trees"
    ]
    return trees


def _only_bank_part(models: Path) -> list[Any]:
    [part] = list(models.glob("*.json"))
    trees: list[Any] = json.loads(part.read_text())["trees"]
    return trees


def _start_training(args: list[str], home: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start the installed ``lab train`` (output to ``log``); return it and its job id."""
    env = {**os.environ, "LAB_HOME": str(home)}
    with log.open("wb") as out:
        proc = subprocess.Popen([LAB, "train", *args], env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 120
    while True:
        found = re.search(r"^starting job ([0-9a-f]{16}) ", log.read_text(errors="replace"), re.M)
        if found:
            return proc, found.group(1)
        assert proc.poll() is None, log.read_text(errors="replace")
        assert time.monotonic() < deadline, "lab train printed no job id"
        time.sleep(0.05)


def _wait_for(path: Path, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 300
    while not path.is_file():
        assert proc.poll() is None, f"lab train ended ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"{what} never appeared"
        time.sleep(0.02)


def _kill(pids: list[int]) -> None:
    """SIGKILL every process of ``pids`` and their descendants, found before any dies."""
    family: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            family[pid] = root
            family.update({c.pid: c for c in root.children(recursive=True)})
        except psutil.Error:
            continue
    for proc in family.values():
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            continue
    psutil.wait_procs(list(family.values()), timeout=30)


def _audit_types(home: Path) -> list[str]:
    from lab.governance.audit import AuditLog

    log = AuditLog(home / "audit" / "log.jsonl")
    assert log.verify().ok
    return [e.type for e in log.entries()]


@pytest.mark.slow
def test_an_embedded_job_killed_mid_job_resumes_to_the_uninterrupted_model(
    tmp_path: Path, lab_home: Path
) -> None:
    experiment = _experiment(tmp_path / "data")
    allow_test_keys(lab_home)
    proc, job_id = _start_training([str(experiment)], lab_home, tmp_path / "train.log")
    checkpoints = lab_home / "parties" / "bank" / "checkpoints" / job_id
    try:
        # Kill the lab (the coordinator) and every Ray worker acting for a party, mid-tree.
        _wait_for(checkpoints / "secureboost-1.json", proc, "the bank's checkpoint after tree 1")
        _kill([proc.pid])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    # Killed mid-job: no model part, and the lab never got to record how the job ended.
    assert not list((lab_home / "parties" / "bank" / "models").glob("*.json"))
    assert json.loads((lab_home / "jobs" / f"{job_id}.json").read_text())["status"] == "running"

    summary = tmp_path / "resumed.json"
    code = run(["train", str(experiment), "--resume", job_id, "--summary-json", str(summary)])
    assert code == 0
    out = json.loads(summary.read_text())
    assert out["job_id"] == job_id
    assert out["registered_model"]["version"] == "1"
    trees = _only_bank_part(lab_home / "parties" / "bank" / "models")
    assert len(trees) == TREES
    assert trees == _reference_trees(experiment, tmp_path / "reference")
    types = _audit_types(lab_home)
    assert types.count("job_started") == 1
    assert "job_resumed" in types
    assert types.count("model_registered") == 1
    record = json.loads((lab_home / "jobs" / f"{job_id}.json").read_text())
    assert (record["status"], record["resumes"]) == ("finished", 1)
    # A finished job cannot be resumed.
    assert run(["train", str(experiment), "--resume", job_id]) == EXIT_INPUT


@pytest.mark.slow
def test_a_deployed_job_whose_platform_is_killed_resumes_to_the_uninterrupted_model(
    tmp_path: Path, lab_home: Path
) -> None:
    experiment = _experiment(tmp_path / "data")
    allow_test_keys(lab_home)
    folder = tmp_path / "deployment"
    up = ["up", "--dir", str(folder), "--experiment", str(experiment)]
    up += ["--governance-home", str(lab_home)]
    try:
        assert run(up) == 0
        platform = DeploymentState.read(folder).node("platform")
        assert platform.worker is not None
        proc, job_id = _start_training(
            [str(experiment), "--deployment", str(folder)], lab_home, tmp_path / "train.log"
        )
        bank_store = folder / "nodes" / "bank" / "store"
        try:
            _wait_for(
                bank_store / "checkpoints" / job_id / "secureboost-1.json",
                proc,
                "the bank's checkpoint after tree 1",
            )
            # The platform's SuperNode and its ClientApp worker die without warning ...
            _kill([platform.supernode.pid, platform.worker.pid])
            # ... and so does the coordinator: the lab, then every process of the deployment.
            _kill([proc.pid])
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        down(folder, grace=5.0)
        assert not list((bank_store / "models").glob("*.json"))

        assert run(up) == 0
        summary = tmp_path / "resumed.json"
        args = ["train", str(experiment), "--deployment", str(folder)]
        assert run([*args, "--resume", job_id, "--summary-json", str(summary)]) == 0
    finally:
        down(folder, grace=5.0)
    out = json.loads(summary.read_text())
    assert out["job_id"] == job_id
    trees = _only_bank_part(bank_store / "models")
    assert trees == _reference_trees(experiment, tmp_path / "reference")
    client = MlflowClient(tracking_uri=f"sqlite:///{lab_home / 'mlflow.db'}")
    [model] = client.search_registered_models()
    assert len(client.search_model_versions(f"name='{model.name}'")) == 1
    assert "job_resumed" in _audit_types(lab_home)


@pytest.mark.slow
def test_resume_refuses_bad_input_with_one_error_line_and_leaves_nothing(
    tmp_path: Path, lab_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from federated.spec import JobSpec
    from lab import job_records
    from lab.config import load_experiment

    experiment = _experiment(tmp_path / "data")
    env = processes.service_env({"LAB_HOME": str(lab_home)})

    def installed_lab(*args: str) -> str:
        """The one ``error:`` line of the installed ``lab train`` refusing ``args``."""
        done = subprocess.run(
            [LAB, "train", str(experiment), *args], env=env, capture_output=True, text=True
        )
        assert done.returncode == EXIT_INPUT, done.stderr
        [line] = [x for x in done.stderr.splitlines() if x.startswith("error:")]
        return line

    assert "no job 0123456789abcdef was started" in installed_lab("--resume", "0123456789abcdef")
    spec: JobSpec = load_experiment(experiment, []).job_spec(job_id="00000000000000aa")
    job_records.write(spec, "running", "embedded")  # as a killed run leaves it
    line = installed_lab("--resume", spec.job_id, "--set", "model.n_estimators=7")
    assert "the experiment differs from the one the job ran (at " in line
    assert f"model.n_estimators: {TREES} -> 7" in line
    assert run(["train", str(experiment), "--resume", "nope"]) == EXIT_INPUT
    assert "16 hex digits" in capsys.readouterr().err
    deployment = ["--deployment", str(tmp_path / "nowhere")]
    assert run(["train", str(experiment), "--resume", spec.job_id, *deployment]) == EXIT_INPUT
    assert "ran on the embedded runtime" in capsys.readouterr().err
    job_records.write(spec, "finished", "embedded")
    assert "the job finished" in installed_lab("--resume", spec.job_id)
    # Nothing spent, registered, audited or checkpointed.
    assert not (lab_home / "governance.db").exists()
    assert not (lab_home / "mlflow.db").exists()
    assert not (lab_home / "audit").exists()
    assert not (lab_home / "parties").exists()
