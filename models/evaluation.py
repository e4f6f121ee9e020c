"""Evaluation a risk modeler trusts: AUC, KS, Gini, gains table, calibration.

Everything here runs where the labels are (the bank). An :class:`EvaluationReport` holds only
aggregates (curve points, per-decile counts), so it may be sent to the coordinator and logged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

#: Points kept of the ROC curve in a report (enough for a smooth plot, no per-row detail).
ROC_POINTS = 201

#: Party-store key of the label holder's test mask over the job's (aligned) rows.
TEST_MASK_KEY = "job.test_mask"

#: Fewest bad (and good) outcomes each part of a split must hold. With one or two, the test AUC
#: and KS move by 33 points or more per outcome (noise, not a measurement), and two bads in the
#: training part leave SecureBoost's first tree a single leaf: the job failed deep in the protocol
#: ("stage 'tree' ... is not allowed after 'tree'") instead of saying why. Three is the least
#: that trains and evaluates; real portfolios have hundreds.
MIN_OUTCOMES_PER_PART = 3


class EvaluationError(ValueError):
    """Scores and labels cannot be evaluated (e.g. a single class, mismatched lengths)."""


@dataclass(frozen=True)
class DecileRow:
    """One row of a gains table; decile 1 holds the highest (riskiest) scores."""

    decile: int
    n: int
    n_bad: int
    bad_rate: float
    min_score: float
    max_score: float
    cum_bad_share: float
    cum_good_share: float
    ks: float
    lift: float
    cum_lift: float


@dataclass(frozen=True)
class CalibrationBin:
    """Mean predicted probability against the observed bad rate in one score quantile."""

    bin: int
    n: int
    mean_predicted: float
    observed_rate: float


@dataclass(frozen=True)
class EvaluationReport:
    """Discrimination and calibration of one model on one labelled set.

    Attributes
    ----------
    n, n_bad : int
        Rows evaluated and bad (label 1) among them.
    auc, ks, gini : float
        Area under the ROC curve, Kolmogorov-Smirnov statistic (max TPR - FPR), and
        ``2 * auc - 1``.
    brier, log_loss : float
        Proper scoring rules of the probabilities (lower is better).
    ece : float
        Expected calibration error over the calibration bins (count-weighted).
    ks_score : float
        Score at which the KS statistic is reached.
    deciles : tuple of DecileRow
        Gains / lift table.
    calibration : tuple of CalibrationBin
        Reliability table.
    roc_fpr, roc_tpr : tuple of float
        ROC curve, at most :data:`ROC_POINTS` points.
    """

    n: int
    n_bad: int
    auc: float
    ks: float
    gini: float
    brier: float
    log_loss: float
    ece: float
    ks_score: float
    deciles: tuple[DecileRow, ...]
    calibration: tuple[CalibrationBin, ...]
    roc_fpr: tuple[float, ...]
    roc_tpr: tuple[float, ...]

    @property
    def bad_rate(self) -> float:
        """Observed bad rate."""
        return self.n_bad / self.n

    def headline(self) -> dict[str, float]:
        """The three figures every summary quotes."""
        return {"auc": self.auc, "ks": self.ks, "gini": self.gini}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationReport:
        """Inverse of :meth:`to_dict`."""
        fields = dict(data)
        fields["deciles"] = tuple(DecileRow(**row) for row in data["deciles"])
        fields["calibration"] = tuple(CalibrationBin(**row) for row in data["calibration"])
        fields["roc_fpr"] = tuple(data["roc_fpr"])
        fields["roc_tpr"] = tuple(data["roc_tpr"])
        return cls(**fields)


def evaluate_scores(
    y_true: npt.ArrayLike, scores: npt.ArrayLike, *, n_bins: int = 10
) -> EvaluationReport:
    """Evaluate predicted default probabilities against 0/1 outcomes.

    Parameters
    ----------
    y_true : array-like of {0, 1}
        Observed outcomes (1 = bad).
    scores : array-like of float in [0, 1]
        Predicted probabilities of bad.
    n_bins : int
        Number of score quantile groups in the gains and calibration tables.

    Raises
    ------
    EvaluationError
        If lengths differ, a class is absent, scores are not finite probabilities, or there are
        fewer rows than bins.
    """
    y = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise EvaluationError(f"{y.size} labels but {p.size} scores")
    if y.size < n_bins:
        raise EvaluationError(f"{y.size} rows cannot fill {n_bins} score groups")
    if not np.isin(y, (0, 1)).all():
        raise EvaluationError("labels must be 0 or 1")
    n_bad = int(y.sum())
    if n_bad in (0, y.size):
        raise EvaluationError("the evaluation set holds a single class; AUC and KS are undefined")
    if not np.isfinite(p).all() or p.min() < 0.0 or p.max() > 1.0:
        raise EvaluationError("scores must be finite probabilities in [0, 1]")

    # sklearn costs a second to import: only what evaluates scores imports it
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score, roc_curve

    auc = float(roc_auc_score(y, p))
    fpr, tpr, thresholds = roc_curve(y, p)
    gap = tpr - fpr
    best = int(np.argmax(gap))
    ks = float(gap[best])
    ks_score = float(min(thresholds[best], 1.0))
    keep = _downsample(fpr.size, ROC_POINTS)
    return EvaluationReport(
        n=int(y.size),
        n_bad=n_bad,
        auc=auc,
        ks=ks,
        gini=2.0 * auc - 1.0,
        brier=float(brier_score_loss(y, p)),
        log_loss=float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1])),
        ece=_ece(y, p, n_bins),
        ks_score=ks_score,
        deciles=_gains_table(y, p, n_bins),
        calibration=_calibration(y, p, n_bins),
        roc_fpr=tuple(float(v) for v in fpr[keep]),
        roc_tpr=tuple(float(v) for v in tpr[keep]),
    )


def _downsample(size: int, points: int) -> npt.NDArray[np.intp]:
    if size <= points:
        return np.arange(size)
    return np.unique(np.linspace(0, size - 1, points).round().astype(np.intp))


def _groups(p: npt.NDArray[np.float64], n_bins: int) -> list[npt.NDArray[np.intp]]:
    """Row positions split into ``n_bins`` equal-size groups, highest scores first."""
    order = np.argsort(-p, kind="stable")
    return list(np.array_split(order, n_bins))


def _gains_table(
    y: npt.NDArray[np.int64], p: npt.NDArray[np.float64], n_bins: int
) -> tuple[DecileRow, ...]:
    total_bad = int(y.sum())
    total_good = int(y.size - total_bad)
    overall = total_bad / y.size
    rows = []
    cum_bad = cum_good = cum_n = 0
    for i, idx in enumerate(_groups(p, n_bins), start=1):
        n = int(idx.size)
        bad = int(y[idx].sum())
        cum_bad += bad
        cum_good += n - bad
        cum_n += n
        bad_share = cum_bad / total_bad
        good_share = cum_good / total_good
        rows.append(
            DecileRow(
                decile=i,
                n=n,
                n_bad=bad,
                bad_rate=bad / n,
                min_score=float(p[idx].min()),
                max_score=float(p[idx].max()),
                cum_bad_share=bad_share,
                cum_good_share=good_share,
                ks=bad_share - good_share,
                lift=(bad / n) / overall,
                cum_lift=(cum_bad / cum_n) / overall,
            )
        )
    return tuple(rows)


def _calibration(
    y: npt.NDArray[np.int64], p: npt.NDArray[np.float64], n_bins: int
) -> tuple[CalibrationBin, ...]:
    bins = []
    for i, idx in enumerate(reversed(_groups(p, n_bins)), start=1):
        bins.append(
            CalibrationBin(
                bin=i,
                n=int(idx.size),
                mean_predicted=float(p[idx].mean()),
                observed_rate=float(y[idx].mean()),
            )
        )
    return tuple(bins)


def _ece(y: npt.NDArray[np.int64], p: npt.NDArray[np.float64], n_bins: int) -> float:
    total = 0.0
    for idx in _groups(p, n_bins):
        total += idx.size * abs(float(p[idx].mean()) - float(y[idx].mean()))
    return total / y.size


def canonical_order(ids: npt.NDArray[np.str_]) -> npt.NDArray[np.intp]:
    """Return the permutation that sorts ids by (length, text).

    Both parties can compute it from the ids alone. For non-negative integer ids without
    leading zeros this is numeric order, and for fixed-length codes (unified social credit
    codes) it is plain text order, so it reproduces "sort by id" in either scheme.
    """
    ids = np.asarray(ids, dtype=np.str_)
    lengths = np.char.str_len(ids)
    return np.lexsort((ids, lengths))


def evaluation_split(
    ids: npt.NDArray[np.str_],
    y: npt.NDArray[np.int8],
    *,
    test_size: float,
    random_state: int,
    stratify: bool,
) -> npt.NDArray[np.bool_]:
    """Decide which rows are held out for testing.

    The rule is the one FATE's reference figures use: put ids in canonical order
    (:func:`canonical_order`), then ``train_test_split(ids, test_size, random_state,
    stratify=y)``. It depends only on the ids, the labels and the settings, so the bank (which
    holds the labels) and a demo's pooled reference compute the same split independently.

    Returns
    -------
    numpy.ndarray of bool
        ``True`` for test rows, aligned with ``ids`` as given.

    Raises
    ------
    EvaluationError
        If a class has too few rows to stratify, either part would be empty, or either part
        would hold fewer than :data:`MIN_OUTCOMES_PER_PART` bad (or good) outcomes.
    """
    order = canonical_order(ids)
    y_sorted = np.asarray(y)[order]
    counts = np.bincount(y_sorted.astype(np.int64), minlength=2)
    n_test = math.ceil(test_size * len(order))
    if n_test < 2 or len(order) - n_test < 2:
        raise EvaluationError(
            f"test_size={test_size} of {len(order)} rows leaves an empty train or test part"
        )
    if stratify and counts.min() < 2:
        raise EvaluationError(
            f"cannot stratify: class {int(np.argmin(counts))} has {int(counts.min())} row(s); "
            "set evaluation.stratify: false or add data"
        )
    positions = np.arange(len(order))
    from sklearn.model_selection import train_test_split

    _, test_pos = train_test_split(
        positions,
        test_size=test_size,
        random_state=random_state,
        stratify=y_sorted if stratify else None,
    )
    mask = np.zeros(len(order), dtype=bool)
    mask[order[np.asarray(test_pos)]] = True
    _check_outcomes(np.asarray(y), mask, test_size, stratify)
    return mask


def _check_outcomes(
    y: npt.NDArray[np.int8], test: npt.NDArray[np.bool_], test_size: float, stratify: bool
) -> None:
    """Refuse a split a part of which holds too few bad (or good) outcomes (one clear line)."""
    for label, outcome in ((1, "bad"), (0, "good")):
        total = int((y == label).sum())
        for part, rows in (("test", test), ("train", ~test)):
            held = int((y[rows] == label).sum())
            if held >= MIN_OUTCOMES_PER_PART:
                continue
            fix = "add rows with bad outcomes" if label == 1 else "add rows with good outcomes"
            if not stratify:
                fix += ", set evaluation.stratify: true"
            raise EvaluationError(
                f"the {part} part of the bank's split would hold {held} {outcome} outcome(s) "
                f"(label {label}) of the {total} among {len(y)} aligned rows; training and "
                f"evaluating need at least {MIN_OUTCOMES_PER_PART} in each part: {fix}, or "
                f"change evaluation.test_size (now {test_size:g})"
            )
