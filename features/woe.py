"""Weight of evidence (WOE) and information value (IV) from per-bin counts alone.

In the hetero WOE logistic regression every party fits fine bins on its own columns
(:mod:`features.binning`) and the bank obtains, for every column and fine bin, two integers:
``total[b]`` (rows in the bin) and ``bad[b]`` (rows with label 1). For the bank's own columns it
counts them; for a platform's columns it gets them through the encrypted protocol and learns only
the ordinal bin index, never the edges. Everything here is a function of those counts, so the same
code merges bank columns and anonymous platform columns, and the encrypted run gives the same WOE
and IV as the plaintext one whenever the integer counts agree.

Conventions
-----------
Bin layout
    A column with ``n`` value bins has count arrays of length ``n + 1``: bins ``0 .. n - 1`` hold
    values (ordinal for numeric columns) and bin ``n`` holds missing values. Coarse bins use the
    same layout: value bins ``0 .. m - 1`` and the missing bin ``m`` (always present, possibly
    empty). The missing bin is never merged with a value bin.
Counts
    ``good = total - bad``; ``G`` and ``B`` are the column's total good and bad counts (missing
    bin included).
Used bins
    ``k`` is the number of bins with ``total > 0`` among the bins passed to :func:`woe_iv` (for a
    fitted table: the non-empty coarse bins, missing bin included if it holds rows).
Smoothing
    With additive smoothing ``a`` (``alpha``, default 0.5) the distributions over used bins are
    ``dg_b = (good_b + a) / (G + a k)`` and ``db_b = (bad_b + a) / (B + a k)``; each sums to 1
    over the used bins, and stays finite when a bin has no good or no bad rows.
WOE and IV
    ``WOE_b = ln(dg_b / db_b)``, so a higher WOE means lower risk (Siddiqi, *Credit Risk
    Scorecards*, 2006). ``IV = sum_b (dg_b - db_b) * WOE_b`` over the used bins; every term is
    non-negative.
Empty bins
    A bin with ``total == 0`` gets ``WOE = 0`` (no evidence either way) and contributes 0 to IV and
    nothing to ``k``. So an empty missing bin encodes missing values seen only at prediction time as
    neutral.
Smoothed bad rate
    ``r_b = (bad_b + a) / (total_b + 2a)``. Since ``WOE_b = -ln(1/r_b - 1) + const`` with one
    constant shared by all used bins, ordering bins by ``r_b`` is ordering them by ``-WOE_b``;
    monotone merging and categorical ordering use ``r_b`` so that the published WOE is monotone.

Merging (:func:`merge_bins`) turns fine bins into coarse bins; see its docstring for the greedy.
:class:`WoeTable` holds one column's result and is what the bank sends (its ``mapping``) to the
party that owns the column.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.binning import BinSpec

__all__ = [
    "DEFAULT_ALPHA",
    "IV_STRENGTH_THRESHOLDS",
    "MergeKind",
    "MergeMethod",
    "WoeError",
    "WoeTable",
    "count_bins",
    "iv_strength",
    "iv_table",
    "merge_bins",
    "woe_iv",
]

MergeKind = Literal["numeric", "categorical"]
MergeMethod = Literal["monotone", "quantile"]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
MappingArray = npt.NDArray[np.int32]

#: Additive (Laplace-style) smoothing of the good/bad distributions: half a row per bin keeps the
#: WOE of a pure bin finite while barely moving large bins.
DEFAULT_ALPHA = 0.5

#: Upper bounds of the usual IV rule of thumb (Siddiqi 2006): below 0.02 useless, below 0.1 weak,
#: below 0.3 medium, below 0.5 strong, otherwise suspicious (too good to be true: check leakage).
IV_STRENGTH_THRESHOLDS: tuple[tuple[float, str], ...] = (
    (0.02, "useless"),
    (0.1, "weak"),
    (0.3, "medium"),
    (0.5, "strong"),
)


class WoeError(ValueError):
    """Counts, bins or merge parameters that WOE/IV cannot be computed from."""


# ---------------------------------------------------------------------------------------------
# counts, WOE, IV
# ---------------------------------------------------------------------------------------------


def count_bins(
    bins: npt.ArrayLike, y: npt.ArrayLike, n_bins_with_missing: int
) -> tuple[IntArray, IntArray]:
    """Rows and bad rows per bin.

    Parameters
    ----------
    bins : array_like of int, shape (n_rows,)
        Fine bin index of every row, in ``0 .. n_bins_with_missing - 1`` (missing last).
    y : array_like of int, shape (n_rows,)
        Labels, 1 = bad, 0 = good.
    n_bins_with_missing : int
        Length of the result: value bins plus the missing bin (``BinSpec.n_bins + 1``).

    Returns
    -------
    total, bad : numpy.ndarray of int64, shape (n_bins_with_missing,)
        Rows per bin and rows with ``y == 1`` per bin.

    Raises
    ------
    WoeError
        If shapes differ, a bin index is out of range or a label is not 0/1.
    """
    b = np.asarray(bins)
    labels = np.asarray(y)
    if n_bins_with_missing < 1:
        raise WoeError(f"n_bins_with_missing must be at least 1, got {n_bins_with_missing}")
    if b.ndim != 1 or labels.shape != b.shape:
        raise WoeError(
            f"bins and y must be 1-D of the same length, got shapes {b.shape} and {labels.shape}"
        )
    if b.size and not np.issubdtype(b.dtype, np.integer):
        raise WoeError(f"bins must be integers, got dtype {b.dtype}")
    if b.size and (b.min() < 0 or b.max() >= n_bins_with_missing):
        raise WoeError(
            f"bin indices must lie in 0..{n_bins_with_missing - 1}, "
            f"got min {b.min()} and max {b.max()}"
        )
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise WoeError("labels must be 0 (good) or 1 (bad)")
    idx = b.astype(np.int64, copy=False)
    total = np.bincount(idx, minlength=n_bins_with_missing).astype(np.int64)
    bad = np.bincount(idx[labels == 1], minlength=n_bins_with_missing).astype(np.int64)
    return total, bad


def _check_counts(total: npt.ArrayLike, bad: npt.ArrayLike) -> tuple[IntArray, IntArray]:
    t = np.asarray(total)
    b = np.asarray(bad)
    if t.ndim != 1 or t.shape != b.shape or t.size == 0:
        raise WoeError(
            f"total and bad must be non-empty 1-D arrays of one length, got {t.shape} and {b.shape}"
        )
    for name, arr in (("total", t), ("bad", b)):
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise WoeError(f"{name} must hold integer counts, got dtype {arr.dtype}")
        if not (np.issubdtype(arr.dtype, np.integer) or np.array_equal(arr, np.round(arr))):
            raise WoeError(f"{name} must hold integer counts, got {arr!r}")
    ti = t.astype(np.int64)
    bi = b.astype(np.int64)
    if (ti < 0).any() or (bi < 0).any() or (bi > ti).any():
        raise WoeError(f"counts must satisfy 0 <= bad <= total per bin, got total={ti}, bad={bi}")
    return ti, bi


def _check_alpha(alpha: float) -> float:
    if not (math.isfinite(alpha) and alpha > 0):
        raise WoeError(f"alpha (smoothing) must be a positive finite number, got {alpha}")
    return float(alpha)


def woe_iv(
    total: npt.ArrayLike, bad: npt.ArrayLike, alpha: float = DEFAULT_ALPHA
) -> tuple[FloatArray, FloatArray, float]:
    """WOE per bin, IV per bin and IV of a column (conventions in the module docstring).

    Parameters
    ----------
    total, bad : array_like of int, shape (n,)
        Rows and bad rows per bin (any bin layout; the missing bin is just another bin here).
    alpha : float, default 0.5
        Additive smoothing ``a`` (must be positive).

    Returns
    -------
    woe : numpy.ndarray of float64, shape (n,)
        ``ln(dg_b / db_b)``; 0 for empty bins.
    iv_per_bin : numpy.ndarray of float64, shape (n,)
        ``(dg_b - db_b) * WOE_b``; 0 for empty bins.
    iv : float
        Sum of ``iv_per_bin``.

    Examples
    --------
    >>> woe, _, iv = woe_iv([10, 10], [2, 5], alpha=0.5)
    >>> [round(float(w), 4) for w in woe], round(iv, 4)
    ([0.6642, -0.5596], 0.3606)
    """
    t, b = _check_counts(total, bad)
    a = _check_alpha(alpha)
    used = t > 0
    k = int(used.sum())
    woe = np.zeros(t.shape, dtype=np.float64)
    iv_bins = np.zeros(t.shape, dtype=np.float64)
    if k == 0:
        return woe, iv_bins, 0.0
    g = t - b
    dg = (g[used] + a) / (float(g.sum()) + a * k)
    db = (b[used] + a) / (float(b.sum()) + a * k)
    w = np.log(dg) - np.log(db)
    woe[used] = w
    iv_bins[used] = (dg - db) * w
    return woe, iv_bins, float(iv_bins.sum())


def _column_iv(totals: Sequence[int], bads: Sequence[int], alpha: float) -> float:
    """:func:`woe_iv`'s IV in plain Python, for the merge loop's many small evaluations."""
    used = [(t, b) for t, b in zip(totals, bads, strict=True) if t > 0]
    k = len(used)
    if k == 0:
        return 0.0
    big_b = sum(b for _, b in used)
    big_g = sum(t for t, _ in used) - big_b
    den_g = big_g + alpha * k
    den_b = big_b + alpha * k
    iv = 0.0
    for t, b in used:
        dg = (t - b + alpha) / den_g
        db = (b + alpha) / den_b
        iv += (dg - db) * (math.log(dg) - math.log(db))
    return iv


def _smoothed_rate(total: int, bad: int, alpha: float) -> float:
    return (bad + alpha) / (total + 2.0 * alpha)


# ---------------------------------------------------------------------------------------------
# merging fine bins into coarse bins
# ---------------------------------------------------------------------------------------------


@dataclass
class _Group:
    """A run of fine bins being merged (mutable scratch state of :func:`merge_bins`)."""

    members: list[int]
    total: int
    bad: int


def _merge_at(groups: list[_Group], i: int) -> list[_Group]:
    """Groups with ``groups[i]`` and ``groups[i + 1]`` merged."""
    left, right = groups[i], groups[i + 1]
    joined = _Group(left.members + right.members, left.total + right.total, left.bad + right.bad)
    return [*groups[:i], joined, *groups[i + 2 :]]


def _iv_after(groups: list[_Group], i: int, missing: tuple[int, int], alpha: float) -> float:
    merged = _merge_at(groups, i)
    return _column_iv(
        [g.total for g in merged] + [missing[0]], [g.bad for g in merged] + [missing[1]], alpha
    )


def _greedy(
    groups: list[_Group],
    *,
    value_rows: int,
    min_bin_share: float,
    max_bins: int,
    direction: int | None,
    missing: tuple[int, int],
    alpha: float,
) -> list[_Group]:
    """Merge adjacent groups until size, monotonicity (if ``direction``) and count rules hold.

    Each pass fixes the first broken rule of, in order: (1) the smallest group below
    ``min_bin_share`` merges with the neighbour that keeps more IV (left on a tie);
    (2) among adjacent pairs whose smoothed bad rate is not strictly monotone in ``direction``,
    the pair whose merge keeps the most IV merges; (3) while more than ``max_bins`` groups, the
    adjacent pair whose merge keeps the most IV merges. Ties go to the leftmost pair. Without
    ``direction`` (no labels) "keeps the most IV" becomes "has the smallest combined size".
    """
    label_free = direction is None

    def cost(gs: list[_Group], i: int) -> float:
        if label_free:
            return float(gs[i].total + gs[i + 1].total)
        return -_iv_after(gs, i, missing, alpha)

    while len(groups) > 1:
        small = [(g.total, i) for i, g in enumerate(groups) if g.total < min_bin_share * value_rows]
        if small:
            _, i = min(small)
            options = [j for j in (i - 1, i) if 0 <= j < len(groups) - 1]
            j = min(options, key=lambda j: (cost(groups, j), j))
            groups = _merge_at(groups, j)
            continue
        if direction is not None:
            rates = [_smoothed_rate(g.total, g.bad, alpha) for g in groups]
            broken = [
                i for i in range(len(groups) - 1) if not direction * (rates[i + 1] - rates[i]) > 0
            ]
            if broken:
                j = min(broken, key=lambda j: (cost(groups, j), j))
                groups = _merge_at(groups, j)
                continue
        if len(groups) > max_bins:
            j = min(range(len(groups) - 1), key=lambda j: (cost(groups, j), j))
            groups = _merge_at(groups, j)
            continue
        break
    return groups


def _spearman(x: Sequence[float], y: Sequence[float], weights: Sequence[int]) -> float:
    """Weighted Spearman correlation (average ranks); 0 when either side is constant."""
    rx = pd.Series(list(x), dtype=float).rank().to_numpy()
    ry = pd.Series(list(y), dtype=float).rank().to_numpy()
    w = np.asarray(weights, dtype=float)
    if len(rx) < 2 or w.sum() <= 0:
        return 0.0
    mx = np.average(rx, weights=w)
    my = np.average(ry, weights=w)
    cov = float(np.sum(w * (rx - mx) * (ry - my)))
    var = float(np.sum(w * (rx - mx) ** 2) * np.sum(w * (ry - my) ** 2))
    return cov / math.sqrt(var) if var > 0 else 0.0


def merge_bins(
    total: npt.ArrayLike,
    bad: npt.ArrayLike,
    *,
    kind: MergeKind,
    method: MergeMethod,
    min_bin_share: float = 0.05,
    max_bins: int = 8,
    alpha: float = DEFAULT_ALPHA,
) -> MappingArray:
    """Map fine bins to coarse bins from counts alone.

    Parameters
    ----------
    total, bad : array_like of int, shape (n + 1,)
        Rows and bad rows per fine bin; bins ``0 .. n - 1`` hold values, bin ``n`` missing values.
    kind : {"numeric", "categorical"}
        Numeric fine bins are ordinal and only adjacent bins merge, so every coarse bin is a run
        of consecutive fine bins and the mapping is non-decreasing. Categorical fine bins have no
        order; they are first sorted (see below) and adjacent bins in that order merge.
    method : {"monotone", "quantile"}
        ``"quantile"`` never reads ``bad``: bins below ``min_bin_share`` merge into a neighbour by
        size only (smallest first, into the smaller neighbour), then the adjacent pair with the
        smallest combined size merges while there are more than ``max_bins`` bins. Categorical bins
        are sorted by decreasing size first (ties by fine index), so small categories pool.
        ``"monotone"`` is label-aware; see Notes.
    min_bin_share : float, default 0.05
        Least share of the non-missing rows every coarse value bin must hold, in ``[0, 1]``.
    max_bins : int, default 8
        Most coarse value bins (the missing bin is not counted).
    alpha : float, default 0.5
        Smoothing, as in :func:`woe_iv`.

    Returns
    -------
    numpy.ndarray of int32, shape (n + 1,)
        Coarse index of every fine bin: value bins map to ``0 .. m - 1`` (``m >= 1``), the missing
        fine bin maps to ``m``.

    Notes
    -----
    Fine bins with no rows take no part in merging. For numeric columns an empty bin joins the
    coarse bin of the nearest non-empty bin on its left (on its right if there is none), which
    keeps coarse bins contiguous. For categorical columns it joins the coarse bin with the most
    rows (lowest index on a tie): an unseen category is treated like the bulk of the data. If no
    value bin holds rows, all value bins map to coarse bin 0.

    ``"monotone"`` is a greedy, not an optimum (an exact solution is a mixed-integer program, as
    in Navas-Palencia, *Optimal binning*, 2020). Starting from the non-empty fine bins it
    repeatedly fixes the first broken rule of:

    1. size: the smallest bin below ``min_bin_share`` merges into the neighbour that keeps the
       column's IV highest (left on a tie);
    2. monotonicity: among adjacent pairs whose smoothed bad rate ``r_b`` is not strictly
       monotone in the chosen direction, the pair whose merge keeps IV highest merges;
    3. count: while there are more than ``max_bins`` bins, the adjacent pair whose merge keeps IV
       highest merges.

    Ties go to the leftmost pair. Every step removes one bin, so it ends after at most ``n - 1``
    merges with all three rules holding (a single bin satisfies them trivially). Strict
    monotonicity of ``r_b`` is strict monotonicity of WOE (module docstring). The column's IV
    (missing bin included) is what is kept.

    Direction (numeric): the greedy runs for increasing and for decreasing bad rate and keeps the
    result with the higher IV; on an exact tie, the sign of the row-weighted Spearman correlation
    between fine-bin position and ``r_b`` decides (increasing if it is 0). Categorical: bins are
    sorted by increasing ``r_b`` (ties by fine index) and the direction is increasing, so coarse
    bin 0 is the least risky group.

    The result is a deterministic function of the integer counts.
    """
    t, b = _check_counts(total, bad)
    a = _check_alpha(alpha)
    if not 0.0 <= min_bin_share <= 1.0:
        raise WoeError(f"min_bin_share must lie in [0, 1], got {min_bin_share}")
    if max_bins < 1:
        raise WoeError(f"max_bins must be at least 1, got {max_bins}")
    if kind not in ("numeric", "categorical"):
        raise WoeError(f"kind must be 'numeric' or 'categorical', got {kind!r}")
    if method not in ("monotone", "quantile"):
        raise WoeError(f"method must be 'monotone' or 'quantile', got {method!r}")

    n = t.size - 1  # value bins; index n is missing
    mapping = np.zeros(n + 1, dtype=np.int32)
    nonempty = [i for i in range(n) if t[i] > 0]
    if not nonempty:
        mapping[n] = 1
        return mapping

    totals = [int(v) for v in t]
    # quantile must not read labels: give the greedy zero bads so nothing can leak through.
    bads = [int(v) for v in b] if method == "monotone" else [0] * len(totals)
    if kind == "categorical":
        if method == "monotone":
            order = sorted(nonempty, key=lambda i: (_smoothed_rate(totals[i], bads[i], a), i))
        else:
            order = sorted(nonempty, key=lambda i: (-totals[i], i))
    else:
        order = nonempty
    start = [_Group([i], totals[i], bads[i]) for i in order]
    value_rows = sum(totals[:n])
    missing = (totals[n], bads[n])
    common: dict[str, Any] = {
        "value_rows": value_rows,
        "min_bin_share": min_bin_share,
        "max_bins": max_bins,
        "missing": missing,
        "alpha": a,
    }

    if method == "quantile":
        groups = _greedy(start, direction=None, **common)
    elif kind == "categorical":
        groups = _greedy(start, direction=1, **common)
    else:
        results = {d: _greedy(list(start), direction=d, **common) for d in (1, -1)}
        ivs = {
            d: _column_iv(
                [g.total for g in gs] + [missing[0]], [g.bad for g in gs] + [missing[1]], a
            )
            for d, gs in results.items()
        }
        if ivs[1] != ivs[-1]:
            best = 1 if ivs[1] > ivs[-1] else -1
        else:
            rho = _spearman(
                range(len(nonempty)),
                [_smoothed_rate(totals[i], bads[i], a) for i in nonempty],
                [totals[i] for i in nonempty],
            )
            best = -1 if rho < 0 else 1
        groups = results[best]

    for c, g in enumerate(groups):
        mapping[g.members] = c
    m = len(groups)
    empty = [i for i in range(n) if t[i] == 0]
    if kind == "numeric":
        for i in empty:
            left = [j for j in nonempty if j < i]
            mapping[i] = mapping[left[-1]] if left else mapping[nonempty[0]]
    elif empty:
        largest = min(range(m), key=lambda c: (-groups[c].total, c))
        mapping[empty] = largest
    mapping[n] = m
    return mapping


# ---------------------------------------------------------------------------------------------
# one column's table
# ---------------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    if math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    return repr(float(f"{x:.6g}"))


def _index_ranges(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    parts: list[str] = []
    run: list[int] = []
    for i in sorted(indices):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(parts)


def _labels(mapping: Sequence[int], kind: MergeKind, spec: BinSpec | None) -> tuple[str, ...]:
    n = len(mapping) - 1
    m = mapping[n]
    members: list[list[int]] = [[] for _ in range(m)]
    for fine in range(n):
        members[mapping[fine]].append(fine)
    labels: list[str] = []
    for group in members:
        if spec is None:
            text = _index_ranges(group)
            labels.append(f"bin {text}" if "," not in text else f"bins {text}")
        elif kind == "numeric":
            edges = (-math.inf, *spec.edges, math.inf)
            lo, hi = edges[min(group)], edges[max(group) + 1]
            close = "]" if math.isfinite(hi) else ")"
            labels.append(f"({_fmt(lo)}, {_fmt(hi)}{close}")
        else:
            names = [*spec.categories, "other"]
            labels.append("{" + ", ".join(names[i] for i in group) + "}")
    labels.append("missing")
    return tuple(labels)


@dataclass(frozen=True)
class WoeTable:
    """WOE coding of one column: fine-to-coarse mapping, labels, WOE and counts per coarse bin.

    Attributes
    ----------
    name : str
        Column (feature) name.
    party : str
        Party that owns the column; it receives :attr:`mapping` and applies :meth:`encode`.
    kind : {"numeric", "categorical"}
        Column kind (decides which fine bins may merge).
    mapping : tuple of int
        Coarse bin of every fine bin (length ``n_fine + 1``, missing last; its image is the last
        coarse bin).
    labels : tuple of str
        One human label per coarse bin: edges such as ``"(-inf, 1.5]"``, category sets such as
        ``"{A, B}"``, or ``"bin 0-3"`` when the bank does not know the edges; the last is
        ``"missing"``.
    woe, total, bad : tuple
        WOE, rows and bad rows per coarse bin.
    iv : float
        Information value of the coarse coding.

    Notes
    -----
    What the table reveals: the bank learns counts per fine bin of every column; the owner of a
    column learns the mapping (which fine bins were merged) and, if sent, the WOE values.
    """

    name: str
    party: str
    kind: MergeKind
    mapping: tuple[int, ...]
    labels: tuple[str, ...]
    woe: tuple[float, ...]
    total: tuple[int, ...]
    bad: tuple[int, ...]
    iv: float

    def __post_init__(self) -> None:
        m = len(self.woe)
        if not self.mapping or m < 2:
            raise WoeError(f"WoeTable '{self.name}' needs a mapping and at least 2 coarse bins")
        if not (len(self.labels) == len(self.total) == len(self.bad) == m):
            raise WoeError(
                f"WoeTable '{self.name}': labels, woe, total and bad must all have one entry per "
                f"coarse bin ({m})"
            )
        if self.mapping[-1] != m - 1 or any(not 0 <= c < m - 1 for c in self.mapping[:-1]):
            raise WoeError(
                f"WoeTable '{self.name}': mapping must send value bins to 0..{m - 2} and the "
                f"missing bin to {m - 1}, got {self.mapping}"
            )

    @classmethod
    def fit(
        cls,
        name: str,
        party: str,
        kind: MergeKind,
        total_fine: npt.ArrayLike,
        bad_fine: npt.ArrayLike,
        *,
        spec: BinSpec | None = None,
        method: MergeMethod = "monotone",
        min_bin_share: float = 0.05,
        max_bins: int = 8,
        alpha: float = DEFAULT_ALPHA,
    ) -> WoeTable:
        """Merge fine bins (:func:`merge_bins`), then compute WOE and IV per coarse bin.

        Parameters
        ----------
        name, party, kind
            As the attributes.
        total_fine, bad_fine : array_like of int, shape (n_fine + 1,)
            Counts per fine bin, missing last.
        spec : BinSpec, optional
            The column's fine bins, when the caller owns the column: labels then show edges or
            categories. ``None`` (a platform's column) gives anonymous ``"bin i-j"`` labels.
        method, min_bin_share, max_bins, alpha
            Passed to :func:`merge_bins` (``alpha`` also to :func:`woe_iv`).

        Returns
        -------
        WoeTable

        Raises
        ------
        WoeError
            If the counts are invalid or ``spec`` does not match them (kind or bin count).
        """
        t, b = _check_counts(total_fine, bad_fine)
        if spec is not None:
            if spec.kind != kind:
                raise WoeError(f"column '{name}': kind {kind!r} but its BinSpec is {spec.kind!r}")
            if spec.n_bins + 1 != t.size:
                raise WoeError(
                    f"column '{name}': BinSpec has {spec.n_bins} value bins + missing, but "
                    f"{t.size} fine counts were given; pass counts for bins 0..{spec.n_bins}"
                )
        mapping = merge_bins(
            t,
            b,
            kind=kind,
            method=method,
            min_bin_share=min_bin_share,
            max_bins=max_bins,
            alpha=alpha,
        )
        m = int(mapping[-1]) + 1
        coarse_total = np.zeros(m, dtype=np.int64)
        coarse_bad = np.zeros(m, dtype=np.int64)
        np.add.at(coarse_total, mapping, t)
        np.add.at(coarse_bad, mapping, b)
        woe, _, iv = woe_iv(coarse_total, coarse_bad, alpha)
        mapping_t = tuple(int(c) for c in mapping)
        return cls(
            name=name,
            party=party,
            kind=kind,
            mapping=mapping_t,
            labels=_labels(mapping_t, kind, spec),
            woe=tuple(float(w) for w in woe),
            total=tuple(int(v) for v in coarse_total),
            bad=tuple(int(v) for v in coarse_bad),
            iv=iv,
        )

    @property
    def n_coarse(self) -> int:
        """Coarse bins, the missing bin included."""
        return len(self.woe)

    @property
    def mapping_array(self) -> MappingArray:
        """:attr:`mapping` as an int32 array (what the owning party needs)."""
        return np.asarray(self.mapping, dtype=np.int32)

    def coarse(self, fine_bins: npt.ArrayLike) -> MappingArray:
        """Coarse bin of every row from its fine bin.

        Raises
        ------
        WoeError
            If a fine bin index is outside ``0 .. len(mapping) - 1``.
        """
        fb = np.asarray(fine_bins)
        if fb.size and not np.issubdtype(fb.dtype, np.integer):
            raise WoeError(f"fine bins of '{self.name}' must be integers, got dtype {fb.dtype}")
        if fb.size and (fb.min() < 0 or fb.max() >= len(self.mapping)):
            raise WoeError(
                f"fine bins of '{self.name}' must lie in 0..{len(self.mapping) - 1}, "
                f"got min {fb.min()} and max {fb.max()}; were they binned with another BinSpec?"
            )
        return self.mapping_array[fb.astype(np.int64, copy=False)]

    def encode(self, fine_bins: npt.ArrayLike) -> FloatArray:
        """WOE of every row from its fine bin."""
        return np.asarray(self.woe, dtype=np.float64)[self.coarse(fine_bins)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "name": self.name,
            "party": self.party,
            "kind": self.kind,
            "mapping": list(self.mapping),
            "labels": list(self.labels),
            "woe": list(self.woe),
            "total": list(self.total),
            "bad": list(self.bad),
            "iv": self.iv,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WoeTable:
        """Inverse of :meth:`to_dict`."""
        kind = data["kind"]
        if kind not in ("numeric", "categorical"):
            raise WoeError(
                f"unknown column kind {kind!r} in WoeTable data for {data.get('name')!r}"
            )
        return cls(
            name=str(data["name"]),
            party=str(data["party"]),
            kind=kind,
            mapping=tuple(int(c) for c in data["mapping"]),
            labels=tuple(str(s) for s in data["labels"]),
            woe=tuple(float(w) for w in data["woe"]),
            total=tuple(int(v) for v in data["total"]),
            bad=tuple(int(v) for v in data["bad"]),
            iv=float(data["iv"]),
        )


def iv_strength(iv: float) -> str:
    """Rule-of-thumb label of an IV (:data:`IV_STRENGTH_THRESHOLDS`)."""
    for bound, label in IV_STRENGTH_THRESHOLDS:
        if iv < bound:
            return label
    return "suspicious"


def iv_table(tables: Sequence[WoeTable]) -> pd.DataFrame:
    """IV summary of many columns.

    Returns
    -------
    pandas.DataFrame
        Columns ``party, feature, iv, n_bins, strength``, one row per table, sorted by decreasing
        IV (ties by party, then feature). ``n_bins`` counts coarse bins holding rows (the missing
        bin included when it does).
    """
    rows = [
        {
            "party": t.party,
            "feature": t.name,
            "iv": t.iv,
            "n_bins": sum(1 for v in t.total if v > 0),
            "strength": iv_strength(t.iv),
        }
        for t in sorted(tables, key=lambda t: (-t.iv, t.party, t.name))
    ]
    return pd.DataFrame(rows, columns=["party", "feature", "iv", "n_bins", "strength"])
