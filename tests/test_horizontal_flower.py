"""Horizontal jobs end to end through Flower's simulation runtime.

Secure aggregation is checked by its properties, on the real runtime: the masked aggregate
equals the plain FedAvg aggregate within the stated quantisation error; the captured message
log shows the coordinator never received an unmasked update; dropouts up to the threshold
still give the right sum; one more aborts the round (and the job) before anything is unmasked.
DP: the ε each bank planned before training equals its accountant's ε after the last round.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from features.synth import SMEConfig, generate, write
from federated.capture import read_capture
from federated.horizontal_server import MODEL_FILE
from federated.job_grid import FLOWER_PROTOCOL
from federated.result import JobResult
from federated.simulation import EmbeddedOptions, JobFailedError, run_embedded
from lab.config import Experiment, experiment_from_dict
from lab.job import RunOptions, run_experiment

pytestmark = pytest.mark.slow

N_BANKS = 4


@pytest.fixture(scope="module")
def banks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four small non-IID synthetic banks (different industry mixes and default rates)."""
    folder = tmp_path_factory.mktemp("sme-banks")
    write(
        generate(SMEConfig(n_enterprises=6000, n_banks=N_BANKS, bank_share=0.25, seed=11)),
        folder,
        overwrite=True,
    )
    return folder


def config(folder: Path, **changes: Any) -> Experiment:
    raw: dict[str, Any] = {
        "name": "hz-test",
        "kind": "horizontal",
        "parties": [
            {
                "name": f"bank_{k}",
                "role": "bank",
                "data": f"bank_{k}.csv",
                "id_column": "enterprise_id",
                "label_column": "default_12m",
            }
            for k in range(1, N_BANKS + 1)
        ],
        "model": {"type": "mlp", "hidden": [16, 8], "rounds": 1, "seed": 3},
        "secure_aggregation": {"enabled": True},
        "evaluation": {"test_size": 0.25, "random_state": 1, "stratify": True},
    }
    for key, value in changes.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    return experiment_from_dict(raw, source=None, base_dir=folder)


def run(
    experiment: Experiment, workdir: Path, *, faults: dict[str, str] | None = None
) -> JobResult:
    bindings = [replace(b, fault=(faults or {}).get(b.name)) for b in experiment.bindings()]
    workdir.mkdir(parents=True, exist_ok=True)
    return run_embedded(experiment.job_spec(), bindings, workdir, EmbeddedOptions(capture=True))


def global_model(result: JobResult) -> np.ndarray:
    with np.load(result.joint.details["model_file"], allow_pickle=False) as data:
        return np.concatenate([data[k].ravel() for k in sorted(data.files, key=_index)])


def _index(name: str) -> int:
    return int(name.split("_")[1])


@pytest.fixture(scope="module")
def plain(banks: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[JobResult, Path]:
    """One plain FedAvg round of the four banks (capture on)."""
    folder = tmp_path_factory.mktemp("plain")
    return run(config(banks, secure_aggregation={"enabled": False}), folder), folder


def bank_updates(capture: Path) -> dict[str, tuple[np.ndarray, float]]:
    """Each bank's new weights and example count, as the plain coordinator received them."""
    out = {}
    for direction, envelope in read_capture(capture):
        if direction == "from_party" and envelope.protocol == FLOWER_PROTOCOL:
            if envelope.stage != "train":
                continue
            keys = sorted(
                (k for k in envelope.payload if k.startswith("arrays/")),
                key=lambda k: int(k.split("/")[1]),
            )
            weights = np.concatenate([np.asarray(envelope.payload[k]).ravel() for k in keys])
            out[envelope.sender] = (weights, float(envelope.payload["metrics/num-examples"]))
    return out


def fedavg(updates: dict[str, tuple[np.ndarray, float]], banks: list[str]) -> np.ndarray:
    total = sum(updates[b][1] for b in banks)
    return sum(updates[b][0].astype(np.float64) * updates[b][1] / total for b in banks)


def test_masked_aggregate_equals_plain_fedavg_and_coordinator_sees_no_update(
    banks: Path, plain: tuple[JobResult, Path], tmp_path: Path
) -> None:
    secure = run(config(banks), tmp_path / "secure")
    plain_result, plain_dir = plain

    info = secure.joint.details["secure_aggregation"]
    bound = info["error_bound_per_coordinate"]
    assert info["enabled"]
    assert info["dropouts_tolerated"] == 1  # 4 banks, threshold ceil(2 * 4 / 3) = 3
    difference = np.abs(global_model(secure) - global_model(plain_result)).max()
    # The weights sum to 1 (quantised too), so the decoded average is off by at most the bound
    # of the sum, plus float32 rounding of the stored model.
    assert difference <= bound * 1.01 + 1e-6, (difference, bound)
    assert difference > 0  # it really went through quantisation, not the plain path

    captured = read_capture(tmp_path / "secure" / "capture.jsonl")
    n_params = global_model(secure).size
    replies = [e for d, e in captured if d == "from_party" and e.protocol == FLOWER_PROTOCOL]
    train_replies = [e for e in replies if e.stage == "train"]
    assert len(train_replies) == N_BANKS
    for envelope in train_replies:
        assert not any(key.startswith("arrays/") for key in envelope.payload), envelope.payload
    for direction, envelope in captured:
        if direction != "from_party":
            continue
        for value in envelope.payload.values():
            if isinstance(value, np.ndarray) and value.size >= n_params:
                # The only model-sized thing a bank sends is its masked vector, in Z_{2^32}.
                assert envelope.protocol == "secagg"
                assert envelope.stage == "masked"
                assert value.dtype == np.uint32
                assert value.size == n_params + 1
    masked = [
        e
        for d, e in captured
        if d == "from_party" and e.protocol == "secagg" and e.stage == "masked"
    ]
    assert len(masked) == N_BANKS
    # Without secure aggregation the coordinator does receive each bank's weights, and their
    # FedAvg is the model both jobs produced.
    updates = bank_updates(plain_dir / "capture.jsonl")
    assert sorted(updates) == [f"bank_{k}" for k in range(1, N_BANKS + 1)]
    expected = fedavg(updates, sorted(updates))
    assert np.abs(expected - global_model(plain_result)).max() < 1e-6


def test_dropouts_up_to_the_threshold_give_the_survivors_sum(
    banks: Path, plain: tuple[JobResult, Path], tmp_path: Path
) -> None:
    # bank_4 shared its keys, trains, but never sends its masked vector: its pairwise masks on
    # the others are removed through its reconstructed mask key.
    secure = run(config(banks), tmp_path / "secure", faults={"bank_4": "train@1"})
    dropped = secure.joint.details["secure_aggregation"]["dropouts"]["1"]
    assert set(dropped) == {"bank_4"}
    assert dropped["bank_4"].startswith("train:")
    assert "fault drill" in dropped["bank_4"]
    # Reference: FedAvg of the three survivors' updates (same seeds, schema and rows), from
    # what the plain job's coordinator received.
    survivors = fedavg(bank_updates(plain[1] / "capture.jsonl"), ["bank_1", "bank_2", "bank_3"])
    bound = secure.joint.details["secure_aggregation"]["error_bound_per_coordinate"]
    difference = np.abs(global_model(secure) - survivors).max()
    assert difference <= 2 * bound + 1e-6, (difference, bound)


def test_one_dropout_more_than_tolerated_aborts_before_unmasking(
    banks: Path, tmp_path: Path
) -> None:
    with pytest.raises(JobFailedError) as caught:
        run(config(banks), tmp_path / "abort", faults={"bank_3": "train@1", "bank_4": "train@1"})
    assert caught.value.error_type == "RoundFailedError"
    message = str(caught.value)
    assert "secure aggregation aborted, nothing was unmasked" in message
    assert "bank_3" in message
    assert "bank_4" in message
    assert not (tmp_path / "abort" / MODEL_FILE).exists()
    captured = read_capture(tmp_path / "abort" / "capture.jsonl")
    assert not any(e.stage == "unmask" for _, e in captured)


def test_aborted_job_registers_nothing_and_says_why(banks: Path, tmp_path: Path) -> None:
    from lab.errors import JobError

    experiment = config(banks, secure_aggregation={"enabled": True, "min_survivors": 4})
    bindings = experiment.bindings()
    # A node that fails a plain or secure round fails the job with its own message.
    faulty = [replace(b, fault="secagg/setup@1") if b.name == "bank_1" else b for b in bindings]
    experiment.bindings = lambda: faulty  # type: ignore[method-assign]
    with pytest.raises(JobError, match=r"bank_1.*fault drill"):
        run_experiment(experiment, RunOptions())
    from mlflow.tracking import MlflowClient

    from lab import tracking

    target = tracking.target_for(None, experiment.name)
    client = MlflowClient(tracking_uri=target.uri, registry_uri=target.uri)
    assert client.search_registered_models() == []


def test_dp_job_reports_the_accountants_cumulative_epsilon(banks: Path, tmp_path: Path) -> None:
    experiment = config(
        banks,
        model={"rounds": 3, "dp_epsilon": 3.0, "dp_delta": 1e-5, "max_grad_norm": 1.0},
        evaluation={"pooled_reference": False},
    )
    summary = run_experiment(experiment, RunOptions(summary_json=tmp_path / "summary.json"))
    privacy = summary["privacy"]
    assert privacy["unit"] == "record"
    assert privacy["accountant"] == "rdp"
    assert privacy["delta"] == 1e-5
    assert privacy["epsilon"] <= 3.0 + 1e-6
    for bank, info in privacy["by_bank"].items():
        # Recomposed by the lab from the reported events == the bank's own accountant.
        assert info["epsilon"] == pytest.approx(info["reported_epsilon"], rel=1e-9), bank
        assert info["steps"] > 0
    rounds = json.loads(Path(tmp_path / "summary.json").read_text())["timing"]["rounds"]
    assert rounds == 3
    # The planned ε (before round 1) equals the accountant's ε after the last round.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=summary["mlflow_tracking_uri"])
    run_data = client.get_run(summary["mlflow_run_id"]).data
    assert run_data.metrics["dp_epsilon"] == pytest.approx(privacy["epsilon"])
    for bank, info in privacy["by_bank"].items():
        assert info["planned_epsilon"] == pytest.approx(info["epsilon"], rel=1e-6), bank
    assert summary["secure_aggregation"]["enabled"]
    assert summary["registered_model"]["version"] == "1"
