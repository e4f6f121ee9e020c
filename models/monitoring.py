"""Post-loan monitoring at the bank: performance by vintage and band, and the early-warning list.

Everything here runs at the bank, on what the bank holds after a monitoring job's exchange
(:mod:`federated.monitoring_protocol`): its book (ids, vintages, matured outcomes, its own
columns), the probabilities its part computed with the platforms' split decisions, and the
contributions of each label (its own columns, the platforms' feature *groups*).

Vintages
    A vintage is the month a loan was originated (``YYYY-MM``). Its outcome is known only once
    matured (missing before); :func:`vintage_table` reports, per vintage, the loans, the matured
    ones, their bad rate and, where at least :data:`MIN_MATURED` bad and good loans matured,
    AUC and KS of the current scores. :func:`matured_performance` pools matured loans (e.g.
    those the model was not trained on: its out-of-time performance).
Segments
    :func:`segment_stability`: per segment of a column the bank keeps beside its book (e.g.
    the borrower's province), the same enterprises scored in the reference and in the new
    window: the score PSI, and the segment's mean log-odds change beyond the book's with its
    z-score. A shock to one region moves its segment long before it moves the whole book;
    a segment's changing mix of new loans is no drift.
Score bands
    :func:`band_table` cuts scores at the reference window's score deciles (the bands fixed
    when the model was trained on that window) and reports each band's share in both windows
    and the matured bad rate.
Early warning
    :func:`early_warnings`: the enterprises whose probability reached the bank's threshold
    since the previous run (or the reference window, on a first run) and was below it then,
    with the labels whose contribution to the log-odds rose most (a platform only by group).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.stability import DEFAULT_BINS, fit_bins, score_stability
from models.evaluation import EvaluationError, evaluate_scores

__all__ = [
    "MIN_MATURED",
    "MIN_SEGMENT_ROWS",
    "SEGMENT_PSI_ALPHA",
    "SEGMENT_Z",
    "Alert",
    "Thresholds",
    "band_table",
    "early_warnings",
    "matured_performance",
    "segment_stability",
    "vintage_table",
]

#: Fewest bad and fewest good matured loans a vintage (or a pool) needs for an AUC/KS: fewer
#: make the AUC noise (a vintage of 250 loans at a 3 % default rate has ~8 bads).
MIN_MATURED = 20
#: Fewest enterprises a segment needs for its score PSI and shift.
MIN_SEGMENT_ROWS = 100
#: Standard errors a segment's shift must exceed before it is read as a turn, not noise.
SEGMENT_Z = 4.0
#: Chance that any segment of a book whose scores did not change still shows a PSI above its
#: noise floor (:func:`psi_noise_floor`, at this over the number of segments: Bonferroni); a
#: segment's PSI alerts only above the floor.
SEGMENT_PSI_ALPHA = 0.001

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Thresholds:
    """The bank's alert thresholds (its own settings; see :mod:`lab.monitoring`).

    Attributes
    ----------
    psi_max : float
        Score PSI from which the score distribution is said to have drifted.
    segment_shift_max : float
        Largest rise of a segment's mean log-odds beyond the whole book's (when it is also
        :data:`SEGMENT_Z` standard errors out) before an alert: 0.1 is about 10.5 % higher odds.
    csi_max : float
        Largest characteristic index (any bank column, any platform group) before an alert.
    auc_drop_max : float
        Largest drop of a matured vintage's AUC below the model's test AUC before an alert.
    """

    psi_max: float = 0.25
    segment_shift_max: float = 0.1
    csi_max: float = 0.25
    auc_drop_max: float = 0.05


@dataclass(frozen=True)
class Alert:
    """One threshold crossed: what, the observed value, the threshold."""

    kind: str
    subject: str
    value: float
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "kind": self.kind,
            "subject": self.subject,
            "value": self.value,
            "threshold": self.threshold,
        }


def vintage_table(
    vintage: Sequence[str] | npt.NDArray[Any],
    outcome: npt.ArrayLike,
    probability: npt.ArrayLike,
) -> list[dict[str, Any]]:
    """Loans, matured loans, bad rate, AUC and KS per vintage (sorted by vintage).

    ``outcome`` holds 0/1 for matured loans and NaN otherwise.
    """
    frame = pd.DataFrame(
        {
            "vintage": np.asarray(vintage, dtype=object).astype(str),
            "y": np.asarray(outcome, dtype=np.float64),
            "p": np.asarray(probability, dtype=np.float64),
        }
    )
    rows: list[dict[str, Any]] = []
    for name, group in frame.groupby("vintage", sort=True):
        matured = group[group["y"].notna()]
        row: dict[str, Any] = {
            "vintage": str(name),
            "n": len(group),
            "n_matured": len(matured),
            "mean_probability": float(group["p"].mean()),
            "bad_rate": float(matured["y"].mean()) if len(matured) else None,
            "auc": None,
            "ks": None,
        }
        y = matured["y"].to_numpy(dtype=np.int64)
        if _enough(y):
            try:
                report = evaluate_scores(y, matured["p"].to_numpy(), n_bins=min(10, len(y)))
            except EvaluationError:
                report = None
            if report is not None:
                row["auc"], row["ks"] = report.auc, report.ks
        rows.append(row)
    return rows


def matured_performance(outcome: npt.ArrayLike, probability: npt.ArrayLike) -> dict[str, Any]:
    """AUC and KS over every matured loan (``None`` when a class is absent or too few)."""
    y = np.asarray(outcome, dtype=np.float64)
    p = np.asarray(probability, dtype=np.float64)
    known = ~np.isnan(y)
    out: dict[str, Any] = {"n_matured": int(known.sum()), "auc": None, "ks": None}
    labels = y[known].astype(np.int64)
    out["n_bad"] = int(labels.sum())
    if _enough(labels):
        report = evaluate_scores(labels, p[known])
        out |= {"auc": report.auc, "ks": report.ks, "bad_rate": float(labels.mean())}
    return out


def _enough(labels: npt.NDArray[np.int64]) -> bool:
    """Whether there are :data:`MIN_MATURED` bads and goods (an AUC worth reading)."""
    bad = int(labels.sum())
    return bad >= MIN_MATURED and labels.size - bad >= MIN_MATURED


def segment_stability(
    segment: npt.ArrayLike,
    reference: npt.ArrayLike,
    current: npt.ArrayLike,
    n_bins: int = DEFAULT_BINS,
) -> dict[str, dict[str, Any]]:
    """How each segment's scores moved: the same enterprises in the reference and now.

    ``reference`` and ``current`` are the probabilities of the same enterprises (paired rows).
    Per segment of at least :data:`MIN_SEGMENT_ROWS` enterprises: the score PSI (bins at the
    segment's own reference deciles) and the **shift**: the segment's mean change of log-odds
    minus the whole book's, with its ``z`` (the shift over its standard error). A PSI over a
    small segment is mostly sampling noise (about ``(bins - 1) * 2 / n``): ``noise_floor``
    (:func:`psi_noise_floor`) is what noise alone makes any of the segments exceed once in
    1,000 (:data:`SEGMENT_PSI_ALPHA` over the number of segments), and the shift and its ``z``
    say whether the segment turned more than the book did.
    """
    seg = np.asarray(segment, dtype=object).astype(str)
    ref = np.asarray(reference, dtype=np.float64)
    now = np.asarray(current, dtype=np.float64)
    delta = _logit(now) - _logit(ref)
    book = float(delta.mean()) if delta.size else 0.0
    out: dict[str, dict[str, Any]] = {}
    labels, sizes = np.unique(seg, return_counts=True)
    names = [str(name) for name, n in zip(labels, sizes, strict=True) if n >= MIN_SEGMENT_ROWS]
    alpha = SEGMENT_PSI_ALPHA / max(1, len(names))  # any of them, by chance: at most the alpha
    for name in names:
        rows = seg == name
        n = int(rows.sum())
        counts = score_stability(ref[rows], now[rows], n_bins, name=name)
        moved = delta[rows]
        error = float(moved.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
        shift = float(moved.mean()) - book
        used = sum(1 for e, a in zip(counts.expected, counts.actual, strict=True) if e or a)
        out[name] = {
            "n": n,
            "index": counts.index,
            "noise_floor": psi_noise_floor(used, n, n, alpha),
            "reading": counts.shift,
            "mean_reference": float(ref[rows].mean()),
            "mean_current": float(now[rows].mean()),
            "shift": shift,
            "z": shift / error if error > 0 else 0.0,
        }
    return out


def psi_noise_floor(
    n_bins: int, n_reference: int, n_current: int, alpha: float = SEGMENT_PSI_ALPHA
) -> float:
    """The PSI that sampling noise alone exceeds with chance ``alpha``.

    For two samples of sizes ``n`` and ``m`` from one distribution over ``k`` bins, PSI is to
    second order ``sum (a_i - e_i)^2 / p_i``, so ``PSI / (1/n + 1/m)`` is about chi-squared with
    ``k - 1`` degrees of freedom (the two-sample chi-squared statistic; its mean gives the
    familiar ``(k - 1) * 2 / n`` for ``m = n``). Its ``1 - alpha`` quantile times ``1/n + 1/m``
    is the floor: at ``alpha`` 0.001, 0.49 for 115 enterprises and 10 bins, 0.03 for 2,000.
    Paired rows (the same enterprises then and now) vary less than independent samples: a
    conservative floor.
    """
    from scipy.stats import chi2

    if n_bins < 2 or n_reference < 1 or n_current < 1:
        return 0.0
    quantile = float(chi2.ppf(1.0 - alpha, n_bins - 1))
    return quantile * (1.0 / n_reference + 1.0 / n_current)


def _logit(p: FloatArray) -> FloatArray:
    q = np.clip(p, 1e-12, 1 - 1e-12)
    return np.asarray(np.log(q / (1 - q)), dtype=np.float64)


def band_table(
    reference: npt.ArrayLike,
    current: npt.ArrayLike,
    outcome: npt.ArrayLike,
    n_bands: int = DEFAULT_BINS,
) -> list[dict[str, Any]]:
    """Each score band's share in both windows and its matured bad rate now.

    Bands are the reference scores' quantile bins (:func:`features.stability.fit_bins`), band
    1 the lowest probabilities.
    """
    ref = pd.Series(np.asarray(reference, dtype=np.float64), name="score")
    now = pd.Series(np.asarray(current, dtype=np.float64), name="score")
    y = np.asarray(outcome, dtype=np.float64)
    (spec,) = fit_bins(ref.to_frame(), {"score": "numeric"}, n_bands)
    ref_band = spec.transform(ref)
    now_band = spec.transform(now)
    rows = []
    for band in range(spec.n_bins):
        here = now_band == band
        matured = here & ~np.isnan(y)
        rows.append(
            {
                "band": band + 1,
                "reference_share": float(np.mean(ref_band == band)) if len(ref) else 0.0,
                "current_share": float(np.mean(here)) if len(now) else 0.0,
                "n_current": int(here.sum()),
                "n_matured": int(matured.sum()),
                "bad_rate": float(y[matured].mean()) if matured.any() else None,
            }
        )
    return rows


def early_warnings(
    ids: Sequence[str] | npt.NDArray[Any],
    previous: npt.ArrayLike,
    current: npt.ArrayLike,
    threshold: float,
    *,
    labels: Sequence[str] = (),
    previous_contributions: FloatArray | None = None,
    current_contributions: FloatArray | None = None,
    reasons: int = 3,
) -> pd.DataFrame:
    """Enterprises whose probability reached ``threshold`` and was below it before.

    Rows whose previous probability is unknown (NaN: not in the previous window) are left out:
    a crossing needs two points. With contributions (rows x ``labels``), each warning lists the
    ``reasons`` labels whose contribution rose most (only rises), largest first, as
    ``reason_i`` and ``reason_i_change``.

    Returns
    -------
    pandas.DataFrame
        ``enterprise_id``, ``previous_probability``, ``probability`` and the reasons, sorted by
        probability (highest first).
    """
    before = np.asarray(previous, dtype=np.float64)
    now = np.asarray(current, dtype=np.float64)
    flagged = np.flatnonzero(~np.isnan(before) & (before < threshold) & (now >= threshold))
    out = pd.DataFrame(
        {
            "enterprise_id": np.asarray(ids, dtype=object)[flagged],
            "previous_probability": before[flagged],
            "probability": now[flagged],
        }
    )
    if previous_contributions is not None and current_contributions is not None and reasons:
        delta = current_contributions[flagged] - previous_contributions[flagged]
        order = np.argsort(-delta, axis=1, kind="stable")[:, :reasons]
        names = np.asarray(labels, dtype=object)
        for i in range(min(reasons, len(labels))):
            moved = np.take_along_axis(delta, order[:, i : i + 1], axis=1)[:, 0]
            rose = moved > 0
            out[f"reason_{i + 1}"] = [
                str(name) if up else None for name, up in zip(names[order[:, i]], rose, strict=True)
            ]
            out[f"reason_{i + 1}_change"] = np.where(rose, moved, np.nan)
    return out.sort_values("probability", ascending=False, kind="stable").reset_index(drop=True)
