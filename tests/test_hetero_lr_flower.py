"""Hetero LR end to end through Flower's simulation runtime, MLflow (sqlite) and the registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from federated.capture import read_capture
from lab.cli import run
from models.vertical_lr.parts import PlatformLRPart
from tests.conftest import DATA, EXPERIMENTS

pytestmark = pytest.mark.slow


def _artifacts(client: MlflowClient, run_id: str, folder: str | None = None) -> set[str]:
    out: set[str] = set()
    for item in client.list_artifacts(run_id, folder):
        out |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return out


def test_hetero_lr_job_trains_registers_and_scores(
    tmp_path: Path, lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.pyfunc

    summary_path = tmp_path / "summary.json"
    code = run(
        [
            "train",
            str(EXPERIMENTS / "breast_hetero_lr.yaml"),
            "--summary-json",
            str(summary_path),
            "--capture",
        ]
    )
    assert code == 0
    summary = json.loads(summary_path.read_text())
    assert summary["model"] == "hetero_lr"
    assert summary["joint_model"]["status"] == "trained"
    assert 0.9 < summary["metrics"]["test_auc"] <= 1.0
    assert "label counts" in summary["privacy"]["note"]
    registered = summary["registered_model"]
    assert registered["name"] == "breast-hetero-lr"

    uri = f"sqlite:///{lab_home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    paths = _artifacts(client, summary["mlflow_run_id"])
    assert {
        "joint/scorecard.csv",
        "joint/scorecard.html",
        "joint/information_value.csv",
        "joint/coefficients.csv",
        "model/MLmodel",
    } <= paths
    assert any(p.startswith("model/artifacts/scorecard") for p in paths)
    # Key material is nowhere in the run.
    for path in paths:
        assert "key" not in Path(path).name.lower(), path

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    model = mlflow.pyfunc.load_model("models:/breast-hetero-lr@challenger")
    ref = registered["platform_parts"]["platform"]
    part = PlatformLRPart.load(lab_home / "parties" / "platform" / "models", ref["model_id"])
    assert part.content_hash == ref["content_hash"]
    bank = pd.read_csv(DATA / "breast" / "bank.csv").head(25)
    platform = pd.read_csv(DATA / "breast" / "platform.csv").set_index("id").loc[bank["id"]]
    bins = part.coarse_bins(platform.reset_index(drop=True))
    frame = bank.drop(columns=["id", "y"]).astype(float)
    for j, column in enumerate(part.features):
        frame[f"platform:platform:{column}"] = bins[:, j].astype(np.int64)
    proba = np.asarray(model.predict(frame))
    assert proba.shape == (25,)
    assert ((proba > 0) & (proba < 1)).all()
    card = model.predict(frame, params={"output": "scorecard"})
    assert list(card.columns) == ["probability", "score", "reason_codes"]
    assert np.allclose(card["probability"], proba)
    assert np.corrcoef(card["score"], proba)[0, 1] < -0.9  # more points, less risk
    with pytest.raises(Exception, match="platform bin columns"):
        model.predict(bank.drop(columns=["id", "y"]).astype(float))

    # Message capture: no label vector and no platform value crossed in clear.
    labels = pd.read_csv(DATA / "breast" / "bank.csv")["y"].to_numpy()
    values = set(pd.read_csv(DATA / "breast" / "platform.csv").drop(columns=["id"]).stack())
    local = Path(
        client.download_artifacts(summary["mlflow_run_id"], "capture/capture.jsonl", str(tmp_path))
    )
    captured = [env for _, env in read_capture(local)]
    assert {e.stage for e in captured if e.protocol == "hetero_lr"} >= {
        "init",
        "counts",
        "bins",
        "batch",
        "partial",
        "update",
        "cross_sums",
        "final",
    }
    for env in captured:
        for key, value in env.payload.items():
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                assert not values & set(value.ravel().tolist()), (env.stage, key)
            if isinstance(value, np.ndarray) and value.size in (len(labels), 455):
                assert not np.array_equal(value.astype(int), labels[: value.size]), (env.stage, key)
