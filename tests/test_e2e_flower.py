"""End to end through the real runtime: Flower's simulation engine, Ray workers, MLflow (sqlite)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from federated.capture import read_capture
from federated.simulation import JobFailedError, run_embedded
from federated.spec import PartyBinding
from lab.cli import run
from lab.config import load_experiment
from tests.conftest import DATA, EXPERIMENTS

pytestmark = pytest.mark.slow

SUMMARY_KEYS = {
    "name",
    "kind",
    "model",
    "n_aligned",
    "metrics",
    "baselines",
    "mlflow_run_id",
    "wall_seconds",
}


def _artifact_paths(client: MlflowClient, run_id: str, folder: str | None = None) -> set[str]:
    paths: set[str] = set()
    for item in client.list_artifacts(run_id, folder):
        if item.is_dir:
            paths |= _artifact_paths(client, run_id, item.path)
        else:
            paths.add(item.path)
    return paths


def test_train_through_flower_records_mlflow_run(tmp_path: Path, lab_home: Path) -> None:
    summary_path = tmp_path / "summary.json"
    code = run(
        [
            "train",
            str(EXPERIMENTS / "breast_secureboost.yaml"),
            "--summary-json",
            str(summary_path),
            "--capture",
        ]
    )
    assert code == 0
    summary = json.loads(summary_path.read_text())
    assert summary.keys() >= SUMMARY_KEYS
    assert set(summary["metrics"]) >= {"test_auc", "test_ks", "test_gini"}
    assert set(summary["baselines"]) >= {"bank_only_auc", "pooled_auc"}
    assert summary["kind"] == "vertical"
    assert summary["model"] == "secureboost"
    # No joint model is faked: it is reported as unavailable with its reason.
    assert summary["joint_model"]["status"] == "unavailable"
    assert summary["metrics"]["test_auc"] is None
    assert 0.8 < summary["baselines"]["bank_only_auc"] <= 1.0
    assert 0.8 < summary["baselines"]["pooled_auc"] <= 1.0
    assert summary["n_train"] + summary["n_test"] == 569
    assert summary["wall_seconds"] > 0

    client = MlflowClient(tracking_uri=f"sqlite:///{lab_home / 'mlflow.db'}")
    mlrun = client.get_run(summary["mlflow_run_id"])
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.params["model.max_depth"] == "3"
    assert mlrun.data.params["crypto.key_bits"] == "2048"
    assert mlrun.data.metrics["bank_only_auc"] == pytest.approx(
        summary["baselines"]["bank_only_auc"]
    )
    tags = mlrun.data.tags
    assert tags["lab.config_hash"] == summary["config_hash"]
    for party in summary["parties"]:
        assert tags[f"lab.data_digest.{party['name']}"] == party["data_digest"]
        assert party["data_digest"].startswith("sha256:")
    artifacts = _artifact_paths(client, mlrun.info.run_id)
    assert {"plots/roc.png", "plots/ks.png", "plots/calibration.png", "summary.json"} <= artifacts
    assert "evaluation/gains_bank_only.csv" in artifacts
    assert "capture/capture.jsonl" in artifacts

    # What crossed the coordinator holds no id, and no row-level array except PSI's blinded
    # points and positions.
    local = Path(
        client.download_artifacts(mlrun.info.run_id, "capture/capture.jsonl", str(tmp_path))
    )
    ids = set(pd.read_csv(DATA / "breast" / "bank.csv", dtype=str)["id"])
    captured = read_capture(local)
    assert {env.stage for _, env in captured} >= {"hello", "blinded", "split", "baseline"}
    for _, env in captured:
        for key, value in env.payload.items():
            if isinstance(value, np.ndarray) and env.protocol != "psi":
                assert value.size < 100, f"{env.stage}/{key}"
            elif isinstance(value, str) and key != "job":
                assert not any(f'"{i}"' in value for i in ids)


def test_party_failure_inside_runtime_is_reported(tmp_path: Path) -> None:
    experiment = load_experiment(EXPERIMENTS / "breast_secureboost.yaml")
    bindings = experiment.bindings()
    # The platform's node is misconfigured as a bank: the job must stop at hello.
    wrong = [bindings[0], PartyBinding("platform", "bank", bindings[1].data)]
    with pytest.raises(JobFailedError) as info:
        run_embedded(experiment.job_spec(), wrong, tmp_path)
    assert info.value.error_type == "SpecError"
    assert info.value.party == "platform"
    assert "is a bank on this node but a platform" in str(info.value)


def test_bad_data_is_refused_before_the_runtime_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], lab_home: Path
) -> None:
    folder = tmp_path / "exp"
    shutil.copytree(DATA / "breast", folder / "breast")
    config = (EXPERIMENTS / "breast_secureboost.yaml").read_text().replace("../data/", "")
    (folder / "experiment.yaml").write_text(config)
    # Duplicate an id: the preflight refuses it before the runtime starts.
    bank = folder / "breast" / "bank.csv"
    lines = bank.read_text().splitlines()
    bank.write_text("\n".join([*lines, lines[1]]) + "\n")
    assert run(["train", str(folder / "experiment.yaml")]) == 2
    assert "duplicate id" in capsys.readouterr().err
    assert not lab_home.exists()


def test_align_fate_split_through_flower(tmp_path: Path, lab_home: Path) -> None:
    summary_path = tmp_path / "align.json"
    experiment = str(EXPERIMENTS / "default_credit_secureboost.yaml")
    assert run(["align", experiment, "--summary-json", str(summary_path)]) == 0
    summary = json.loads(summary_path.read_text())
    assert summary["task"] == "align"
    assert (summary["n_bank"], summary["n_platform"], summary["n_aligned"]) == (
        30000,
        {"platform": 30000},
        30000,
    )
    # 32-byte blinded points per id each way, plus truncated doubly-blinded values.
    assert summary["bytes_sent"]["platform"] > 30000 * 32
    assert summary["bytes_sent"]["bank"] > 30000 * 32
    assert summary["wall_seconds"] > 0
    client = MlflowClient(tracking_uri=f"sqlite:///{lab_home / 'mlflow.db'}")
    mlrun = client.get_run(summary["mlflow_run_id"])
    assert mlrun.data.tags["lab.task"] == "align"
    assert mlrun.data.metrics["n_aligned"] == 30000
    assert mlrun.data.metrics["align_bytes_sent_platform"] == summary["bytes_sent"]["platform"]


def test_training_refuses_an_alignment_hidden_from_the_platform(
    capsys: pytest.CaptureFixture[str], lab_home: Path
) -> None:
    experiment = str(EXPERIMENTS / "breast_secureboost.yaml")
    assert run(["train", experiment, "--set", "alignment.reveal=size"]) == 2
    assert "use reveal: both to train" in capsys.readouterr().err
    assert not lab_home.exists()
