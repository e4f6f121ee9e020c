"""Monthly snapshots with drift: stationary when nothing happens, and each event where it should be.

Stability is measured with a plain population stability index written here (deciles of the
first month for numeric columns, levels for categorical ones), independent of the lab's code.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from features.synth.config import SMEConfig
from features.synth.schema import ID_COLUMN, LABEL_COLUMN
from features.synth.timeline import (
    VINTAGE_COLUMN,
    DriftConfig,
    SMETimeline,
    generate_timeline,
)

CONFIG = SMEConfig(n_enterprises=5000, bank_sizes=(3600,), seed=11)


def _psi(before: pd.Series, after: pd.Series) -> float:
    """Population stability index of ``after`` against ``before`` (missing is its own bin)."""
    if isinstance(before.dtype, pd.CategoricalDtype) or before.nunique() <= 12:
        a, b = before.astype(str), after.astype(str)
    else:
        edges = np.unique(np.nanquantile(before, np.linspace(0, 1, 11)))[1:-1]
        a = pd.Series(np.where(before.isna(), -1, np.searchsorted(edges, before))).astype(str)
        b = pd.Series(np.where(after.isna(), -1, np.searchsorted(edges, after))).astype(str)
    pa, pb = a.value_counts(normalize=True), b.value_counts(normalize=True)
    index = pa.index.union(pb.index)
    pa, pb = pa.reindex(index, fill_value=0) + 1e-4, pb.reindex(index, fill_value=0) + 1e-4
    return float(((pa - pb) * np.log(pa / pb)).sum())


@pytest.fixture(scope="module")
def quiet() -> SMETimeline:
    """Thirteen months without a shock or a policy change."""
    drift = DriftConfig(months=13, shock_month=None, policy_month=None, outcome_months=6)
    return generate_timeline(CONFIG, drift)


@pytest.fixture(scope="module")
def eventful() -> SMETimeline:
    """Twenty months: stricter grading from month 2 (re-graded in April, month 3), a hard
    shock in month 8."""
    drift = DriftConfig(months=20, policy_month=2, shock_month=8, shock_size=1.5, outcome_months=6)
    return generate_timeline(CONFIG, drift)


def test_deterministic_and_seeded() -> None:
    drift = DriftConfig(months=3)
    small = SMEConfig(n_enterprises=1500, seed=4)
    one, two = generate_timeline(small, drift), generate_timeline(small, drift)
    for month in one.months:
        pd.testing.assert_frame_equal(one.platform[month], two.platform[month])
    pd.testing.assert_frame_equal(one.banks["bank_1"], two.banks["bank_1"])
    other = generate_timeline(SMEConfig(n_enterprises=1500, seed=5), drift)
    assert not one.platform["2024-01"].equals(other.platform["2024-01"])


def test_snapshots_and_books_have_the_promised_shape(quiet: SMETimeline) -> None:
    assert (quiet.months[0], quiet.months[-1]) == ("2024-01", "2025-01")
    ids = quiet.platform["2024-01"][ID_COLUMN]
    assert len(ids) == CONFIG.n_enterprises
    assert ids.is_unique
    for month in quiet.months:  # the same firms, in the same order, every month
        assert quiet.platform[month][ID_COLUMN].equals(ids)
    book = quiet.banks["bank_1"]
    assert len(book) == 3600
    assert book[ID_COLUMN].is_unique  # once per bank: the privacy unit
    assert list(book.columns[:2]) == [ID_COLUMN, VINTAGE_COLUMN]
    per_vintage = book.groupby(VINTAGE_COLUMN).size()
    assert list(per_vintage.index) == list(quiet.months)
    assert per_vintage.max() - per_vintage.min() <= 1
    unknown = ~book[ID_COLUMN].isin(ids)
    assert 0.07 < unknown.mean() < 0.13  # about unmatched_rate of borrowers off the platform


def test_outcomes_are_known_only_once_matured(quiet: SMETimeline) -> None:
    book = quiet.banks["bank_1"]
    assert book[LABEL_COLUMN].dtype == "Int64"
    matured = book[VINTAGE_COLUMN] <= "2024-07"  # 2024-07 + 6 months = 2025-01, the last month
    assert book.loc[matured, LABEL_COLUMN].notna().all()
    assert book.loc[~matured, LABEL_COLUMN].isna().all()
    assert set(book.loc[matured, LABEL_COLUMN].astype(int)) == {0, 1}
    known = quiet.matured("bank_1")
    assert known[LABEL_COLUMN].dtype == np.int64
    assert len(known) == int(matured.sum())
    assert 0.015 < known[LABEL_COLUMN].mean() < 0.07


def test_an_unchanged_window_does_not_drift(quiet: SMETimeline) -> None:
    first, year_later = quiet.platform["2024-01"], quiet.platform["2025-01"]
    drift = {col: _psi(first[col], year_later[col]) for col in first.columns[1:]}
    assert max(drift.values()) < 0.05, sorted(drift.items(), key=lambda kv: -kv[1])[:3]


def test_records_persist_from_month_to_month(quiet: SMETimeline) -> None:
    jan, feb = quiet.platform["2024-01"], quiet.platform["2024-02"]
    for col in ("vat_sales_12m_10k_cny", "si_insured_headcount", "registered_capital_10k_cny"):
        assert jan[col].corr(feb[col], method="spearman") > 0.8, col
    # certificates are refreshed rarely: most firms keep last month's record exactly
    assert (jan["qm_iso9001"] == feb["qm_iso9001"]).mean() > 0.95
    # the grade moves only at a re-grading (April)
    assert jan["tax_credit_grade"].equals(quiet.platform["2024-03"]["tax_credit_grade"])
    assert not jan["tax_credit_grade"].equals(quiet.platform["2024-04"]["tax_credit_grade"])


def test_stricter_grading_shows_at_the_next_regrading(eventful: SMETimeline) -> None:
    share_a = {m: (s["tax_credit_grade"] == "A").mean() for m, s in eventful.platform.items()}
    assert share_a["2024-03"] == share_a["2024-01"]  # policy from month 2, no re-grading yet
    assert share_a["2024-04"] < 0.7 * share_a["2024-03"]
    assert _psi(eventful.platform["2024-03"]["tax_credit_grade"],
                eventful.platform["2024-04"]["tax_credit_grade"]) > 0.05  # fmt: skip


def test_the_regional_shock_hits_that_region_only(eventful: SMETimeline) -> None:
    before, after = eventful.platform["2024-08"], eventful.platform["2024-09"]  # shock: month 8
    hit = before[ID_COLUMN].isin(eventful.shocked)
    assert 0.05 < hit.mean() < 0.15
    col = "si_headcount_change_12m"
    change = after[col] - before[col]
    assert change[hit].mean() < -0.1  # health fell by 1.5 sd in the region
    assert abs(change[~hit].mean()) < 0.03
    assert _psi(before.loc[hit, col], after.loc[hit, col]) > 0.25
    assert _psi(before.loc[~hit, col], after.loc[~hit, col]) < 0.05


def test_loans_exposed_to_the_shock_default_more(eventful: SMETimeline) -> None:
    book = eventful.matured("bank_1")  # vintages 2024-01 .. 2025-02
    hit = book[ID_COLUMN].isin(eventful.shocked)
    exposed = book[VINTAGE_COLUMN] >= "2024-03"  # default windows reach past month 8
    rate = book.groupby([hit, exposed])[LABEL_COLUMN].mean()
    assert rate[(True, True)] > 2.0 * rate[(False, True)]
    assert rate[(True, True)] > 2.0 * rate[(True, False)]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("start", "2024-13", "start must be a month written YYYY-MM"),
        ("months", 0, "months must be an integer >= 1"),
        ("persistence", 1.0, "persistence must be in [0, 1)"),
        ("shock_province", "Atlantis", "shock_province must be one of Guangdong"),
        ("shock_month", -1, "shock_month must be a month index >= 0"),
        ("shock_size", -1.0, "shock_size must be a finite number >= 0"),
        ("outcome_months", 0, "outcome_months must be an integer >= 1"),
    ],
)
def test_bad_drift_settings_name_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        DriftConfig(**{field: value})  # type: ignore[arg-type]


def test_season_shock_and_regrading_calendar() -> None:
    drift = DriftConfig(start="2024-01", shock_month=5, shock_size=1.0, shock_recovery=0.5)
    season = [drift.seasonal(t) for t in range(12)]
    assert (int(np.argmin(season)), int(np.argmax(season))) == (1, 7)  # February, August
    assert [drift.shock(t) for t in (4, 5, 6, 7)] == [0.0, 1.0, 0.5, 0.25]
    assert [t for t in range(30) if drift.regrades(t)] == [0, 3, 15, 27]
    with pytest.raises(ValueError, match="cannot lend every one of 36 months"):
        generate_timeline(SMEConfig(n_enterprises=1000, bank_sizes=(30,)), DriftConfig())
    with pytest.raises(ValueError, match="keep names months outside"):
        generate_timeline(SMEConfig(n_enterprises=1000), DriftConfig(months=2), keep=(5,))
