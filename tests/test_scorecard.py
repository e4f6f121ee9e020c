"""Points scorecard from a WOE logistic regression (models.scorecard)."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from features.binning import fit_bins
from features.woe import WoeTable, count_bins
from models.scorecard import Scorecard, ScorecardError, ScorecardScaling

FACTOR = 20 / math.log(2)
OFFSET = 600 - FACTOR * math.log(50)


def table(name: str, woe: list[float], party: str = "bank") -> WoeTable:
    """A WoeTable with given WOE per coarse bin (missing last), one fine bin per coarse bin."""
    m = len(woe)
    return WoeTable(
        name=name,
        party=party,
        kind="numeric",
        mapping=tuple(range(m)),
        labels=(*(f"bin {i}" for i in range(m - 1)), "missing"),
        woe=tuple(woe),
        total=tuple([10] * (m - 1) + [0]),
        bad=tuple([i % 3 for i in range(m - 1)] + [0]),
        iv=0.1 * m,
    )


@pytest.fixture
def two_features() -> Scorecard:
    a = table("a", [0.5, -0.2, -1.0, 0.0])
    b = table("b", [0.3, -0.6, 0.0], party="platform")
    return Scorecard.build([a, b], {"a": -0.8, "b": -1.2}, intercept=-2.0)


# --- scaling --------------------------------------------------------------------------------


def test_scaling_constants() -> None:
    s = ScorecardScaling()
    assert s.factor == pytest.approx(FACTOR)
    assert s.offset == pytest.approx(OFFSET)
    # odds 50:1 good:bad -> P(bad) = 1/51 -> logit = -ln 50 -> base points
    assert s.score_from_logit(-math.log(50)) == pytest.approx(600.0)
    # doubling the good odds adds pdo points
    assert s.score_from_logit(-math.log(100)) == pytest.approx(620.0)
    assert s.logit_from_score(s.score_from_logit(1.3)) == pytest.approx(1.3)


@pytest.mark.parametrize(
    "kwargs", [{"pdo": 0.0}, {"pdo": -5.0}, {"base_odds": 0.0}, {"base_points": math.inf}]
)
def test_scaling_rejects_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ScorecardError):
        ScorecardScaling(**kwargs)


# --- points and scores ----------------------------------------------------------------------


def test_hand_made_points_and_score(two_features: Scorecard) -> None:
    card = two_features
    a, b = card.features
    assert a.points[0] == pytest.approx(-(-0.8 * 0.5 + -2.0 / 2) * FACTOR + OFFSET / 2)
    assert b.points[1] == pytest.approx(-(-1.2 * -0.6 + -2.0 / 2) * FACTOR + OFFSET / 2)
    bins = {"a": np.array([0, 1, 2, 3]), "b": np.array([0, 1, 2, 1])}
    scores = card.score(bins)
    woe_a = np.array([0.5, -0.2, -1.0, 0.0])
    woe_b = np.array([0.3, -0.6, 0.0, -0.6])
    logit = -2.0 - 0.8 * woe_a - 1.2 * woe_b
    np.testing.assert_allclose(scores, OFFSET - FACTOR * logit, rtol=0, atol=1e-9)
    np.testing.assert_allclose(
        card.probability_of_default(scores), 1 / (1 + np.exp(-logit)), rtol=1e-12
    )
    assert card.intercept_points == pytest.approx(OFFSET + 2.0 * FACTOR)
    assert card.max_score == pytest.approx(max(a.points) + max(b.points))
    assert card.min_score == pytest.approx(min(a.points) + min(b.points))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_score_equals_regression_for_random_cards(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_features = int(rng.integers(1, 6))
    tables = [
        table(f"f{j}", rng.normal(size=int(rng.integers(2, 9))).tolist()) for j in range(n_features)
    ]
    coefs = {t.name: float(rng.normal()) for t in tables}
    intercept = float(rng.normal(scale=3))
    scaling = ScorecardScaling(
        base_points=float(rng.uniform(300, 900)),
        base_odds=float(rng.uniform(1, 100)),
        pdo=float(rng.uniform(5, 60)),
    )
    card = Scorecard.build(tables, coefs, intercept, scaling)
    rows = 50
    bins = {t.name: rng.integers(0, len(t.woe), size=rows) for t in tables}
    logit = intercept + sum(coefs[t.name] * np.asarray(t.woe)[bins[t.name]] for t in tables)
    expect = scaling.offset - scaling.factor * logit
    np.testing.assert_allclose(card.score(bins), expect, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(
        card.probability_of_default(card.score(bins)), 1 / (1 + np.exp(-logit)), rtol=1e-9
    )


def test_points_table_shape(two_features: Scorecard) -> None:
    frame = two_features.table()
    assert list(frame.columns) == [
        "group",
        "party",
        "feature",
        "bin",
        "label",
        "woe",
        "coefficient",
        "points",
        "n",
        "bad_rate",
    ]
    assert len(frame) == 4 + 3
    assert frame["feature"].tolist() == ["a"] * 4 + ["b"] * 3
    assert frame["bin"].tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert frame["party"].tolist() == ["bank"] * 4 + ["platform"] * 3
    assert frame["label"].iloc[3] == "missing"
    assert math.isnan(frame["bad_rate"].iloc[3])  # empty missing bin
    assert frame["bad_rate"].iloc[1] == pytest.approx(0.1)


def test_score_rejects_bad_bins(two_features: Scorecard) -> None:
    with pytest.raises(ScorecardError, match="missing"):
        two_features.score({"a": np.array([0])})
    with pytest.raises(ScorecardError, match=r"0\.\.2"):
        two_features.score({"a": np.array([0]), "b": np.array([3])})
    with pytest.raises(ScorecardError, match="rows"):
        two_features.score({"a": np.array([0, 1]), "b": np.array([0])})
    # extra keys are ignored
    assert two_features.score({"a": np.array([0]), "b": np.array([0]), "z": np.array([9])}).shape
    assert two_features.score({"a": np.array([], dtype=int), "b": np.array([], dtype=int)}).shape


def test_build_rejects_inconsistent_inputs() -> None:
    a = table("a", [0.5, -0.5, 0.0])
    with pytest.raises(ScorecardError, match="missing"):
        Scorecard.build([a], {}, 0.0)
    with pytest.raises(ScorecardError, match="without a table"):
        Scorecard.build([a], {"a": 1.0, "b": 1.0}, 0.0)
    with pytest.raises(ScorecardError, match="groups"):
        Scorecard.build([a], {"a": 1.0}, 0.0, groups={"zz": "g"})
    with pytest.raises(ScorecardError, match="unique"):
        Scorecard.build([a, a], {"a": 1.0}, 0.0)
    with pytest.raises(ScorecardError):
        Scorecard.build([], {}, 0.0)
    with pytest.raises(ScorecardError):
        Scorecard.build([a], {"a": math.nan}, 0.0)


# --- reason codes ---------------------------------------------------------------------------


def test_reason_codes_order_groups_and_ties() -> None:
    # coefficient -1, intercept 0: points_jb = woe_jb * factor + offset / n
    t1 = table("pay_late", [1.0, 0.0, -1.0, 0.0])
    t2 = table("pay_count", [0.5, -0.5, 0.0])
    t3 = table("income", [2.0, 0.0, 0.0])
    t4 = table("age", [1.0, 0.0, 0.0])
    card = Scorecard.build(
        [t1, t2, t3, t4],
        {"pay_late": -1.0, "pay_count": -1.0, "income": -1.0, "age": -1.0},
        intercept=0.0,
        groups={"pay_late": "repayment", "pay_count": "repayment"},
    )
    assert card.groups == ("age", "income", "repayment")
    bins = {
        # row 0: repayment loses 2 + 1 = 3, income 2, age 1
        # row 1: all at their maximum -> no reasons
        # row 2: repayment loses 1 + 0, income 0, age 1 -> tie broken by name: age first
        # row 3: income loses 2, repayment 1 (pay_late bin 1), age 0
        "pay_late": np.array([2, 0, 1, 1]),
        "pay_count": np.array([1, 0, 0, 0]),
        "income": np.array([1, 0, 0, 2]),
        "age": np.array([1, 0, 1, 0]),
    }
    codes = card.reason_codes(bins, top_k=3)
    assert codes == [
        ["repayment", "income", "age"],
        [],
        ["age", "repayment"],
        ["income", "repayment"],
    ]
    assert card.reason_codes(bins, top_k=1) == [["repayment"], [], ["age"], ["income"]]
    assert card.reason_codes(bins, top_k=0) == [[], [], [], []]
    with pytest.raises(ScorecardError):
        card.reason_codes(bins, top_k=-1)


def test_reason_codes_default_groups_are_features(two_features: Scorecard) -> None:
    assert two_features.groups == ("a", "b")
    codes = two_features.reason_codes({"a": np.array([2]), "b": np.array([1])})
    # a loses (0.5 - -1.0) * 0.8 * factor = 1.2 f; b loses (0.3 - -0.6) * 1.2 * factor = 1.08 f
    assert codes == [["a", "b"]]


# --- persistence ----------------------------------------------------------------------------


def test_to_dict_round_trip(two_features: Scorecard) -> None:
    data = json.loads(json.dumps(two_features.to_dict()))
    again = Scorecard.from_dict(data)
    assert again == two_features
    bins = {"a": np.array([0, 1, 2, 3]), "b": np.array([0, 1, 2, 1])}
    assert again.score(bins).tolist() == two_features.score(bins).tolist()


def test_csv_written_and_parseable(two_features: Scorecard, tmp_path: Path) -> None:
    path = two_features.to_csv(tmp_path / "card.csv")
    frame = pd.read_csv(path)
    expected = two_features.table()
    assert list(frame.columns) == list(expected.columns)
    assert len(frame) == len(expected)
    np.testing.assert_allclose(frame["points"], expected["points"], rtol=0, atol=1e-12)


class _Tables(HTMLParser):
    """Counts tables and cells and records tags that would load external assets."""

    def __init__(self) -> None:
        super().__init__()
        self.tables = 0
        self.cells: list[str] = []
        self.external: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables += 1
        if tag in ("td", "th"):
            self._in_cell = True
            self.cells.append("")
        if tag in ("script", "link", "img", "iframe") or any(
            k in ("src", "href") for k, _ in attrs
        ):
            self.external.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.cells[-1] += data.strip()


def test_html_self_contained(two_features: Scorecard, tmp_path: Path) -> None:
    path = two_features.to_html(tmp_path / "card.html", title="Test <card>")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "Test &lt;card&gt;" in text
    parser = _Tables()
    parser.feed(text)
    assert parser.tables == 3  # scaling, IV, points
    assert parser.external == []
    cells = set(parser.cells)
    assert {"base points", "600", "50:1", "20", "iv", "points"} <= cells
    a_points = two_features.features[0].points[0]
    assert f"{a_points:.2f}" in cells
    assert "missing" in cells


# --- end to end with scikit-learn -----------------------------------------------------------


def test_sklearn_lr_on_woe_gives_consistent_scorecard() -> None:
    rng = np.random.default_rng(11)
    n = 3000
    frame = pd.DataFrame(
        {
            "income": rng.lognormal(3, 0.6, size=n),
            "late": rng.poisson(1.0, size=n).astype(float),
            "sector": rng.choice(["A", "B", "C", "D"], size=n),
        }
    )
    frame.loc[rng.random(n) < 0.05, "income"] = np.nan
    sector_risk = frame["sector"].map({"A": -0.5, "B": 0.0, "C": 0.5, "D": 1.0}).to_numpy()
    logit = (
        -2.0
        - 0.03 * frame["income"].fillna(20).to_numpy()
        + 0.7 * frame["late"].to_numpy()
        + sector_risk
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)

    kinds = {"income": "numeric", "late": "numeric", "sector": "categorical"}
    tables = []
    fine = {}
    for col, kind in kinds.items():
        spec = fit_bins(frame[col], kind, 20)  # type: ignore[arg-type]
        fine[col] = spec.transform(frame[col])
        total, bad = count_bins(fine[col], y, spec.n_bins + 1)
        party = "bank" if col != "late" else "platform"
        tables.append(
            WoeTable.fit(col, party, kind, total, bad, spec=spec if party == "bank" else None)  # type: ignore[arg-type]
        )
    X = np.column_stack([t.encode(fine[t.name]) for t in tables])
    lr = LogisticRegression(C=1e4, max_iter=1000).fit(X, y)
    coefs = {t.name: float(c) for t, c in zip(tables, lr.coef_[0], strict=True)}
    card = Scorecard.build(tables, coefs, float(lr.intercept_[0]))
    coarse = {t.name: t.coarse(fine[t.name]) for t in tables}
    scores = card.score(coarse)

    s = card.scaling
    np.testing.assert_allclose(
        scores, s.offset - s.factor * lr.decision_function(X), rtol=0, atol=1e-8
    )
    p = lr.predict_proba(X)[:, 1]
    order = np.argsort(p, kind="stable")
    assert (np.diff(scores[order]) <= 1e-8).all()
    np.testing.assert_allclose(card.probability_of_default(scores), p, rtol=1e-8, atol=1e-12)
    assert all(c < 0 for c in coefs.values())  # WOE is "higher = safer"
    reasons = card.reason_codes(coarse)
    assert len(reasons) == n
    assert all(len(r) <= 3 for r in reasons)
