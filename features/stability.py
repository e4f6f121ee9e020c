r"""Population and characteristic stability indices from binned counts alone.

The population stability index (PSI) compares the distribution of one quantity in a
*reference* window (the training window) with its distribution in a *recent* window, over bins
fixed on the reference. For a score it is called PSI; for one input feature it is usually
called the characteristic stability index (CSI); the formula is the same:

.. math::

    \mathrm{PSI} = \sum_b (a_b - e_b) \ln(a_b / e_b)

where ``e_b`` and ``a_b`` are the shares of the reference ("expected") and recent ("actual")
rows in bin ``b`` (Siddiqi, *Credit Risk Scorecards*, 2006; Yurdakul, "Statistical properties of
the population stability index", 2018). Every term is non-negative, and the index is symmetric in
the two windows.

Conventions
-----------
Bins
    :func:`fit_bins` fixes bins on the reference window with :func:`features.binning.fit_bins`
    (quantile edges for numeric columns, frequent levels plus ``other`` for categorical ones)
    and one extra bin for missing values, so a recent window whose share of missing values
    grew is flagged. Bins are never refitted on the recent window.
Empty bins
    A share of 0 would make the log infinite. Shares are floored at :data:`SHARE_FLOOR`
    (1e-4, the usual convention) before the formula; the counts themselves stay exact.
Thresholds
    :data:`PSI_THRESHOLDS`: below 0.1 the population is stable, from 0.1 to 0.25 it shifted
    moderately (investigate), from 0.25 it shifted significantly (the model may no longer fit).

Everything here is a function of per-bin counts (:class:`BinCounts`), so the party that holds a
column bins and counts it where the data is and shares only the counts (or only the index):
bin edges and row values stay with it. :mod:`federated.screening_protocol` runs it at each
party's node; post-loan monitoring reuses the same functions on a new window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.binning import BinKind, BinSpec
from features.binning import fit_bins as _fit_column

__all__ = [
    "DEFAULT_BINS",
    "PSI_THRESHOLDS",
    "SHARE_FLOOR",
    "BinCounts",
    "Shift",
    "StabilityError",
    "bin_counts",
    "fit_bins",
    "group_summary",
    "psi",
    "score_stability",
    "shift",
]

#: Bins fixed on the reference window: deciles, the usual layout of stability reports.
DEFAULT_BINS = 10

#: Floor of a bin's share before the log (a bin empty in one window would give infinity).
SHARE_FLOOR = 1e-4

#: Upper bounds of the usual reading of a PSI/CSI: stable below 0.1, moderate shift below 0.25,
#: significant shift from 0.25 on (Siddiqi 2006).
Shift = Literal["stable", "moderate", "significant"]

PSI_THRESHOLDS: tuple[tuple[float, Shift], ...] = ((0.1, "stable"), (0.25, "moderate"))

#: The reading of an index at or above the last threshold.
SIGNIFICANT: Shift = "significant"
IntArray = npt.NDArray[np.int64]


class StabilityError(ValueError):
    """Counts or windows a stability index cannot be computed from."""


@dataclass(frozen=True)
class BinCounts:
    """Rows per bin of one column (or of the score) in the reference and the recent window.

    The last bin holds missing values. ``expected`` and ``actual`` are what a party shares:
    counts of bins it fixed itself, without their edges.
    """

    name: str
    expected: tuple[int, ...]
    actual: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.expected) != len(self.actual) or not self.expected:
            raise StabilityError(
                f"{self.name}: {len(self.expected)} reference and {len(self.actual)} recent bins"
            )
        if min(self.expected) < 0 or min(self.actual) < 0:
            raise StabilityError(f"{self.name}: negative bin counts")
        if sum(self.expected) == 0 or sum(self.actual) == 0:
            raise StabilityError(f"{self.name}: a window has no rows")

    @property
    def index(self) -> float:
        """The stability index of these counts (:func:`psi`)."""
        return psi(self.expected, self.actual)

    @property
    def shift(self) -> Shift:
        """The reading of :attr:`index` (:func:`shift`)."""
        return shift(self.index)

    def to_dict(self) -> dict[str, Any]:
        """JSON form: counts, index and reading."""
        return {
            "name": self.name,
            "expected": list(self.expected),
            "actual": list(self.actual),
            "index": self.index,
            "shift": self.shift,
        }


def psi(expected: Sequence[int] | IntArray, actual: Sequence[int] | IntArray) -> float:
    """The population stability index of two count vectors over the same bins.

    Parameters
    ----------
    expected, actual : sequence of int
        Rows per bin in the reference and in the recent window.

    Returns
    -------
    float
        ``sum((a - e) * ln(a / e))`` over bins, shares floored at :data:`SHARE_FLOOR`.

    Raises
    ------
    StabilityError
        If the vectors differ in length, hold negative counts or a window is empty.
    """
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape or e.ndim != 1 or e.size == 0:
        raise StabilityError(f"bins differ: {e.shape} reference, {a.shape} recent")
    if np.any(e < 0) or np.any(a < 0) or e.sum() == 0 or a.sum() == 0:
        raise StabilityError("counts must be non-negative and each window non-empty")
    es = np.maximum(e / e.sum(), SHARE_FLOOR)
    as_ = np.maximum(a / a.sum(), SHARE_FLOOR)
    return float(np.sum((as_ - es) * np.log(as_ / es)))


def shift(index: float) -> Shift:
    """``stable``, ``moderate`` or ``significant``, by :data:`PSI_THRESHOLDS`."""
    for bound, label in PSI_THRESHOLDS:
        if index < bound:
            return label
    return SIGNIFICANT


def fit_bins(
    frame: pd.DataFrame, kinds: Mapping[str, BinKind], n_bins: int = DEFAULT_BINS
) -> tuple[BinSpec, ...]:
    """Bins of every column of the reference window ``frame`` (edges stay with the caller)."""
    return tuple(_fit_column(frame[c], kinds[c], n_bins) for c in frame.columns)


def bin_counts(
    specs: Sequence[BinSpec], reference: pd.DataFrame, recent: pd.DataFrame
) -> list[BinCounts]:
    """Rows per bin of every column in both windows, over the reference's bins.

    Raises
    ------
    StabilityError
        If the recent window lacks a column of the reference.
    """
    missing = [s.name for s in specs if s.name not in recent.columns]
    if missing:
        raise StabilityError(f"the recent window has no columns {missing}")
    out = []
    for spec in specs:
        size = spec.n_bins + 1
        expected = np.bincount(spec.transform(reference[spec.name]), minlength=size)
        actual = np.bincount(spec.transform(recent[spec.name]), minlength=size)
        out.append(
            BinCounts(spec.name, tuple(int(v) for v in expected), tuple(int(v) for v in actual))
        )
    return out


def score_stability(
    reference: npt.ArrayLike, recent: npt.ArrayLike, n_bins: int = DEFAULT_BINS, name: str = "score"
) -> BinCounts:
    """Score PSI: bins at the reference scores' quantiles (deciles by default).

    Scores hold no missing values; the missing bin stays empty in both windows.
    """
    ref = pd.Series(np.asarray(reference, dtype=np.float64), name=name)
    new = pd.Series(np.asarray(recent, dtype=np.float64), name=name)
    if ref.isna().any() or new.isna().any():
        raise StabilityError(f"{name}: scores must not be missing")
    (spec,) = fit_bins(ref.to_frame(), {name: "numeric"}, n_bins)
    return bin_counts([spec], ref.to_frame(), new.to_frame())[0]


def group_summary(
    counts: Sequence[BinCounts], groups: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """Per feature group: how many columns, their mean and largest index, how many shifted.

    ``groups`` maps a column to its group; columns without one form the group ``other``. No
    column name or bin count appears in the result.
    """
    by_group: dict[str, list[float]] = {}
    for c in counts:
        by_group.setdefault(groups.get(c.name, "other"), []).append(c.index)
    out: dict[str, dict[str, Any]] = {}
    for group in sorted(by_group):
        values = by_group[group]
        worst = max(values)
        out[group] = {
            "n_features": len(values),
            "csi_mean": float(np.mean(values)),
            "csi_max": float(worst),
            "n_moderate": sum(1 for v in values if shift(v) == "moderate"),
            "n_significant": sum(1 for v in values if shift(v) == SIGNIFICANT),
            "shift": shift(worst),
        }
    return out
