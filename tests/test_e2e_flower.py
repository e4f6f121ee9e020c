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
from tests.cli_helpers import run_lab
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
            # Screening through Flower: each node's recent window is its training file again.
            "--set",
            f"screening.recent.bank={DATA / 'breast' / 'bank.csv'}",
            "--set",
            f"screening.recent.platform={DATA / 'breast' / 'platform.csv'}",
        ]
    )
    assert code == 0
    summary = json.loads(summary_path.read_text())
    assert summary.keys() >= SUMMARY_KEYS
    assert set(summary["metrics"]) >= {"test_auc", "test_ks", "test_gini"}
    assert set(summary["baselines"]) >= {"bank_only_auc", "pooled_auc"}
    assert summary["kind"] == "vertical"
    assert summary["model"] == "secureboost"
    # The joint SecureBoost model (2048-bit Paillier) was trained, evaluated and registered.
    assert summary["joint_model"]["status"] == "trained"
    assert 0.9 < summary["metrics"]["test_auc"] <= 1.0
    assert summary["metrics"]["test_gini"] == pytest.approx(2 * summary["metrics"]["test_auc"] - 1)
    assert summary["timing"]["trees"] == 5
    registered = summary["registered_model"]
    assert registered["name"] == "breast-secureboost"
    assert registered["alias"] == "challenger"
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
    history = client.get_metric_history(mlrun.info.run_id, "tree_test_auc")
    assert [m.step for m in history] == [0, 1, 2, 3, 4]
    version = client.get_model_version_by_alias("breast-secureboost", "challenger")
    assert version.run_id == mlrun.info.run_id
    assert "platform" in version.tags["lab.platform_parts"]
    artifacts = _artifact_paths(client, mlrun.info.run_id)
    assert {"plots/roc.png", "plots/ks.png", "plots/calibration.png", "summary.json"} <= artifacts
    assert "evaluation/gains_bank_only.csv" in artifacts
    assert "capture/capture.jsonl" in artifacts
    assert {"joint/bank_part.json", "joint/feature_importance.csv", "model/MLmodel"} <= artifacts
    # Screening: the same file as the recent window is stable; the score's PSI train -> test.
    assert {"screening/stability.json", "screening/csi.csv"} <= artifacts
    screening = summary["screening"]
    assert set(screening["recent"]) == {"bank", "platform"}
    assert screening["flagged"] == []
    assert mlrun.data.metrics["csi_max"] == pytest.approx(0.0, abs=1e-12)
    assert mlrun.data.metrics["score_psi_train_test"] == screening["score_psi_train_test"]
    # The validation report of the registered version, logged and fetched by the installed lab.
    assert "validation/validation_report.html" in artifacts
    out = tmp_path / "report.html"
    done = run_lab(
        ["models", "report", "breast-secureboost", registered["version"], "--out", str(out)],
        home=lab_home,
    )
    assert done.returncode == 0, done.stderr
    assert "as logged by its job" in done.stdout
    page = out.read_text()
    assert f"{summary['metrics']['test_auc']:.4f}" in page
    assert summary["config_hash"] in page
    bad = run_lab(["models", "report", "breast-secureboost", "99", "-o", str(out)], home=lab_home)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: model 'breast-secureboost' has no version '99'")
    part = tmp_path / "bank_part.json"
    client.download_artifacts(mlrun.info.run_id, "joint/bank_part.json", str(tmp_path))
    text = part.read_text()
    assert "secret" not in text.lower()
    assert "private" not in text.lower()

    # What crossed the coordinator holds no id, and no row-level array except PSI's blinded
    # points and positions.
    local = Path(
        client.download_artifacts(mlrun.info.run_id, "capture/capture.jsonl", str(tmp_path))
    )
    ids = set(pd.read_csv(DATA / "breast" / "bank.csv", dtype=str)["id"])
    captured = read_capture(local)
    assert {env.stage for _, env in captured} >= {"hello", "blinded", "split", "tree", "hist"}
    for _, env in captured:
        for key, value in env.payload.items():
            if isinstance(value, np.ndarray) and env.protocol == "job":
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


def test_registered_model_scores_with_platform_decisions(
    tmp_path: Path, lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registered pyfunc returns default probabilities from bank columns + platform bits."""
    import json as _json

    import mlflow.pyfunc

    from models.secureboost.parts import PlatformPart

    summary_path = tmp_path / "s.json"
    assert (
        run(
            [
                "train",
                str(EXPERIMENTS / "breast_secureboost.yaml"),
                "--summary-json",
                str(summary_path),
            ]
        )
        == 0
    )
    summary = _json.loads(summary_path.read_text())
    uri = f"sqlite:///{lab_home / 'mlflow.db'}"
    # Through the environment (undone after the test), not mlflow's process-wide setters, which
    # would leak into later tests and into the processes they start.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    model = mlflow.pyfunc.load_model("models:/breast-secureboost@challenger")
    ref = summary["registered_model"]["platform_parts"]["platform"]
    part = PlatformPart.from_dict(
        _json.loads(
            (lab_home / "parties" / "platform" / "models" / f"{ref['model_id']}.json").read_text()
        )
    )
    assert part.content_hash == ref["content_hash"]
    bank = pd.read_csv(DATA / "breast" / "bank.csv").head(20)
    platform = pd.read_csv(DATA / "breast" / "platform.csv").set_index("id").loc[bank["id"]]
    ids = sorted(part.splits)
    bits = part.decisions(platform.reset_index(drop=True), ids)
    frame = bank.drop(columns=["id", "y"]).astype(float)
    for j, sid in enumerate(ids):
        frame[f"platform:platform:{sid}"] = bits[:, j]
    proba = np.asarray(model.predict(frame))
    assert proba.shape == (20,)
    assert ((proba > 0) & (proba < 1)).all()
    with pytest.raises(Exception, match="platform"):
        model.predict(bank.drop(columns=["id", "y"]).astype(float))
