"""The plaintext SecureBoost core and per-party binning."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from features.binning import (
    BinningError,
    BinSpec,
    compact_dtype,
    fit_bins,
    fit_transform,
    transform,
    transform_compact,
)
from models.secureboost.core import (
    SCALE,
    Split,
    TreeParams,
    best_split,
    goes_left,
    gradients,
    histogram,
    sigmoid,
    train,
)

# ---------------------------------------------------------------- binning


def test_numeric_bins_are_quantiles_with_a_missing_bin() -> None:
    column = pd.Series(np.arange(1000, dtype=float), name="x")
    spec = fit_bins(column, "numeric", 10)
    assert spec.n_bins == 10
    assert spec.missing_bin == 10
    bins = spec.transform(pd.Series([0.0, 999.0, np.nan, -5.0, 5000.0]))
    assert bins.tolist() == [0, 9, 10, 0, 9]
    counts = np.bincount(spec.transform(column))
    assert counts.min() >= 95
    assert counts.max() <= 105


def test_few_distinct_values_get_a_bin_each() -> None:
    spec = fit_bins(pd.Series([1.0, 2.0, 2.0, 7.0]), "numeric", 32)
    assert spec.edges == (1.0, 2.0)
    assert spec.transform(pd.Series([1.0, 2.0, 7.0, 3.0])).tolist() == [0, 1, 2, 2]


def test_categorical_bins_keep_frequent_levels_and_an_other_bin() -> None:
    column = pd.Series(["A"] * 5 + ["B"] * 3 + ["C"] * 2 + ["D"], dtype="category")
    spec = fit_bins(column, "categorical", 3)
    assert spec.categories == ("A", "B")
    assert spec.transform(pd.Series(["A", "B", "C", "Z", None])).tolist() == [0, 1, 2, 2, 3]


def test_bin_spec_round_trip_and_errors() -> None:
    spec = fit_bins(pd.Series([0.1, 0.5, 0.9], name="v"), "numeric", 4)
    assert BinSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(BinningError, match="max_bin"):
        fit_bins(pd.Series([1.0]), "numeric", 1)


def test_fit_transform_and_transform_agree() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0, np.nan, 4.0], "b": ["x", "y", "x", None]})
    fitted = fit_transform(frame, {"a": "numeric", "b": "categorical"}, 8)
    again = transform(frame, fitted.specs)
    assert np.array_equal(fitted.bins, again.bins)


# ---------------------------------------------------------------- split search


def _brute_force(
    hist: np.ndarray, kind: str, totals: tuple[int, int, int], params: TreeParams
) -> float:
    """Best gain over every subset of non-missing bins and both missing sides."""
    lam = params.reg_lambda
    body, missing = hist[:-1], hist[-1]
    g_tot, h_tot, c_tot = totals

    def score(g: float, h: float) -> float:
        return g * g / (h + lam)

    parent = score(g_tot / SCALE, h_tot / SCALE)
    best = -np.inf
    n = body.shape[0]
    subsets = (
        [tuple(range(k + 1)) for k in range(n - 1)]
        if kind == "numeric"
        else [s for r in range(1, n) for s in itertools.combinations(range(n), r)]
    )
    for subset in subsets:
        for missing_left in (False, True):
            left = body[list(subset)].sum(axis=0) + (missing if missing_left else 0)
            gl, hl, cl = (int(v) for v in left)
            gr, hr, cr = g_tot - gl, h_tot - hl, c_tot - cl
            if min(cl, cr) < params.min_child_samples:
                continue
            if min(hl, hr) / SCALE < params.min_child_weight:
                continue
            gain = 0.5 * (score(gl / SCALE, hl / SCALE) + score(gr / SCALE, hr / SCALE) - parent)
            best = max(best, gain)
    return best


def test_compact_bins_are_the_same_indices_in_a_byte_per_cell() -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "x": np.where(rng.random(500) < 0.1, np.nan, rng.normal(size=500)),
            "c": pd.Series(rng.choice(["a", "b", "c", None], size=500), dtype="category"),
            "k": rng.integers(0, 100_000, size=500).astype(float),
        }
    )
    kinds = {"x": "numeric", "c": "categorical", "k": "numeric"}
    specs = tuple(fit_bins(frame[c], kinds[c], 32) for c in frame.columns)
    rows = rng.permutation(500)[:321]
    compact = transform_compact(frame, specs, rows)
    assert compact.dtype == np.uint8
    assert compact.flags.c_contiguous
    expected = transform(frame.iloc[rows].reset_index(drop=True), specs).bins
    np.testing.assert_array_equal(compact, expected)
    np.testing.assert_array_equal(transform_compact(frame, specs), transform(frame, specs).bins)
    # More bins than a byte holds (missing included): two bytes; 255 bins + missing still one.
    wide = (fit_bins(frame["k"], "numeric", 400),)
    assert wide[0].n_bins + 1 > 256
    assert compact_dtype(wide) == np.uint16
    np.testing.assert_array_equal(
        transform_compact(frame, wide, rows), transform(frame.iloc[rows], wide).bins
    )
    assert compact_dtype((BinSpec("e", "numeric", edges=tuple(range(254))),)) == np.uint8
    assert compact_dtype((BinSpec("e", "numeric", edges=tuple(range(255))),)) == np.uint16


@pytest.mark.parametrize("seed", range(6))
def test_numeric_split_search_is_exhaustive(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, n_bins = 400, 7
    bins = rng.integers(0, n_bins + 1, size=n).astype(np.int32)
    y = (rng.uniform(size=n) < sigmoid(bins - 3.0)).astype(int)
    g, h = gradients(y, np.zeros(n))
    hist = histogram(bins, n_bins, g, h)
    totals = (int(g.sum()), int(h.sum()), n)
    params = TreeParams(min_child_samples=5, min_child_weight=0.5)
    split = best_split(0, 0, "numeric", hist, totals, params, None)
    assert split is not None
    assert split.gain == pytest.approx(_brute_force(hist, "numeric", totals, params))
    left = goes_left(split, bins, n_bins)
    assert int(left.sum()) == split.left_count


@pytest.mark.parametrize("seed", range(6))
def test_categorical_ordering_finds_the_best_subset(seed: int) -> None:
    """Sorting categories by G/(H+lambda) is optimal for binary log-loss (Fisher 1958)."""
    rng = np.random.default_rng(100 + seed)
    n, n_bins = 500, 5
    bins = rng.integers(0, n_bins, size=n).astype(np.int32)
    effect = rng.normal(size=n_bins)
    y = (rng.uniform(size=n) < sigmoid(effect[bins])).astype(int)
    g, h = gradients(y, np.zeros(n))
    hist = histogram(bins, n_bins, g, h)
    totals = (int(g.sum()), int(h.sum()), n)
    params = TreeParams(min_child_samples=1, min_child_weight=0.0)
    split = best_split(0, 0, "categorical", hist, totals, params, None)
    assert split is not None
    assert split.gain == pytest.approx(_brute_force(hist, "categorical", totals, params), rel=1e-9)


def test_constraints_and_ties() -> None:
    g = np.array([1, 1, -1, -1], dtype=np.int64) * int(SCALE) // 4
    h = np.full(4, int(SCALE) // 8, dtype=np.int64)
    bins = np.array([0, 0, 1, 1], dtype=np.int32)
    hist = histogram(bins, 2, g, h)
    totals = (int(g.sum()), int(h.sum()), 4)
    strict = TreeParams(min_child_samples=3)
    assert best_split(0, 0, "numeric", hist, totals, strict, None) is None
    loose = TreeParams(min_child_samples=1, min_child_weight=0.0)
    first = best_split(0, 0, "numeric", hist, totals, loose, None)
    assert first is not None
    # An equally good candidate later in the order does not replace the first (strict >).
    again = best_split(1, 3, "numeric", hist, totals, loose, first)
    assert again is first


def test_missing_values_learn_their_side() -> None:
    bins = np.array([0] * 30 + [1] * 30 + [2] * 30, dtype=np.int32)  # bin 2 = missing
    y = np.array([0] * 30 + [1] * 30 + [1] * 30)
    g, h = gradients(y, np.zeros(90))
    split = best_split(
        0,
        0,
        "numeric",
        histogram(bins, 2, g, h),
        (int(g.sum()), int(h.sum()), 90),
        TreeParams(min_child_samples=1),
        None,
    )
    assert isinstance(split, Split)
    assert split.left_bins == (0,)
    assert split.missing_left is False
    assert goes_left(split, bins, 2).tolist() == [True] * 30 + [False] * 60


# ---------------------------------------------------------------- training


def test_core_learns_and_bank_only_trees_use_bank_features() -> None:
    rng = np.random.default_rng(7)
    n = 3000
    bank = pd.DataFrame({"b": rng.normal(size=n)})
    platform = pd.DataFrame({"p": rng.normal(size=n)})
    y = (
        rng.uniform(size=n) < sigmoid(2.5 * platform["p"].to_numpy() + 0.3 * bank["b"].to_numpy())
    ).astype(int)
    tables = [
        fit_transform(bank, {"b": "numeric"}, 16),
        fit_transform(platform, {"p": "numeric"}, 16),
    ]
    model = train(tables, y, TreeParams(max_depth=2), 10, label_owner=0, bank_only_trees=3)
    for tree in model.trees[:3]:
        assert all(n.split is None or n.split.owner == 0 for n in tree.nodes.values())
    assert any(n.split is not None and n.split.owner == 1 for n in model.trees[3].nodes.values())
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, model.predict_proba(tables)) > 0.8
