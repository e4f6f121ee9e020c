"""Evaluation metrics against independent computations, and the FATE split rule."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from features.io import read_party_table
from lab.reports import ks_curves
from models.baselines import GBDTSettings, fit_and_evaluate
from models.evaluation import (
    EvaluationError,
    EvaluationReport,
    canonical_order,
    evaluate_scores,
    evaluation_split,
)
from tests.conftest import DATA


def _brute_ks(y: np.ndarray, p: np.ndarray) -> float:
    best = 0.0
    for t in np.unique(p):
        tpr = ((p >= t) & (y == 1)).sum() / (y == 1).sum()
        fpr = ((p >= t) & (y == 0)).sum() / (y == 0).sum()
        best = max(best, tpr - fpr)
    return best


def test_metrics_match_independent_computation() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, size=500)
    p = np.clip(0.3 * y + rng.uniform(size=500) * 0.7, 0, 1)
    report = evaluate_scores(y, p)
    assert report.auc == pytest.approx(roc_auc_score(y, p))
    assert report.ks == pytest.approx(_brute_ks(y, p))
    assert report.gini == pytest.approx(2 * report.auc - 1)
    assert report.n == 500
    assert report.n_bad == int(y.sum())
    assert report.brier == pytest.approx(np.mean((p - y) ** 2))


def test_gains_table_is_consistent() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, size=1003)
    p = rng.uniform(size=1003)
    report = evaluate_scores(y, p)
    rows = report.deciles
    assert len(rows) == 10
    assert sum(r.n for r in rows) == 1003
    assert sum(r.n_bad for r in rows) == int(y.sum())
    assert rows[-1].cum_bad_share == pytest.approx(1.0)
    assert rows[-1].cum_good_share == pytest.approx(1.0)
    assert all(a.min_score >= b.max_score for a, b in itertools.pairwise(rows))
    assert max(r.ks for r in rows) <= report.ks + 1e-12


def test_perfect_and_inverted_scores() -> None:
    y = np.array([0] * 50 + [1] * 50)
    good = evaluate_scores(y, np.linspace(0, 1, 100))
    assert good.auc == pytest.approx(1.0)
    assert good.ks == pytest.approx(1.0)
    bad = evaluate_scores(y, np.linspace(1, 0, 100))
    assert bad.auc == pytest.approx(0.0)
    assert bad.gini == pytest.approx(-1.0)


def test_calibration_of_calibrated_scores_is_small() -> None:
    rng = np.random.default_rng(11)
    p = rng.uniform(0, 0.5, size=20000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    report = evaluate_scores(y, p)
    assert report.ece < 0.02
    for b in report.calibration:
        assert b.observed_rate == pytest.approx(b.mean_predicted, abs=0.04)


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 0, 0] * 5, [0.1] * 15, "single class"),
        ([0, 1] * 10, [0.5] * 19, "labels but"),
        ([0, 1] * 10, [1.5] * 20, "probabilities"),
        ([0, 2] * 10, [0.5] * 20, "0 or 1"),
        ([0, 1] * 2, [0.5] * 4, "cannot fill"),
    ],
)
def test_evaluation_errors(y: list[int], p: list[float], message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        evaluate_scores(y, p)


def test_report_round_trips_through_json_dict() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=300)
    report = evaluate_scores(y, rng.uniform(size=300))
    assert EvaluationReport.from_dict(report.to_dict()) == report


def test_ks_curve_reaches_ks() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, size=400)
    report = evaluate_scores(y, np.clip(y * 0.2 + rng.uniform(size=400) * 0.8, 0, 1))
    population, bads, goods = ks_curves(report)
    assert population[0] == 0
    assert population[-1] == pytest.approx(1)
    assert np.max(bads - goods) == pytest.approx(report.ks)


@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=60, unique=True))
@settings(max_examples=60, deadline=None)
def test_canonical_order_is_numeric_order_for_integer_ids(values: list[int]) -> None:
    ids = np.array([str(v) for v in values])
    assert [int(i) for i in ids[canonical_order(ids)]] == sorted(values)


def test_canonical_order_is_text_order_for_fixed_length_codes() -> None:
    ids = np.array(["91B", "91A", "92Z", "10X"])
    assert ids[canonical_order(ids)].tolist() == ["10X", "91A", "91B", "92Z"]


def test_split_reproduces_fate_rule_and_ignores_input_order() -> None:
    table = read_party_table(DATA / "default_credit" / "bank.csv", id_column="id", label_column="y")
    assert table.label is not None
    mask = evaluation_split(table.ids, table.label, test_size=0.2, random_state=42, stratify=True)
    frame = pd.DataFrame({"id": table.ids.astype(int), "y": table.label}).sort_values("id")
    _, test_ids = train_test_split(
        frame["id"].to_numpy(), test_size=0.2, random_state=42, stratify=frame["y"].to_numpy()
    )
    assert set(table.ids[mask].astype(int)) == set(test_ids)
    shuffled = np.random.default_rng(0).permutation(table.n_rows)
    mask2 = evaluation_split(
        table.ids[shuffled], table.label[shuffled], test_size=0.2, random_state=42, stratify=True
    )
    assert set(table.ids[shuffled][mask2]) == set(table.ids[mask])


def test_split_refuses_unstratifiable_labels() -> None:
    ids = np.array([str(i) for i in range(20)])
    y = np.array([1] + [0] * 19, dtype=np.int8)
    with pytest.raises(EvaluationError, match="cannot stratify"):
        evaluation_split(ids, y, test_size=0.2, random_state=0, stratify=True)


def test_pooled_reference_matches_published_figure() -> None:
    """LightGBM on FATE's joined default_credit split: test AUC 0.780, KS 0.426 (README)."""
    bank = read_party_table(DATA / "default_credit" / "bank.csv", id_column="id", label_column="y")
    platform = read_party_table(DATA / "default_credit" / "platform.csv", id_column="id")
    assert bank.label is not None
    pos = pd.Index(platform.ids).get_indexer(bank.ids)
    features = pd.concat(
        [
            bank.features.add_prefix("bank__"),
            platform.features.iloc[pos].reset_index(drop=True).add_prefix("platform__"),
        ],
        axis=1,
    )
    mask = evaluation_split(bank.ids, bank.label, test_size=0.2, random_state=42, stratify=True)
    report = fit_and_evaluate(features, bank.label, mask, GBDTSettings(), seed=42)
    assert report.auc == pytest.approx(0.780, abs=0.002)
    assert report.ks == pytest.approx(0.426, abs=0.005)
