"""Findable results: what a job prints, how its run is dated and filed, promotion, wide tables.

Every test runs the installed ``lab`` in a subprocess (output piped, as in a CI log or a file).
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.tracking import MlflowClient

from lab.console import UNBOUNDED_WIDTH, console
from lab.mlflow_ui import HOST
from tests.cli_helpers import LAB, QUIET_ENV, run_lab


def _lines(stdout: str, prefix: str) -> list[str]:
    return [
        line.removeprefix(prefix).strip() for line in stdout.splitlines() if line.startswith(prefix)
    ]


def _client(home: Path) -> MlflowClient:
    uri = f"sqlite:///{home / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def synthetic_job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One governed job, run exactly as ``lab data synth`` prints its steps; two tests check it.

    ``lab data synth`` writes the data and a governed experiment and prints the platform's
    steps and the bank's ``lab train``; each printed step runs as it is, in a home of this
    module's own. The train step runs as ``modeler-alice`` (``LAB_ACTOR``, the environment:
    its arguments stay as printed). Returns the home, the folder, the experiment's bytes before
    the steps, the printed steps, the train step's finished process, its summary (the
    ``summary.json`` in the artifact folder it names) and the time just before it started.
    """
    root = tmp_path_factory.mktemp("results")
    home = root / "home"
    keys = {"LAB_KEYS": str(root / "keys")}
    args = ["data", "synth", "--out", "sme", "--n-enterprises", "1000", "--seed", "3"]
    synth = run_lab(args, home=home, cwd=root, env=keys)
    assert synth.returncode == 0, synth.stderr
    folder = root / "sme"
    written = (folder / "experiment.yaml").read_bytes()
    steps = [line.strip() for line in synth.stdout.splitlines() if line.startswith("  lab ")]
    *platform_steps, train_step = steps
    for step in platform_steps:
        done = run_lab(shlex.split(step)[1:], home=home, cwd=root, env=keys)
        assert done.returncode == 0, f"{step}: {done.stderr}"
    before_ms = int(time.time() * 1000)
    actor = {**keys, "LAB_ACTOR": "modeler-alice"}
    trained = run_lab(shlex.split(train_step)[1:], home=home, cwd=root, env=actor, timeout=900)
    assert trained.returncode == 0, f"{train_step}: {trained.stderr}"
    [folder_line] = _lines(trained.stdout, "artifacts:")
    summary = json.loads((Path(folder_line) / "summary.json").read_text())
    return {
        "home": home,
        "keys": keys,
        "folder": folder,
        "written": written,
        "steps": steps,
        "trained": trained,
        "summary": summary,
        "before_ms": before_ms,
    }


@pytest.mark.slow
def test_a_job_says_where_its_results_are_and_its_run_is_dated_from_its_start(
    tmp_path: Path, synthetic_job: dict[str, Any]
) -> None:
    home: Path = synthetic_job["home"]
    done: subprocess.CompletedProcess[str] = synthetic_job["trained"]
    summary = synthetic_job["summary"]
    name = "sme-seed3-secureboost"

    # The console names the artifact folder (which holds the run's files), the model version
    # and alias, the run and store, and a command that opens MLflow on this home.
    [folder] = _lines(done.stdout, "artifacts:")
    assert folder == summary["artifact_folder"]
    assert Path(folder).is_relative_to(home / "mlartifacts" / name)
    assert (Path(folder) / "summary.json").is_file()
    assert (Path(folder) / "plots" / "roc.png").is_file()
    [model] = _lines(done.stdout, "model:")
    assert model.startswith(f"{name} version 1, alias challenger")
    assert (
        summary["registered_model"] | {"name": name, "version": "1"}
        == (summary["registered_model"])
    )
    [mlflow_line] = _lines(done.stdout, "MLflow:")
    assert summary["mlflow_run_id"] in mlflow_line
    assert f"sqlite:///{home / 'mlflow.db'}" in mlflow_line
    [browse] = _lines(done.stdout, "browse:")
    assert browse == summary["mlflow_ui"]
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in browse
    assert f"--backend-store-uri sqlite:///{home / 'mlflow.db'}" in browse
    assert f"--host {HOST}" in browse
    assert summary["mlflow_artifact_uri"] == Path(folder).as_uri()

    # The run starts when the job did (its duration is the job's), and says who ran it and what.
    client = _client(home)
    run = client.get_run(summary["mlflow_run_id"])
    assert synthetic_job["before_ms"] <= run.info.start_time
    assert run.info.end_time - run.info.start_time >= summary["wall_seconds"] * 1000 - 1
    assert summary["wall_seconds"] > sum(summary["stage_seconds"].values())
    assert run.data.tags["mlflow.user"] == "modeler-alice"
    assert run.info.user_id == "modeler-alice"
    assert run.data.tags["lab.task"] == "train"
    assert client.get_experiment(run.info.experiment_id).name == name

    # An alignment is filed in its own experiment and says so too.
    experiment = synthetic_job["folder"] / "experiment.yaml"
    aligned = run_lab(["align", str(experiment)], home=home, env=synthetic_job["keys"])
    assert aligned.returncode == 0, aligned.stderr
    assert _lines(aligned.stdout, "model:") == ["none (alignment only)"]
    [align_folder] = _lines(aligned.stdout, "artifacts:")
    assert Path(align_folder).is_relative_to(home / "mlartifacts" / f"{name}-align")
    align_experiment = client.get_experiment_by_name(f"{name}-align")
    [align_run] = client.search_runs([align_experiment.experiment_id])
    assert align_run.data.tags["lab.task"] == "align"
    assert len(client.search_runs([run.info.experiment_id])) == 1  # training runs only

    # `lab mlflow ui` runs exactly the printed command, and it serves this home's run.
    printed = run_lab(["mlflow", "ui", "--print"], home=home, env=synthetic_job["keys"])
    assert printed.stdout.strip() == browse
    port = _free_port()
    full_env = {**QUIET_ENV, "LAB_HOME": str(home), "PATH": str(LAB.parent)}
    with (tmp_path / "ui.log").open("w") as log:
        ui = subprocess.Popen(
            [str(LAB), "mlflow", "ui", "--port", str(port)],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://{HOST}:{port}/api/2.0/mlflow/runs/get"
        deadline = time.monotonic() + 120
        answer = None
        while time.monotonic() < deadline and ui.poll() is None:
            try:
                answer = httpx.get(url, params={"run_id": run.info.run_id}, timeout=5)
                break
            except httpx.TransportError:
                time.sleep(1)
        assert answer is not None, (tmp_path / "ui.log").read_text()
        assert answer.status_code == 200
        assert answer.json()["run"]["info"]["run_id"] == run.info.run_id
    finally:
        ui.terminate()
        try:
            ui.wait(timeout=20)
        except subprocess.TimeoutExpired:
            ui.kill()
            ui.wait(timeout=20)


def _register_versions(home: Path, name: str, count: int) -> MlflowClient:
    """A real sqlite registry in ``home`` with ``count`` versions of ``name``."""
    client = _client(home)
    home.mkdir(parents=True, exist_ok=True)
    client.create_registered_model(name)
    for k in range(count):
        client.create_model_version(name, source=str(home / f"model-{k}"), await_creation_for=0)
    return client


def _aliases(home: Path, name: str) -> dict[str, list[str]]:
    listed = run_lab(["models", "list", "--json"], home=home)
    assert listed.returncode == 0, listed.stderr
    return {row["version"]: row["aliases"] for row in json.loads(listed.stdout)}


def _promote(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_lab(["models", "promote", *args], home=home)


def test_promotion_moves_the_challenger_alias_off_the_new_champion(lab_home: Path) -> None:
    name = "sme-credit-scorecard-for-small-enterprise-loans"
    client = _register_versions(lab_home, name, 2)
    client.set_registered_model_alias(name, "challenger", "1")
    done = run_lab(
        ["models", "promote", name, "--from", "challenger", "--to", "champion"], home=lab_home
    )
    assert done.returncode == 0, done.stderr
    assert f"{name}@champion -> version 1" in done.stdout
    assert f"{name}@challenger removed from version 1" in done.stdout
    assert _aliases(lab_home, name) == {"1": ["champion"], "2": []}
    # The next job's challenger, promoted by number, replaces the champion the same way.
    client.set_registered_model_alias(name, "challenger", "2")
    done = run_lab(
        ["models", "promote", name, "--version", "2", "--alias", "champion"], home=lab_home
    )
    assert done.returncode == 0, done.stderr
    assert "(was version 1)" in done.stdout
    assert _aliases(lab_home, name) == {"1": [], "2": ["champion"]}
    # A challenger set on a version that is not the champion stays where it is.
    client.set_registered_model_alias(name, "challenger", "1")
    done = run_lab(
        ["models", "promote", name, "--version", "1", "--alias", "challenger"], home=lab_home
    )
    assert done.returncode == 0, done.stderr
    assert _aliases(lab_home, name) == {"1": ["challenger"], "2": ["champion"]}
    log = run_lab(["audit", "log", "--type", "model_promoted", "--json"], home=lab_home)
    entries = [e["payload"] for e in json.loads(log.stdout)]
    assert [e["removed_aliases"] for e in entries] == [["challenger"], ["challenger"], []]

    # Piped (not a terminal), the table shows whole names and run ids, nothing cut at 80 columns.
    run_id = client.create_run(client.create_experiment("x")).info.run_id
    client.create_model_version(name, source=str(lab_home / "m"), run_id=run_id)
    table = run_lab(["models", "list"], home=lab_home)
    assert table.returncode == 0, table.stderr
    assert name in table.stdout
    assert run_id in table.stdout
    assert "…" not in table.stdout


def test_piped_tables_are_not_truncated(lab_home: Path) -> None:
    shown = run_lab(["budget", "show"], home=lab_home)
    assert shown.returncode == 0, shown.stderr
    header = shown.stdout
    for column in ("feature set", "accountant", "reserved ε", "remaining ε", "window"):
        assert column in header
    assert "…" not in header
    # An explicit COLUMNS is still obeyed.
    narrow = run_lab(["budget", "show"], home=lab_home, env={"COLUMNS": "60"})
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 60


def test_the_console_is_unbounded_only_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    piped = console()
    assert not piped.is_terminal
    assert piped.width == UNBOUNDED_WIDTH
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich: treat the output as a terminal
    monkeypatch.setenv("COLUMNS", "72")
    assert console().width == 72


@pytest.mark.slow
def test_synthetic_experiment_runs_as_written_after_the_printed_steps(
    synthetic_job: dict[str, Any],
) -> None:
    folder: Path = synthetic_job["folder"]
    assert (folder / "authorizations.csv").is_file()
    steps = synthetic_job["steps"]
    assert [shlex.split(s)[1] for s in steps] == ["features", "authorizations", "budget", "train"]
    # Every step ran (the fixture checked each exit status) and the experiment ran as written.
    assert (folder / "experiment.yaml").read_bytes() == synthetic_job["written"]
    done: subprocess.CompletedProcess[str] = synthetic_job["trained"]
    assert _lines(done.stdout, "model:")[0].startswith("sme-seed3-secureboost version 1")
    [folder_line] = _lines(done.stdout, "artifacts:")
    assert (Path(folder_line) / "summary.json").is_file()
