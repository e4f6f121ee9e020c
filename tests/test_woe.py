"""WOE/IV from counts and fine-to-coarse merging (features.woe)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.binning import BinSpec, fit_bins
from features.woe import (
    MergeKind,
    WoeError,
    WoeTable,
    _column_iv,
    count_bins,
    iv_strength,
    iv_table,
    merge_bins,
    woe_iv,
)

FAST = settings(max_examples=40, deadline=None)


@st.composite
def fine_counts(draw: st.DrawFn, max_value_bins: int = 20) -> tuple[list[int], list[int]]:
    """Counts for 1..max_value_bins value bins plus the missing bin (some bins empty)."""
    n = draw(st.integers(1, max_value_bins)) + 1
    total = draw(st.lists(st.one_of(st.just(0), st.integers(0, 400)), min_size=n, max_size=n))
    bad = [draw(st.integers(0, t)) for t in total]
    return total, bad


def coarse_counts(
    mapping: np.ndarray, total: list[int], bad: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    m = int(mapping[-1]) + 1
    ct = np.zeros(m, dtype=np.int64)
    cb = np.zeros(m, dtype=np.int64)
    np.add.at(ct, mapping, np.asarray(total))
    np.add.at(cb, mapping, np.asarray(bad))
    return ct, cb


def smoothed_rate(t: np.ndarray, b: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    return (b + alpha) / (t + 2 * alpha)


# --- count_bins ---------------------------------------------------------------------------------


def test_count_bins_counts_rows_and_bads() -> None:
    bins = np.array([0, 1, 1, 3, 3, 3], dtype=np.int32)
    y = np.array([1, 0, 1, 0, 0, 1])
    total, bad = count_bins(bins, y, 4)
    assert total.tolist() == [1, 2, 0, 3]
    assert bad.tolist() == [1, 1, 0, 1]
    assert total.dtype == np.int64
    assert bad.dtype == np.int64


@pytest.mark.parametrize(
    ("bins", "y", "n"),
    [
        ([0, 4], [0, 1], 4),  # bin out of range
        ([0, -1], [0, 1], 4),
        ([0, 1], [0, 2], 4),  # label not 0/1
        ([0, 1], [0], 4),  # lengths differ
        ([0.5, 1.0], [0, 1], 4),  # not integers
    ],
)
def test_count_bins_rejects_bad_input(bins: list[float], y: list[int], n: int) -> None:
    with pytest.raises(WoeError):
        count_bins(np.asarray(bins), np.asarray(y), n)


# --- woe_iv ---------------------------------------------------------------------------------


def test_woe_iv_hand_computed() -> None:
    # good = [8, 5], G = 13, B = 7, k = 2, a = 0.5
    woe, iv_bins, iv = woe_iv([10, 10], [2, 5], alpha=0.5)
    dg = [8.5 / 14, 5.5 / 14]
    db = [2.5 / 8, 5.5 / 8]
    expect_woe = [math.log(68 / 35), math.log(4 / 7)]
    assert woe.tolist() == pytest.approx(expect_woe, abs=1e-12)
    expect_iv = [(dg[i] - db[i]) * expect_woe[i] for i in range(2)]
    assert iv_bins.tolist() == pytest.approx(expect_iv, abs=1e-12)
    assert iv == pytest.approx(sum(expect_iv), abs=1e-12)
    assert iv == pytest.approx(0.36057668967437334, abs=1e-12)


def test_woe_iv_other_alpha_and_pure_bin() -> None:
    # a pure-good bin stays finite thanks to smoothing: good=[10, 0], bad=[0, 10], a=1, k=2
    woe, _, iv = woe_iv([10, 10], [0, 10], alpha=1.0)
    assert woe[0] == pytest.approx(math.log((11 / 12) / (1 / 12)))
    assert woe[1] == pytest.approx(-woe[0])
    assert iv == pytest.approx(2 * (10 / 12) * math.log(11))


def test_empty_bins_get_zero_woe_and_do_not_count_in_k() -> None:
    woe, iv_bins, iv = woe_iv([10, 0, 10, 0], [2, 0, 5, 0])
    woe2, _, iv2 = woe_iv([10, 10], [2, 5])
    assert woe[[1, 3]].tolist() == [0.0, 0.0]
    assert iv_bins[[1, 3]].tolist() == [0.0, 0.0]
    assert woe[[0, 2]].tolist() == woe2.tolist()
    assert iv == iv2


def test_woe_iv_all_empty_is_zero() -> None:
    woe, iv_bins, iv = woe_iv([0, 0], [0, 0])
    assert woe.tolist() == [0.0, 0.0]
    assert iv_bins.tolist() == [0.0, 0.0]
    assert iv == 0.0


def test_higher_woe_means_lower_risk() -> None:
    woe, _, _ = woe_iv([100, 100], [5, 40])
    assert woe[0] > 0 > woe[1]


@pytest.mark.parametrize(
    ("total", "bad", "alpha"),
    [
        ([5, 5], [6, 0], 0.5),  # bad > total
        ([5, -1], [0, 0], 0.5),  # negative count
        ([5, 5], [1, 1], 0.0),  # no smoothing
        ([5], [1, 1], 0.5),  # lengths differ
        ([5.5, 5], [1, 1], 0.5),  # not a count
        (["5", "5"], [1, 1], 0.5),  # not numbers
        ([5, math.nan], [1, 1], 0.5),
    ],
)
def test_woe_iv_rejects_bad_counts(total: list[float | str], bad: list[int], alpha: float) -> None:
    with pytest.raises(WoeError):
        woe_iv(total, bad, alpha)


@FAST
@given(fine_counts(), st.floats(0.01, 5.0))
def test_woe_iv_properties(counts: tuple[list[int], list[int]], alpha: float) -> None:
    total, bad = counts
    woe, iv_bins, iv = woe_iv(total, bad, alpha)
    assert np.isfinite(woe).all()
    assert (iv_bins >= -1e-15).all()
    assert iv == pytest.approx(float(iv_bins.sum()))
    assert iv == pytest.approx(_column_iv(total, bad, alpha), rel=1e-12, abs=1e-15)
    # identical integer counts -> bit-identical results (plaintext vs encrypted counts)
    again = woe_iv(np.asarray(total, dtype=np.int64), np.asarray(bad, dtype=np.int64), alpha)
    assert again[0].tolist() == woe.tolist()
    assert again[2] == iv


# --- merge_bins -----------------------------------------------------------------------------


def check_mapping(mapping: np.ndarray, n_fine: int) -> int:
    """Every fine bin mapped, value bins onto 0..m-1, missing to m; returns m."""
    assert mapping.dtype == np.int32
    assert mapping.shape == (n_fine,)
    m = int(mapping[-1])
    assert m >= 1
    assert sorted(set(mapping[:-1].tolist())) == list(range(m))
    return m


@FAST
@given(
    fine_counts(),
    st.sampled_from([0.0, 0.05, 0.1, 0.3]),
    st.integers(1, 8),
    st.sampled_from(["numeric", "categorical"]),
)
def test_monotone_merge_respects_all_rules(
    counts: tuple[list[int], list[int]], min_share: float, max_bins: int, kind: MergeKind
) -> None:
    total, bad = counts
    mapping = merge_bins(
        total, bad, kind=kind, method="monotone", min_bin_share=min_share, max_bins=max_bins
    )
    m = check_mapping(mapping, len(total))
    assert m <= max_bins
    if kind == "numeric":
        assert (np.diff(mapping[:-1]) >= 0).all()
    ct, cb = coarse_counts(mapping, total, bad)
    value_rows = sum(total[:-1])
    if value_rows == 0:
        assert m == 1
        return
    assert (ct[:m] > 0).all()
    if m > 1:
        assert (ct[:m] >= min_share * value_rows).all()
        rates = smoothed_rate(ct[:m], cb[:m])
        steps = np.diff(rates)
        assert (steps > 0).all() or (steps < 0).all()
        woe = woe_iv(ct, cb)[0][:m]
        assert (np.diff(woe) < 0).all() or (np.diff(woe) > 0).all()
        if kind == "categorical":
            assert (steps > 0).all()  # least risky coarse bin first
    # missing keeps its own coarse bin
    assert ct[m] == total[-1]
    assert cb[m] == bad[-1]


@FAST
@given(fine_counts(), st.sampled_from([0.0, 0.05, 0.2]), st.integers(1, 8), st.randoms())
def test_quantile_merge_uses_no_labels(
    counts: tuple[list[int], list[int]], min_share: float, max_bins: int, rnd: object
) -> None:
    total, bad = counts
    shuffled = list(bad)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    other_bad = [min(b, t) for b, t in zip(shuffled, total, strict=True)]
    kinds: tuple[MergeKind, ...] = ("numeric", "categorical")
    for kind in kinds:
        a = merge_bins(
            total, bad, kind=kind, method="quantile", min_bin_share=min_share, max_bins=max_bins
        )
        b = merge_bins(
            total,
            other_bad,
            kind=kind,
            method="quantile",
            min_bin_share=min_share,
            max_bins=max_bins,
        )
        c = merge_bins(
            total,
            [0] * len(total),
            kind=kind,
            method="quantile",
            min_bin_share=min_share,
            max_bins=max_bins,
        )
        assert a.tolist() == b.tolist() == c.tolist()
        m = check_mapping(a, len(total))
        assert m <= max_bins
        ct, _ = coarse_counts(a, total, bad)
        if m > 1:
            assert (ct[:m] >= min_share * sum(total[:-1])).all()


def test_quantile_merges_small_bins_by_size() -> None:
    total = [100, 3, 100, 100, 2, 0]
    mapping = merge_bins(total, [0] * 6, kind="numeric", method="quantile", min_bin_share=0.05)
    # bin 1 (3 rows) joins its smaller neighbour (ties -> left), bin 4 joins bin 3
    assert mapping.tolist() == [0, 0, 1, 2, 2, 3]


def test_monotone_picks_direction_and_merges_violators() -> None:
    total = [200, 200, 200, 200, 200, 0]
    bad = [10, 30, 25, 60, 90, 0]  # rising risk with one dip
    mapping = merge_bins(total, bad, kind="numeric", method="monotone", min_bin_share=0.05)
    assert mapping.tolist() == [0, 1, 1, 2, 3, 4]
    ct, cb = coarse_counts(mapping, total, bad)
    woe = woe_iv(ct, cb)[0]
    assert (np.diff(woe[:4]) < 0).all()
    assert woe[4] == 0.0  # empty missing bin
    # the mirror image picks the other direction
    mirrored = merge_bins(
        [*total[:5][::-1], 0], [*bad[:5][::-1], 0], kind="numeric", method="monotone"
    )
    assert mirrored.tolist() == [0, 1, 2, 2, 3, 4]


def test_monotone_respects_min_share_and_max_bins() -> None:
    total = [50, 300, 10, 300, 300, 300, 300, 300, 300, 300, 0]
    bad = [1, 5, 1, 15, 25, 40, 60, 90, 130, 180, 0]
    mapping = merge_bins(
        total, bad, kind="numeric", method="monotone", min_bin_share=0.05, max_bins=4
    )
    m = check_mapping(mapping, 11)
    assert m == 4
    ct, _ = coarse_counts(mapping, total, bad)
    assert (ct[:m] >= 0.05 * sum(total[:-1])).all()


def test_categorical_monotone_orders_by_bad_rate() -> None:
    total = [100, 100, 100, 100, 10]
    bad = [50, 10, 30, 5, 2]  # rates 0.5, 0.1, 0.3, 0.05; missing 0.2
    mapping = merge_bins(
        total, bad, kind="categorical", method="monotone", min_bin_share=0.0, max_bins=10
    )
    assert mapping.tolist() == [3, 1, 2, 0, 4]


def test_categorical_empty_category_joins_largest_bin() -> None:
    total = [100, 0, 400, 100, 0]
    bad = [50, 0, 40, 5, 0]
    mapping = merge_bins(total, bad, kind="categorical", method="monotone", min_bin_share=0.0)
    # order by rate: 3 (0.05), 2 (0.1), 0 (0.5); empty 1 joins the largest (category 2)
    assert mapping.tolist() == [2, 1, 1, 0, 3]


def test_numeric_empty_bins_join_left_neighbour() -> None:
    total = [0, 100, 0, 100, 0, 5]
    bad = [0, 10, 0, 40, 0, 1]
    mapping = merge_bins(total, bad, kind="numeric", method="monotone", min_bin_share=0.0)
    assert mapping.tolist() == [0, 0, 0, 1, 1, 2]


def test_missing_bin_is_never_merged() -> None:
    total = [500, 500, 2]  # missing is tiny and has the same rate as bin 1
    bad = [50, 100, 0]
    mapping = merge_bins(total, bad, kind="numeric", method="monotone", min_bin_share=0.1)
    assert mapping.tolist() == [0, 1, 2]
    only_missing = merge_bins([0, 0, 30], [0, 0, 3], kind="numeric", method="monotone")
    assert only_missing.tolist() == [0, 0, 1]


def test_merge_is_deterministic() -> None:
    rng = np.random.default_rng(7)
    total = rng.integers(0, 300, size=21)
    bad = rng.binomial(total, 0.2)
    runs = {
        tuple(merge_bins(total, bad, kind="numeric", method="monotone").tolist()) for _ in range(3)
    }
    assert len(runs) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_bin_share": -0.1},
        {"min_bin_share": 1.5},
        {"max_bins": 0},
        {"kind": "ordinal"},
        {"method": "optimal"},
    ],
)
def test_merge_rejects_bad_parameters(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"kind": "numeric", "method": "monotone", **kwargs}
    with pytest.raises(WoeError):
        merge_bins([10, 10, 0], [1, 2, 0], **args)  # type: ignore[arg-type]


# --- WoeTable -------------------------------------------------------------------------------


def test_woe_table_numeric_labels_from_spec() -> None:
    spec = BinSpec(name="age", kind="numeric", edges=(1.5, 3.0, 7.25))
    total = [200, 200, 200, 200, 40]
    bad = [10, 30, 60, 90, 8]
    table = WoeTable.fit(
        "age", "bank", "numeric", total, bad, spec=spec, min_bin_share=0.0, max_bins=8
    )
    assert table.mapping == (0, 1, 2, 3, 4)
    assert table.labels == ("(-inf, 1.5]", "(1.5, 3.0]", "(3.0, 7.25]", "(7.25, +inf)", "missing")
    merged = WoeTable.fit("age", "bank", "numeric", total, bad, spec=spec, max_bins=2)
    assert merged.labels == ("(-inf, 3.0]", "(3.0, +inf)", "missing")
    woe, _, iv = woe_iv([400, 400, 40], [40, 150, 8])
    assert merged.woe == tuple(woe.tolist())
    assert merged.iv == iv
    assert merged.total == (400, 400, 40)
    assert merged.bad == (40, 150, 8)


def test_woe_table_categorical_and_anonymous_labels() -> None:
    spec = BinSpec(name="sector", kind="categorical", categories=("A", "B", "C"))
    total = [100, 100, 100, 100, 0]
    bad = [12, 50, 10, 5, 0]  # rates A 0.12, B 0.5, C 0.1, other 0.05
    table = WoeTable.fit(
        "sector", "bank", "categorical", total, bad, spec=spec, min_bin_share=0.0, max_bins=3
    )
    assert table.labels == ("{other}", "{A, C}", "{B}", "missing")
    assert table.woe[-1] == 0.0
    anon = WoeTable.fit("p_c", "platform", "categorical", total, bad, min_bin_share=0.0, max_bins=3)
    assert anon.labels == ("bin 3", "bins 0, 2", "bin 1", "missing")
    anon_num = WoeTable.fit(
        "p_x", "platform", "numeric", [100, 100, 100, 100, 5], [5, 6, 30, 31, 1], max_bins=2
    )
    assert anon_num.labels == ("bin 0-1", "bin 2-3", "missing")


def test_woe_table_encode_and_coarse() -> None:
    table = WoeTable.fit("x", "bank", "numeric", [100, 100, 0, 20], [5, 50, 0, 3], max_bins=8)
    fine = np.array([0, 1, 2, 3, 1], dtype=np.int32)
    coarse = table.coarse(fine)
    assert coarse.dtype == np.int32
    assert coarse.tolist() == [table.mapping[i] for i in fine]
    assert table.encode(fine).tolist() == [table.woe[c] for c in coarse]
    with pytest.raises(WoeError):
        table.coarse(np.array([4]))


def test_woe_table_rejects_mismatched_spec() -> None:
    spec = BinSpec(name="x", kind="numeric", edges=(1.0,))
    with pytest.raises(WoeError):
        WoeTable.fit("x", "bank", "numeric", [1, 2, 3, 4], [0, 0, 0, 0], spec=spec)
    with pytest.raises(WoeError):
        WoeTable.fit("x", "bank", "categorical", [1, 2, 3], [0, 0, 0], spec=spec)


def test_woe_table_round_trip_through_json() -> None:
    spec = BinSpec(name="age", kind="numeric", edges=(1.5, 3.0))
    table = WoeTable.fit("age", "bank", "numeric", [100, 120, 90, 7], [5, 20, 40, 2], spec=spec)
    data = json.loads(json.dumps(table.to_dict()))
    assert WoeTable.from_dict(data) == table
    broken = {**data, "mapping": [0, 5, 0, 1]}
    with pytest.raises(WoeError):
        WoeTable.from_dict(broken)


def test_fit_from_real_bins_matches_counts() -> None:
    rng = np.random.default_rng(3)
    x = pd.Series(rng.normal(size=2000), name="x")
    x[rng.random(2000) < 0.05] = np.nan
    y = (rng.random(2000) < 1 / (1 + np.exp(-(x.fillna(0).to_numpy() * 1.5 - 2)))).astype(int)
    spec = fit_bins(x, "numeric", 20)
    bins = spec.transform(x)
    total, bad = count_bins(bins, y, spec.n_bins + 1)
    table = WoeTable.fit("x", "bank", "numeric", total, bad, spec=spec)
    assert sum(table.total) == 2000
    assert sum(table.bad) == int(y.sum())
    woe = table.encode(bins)
    assert (np.diff(np.asarray(table.woe[:-1])) < 0).all()  # risk rises with x
    assert table.iv > 0.1
    assert woe.shape == (2000,)


# --- iv_table -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("iv", "label"),
    [
        (0.0, "useless"),
        (0.0199, "useless"),
        (0.02, "weak"),
        (0.1, "medium"),
        (0.3, "strong"),
        (0.5, "suspicious"),
        (2.0, "suspicious"),
    ],
)
def test_iv_strength(iv: float, label: str) -> None:
    assert iv_strength(iv) == label


def test_iv_table_sorted_with_strength() -> None:
    a = WoeTable.fit("a", "bank", "numeric", [100, 100, 0], [10, 60, 0])
    b = WoeTable.fit("b", "platform", "numeric", [100, 100, 0], [30, 32, 0])
    frame = iv_table([b, a])
    assert list(frame.columns) == ["party", "feature", "iv", "n_bins", "strength"]
    assert frame["feature"].tolist() == ["a", "b"]
    assert frame["n_bins"].tolist() == [2, sum(1 for v in b.total if v > 0)]
    assert frame["strength"].tolist() == [iv_strength(a.iv), iv_strength(b.iv)]
