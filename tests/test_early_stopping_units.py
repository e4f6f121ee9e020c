"""The pure parts of validation, early stopping and sample weights (no protocol, no keys)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from features.errors import DataError
from features.io import read_party_table
from models.early_stopping import (
    DEFAULT_VALIDATION_FRACTION,
    StoppingState,
    ValidationPlan,
    ValidationSplitError,
    observe,
    validation_mask,
    validation_metrics,
)
from models.model_type import model_type
from models.sample_weights import SampleWeightError, training_weights


def test_the_validation_split_is_stratified_seeded_and_disjoint() -> None:
    y = np.array([1] * 60 + [0] * 240)
    mask = validation_mask(y, 0.2, seed=7)
    assert mask.sum() == 60
    assert y[mask].sum() == 12  # the bad rate of the training rows, exactly
    assert np.array_equal(mask, validation_mask(y, 0.2, seed=7))
    assert not np.array_equal(mask, validation_mask(y, 0.2, seed=8))
    assert not validation_mask(y, 0.0, seed=7).any()
    with pytest.raises(ValidationSplitError, match="fewer than 3 bad or good rows"):
        validation_mask(np.array([1] * 5 + [0] * 95), 0.2, seed=0)


def test_early_stopping_keeps_the_best_and_stops_after_the_rounds() -> None:
    plan = ValidationPlan(fraction=0.2, rounds=2, metric="auc")
    state = StoppingState()
    for iteration, auc in enumerate([0.70, 0.72, 0.72, 0.71]):
        state = observe(state, iteration, {"auc": auc, "ks": 0.0, "logloss": 1.0}, plan)
    assert state.best_iteration == 1  # a tie keeps the earlier, smaller model
    assert state.stopped
    assert StoppingState.from_dict(state.to_dict()) == state  # kept as JSON per iteration
    lower = ValidationPlan(fraction=0.2, rounds=1, metric="logloss")
    state = observe(StoppingState(), 0, {"logloss": 0.5}, lower)
    state = observe(state, 1, {"logloss": 0.4}, lower)
    assert state.best_iteration == 1
    assert not state.stopped


def test_validation_metrics_match_the_definitions() -> None:
    y = np.array([0, 0, 1, 1])
    z = np.array([-2.0, 0.5, 0.1, 3.0])
    metrics = validation_metrics(y, z)
    assert metrics["auc"] == pytest.approx(0.75)
    assert metrics["ks"] == pytest.approx(0.5)
    assert metrics["logloss"] == pytest.approx(float(np.mean(np.logaddexp(0, z) - y * z)))


def test_settings_bounds_and_the_default_fraction() -> None:
    described = model_type("secureboost")
    settings = described.parse({"early_stopping_rounds": 5})
    assert settings.validation_plan().fraction == DEFAULT_VALIDATION_FRACTION  # type: ignore[attr-defined]
    assert described.parse({}).validation_plan().fraction == 0.0  # type: ignore[attr-defined]
    for bad in (
        {"early_stopping_rounds": 0},
        {"early_stopping_rounds": 1001},
        {"validation_fraction": 0.6},
        {"early_stopping_rounds": 3, "validation_fraction": 0.0},
        {"class_weight": {2: 1.0}},
        {"class_weight": {1: -1.0}},
        {"class_weight": "heavy"},
        {"early_stopping_metric": "gini"},
    ):
        with pytest.raises(ValidationError):
            model_type("hetero_lr").parse(bad)


def test_weights_are_class_weights_times_the_column_scaled_to_one() -> None:
    y = np.array([0, 0, 0, 1])
    assert training_weights(y) is None
    balanced = training_weights(y, "balanced")
    assert balanced is not None
    assert balanced.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])
    mixed = training_weights(y, {"1": 4.0}, np.array([1.0, 2.0, 0.0, 1.0]))
    assert mixed is not None
    assert mixed.tolist() == pytest.approx([0.25, 0.5, 0.0, 1.0])
    with pytest.raises(SampleWeightError, match="every sample weight is 0"):
        training_weights(y, {0: 0.0, 1: 0.0})


@pytest.mark.parametrize(
    ("value", "found"),
    [("-1.5", "'-1.5'"), ("", "missing weight"), ("abc", "'abc'"), ("inf", "'inf'")],
)
def test_a_bad_weight_is_named_by_file_line_and_column(
    tmp_path: Path, value: str, found: str
) -> None:
    path = tmp_path / "bank.csv"
    frame = pd.DataFrame(
        {"id": ["a", "b", "c"], "y": [0, 1, 0], "x": [1, 2, 3], "w": ["1", "2", "3"]}
    )
    frame.loc[1, "w"] = value
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as caught:
        read_party_table(path, id_column="id", label_column="y", weight_column="w")
    message = str(caught.value)
    assert "bank.csv" in message
    assert "'w'" in message
    assert "lines [3]" in message
    assert found in message
    assert "weight_column" in message  # the fix names the setting


def test_a_weight_column_is_read_and_is_no_feature(tmp_path: Path) -> None:
    path = tmp_path / "bank.csv"
    pd.DataFrame({"id": ["a", "b"], "y": [0, 1], "x": [1, 2], "w": [0.5, 2]}).to_csv(
        path, index=False
    )
    table = read_party_table(path, id_column="id", label_column="y", weight_column="w")
    assert table.feature_names == ["x"]
    assert table.weight is not None
    assert table.weight.tolist() == [0.5, 2.0]
    with pytest.raises(DataError, match="weight column 'v' not found"):
        read_party_table(path, id_column="id", label_column="y", weight_column="v")
