"""The bank's trees in SecureBoost: split search, its own splits, leaves, platform histograms.

The bank holds every gradient, so it alone chooses splits (XGBoost's gain over its own
histograms and the platforms' decrypted ones, :func:`models.secureboost.core.grow_level`),
applies its own splits, records the owner of every node and computes every leaf weight. A
platform's histogram of the larger child of a split is never computed by the platform: the
bank derives it from the parent and the smaller sibling, in the clear (histogram subtraction).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from features.binning import BinKind, BinSpec
from models.protocol import PartyContext
from models.secureboost import bank_validation
from models.secureboost.core import (
    SCALE,
    IntArray,
    Split,
    goes_left,
    grow_level,
    histogram,
    leaf_weight,
    sigmoid,
    split_gain,
    subtree_sums,
)
from models.secureboost.params import SecureBoostParams
from models.secureboost.parts import BankNode, RuleSplit
from models.secureboost.state import CLOCK, training_bins


def grow_locally(ctx: PartyContext, state: dict[str, Any], params: SecureBoostParams) -> None:
    """Grow a whole tree on the bank's features alone (``bank_only_trees``: no message)."""
    level = [0]
    for depth in range(params.max_depth + 1):
        state["level"] = depth
        splits = (
            choose(ctx, state, params, level, bank_only=True) if depth < params.max_depth else {}
        )
        next_level: list[int] = []
        position = ctx.store.get_array("sb.position")
        for node in level:
            split = splits.get(node)
            if split is None:
                continue
            apply_bank_split(ctx, state, node, split, position)
            next_level += [2 * node + 1, 2 * node + 2]
        ctx.store.put_array("sb.position", position)
        level = next_level
        if not level:
            break
    finish_tree(ctx, state, params)


def choose(
    ctx: PartyContext,
    state: dict[str, Any],
    params: SecureBoostParams,
    nodes: Sequence[int],
    *,
    bank_only: bool,
) -> dict[int, Split | None]:
    """The best split of every node in ``nodes`` (or ``None``), over every party's features.

    With ``bank_only`` only the bank's features compete. Counts each split per
    ``party:feature`` in ``state["importance"]`` with the gain the search saw (``search_gain``:
    computed from the platform's DP-noised histograms when the job uses DP), and remembers the
    split's ``party:feature`` per node for :func:`finish_tree`, which adds the exact gain.
    """
    started = time.perf_counter()
    order: list[str] = state["order"]
    bank_index = order.index(ctx.name)
    g, h = ctx.store.get_array("sb.g"), ctx.store.get_array("sb.h")
    position = ctx.store.get_array("sb.position")
    bins = training_bins(ctx)
    specs = [BinSpec.from_dict(s) for s in ctx.store.get_json("sb.specs")]
    histograms: dict[int, list[list[IntArray]]] = {}
    totals: dict[int, tuple[int, int, int]] = {}
    kinds: list[list[BinKind]] = []
    for party in order:
        if party == ctx.name:
            kinds.append([s.kind for s in specs])
        else:
            kinds.append([f["kind"] for f in state["platforms"][party].get("features", [])])
    for node in nodes:
        rows = np.flatnonzero(position == node)
        totals[node] = (int(g[rows].sum()), int(h[rows].sum()), int(rows.size))
        per_party: list[list[IntArray]] = []
        for party in order:
            if party == ctx.name:
                per_party.append(
                    [
                        histogram(bins[rows, f], s.n_bins, g[rows], h[rows])
                        for f, s in enumerate(specs)
                    ]
                )
            elif bank_only:
                per_party.append([])
            else:
                per_party.append(_get_hist(ctx, node, party, state))
        histograms[node] = per_party
    owners = {bank_index} if bank_only else set(range(len(order)))
    splits = grow_level(nodes, histograms, kinds, totals, params.tree, owners)
    for node, split in splits.items():
        if split is not None:
            importance = state.setdefault("importance", {})
            key = f"{order[split.owner]}:{split.feature}"
            entry = importance.setdefault(key, _new_entry())
            entry["splits"] += 1
            entry["search_gain"] += split.gain
            state.setdefault("split_keys", {})[str(node)] = key
    clock = CLOCK.load(ctx)
    clock.add("split_search", time.perf_counter() - started)
    CLOCK.save(ctx, clock)
    return splits


def apply_bank_split(
    ctx: PartyContext,
    state: dict[str, Any],
    node: int,
    split: Split,
    position: IntArray,
) -> None:
    """Route the rows of ``node`` by one of the bank's own splits and record its rule."""
    bins = training_bins(ctx)
    spec = BinSpec.from_dict(ctx.store.get_json("sb.specs")[split.feature])
    rows = np.flatnonzero(position == node)
    left = goes_left(split, bins[rows, split.feature], spec.missing_bin)
    position[rows] = np.where(left, 2 * node + 1, 2 * node + 2)
    rule = RuleSplit(spec.name, split.left_bins, split.missing_left)
    record_node(ctx, node, {"owner": ctx.name, "rule": rule.to_dict()})


def record_node(ctx: PartyContext, node: int, entry: dict[str, Any]) -> None:
    """Keep who owns the split at ``node`` (the bank's rule, or a platform's split id)."""
    nodes = ctx.store.get_json("sb.tree_nodes") or {}
    nodes[str(node)] = entry
    ctx.store.put_json("sb.tree_nodes", nodes)


def finish_tree(ctx: PartyContext, state: dict[str, Any], params: SecureBoostParams) -> None:
    """Close the current tree: its nodes and leaf weights, updated scores, its metrics."""
    started = time.perf_counter()
    g, h = ctx.store.get_array("sb.g"), ctx.store.get_array("sb.h")
    position = ctx.store.get_array("sb.position")
    raw = ctx.store.get_array("sb.raw")
    y = ctx.store.get_array("sb.y")
    nodes = ctx.store.get_json("sb.tree_nodes") or {}
    tree: list[dict[str, Any]] = []
    for node_id, entry in sorted(nodes.items(), key=lambda kv: int(kv[0])):
        rule = entry.get("rule")
        tree.append(
            BankNode(
                node_id=int(node_id),
                owner=entry["owner"],
                rule=None if rule is None else RuleSplit.from_dict(rule),
                split_id=entry.get("split_id"),
                cover=_cover(position, int(node_id), g, h),
            ).to_dict()
        )
    # Every child of a split is a node, even one no training row reached (possible when
    # noisy counts chose the split): it is a leaf of weight -0/(0 + lambda) = 0, as in the
    # plaintext core, so any row routed there at prediction time finds it.
    leaves = set(np.unique(position).tolist())
    for node_id in nodes:
        parent = int(node_id)
        for child in (2 * parent + 1, 2 * parent + 2):
            if str(child) not in nodes:
                leaves.add(child)
    for leaf in sorted(leaves):
        rows = position == leaf
        weight = leaf_weight(int(g[rows].sum()), int(h[rows].sum()), params.tree)
        raw[rows] += weight
        cover = _cover(position, int(leaf), g, h)
        tree.append(BankNode(node_id=int(leaf), weight=weight, cover=cover).to_dict())
    ctx.store.put_array("sb.raw", raw)
    _add_exact_gains(state, position, g, h, params)
    trees = ctx.store.get_json("sb.trees")
    trees.append(tree)
    ctx.store.put_json("sb.trees", trees)
    p = sigmoid(raw)
    eps = 1e-12
    logloss = float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)))
    metrics = ctx.store.get_json("sb.metrics")
    entry = {
        "tree": state["tree"],
        "train_logloss": logloss,
        "seconds": time.perf_counter() - float(state.get("tree_started", started)),
        "leaves": len(np.unique(position)),
        "bank_only": state["tree"] < params.bank_only_trees,
    }
    if bank_validation.enabled(state):
        entry.update(bank_validation.score_tree(ctx, state, params, tree))
    metrics.append(entry)
    ctx.store.put_json("sb.metrics", metrics)
    # Forget every histogram of this tree: the next tree's nodes reuse the same ids.
    for party in state["platforms"]:
        for node in range(2 ** (params.max_depth + 1)):
            ctx.store.delete(_hist_key(node, party))
    clock = CLOCK.load(ctx)
    clock.add("leaves", time.perf_counter() - started)
    CLOCK.save(ctx, clock)


def _cover(position: IntArray, node: int, g: IntArray, h: IntArray) -> float:
    """Hessian sum of the training rows in ``node``'s subtree (exact, the bank's own)."""
    return subtree_sums(position, node, g, h)[1] / SCALE


def _new_entry() -> dict[str, Any]:
    return {"splits": 0, "gain": 0.0, "cover": 0.0, "search_gain": 0.0}


def _add_exact_gains(
    state: dict[str, Any],
    position: IntArray,
    g: IntArray,
    h: IntArray,
    params: SecureBoostParams,
) -> None:
    """Add each split of the finished tree's exact gain and cover to its ``party:feature``.

    The bank holds every gradient and knows where every row went (its own rules, the platforms'
    directions), so it computes each split's gain from the exact sums of its two children, as
    XGBoost's ``total_gain`` does, whatever histograms chose it; ``cover`` is the split node's
    hessian sum. Without DP the gain equals the search's; with DP the search saw noisy platform
    sums (``search_gain``). Nothing new is learned: the partition and the gradients are the
    bank's already.
    """
    lam = params.tree.reg_lambda
    importance = state.setdefault("importance", {})
    for node_id, key in state.pop("split_keys", {}).items():
        node = int(node_id)
        gl, hl, _ = subtree_sums(position, 2 * node + 1, g, h)
        gr, hr, _ = subtree_sums(position, 2 * node + 2, g, h)
        entry = importance.setdefault(key, _new_entry())
        entry["gain"] += split_gain((gl, hl), (gr, hr), lam)
        entry["cover"] += (hl + hr) / SCALE


def smaller_children(
    ctx: PartyContext, splits: dict[int, Split | None], next_level: list[int]
) -> list[int]:
    """For each split, the child with fewer rows: the platform computes only that one."""
    compute = []
    for node, split in splits.items():
        if split is None:
            continue
        left, right = 2 * node + 1, 2 * node + 2
        compute.append(left if split.left_count <= split.right_count else right)
    return sorted(c for c in compute if c in next_level)


def _hist_key(node: int, party: str) -> str:
    return f"sb.hist.{party}.{node}"


def put_hist(ctx: PartyContext, node: int, party: str, per_feature: list[IntArray]) -> None:
    """Keep a platform's decrypted histogram of ``node`` (one block per feature)."""
    flat = np.concatenate(per_feature) if per_feature else np.zeros((0, 3), np.int64)
    ctx.store.put_array(_hist_key(node, party), flat)


def _get_hist(ctx: PartyContext, node: int, party: str, state: dict[str, Any]) -> list[IntArray]:
    widths = [f["n_bins"] + 1 for f in state["platforms"][party]["features"]]
    try:
        flat = ctx.store.get_array(_hist_key(node, party))
    except KeyError:
        # The larger child: parent minus its sibling, in the clear (histogram subtraction).
        parent = (node - 1) // 2
        sibling = node + 1 if node % 2 == 1 else node - 1
        flat = ctx.store.get_array(_hist_key(parent, party)) - ctx.store.get_array(
            _hist_key(sibling, party)
        )
        ctx.store.put_array(_hist_key(node, party), flat)
    out, offset = [], 0
    for w in widths:
        out.append(flat[offset : offset + w])
        offset += w
    return out
