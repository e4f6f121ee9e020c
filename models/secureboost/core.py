"""The plaintext core of SecureBoost: gradients, histograms, gains, split search, trees.

Everything the federated protocol computes is computed here in the clear, by the same
functions: the protocol only changes *who* computes a histogram (the platform, under Paillier
encryption) and who knows a split's rule (its owner). Gradients are quantised to integers
(``g * 2^precision``) before anything is summed, so a histogram is a vector of exact integer
sums whether it was added in the clear or under encryption, and the federated model makes the
same splits and predictions as :func:`train` on the joined data.

Objective: binary log-loss; XGBoost's second-order gain with L2 regularisation ``reg_lambda``
(Chen & Guestrin 2016), leaf weight ``-G / (H + lambda)`` times the learning rate. Trees grow
level by level to ``max_depth``. Candidate splits are visited in a fixed order (party order of
the job, feature order, bin order, missing values right before left) and a candidate replaces
the best only if its gain is strictly larger, so ties resolve identically everywhere.

Sample weights (:mod:`models.sample_weights`, scaled to max 1) multiply each row's gradient and
hessian before quantisation, and the base score is the weighted default rate. With validation
rows, :func:`train` scores them after every tree (:mod:`models.early_stopping`) and, with
``early_stopping_rounds``, stops and keeps the trees up to the best one, as the protocol does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from features.binning import BinKind, BinnedTable
from models.early_stopping import StoppingState, ValidationPlan, observe, validation_metrics
from models.secureboost.settings import DEFAULTS

#: Fixed-point precision of gradients: g and h are summed as integers ``round(x * 2^32)``.
#: Sums of up to 2^20 rows stay below 2^53, so float64 bin counts are exact as well.
PRECISION_BITS = 32
SCALE = float(2**PRECISION_BITS)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TreeParams:
    """Growth and regularisation settings shared by the core and the protocol."""

    max_depth: int = DEFAULTS.max_depth
    learning_rate: float = DEFAULTS.learning_rate
    reg_lambda: float = DEFAULTS.reg_lambda
    min_child_weight: float = DEFAULTS.min_child_weight
    min_child_samples: int = DEFAULTS.min_child_samples
    min_split_gain: float = DEFAULTS.min_split_gain


def sigmoid(x: FloatArray) -> FloatArray:
    """Logistic function, stable for large |x|."""
    out: FloatArray = np.empty_like(x, dtype=np.float64)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def base_score(y: npt.NDArray[Any], weights: FloatArray | None = None) -> float:
    """Initial log-odds: the (weighted) training default rate (boost from average)."""
    mean = np.mean(y) if weights is None else np.average(y, weights=weights)
    rate = float(np.clip(mean, 1e-6, 1 - 1e-6))
    return math.log(rate / (1.0 - rate))


def gradients(
    y: npt.NDArray[Any], raw: FloatArray, weights: FloatArray | None = None
) -> tuple[IntArray, IntArray]:
    """Quantised log-loss gradients ``g = w (p - y)`` and hessians ``h = w p (1 - p)``.

    Returns integers ``round(g * 2^32)`` and ``round(h * 2^32)``: |g| <= 2^32, 0 <= h <= 2^30
    (weights are at most 1, :func:`models.sample_weights.training_weights`).
    """
    p = sigmoid(raw)
    g_real, h_real = p - y, p * (1.0 - p)
    if weights is not None:
        g_real, h_real = weights * g_real, weights * h_real
    g = np.rint(g_real * SCALE).astype(np.int64)
    h = np.rint(h_real * SCALE).astype(np.int64)
    return g, h


def histogram(bins: npt.NDArray[np.int32], n_bins: int, g: IntArray, h: IntArray) -> IntArray:
    """Per-bin sums of one feature over some rows: array (n_bins + 1, 3) of (G, H, count).

    The last row is the missing bin. Sums are exact (integers below 2^53 through float64).
    """
    length = n_bins + 1
    out = np.empty((length, 3), dtype=np.int64)
    out[:, 0] = np.rint(np.bincount(bins, weights=g, minlength=length)).astype(np.int64)
    out[:, 1] = np.rint(np.bincount(bins, weights=h, minlength=length)).astype(np.int64)
    out[:, 2] = np.bincount(bins, minlength=length)
    return out


@dataclass(frozen=True)
class Split:
    """A chosen split: who owns it, which feature, which bins go left.

    ``feature`` indexes the owner's own feature list. ``left_bins`` lists the non-missing bins
    that go left (a prefix for numeric features, a set for categorical ones); missing values go
    left iff ``missing_left``. Only the owner can turn bins into values (edges, categories).
    """

    owner: int
    feature: int
    kind: BinKind
    left_bins: tuple[int, ...]
    missing_left: bool
    gain: float
    left_count: int
    right_count: int


def _score(g: float, h: float, lam: float) -> float:
    return g * g / (h + lam)


def _gain(gl: int, hl: int, gr: int, hr: int, parent: float, lam: float) -> float:
    """XGBoost's gain of a split from the integer sums of its children (``parent``: score)."""
    left, right = _score(gl / SCALE, hl / SCALE, lam), _score(gr / SCALE, hr / SCALE, lam)
    return 0.5 * (left + right - parent)


def split_gain(left: tuple[int, int], right: tuple[int, int], lam: float) -> float:
    """The gain of a split whose children hold ``(G, H)`` integer sums ``left`` and ``right``.

    The same arithmetic :func:`best_split` scores candidates with: given the exact sums of a
    chosen partition, it is the exact reduction of the second-order objective that split made.
    """
    (gl, hl), (gr, hr) = left, right
    return _gain(gl, hl, gr, hr, _score((gl + gr) / SCALE, (hl + hr) / SCALE, lam), lam)


def subtree_sums(position: IntArray, node: int, g: IntArray, h: IntArray) -> tuple[int, int, int]:
    """``(G, H, rows)`` of the rows whose leaf ``position`` lies in the subtree of ``node``.

    Nodes are numbered level-wise (children ``2 i + 1`` and ``2 i + 2``), so the ancestor of
    node ``p`` at the depth of ``node`` is ``((p + 1) >> (depth(p) - depth(node))) - 1``.
    """
    depth = int(node + 1).bit_length() - 1
    p1 = position.astype(np.int64) + 1
    shift = np.frexp(p1.astype(np.float64))[1].astype(np.int64) - 1 - depth  # exact depths
    inside = (shift >= 0) & ((p1 >> np.maximum(shift, 0)) == node + 1)
    return int(g[inside].sum()), int(h[inside].sum()), int(inside.sum())


def best_split(
    owner: int,
    feature: int,
    kind: BinKind,
    hist: IntArray,
    totals: tuple[int, int, int],
    params: TreeParams,
    best: Split | None,
) -> Split | None:
    """Return the better of ``best`` and the best split of one feature's histogram.

    ``hist`` is (n_bins + 1, 3) integer sums with the missing bin last; ``totals`` is the node's
    (G, H, count). Candidates: numeric prefixes in bin order; categorical prefixes of bins
    ordered by ``G / (H + lambda)`` (ties by bin); each with missing values right, then left
    (only right if the node has no missing values).
    """
    lam = params.reg_lambda
    g_tot, h_tot, c_tot = totals
    parent = _score(g_tot / SCALE, h_tot / SCALE, lam)
    body = hist[:-1]
    missing = hist[-1]
    if kind == "numeric":
        order = np.arange(body.shape[0])
    else:
        present = np.flatnonzero(body[:, 2] > 0)
        ratio = (body[present, 0] / SCALE) / (body[present, 1] / SCALE + lam)
        order = present[np.lexsort((present, ratio))]
    cum = np.cumsum(body[order], axis=0)
    sides = (False, True) if missing[2] > 0 else (False,)
    for k in range(len(order) - 1):
        base = cum[k]
        for missing_left in sides:
            left = base + missing if missing_left else base
            gl, hl, cl = int(left[0]), int(left[1]), int(left[2])
            gr, hr, cr = g_tot - gl, h_tot - hl, c_tot - cl
            if cl < params.min_child_samples or cr < params.min_child_samples:
                continue
            if hl / SCALE < params.min_child_weight or hr / SCALE < params.min_child_weight:
                continue
            gain = _gain(gl, hl, gr, hr, parent, lam)
            if gain <= params.min_split_gain or (best is not None and gain <= best.gain):
                continue
            left_bins = tuple(sorted(int(b) for b in order[: k + 1]))
            best = Split(owner, feature, kind, left_bins, missing_left, gain, cl, cr)
    return best


def goes_left(
    split: Split, bins: npt.NDArray[np.integer[Any]], missing_bin: int
) -> npt.NDArray[np.bool_]:
    """Which rows (given their bin in the split's feature) go to the left child."""
    left = np.isin(bins, np.asarray(split.left_bins, dtype=np.int32))
    return np.where(bins == missing_bin, split.missing_left, left)


def leaf_weight(g_sum: int, h_sum: int, params: TreeParams) -> float:
    """Leaf value ``-G / (H + lambda)`` times the learning rate."""
    return -params.learning_rate * (g_sum / SCALE) / (h_sum / SCALE + params.reg_lambda)


@dataclass
class Node:
    """A tree node; children are ``2 i + 1`` and ``2 i + 2`` (level-wise numbering)."""

    node_id: int
    split: Split | None = None
    weight: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "node_id": self.node_id,
            "split": None if self.split is None else self.split.__dict__,
            "weight": self.weight,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Node:
        """Inverse of :meth:`to_dict`."""
        split = data["split"]
        return cls(
            node_id=int(data["node_id"]),
            split=None
            if split is None
            else Split(**{**split, "left_bins": tuple(split["left_bins"])}),
            weight=data["weight"],
        )


@dataclass
class Tree:
    """One boosted tree: nodes by id."""

    nodes: dict[int, Node] = field(default_factory=dict)

    def leaves(self) -> list[Node]:
        """Leaf nodes (those with a weight)."""
        return [n for n in self.nodes.values() if n.weight is not None]


def route(
    tree: Tree,
    decide: Any,
    n_rows: int,
) -> npt.NDArray[np.int64]:
    """Leaf id of every row; ``decide(node, rows)`` says which of ``rows`` go left at ``node``."""
    position = np.zeros(n_rows, dtype=np.int64)
    active = np.ones(n_rows, dtype=bool)
    while active.any():
        for node_id in np.unique(position[active]).tolist():
            node = tree.nodes[int(node_id)]
            rows = np.flatnonzero(active & (position == node_id))
            if node.split is None:
                active[rows] = False
                continue
            left = decide(node, rows)
            position[rows] = np.where(left, 2 * node_id + 1, 2 * node_id + 2)
    return position


@dataclass
class CoreModel:
    """A trained plaintext SecureBoost model over several parties' binned tables.

    ``history``: one entry per trained tree with its validation metrics (``valid_auc``,
    ``valid_ks``, ``valid_logloss``; empty without validation rows). ``best_iteration``: the
    tree early stopping kept (``trees`` ends there), else ``None``.
    """

    params: TreeParams
    base: float
    trees: list[Tree]
    missing_bins: list[list[int]]  # per party, per feature
    history: list[dict[str, float]] = field(default_factory=list)
    best_iteration: int | None = None

    def decision(self, tables: Sequence[BinnedTable]) -> Any:
        """A ``decide`` function for :func:`route` over the given binned tables."""

        def decide(node: Node, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
            split = node.split
            if split is None:
                raise ValueError("leaf has no split")
            bins = tables[split.owner].bins[rows, split.feature]
            return goes_left(split, bins, self.missing_bins[split.owner][split.feature])

        return decide

    def raw_score(self, tables: Sequence[BinnedTable]) -> FloatArray:
        """Log-odds for every row."""
        raw = np.full(tables[0].bins.shape[0], self.base)
        for tree in self.trees:
            raw += self.tree_score(tree, tables)
        return raw

    def tree_score(self, tree: Tree, tables: Sequence[BinnedTable]) -> FloatArray:
        """The leaf weight ``tree`` gives every row."""
        n = tables[0].bins.shape[0]
        leaf = route(tree, self.decision(tables), n)
        return np.array([tree.nodes[int(i)].weight or 0.0 for i in leaf], dtype=float)

    def predict_proba(self, tables: Sequence[BinnedTable]) -> FloatArray:
        """Probability of the positive class (default) for every row."""
        return sigmoid(self.raw_score(tables))


def grow_level(
    node_ids: Sequence[int],
    histograms: dict[int, list[list[IntArray]]],
    kinds: Sequence[Sequence[BinKind]],
    totals: dict[int, tuple[int, int, int]],
    params: TreeParams,
    allowed_owners: set[int],
) -> dict[int, Split | None]:
    """Best split of every node of one level, from per-party per-feature histograms.

    ``histograms[node][party][feature]`` is (n_bins + 1, 3) integer sums; parties not in
    ``allowed_owners`` are skipped (bank-only trees).
    """
    chosen: dict[int, Split | None] = {}
    for node in node_ids:
        best: Split | None = None
        for owner, per_feature in enumerate(histograms[node]):
            if owner not in allowed_owners:
                continue
            for feature, hist in enumerate(per_feature):
                best = best_split(
                    owner, feature, kinds[owner][feature], hist, totals[node], params, best
                )
        chosen[node] = best
    return chosen


def train(
    tables: Sequence[BinnedTable],
    y: npt.NDArray[Any],
    params: TreeParams,
    n_estimators: int,
    *,
    label_owner: int = 0,
    bank_only_trees: int = 0,
    weights: FloatArray | None = None,
    valid: Sequence[BinnedTable] | None = None,
    y_valid: npt.NDArray[Any] | None = None,
    plan: ValidationPlan | None = None,
) -> CoreModel:
    """Train SecureBoost in the clear on the joined, binned tables of every party.

    Parameters
    ----------
    tables : sequence of BinnedTable
        One per party, rows aligned.
    y : array of {0, 1}
        Labels.
    params : TreeParams
        Growth settings.
    n_estimators : int
        Number of trees.
    label_owner : int
        Index of the label holder (for ``bank_only_trees``).
    bank_only_trees : int
        The first trees may split only on the label holder's features.
    weights : array of float, optional
        Sample weights of the rows (at most 1; :mod:`models.sample_weights`).
    valid, y_valid : sequence of BinnedTable and labels, optional
        The validation rows (binned with the training rows' specs), scored after every tree.
    plan : ValidationPlan, optional
        The stopping rule (``rounds``, ``metric``); without ``rounds`` every tree is kept.
    """
    n = len(y)
    base = base_score(y, weights)
    raw = np.full(n, base)
    kinds = [[s.kind for s in t.specs] for t in tables]
    n_bins = [[s.n_bins for s in t.specs] for t in tables]
    missing_bins = [[s.missing_bin for s in t.specs] for t in tables]
    trees: list[Tree] = []
    all_owners = set(range(len(tables)))
    model = CoreModel(params=params, base=base, trees=trees, missing_bins=missing_bins)
    raw_valid = None if valid is None else np.full(valid[0].bins.shape[0], base)
    stopping = StoppingState()
    for t in range(n_estimators):
        g, h = gradients(y, raw, weights)
        owners = {label_owner} if t < bank_only_trees else all_owners
        tree = Tree()
        position = np.zeros(n, dtype=np.int64)
        level = [0]
        for depth in range(params.max_depth + 1):
            histograms: dict[int, list[list[IntArray]]] = {}
            totals: dict[int, tuple[int, int, int]] = {}
            for node in level:
                rows = np.flatnonzero(position == node)
                totals[node] = (int(g[rows].sum()), int(h[rows].sum()), int(rows.size))
                if depth < params.max_depth:
                    histograms[node] = [
                        [
                            histogram(table.bins[rows, f], n_bins[p][f], g[rows], h[rows])
                            for f in range(len(table.specs))
                        ]
                        for p, table in enumerate(tables)
                    ]
            splits = (
                grow_level(level, histograms, kinds, totals, params, owners)
                if depth < params.max_depth
                else dict.fromkeys(level)
            )
            next_level = []
            for node in level:
                split = splits[node]
                if split is None:
                    g_sum, h_sum, _ = totals[node]
                    tree.nodes[node] = Node(node, weight=leaf_weight(g_sum, h_sum, params))
                    continue
                tree.nodes[node] = Node(node, split=split)
                rows = np.flatnonzero(position == node)
                bins = tables[split.owner].bins[rows, split.feature]
                left = goes_left(split, bins, missing_bins[split.owner][split.feature])
                position[rows] = np.where(left, 2 * node + 1, 2 * node + 2)
                next_level += [2 * node + 1, 2 * node + 2]
            level = next_level
            if not level:
                break
        trees.append(tree)
        raw = raw + np.array([tree.nodes[int(i)].weight or 0.0 for i in position])
        if valid is None or raw_valid is None or y_valid is None:
            continue
        raw_valid = raw_valid + model.tree_score(tree, valid)
        metrics = validation_metrics(y_valid, raw_valid)
        model.history.append({f"valid_{k}": v for k, v in metrics.items()})
        stopping = observe(stopping, t, metrics, plan or ValidationPlan(fraction=1.0))
        if stopping.stopped:
            break
    if plan is not None and plan.rounds is not None and stopping.best_iteration >= 0:
        model.best_iteration = stopping.best_iteration
        del trees[stopping.best_iteration + 1 :]
    return model
