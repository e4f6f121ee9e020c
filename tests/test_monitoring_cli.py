"""``lab monitor`` and ``lab demo-monitoring`` as a user or a scheduler runs them.

The demo trains on one month of the synthetic timeline and monitors a steady month (no alert)
and a month after a regional shock (the alert); ``lab monitor`` on that shocked window exits 4
for the scheduler. Bad input is refused in one line, exit 2, before any job.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lab.governance.audit import AuditLog
from lab.monitoring import EXIT_ALERT, TAG_LAST_RUN, TAG_MODEL_NAME, TAG_MODEL_VERSION
from tests.cli_helpers import run_lab
from tests.conftest import allow_test_keys


def test_lab_monitor_refuses_bad_input_in_one_line(lab_home: Path, tmp_path: Path) -> None:
    experiment = tmp_path / "missing.yaml"
    done = run_lab(
        ["monitor", str(experiment), "--model", "m", "--book", "b.csv", "--window", "s@2"],
        home=lab_home,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ")
    assert done.stderr.count("\n") == 1
    assert "missing.yaml" in done.stderr
    done = run_lab(
        [
            "monitor",
            str(experiment),
            "--model",
            "m",
            "--book",
            "b.csv",
            "--window",
            "s@2",
            "--psi-max",
            "0",
        ],
        home=lab_home,
    )
    assert done.returncode == 2
    assert "--psi-max" in done.stderr


@pytest.mark.slow
def test_the_monitoring_demo_shows_the_alert_and_lab_monitor_exits_4(
    lab_home: Path, tmp_path: Path
) -> None:
    allow_test_keys(lab_home)
    summary = tmp_path / "demo.json"
    done = run_lab(
        [
            "demo-monitoring",
            "--key-bits",
            "512",
            "--summary-json",
            str(summary),
        ],
        home=lab_home,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    steady_text, shocked_text = done.stdout.split("-- shocked window --")
    assert "no alert" in steady_text
    assert "ALERT" not in steady_text
    assert "ALERT segment_shift Zhejiang" in shocked_text
    result = json.loads(summary.read_text())
    model = result["training"]["model"]
    name, version = model.split("/")
    shocked = result["shocked"]
    assert shocked["early_warning"]["n_warnings"] > 0
    assert Path(shocked["early_warning"]["file"]).is_file()
    # each monitoring run is linked to the version it monitors and carries its plots
    client = MlflowClient(f"sqlite:///{lab_home / 'mlflow.db'}")
    run = client.get_run(shocked["mlflow_run_id"])
    assert run.data.tags[TAG_MODEL_NAME] == name
    assert run.data.tags[TAG_MODEL_VERSION] == version
    tags = client.get_model_version(name, version).tags
    assert tags[TAG_LAST_RUN] == shocked["mlflow_run_id"]  # before the scheduler's run below
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/score_bands.png", "plots/psi_trend.png", "plots/vintages.png"}
    # the scheduler's view: the shocked window again, exit 4 and the alerts in the summary
    folder = next((lab_home / "demo").glob("monitoring-*"))
    again = tmp_path / "again.json"
    done = run_lab(
        [
            "monitor",
            str(folder / "experiment.yaml"),
            "--model",
            model,
            "--book",
            str(next(folder.glob("book_2026-04.csv"))),
            "--window",
            "sme_monthly@3",
            "--segment-column",
            "borrower_province",
            "--summary-json",
            str(again),
        ],
        home=lab_home,
        timeout=600,
    )
    assert done.returncode == EXIT_ALERT, done.stderr[-3000:]
    alerts = json.loads(again.read_text())["alerts"]
    assert any(a["kind"] == "segment_shift" and a["subject"] == "Zhejiang" for a in alerts)
    entries = list(AuditLog(lab_home / "audit" / "log.jsonl").entries())
    kinds = [e.type for e in entries]
    assert kinds.count("monitoring_run") == 3
    assert "monitoring_alert" in kinds
    assert "monitoring_served" in kinds
    served = [e.payload for e in entries if e.type == "monitoring_served"]
    assert set(served[0]) >= {"n_scored", "n_warnings", "score_psi"}
