"""Points scorecard from a WOE logistic regression.

The logistic regression predicts the probability of default from WOE-coded features,
``logit(P(bad)) = intercept + sum_j coef_j * woe_j`` (:mod:`features.woe`: higher WOE = lower
risk, so coefficients are usually negative). The scorecard rescales the log-odds of being good
into points (Siddiqi, *Credit Risk Scorecards*, 2006, ch. 6)::

    score  = offset + factor * ln(odds_good) = offset - factor * logit(P(bad))
    factor = pdo / ln 2
    offset = base_points - factor * ln(base_odds)

so a score of ``base_points`` means good:bad odds of ``base_odds``:1 and every ``pdo`` points
double the odds. The score is split over features by spreading the intercept and the offset
evenly (``n`` features)::

    points_jb = -(coef_j * woe_jb + intercept / n) * factor + offset / n

Points are kept exact (float64) everywhere, so :meth:`Scorecard.score` equals
``offset - factor * logit`` of the regression up to float rounding (about 1e-12 relative). Only
the HTML rendering rounds points to 2 decimals; a score summed from that printed table can differ
from :meth:`Scorecard.score` by at most ``n * 0.005``. The CSV keeps full precision.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.safe_csv import write_csv
from features.woe import WoeTable, iv_strength

__all__ = [
    "Scorecard",
    "ScorecardError",
    "ScorecardFeature",
    "ScorecardScaling",
]

FloatArray = npt.NDArray[np.float64]

TABLE_COLUMNS = (
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
)


def _rate_text(x: object) -> str:
    """A bad rate for the HTML table (blank for an empty bin)."""
    rate = float(x)  # type: ignore[arg-type]  # pandas hands one float cell
    return "" if math.isnan(rate) else f"{rate:.4f}"


class ScorecardError(ValueError):
    """A scorecard cannot be built or applied as asked (missing coefficient, bad bin index)."""


@dataclass(frozen=True)
class ScorecardScaling:
    """How log-odds become points.

    Attributes
    ----------
    base_points : float, default 600
        Score at which the good:bad odds equal ``base_odds``.
    base_odds : float, default 50
        Good:bad odds (50 means 50 goods per bad) at ``base_points``.
    pdo : float, default 20
        Points to double the odds.
    """

    base_points: float = 600.0
    base_odds: float = 50.0
    pdo: float = 20.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.base_points):
            raise ScorecardError(f"base_points must be finite, got {self.base_points}")
        if not (math.isfinite(self.base_odds) and self.base_odds > 0):
            raise ScorecardError(f"base_odds must be positive (good:bad), got {self.base_odds}")
        if not (math.isfinite(self.pdo) and self.pdo > 0):
            raise ScorecardError(
                f"pdo (points to double the odds) must be positive, got {self.pdo}"
            )

    @property
    def factor(self) -> float:
        """Points per unit of log-odds: ``pdo / ln 2``."""
        return self.pdo / math.log(2.0)

    @property
    def offset(self) -> float:
        """Score at even odds: ``base_points - factor * ln(base_odds)``."""
        return self.base_points - self.factor * math.log(self.base_odds)

    def score_from_logit(self, logit: npt.ArrayLike) -> FloatArray:
        """``offset - factor * logit(P(bad))``."""
        return self.offset - self.factor * np.asarray(logit, dtype=np.float64)

    def logit_from_score(self, points: npt.ArrayLike) -> FloatArray:
        """Inverse of :meth:`score_from_logit`."""
        return (self.offset - np.asarray(points, dtype=np.float64)) / self.factor

    def to_dict(self) -> dict[str, float]:
        """JSON-serialisable form."""
        return {"base_points": self.base_points, "base_odds": self.base_odds, "pdo": self.pdo}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScorecardScaling:
        """Inverse of :meth:`to_dict`."""
        return cls(
            base_points=float(data["base_points"]),
            base_odds=float(data["base_odds"]),
            pdo=float(data["pdo"]),
        )


@dataclass(frozen=True)
class ScorecardFeature:
    """Points of one feature's coarse bins.

    Attributes
    ----------
    name, party, group : str
        Feature, owning party and reason-code group.
    coefficient : float
        Regression coefficient of the feature's WOE.
    iv : float
        Information value of the coarse coding.
    labels, woe, points, total, bad : tuple
        Per coarse bin (missing last): label, WOE, exact points, rows and bad rows.
    """

    name: str
    party: str
    group: str
    coefficient: float
    iv: float
    labels: tuple[str, ...]
    woe: tuple[float, ...]
    points: tuple[float, ...]
    total: tuple[int, ...]
    bad: tuple[int, ...]

    def __post_init__(self) -> None:
        m = len(self.points)
        if m == 0 or not (
            len(self.labels) == len(self.woe) == len(self.total) == len(self.bad) == m
        ):
            raise ScorecardError(
                f"feature '{self.name}': labels, woe, points, total and bad must have one entry "
                f"per coarse bin (got {len(self.labels)}, {len(self.woe)}, {m}, "
                f"{len(self.total)}, {len(self.bad)})"
            )

    @property
    def max_points(self) -> float:
        """Most points any bin of this feature gives."""
        return max(self.points)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "name": self.name,
            "party": self.party,
            "group": self.group,
            "coefficient": self.coefficient,
            "iv": self.iv,
            "labels": list(self.labels),
            "woe": list(self.woe),
            "points": list(self.points),
            "total": list(self.total),
            "bad": list(self.bad),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScorecardFeature:
        """Inverse of :meth:`to_dict`."""
        return cls(
            name=str(data["name"]),
            party=str(data["party"]),
            group=str(data["group"]),
            coefficient=float(data["coefficient"]),
            iv=float(data["iv"]),
            labels=tuple(str(s) for s in data["labels"]),
            woe=tuple(float(w) for w in data["woe"]),
            points=tuple(float(p) for p in data["points"]),
            total=tuple(int(v) for v in data["total"]),
            bad=tuple(int(v) for v in data["bad"]),
        )


@dataclass(frozen=True)
class Scorecard:
    """A points table equivalent to a WOE logistic regression.

    Build one with :meth:`build`. Attributes are the scaling, the regression intercept and one
    :class:`ScorecardFeature` per feature (in the order given to :meth:`build`).
    """

    scaling: ScorecardScaling
    intercept: float
    features: tuple[ScorecardFeature, ...]

    def __post_init__(self) -> None:
        if not self.features:
            raise ScorecardError("a scorecard needs at least one feature")
        names = [f.name for f in self.features]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ScorecardError(f"feature names must be unique, repeated: {dup}")

    @classmethod
    def build(
        cls,
        tables: Sequence[WoeTable],
        coefficients: Mapping[str, float],
        intercept: float,
        scaling: ScorecardScaling | None = None,
        groups: Mapping[str, str] | None = None,
    ) -> Scorecard:
        """Points per (feature, coarse bin) from WOE tables and regression coefficients.

        Parameters
        ----------
        tables : sequence of WoeTable
            One per feature, in the order the scorecard lists them.
        coefficients : mapping of str to float
            Coefficient of each feature's WOE, keyed by table name; exactly the tables' names (a
            coefficient without a table would make the scorecard differ from the regression).
        intercept : float
            Regression intercept (log-odds of bad at WOE 0 everywhere).
        scaling : ScorecardScaling, optional
            Defaults to ``ScorecardScaling()`` (600 points at 50:1, 20 points to double).
        groups : mapping of str to str, optional
            Reason-code group of features (e.g. several repayment features in ``"repayment"``);
            features not listed are their own group.

        Returns
        -------
        Scorecard

        Raises
        ------
        ScorecardError
            If there are no tables, names repeat, or ``coefficients``/``groups`` name features
            that are not tables (or a table lacks a coefficient), or a number is not finite.
        """
        scale = scaling if scaling is not None else ScorecardScaling()
        if not tables:
            raise ScorecardError("a scorecard needs at least one WoeTable")
        names = [t.name for t in tables]
        missing = [n for n in names if n not in coefficients]
        extra = sorted(set(coefficients) - set(names))
        if missing or extra:
            raise ScorecardError(
                f"coefficients must name exactly the tables' features; missing {missing}, "
                f"without a table {extra}"
            )
        groups = dict(groups or {})
        unknown = sorted(set(groups) - set(names))
        if unknown:
            raise ScorecardError(f"groups name features without a table: {unknown}")
        if not math.isfinite(intercept):
            raise ScorecardError(f"intercept must be finite, got {intercept}")
        n = len(tables)
        factor, offset = scale.factor, scale.offset
        features = []
        for t in tables:
            coef = float(coefficients[t.name])
            if not math.isfinite(coef):
                raise ScorecardError(f"coefficient of '{t.name}' must be finite, got {coef}")
            points = tuple(-(coef * w + intercept / n) * factor + offset / n for w in t.woe)
            features.append(
                ScorecardFeature(
                    name=t.name,
                    party=t.party,
                    group=groups.get(t.name, t.name),
                    coefficient=coef,
                    iv=t.iv,
                    labels=t.labels,
                    woe=t.woe,
                    points=points,
                    total=t.total,
                    bad=t.bad,
                )
            )
        return cls(scaling=scale, intercept=float(intercept), features=tuple(features))

    # -- derived numbers ---------------------------------------------------------------------

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Feature names in scorecard order."""
        return tuple(f.name for f in self.features)

    @property
    def groups(self) -> tuple[str, ...]:
        """Reason-code groups, sorted by name (the tie order of :meth:`reason_codes`)."""
        return tuple(sorted({f.group for f in self.features}))

    @property
    def intercept_points(self) -> float:
        """Score of an applicant whose every WOE is 0: ``offset - factor * intercept``.

        The table spreads it evenly: every bin's points include ``intercept_points / n``.
        """
        return self.scaling.offset - self.scaling.factor * self.intercept

    @property
    def min_score(self) -> float:
        """Lowest reachable score (every feature at its worst bin)."""
        return sum(min(f.points) for f in self.features)

    @property
    def max_score(self) -> float:
        """Highest reachable score (every feature at its best bin)."""
        return sum(f.max_points for f in self.features)

    def table(self) -> pd.DataFrame:
        """The points table: one row per (feature, coarse bin).

        Returns
        -------
        pandas.DataFrame
            Columns ``group, party, feature, bin, label, woe, coefficient, points, n,
            bad_rate`` (``bad_rate`` is NaN for empty bins); features in scorecard order, bins
            in coarse order (missing last).
        """
        rows: list[dict[str, Any]] = []
        for f in self.features:
            for b, (label, w, p, n, bad) in enumerate(
                zip(f.labels, f.woe, f.points, f.total, f.bad, strict=True)
            ):
                rows.append(
                    {
                        "group": f.group,
                        "party": f.party,
                        "feature": f.name,
                        "bin": b,
                        "label": label,
                        "woe": w,
                        "coefficient": f.coefficient,
                        "points": p,
                        "n": n,
                        "bad_rate": bad / n if n else math.nan,
                    }
                )
        return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))

    # -- scoring -----------------------------------------------------------------------------

    def _points_matrix(self, coarse_bins: Mapping[str, npt.ArrayLike]) -> FloatArray:
        """Points of every row (rows) and feature (columns)."""
        missing = [f.name for f in self.features if f.name not in coarse_bins]
        if missing:
            raise ScorecardError(f"coarse bins missing for features {missing}")
        columns: list[FloatArray] = []
        length: int | None = None
        for f in self.features:
            bins = np.asarray(coarse_bins[f.name])
            if bins.ndim != 1:
                raise ScorecardError(f"coarse bins of '{f.name}' must be 1-D, got {bins.shape}")
            if length is None:
                length = bins.size
            elif bins.size != length:
                raise ScorecardError(
                    f"coarse bins of '{f.name}' have {bins.size} rows, others have {length}"
                )
            if bins.size and not np.issubdtype(bins.dtype, np.integer):
                raise ScorecardError(
                    f"coarse bins of '{f.name}' must be integers, got {bins.dtype}"
                )
            m = len(f.points)
            if bins.size and (bins.min() < 0 or bins.max() >= m):
                raise ScorecardError(
                    f"coarse bins of '{f.name}' must lie in 0..{m - 1}, got min {bins.min()} "
                    f"and max {bins.max()}; map fine bins with WoeTable.coarse first"
                )
            columns.append(np.asarray(f.points, dtype=np.float64)[bins.astype(np.int64)])
        return np.column_stack(columns)

    def score(self, coarse_bins: Mapping[str, npt.ArrayLike]) -> FloatArray:
        """Total points per row.

        Parameters
        ----------
        coarse_bins : mapping of str to array_like of int
            Coarse bin per row for every feature (extra keys are ignored).

        Returns
        -------
        numpy.ndarray of float64, shape (n_rows,)
            ``offset - factor * logit(P(bad))`` of the regression, up to float rounding.

        Raises
        ------
        ScorecardError
            If a feature is missing, lengths differ or a bin index is out of range.
        """
        total: FloatArray = self._points_matrix(coarse_bins).sum(axis=1)
        return total

    def probability_of_default(self, points: npt.ArrayLike) -> FloatArray:
        """``P(bad)`` implied by a score: ``1 / (1 + exp((points - offset) / factor))``."""
        logit = self.scaling.logit_from_score(points)
        return np.exp(-np.logaddexp(0.0, -logit))

    def reason_codes(
        self, coarse_bins: Mapping[str, npt.ArrayLike], top_k: int = 3
    ) -> list[list[str]]:
        """Groups that cost each row the most points.

        A group's loss for a row is the sum over its features of (the feature's maximum points
        over all its bins - the points of the row's bin). Per row, the ``top_k`` groups with
        the largest positive loss are returned, largest first; ties are broken by group name;
        groups with zero loss are omitted (so a row at every maximum gets ``[]``).

        Parameters
        ----------
        coarse_bins : mapping of str to array_like of int
            As for :meth:`score`.
        top_k : int, default 3
            Most groups per row (``>= 0``).

        Returns
        -------
        list of list of str
            One list of group names per row.
        """
        if top_k < 0:
            raise ScorecardError(f"top_k must be non-negative, got {top_k}")
        matrix = self._points_matrix(coarse_bins)
        lost = np.asarray([f.max_points for f in self.features]) - matrix
        groups = self.groups
        loss = np.zeros((matrix.shape[0], len(groups)), dtype=np.float64)
        for j, f in enumerate(self.features):
            loss[:, groups.index(f.group)] += lost[:, j]
        order = np.argsort(-loss, axis=1, kind="stable")[:, :top_k]
        return [
            [groups[g] for g in row_order if loss[r, g] > 0] for r, row_order in enumerate(order)
        ]

    # -- persistence and reports -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "scaling": self.scaling.to_dict(),
            "intercept": self.intercept,
            "features": [f.to_dict() for f in self.features],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scorecard:
        """Inverse of :meth:`to_dict`."""
        return cls(
            scaling=ScorecardScaling.from_dict(data["scaling"]),
            intercept=float(data["intercept"]),
            features=tuple(ScorecardFeature.from_dict(f) for f in data["features"]),
        )

    def to_csv(self, path: str | Path) -> Path:
        """Write :meth:`table` as CSV (full precision, no index) and return the path."""
        out = Path(path)
        write_csv(self.table(), out)
        return out

    def iv_frame(self) -> pd.DataFrame:
        """Per feature: ``party, feature, group, coefficient, iv, strength`` (scorecard order)."""
        return pd.DataFrame(
            [
                {
                    "party": f.party,
                    "feature": f.name,
                    "group": f.group,
                    "coefficient": f.coefficient,
                    "iv": f.iv,
                    "strength": iv_strength(f.iv),
                }
                for f in self.features
            ],
            columns=["party", "feature", "group", "coefficient", "iv", "strength"],
        )

    def to_html(self, path: str | Path, title: str = "Scorecard") -> Path:
        """Write a self-contained HTML report (inline CSS, no external assets).

        It holds the scaling parameters, IV per feature and the points table with points
        rounded to 2 decimals. Returns the path.
        """
        s = self.scaling
        params = pd.DataFrame(
            {
                "parameter": [
                    "base points",
                    "base odds (good:bad)",
                    "points to double the odds",
                    "factor",
                    "offset",
                    "intercept",
                    "intercept points",
                    "score range",
                ],
                "value": [
                    f"{s.base_points:g}",
                    f"{s.base_odds:g}:1",
                    f"{s.pdo:g}",
                    f"{s.factor:.6f}",
                    f"{s.offset:.6f}",
                    f"{self.intercept:.6f}",
                    f"{self.intercept_points:.2f}",
                    f"{self.min_score:.2f} to {self.max_score:.2f}",
                ],
            }
        )
        iv = self.iv_frame().to_html(index=False, float_format=lambda x: f"{x:.4f}")
        points = self.table().to_html(
            index=False,
            formatters={
                "woe": lambda x: f"{x:.4f}",
                "coefficient": lambda x: f"{x:.4f}",
                "points": lambda x: f"{x:.2f}",
                "bad_rate": _rate_text,
            },
        )
        note = (
            "score = offset - factor &times; logit(P(bad)); points per bin = "
            "-(coefficient &times; WOE + intercept / n) &times; factor + offset / n, "
            f"with n = {len(self.features)} features. Points are shown rounded to 2 decimals."
        )
        doc = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #999; padding: 0.2em 0.6em; text-align: right; }}
th {{ background: #eee; }}
</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<h2>Scaling</h2>
{params.to_html(index=False)}
<h2>Information value</h2>
{iv}
<h2>Points</h2>
<p>{note}</p>
{points}
</body>
</html>
"""
        out = Path(path)
        out.write_text(doc, encoding="utf-8")
        return out
