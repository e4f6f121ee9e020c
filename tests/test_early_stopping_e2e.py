"""``lab train`` with early stopping and sample weights, through the installed ``lab``.

One small SecureBoost job on the embedded Flower runtime (real Paillier with test keys, a real
MLflow sqlite store): the job reports the best tree and its validation AUC, logs the validation
metrics per tree, and registers a model truncated to the best tree on both parties; the platform's
node writes the validation rows it served to its own audit log. A bad weight column is refused
before anything runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.cli_helpers import run_lab
from tests.conftest import allow_test_keys, make_vertical, vertical_config


def _experiment(folder: Path, weight: list[float] | None = None) -> Path:
    bank_path, _ = make_vertical(folder, n=700, seed=3)
    if weight is not None:
        frame = pd.read_csv(bank_path)
        frame["exposure"] = weight
        frame.to_csv(bank_path, index=False)
    cfg = vertical_config()
    cfg["name"] = "tiny-es"
    cfg["model"] = {
        "type": "secureboost",
        "n_estimators": 25,
        "max_depth": 2,
        "max_bin": 8,
        "learning_rate": 1.0,
        "min_child_samples": 5,
        "early_stopping_rounds": 2,
        "validation_fraction": 0.3,
        "class_weight": "balanced",
    }
    cfg["crypto"] = {"key_bits": 512, "insecure_test_keys": True}
    bank = cfg["parties"][0]  # type: ignore[index]
    bank["weight_column"] = "exposure"
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@pytest.mark.slow
def test_lab_train_stops_early_and_registers_the_best_tree(tmp_path: Path, lab_home: Path) -> None:
    config = _experiment(tmp_path, weight=[1.0 + (i % 3) for i in range(700)])
    allow_test_keys(lab_home)
    summary_path = tmp_path / "summary.json"
    done = run_lab(
        ["train", str(config), "--summary-json", str(summary_path)], home=lab_home, timeout=600
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(summary_path.read_text())
    validation = summary["validation"]
    best = validation["best_iteration"]
    assert validation["stopped_early"] is True
    assert validation["iterations_kept"] == best + 1 < validation["iterations_trained"]
    assert 0.5 < validation["best_valid_auc"] <= 1.0
    assert f"best iteration {best} (0-based)" in done.stdout
    assert f"valid AUC {validation['best_valid_auc']:.4f}" in done.stdout

    client = MlflowClient(tracking_uri=f"sqlite:///{lab_home / 'mlflow.db'}")
    run_id = summary["mlflow_run_id"]
    history = client.get_metric_history(run_id, "valid_auc")
    assert sorted(m.step for m in history) == list(range(validation["iterations_trained"]))
    assert max(m.value for m in history) == pytest.approx(validation["best_valid_auc"])
    metrics = client.get_run(run_id).data.metrics
    assert metrics["best_iteration"] == best
    # The registered version is the truncated model: its bank part holds best + 1 trees.
    registered = summary["registered_model"]
    version = client.get_model_version_by_alias(registered["name"], registered["alias"])
    assert version.run_id == run_id
    local = Path(client.download_artifacts(run_id, "model/artifacts", str(tmp_path)))
    (kept,) = local.glob("*.json")
    part = json.loads(kept.read_text(encoding="utf-8"))
    assert len(part["trees"]) == best + 1
    # The platform's part (in its own domain) holds splits of the kept trees only.
    ref = registered["platform_parts"]["platform"]
    platform_part = lab_home / "parties" / "platform" / "models" / f"{ref['model_id']}.json"
    splits = json.loads(platform_part.read_text(encoding="utf-8"))["splits"]
    referenced = {
        n["split_id"] for tree in part["trees"] for n in tree if n.get("split_id") is not None
    }
    assert set(splits) == referenced
    # The platform's node recorded what it served, in its own audit log.
    log = (lab_home / "audit" / "log.jsonl").read_text(encoding="utf-8")
    assert '"validation_rows"' in log
    assert '"validation_released"' in log


def test_a_negative_weight_is_refused_by_file_line_and_column(
    tmp_path: Path, lab_home: Path
) -> None:
    weights = [1.0] * 700
    weights[41] = -2.0
    config = _experiment(tmp_path, weight=weights)
    allow_test_keys(lab_home)
    done = run_lab(["train", str(config)], home=lab_home)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "bank.csv" in errors[0]
    assert "weight column 'exposure'" in errors[0]
    assert "lines [43]" in errors[0]
    assert "'-2.0'" in errors[0]
    assert "Traceback" not in done.stderr
    assert not (lab_home / "mlflow.db").exists()
    assert not (lab_home / "parties").exists()


def test_a_missing_weight_column_is_refused_before_the_job(tmp_path: Path, lab_home: Path) -> None:
    config = _experiment(tmp_path)
    allow_test_keys(lab_home)
    done = run_lab(["train", str(config)], home=lab_home)
    assert done.returncode == 2, done.stderr
    assert "weight_column 'exposure' is not a column of" in done.stderr
    assert not (lab_home / "mlflow.db").exists()


def test_the_platforms_own_policy_refuses_validation_rows_before_the_job(
    tmp_path: Path, lab_home: Path
) -> None:
    """The platform's node decides (its policy, its home), not the job spec: refused at hello."""
    config = _experiment(tmp_path, weight=[1.0] * 700)
    allow_test_keys(lab_home, "validation.serve=false")
    done = run_lab(["train", str(config)], home=lab_home)
    assert done.returncode == 2, done.stderr
    assert "validation.serve=false" in done.stderr
    assert "model.validation_fraction=0.3" in done.stderr
    assert not (lab_home / "mlflow.db").exists()
    log = (lab_home / "audit" / "log.jsonl").read_text(encoding="utf-8")
    assert '"job_refused"' in log
    assert '"job_started"' not in log
