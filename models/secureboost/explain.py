"""Per-enterprise contributions of a joint SecureBoost model: Saabas path attribution.

For one tree, every node has a value: a leaf its weight, an internal node the cover-weighted
mean of its children's values (cover = the hessian sum of the training rows that reached it,
XGBoost's convention). A row's path from the root to its leaf changes the value at each split;
Saabas ("Interpreting random forests", 2014; XGBoost's ``pred_contribs(approx_contribs=True)``)
credits each change to the split's feature. Summed over the path, the changes are the leaf
weight minus the root value, so per row

    base_score + Σ_trees root value + Σ contributions = the model's margin (log-odds).

What the bank computes it from, and all it needs: the tree structure, leaf weights and node
covers of its own part, its own columns, the left/right bits the platform answers per split
(what scoring already uses), and per platform split the **feature group** its platform released
at the end of training. The bank's own splits are credited to its column names; a platform's
splits only to ``party:group``: no platform column, threshold, bin or value is needed or named.

TreeSHAP would need, per path, which splits share a feature; the bank part deliberately keeps no
platform column per split, so this module attributes per split (Saabas) and sums by group.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import pandas as pd

from models.explanations import Attribution, AttributionRefusedError, ExplanationUnavailableError
from models.secureboost.parts import BankNode, BankPart

Decisions = Mapping[str, tuple[list[str], npt.NDArray[np.bool_]]]


def node_values(tree: Mapping[int, BankNode]) -> dict[int, float]:
    """Every node's value: leaf weight, or the cover-weighted mean of its children's values.

    A node no training row reached (cover 0: possible under DP noise) takes the plain mean of
    its children, so its value is still defined; rows reaching it at scoring time get the same
    total (the path sum telescopes whatever the values are).

    Raises
    ------
    ExplanationUnavailableError
        If a node has no cover (a part saved before explanations existed).
    """
    values: dict[int, float] = {}
    for node_id in sorted(tree, reverse=True):  # children have larger ids than their parent
        node = tree[node_id]
        if node.cover is None:
            raise ExplanationUnavailableError(
                "the model's trees carry no node covers (saved before explanations existed); "
                "retrain it to explain its scores"
            )
        if node.weight is not None:
            values[node_id] = float(node.weight)
            continue
        left, right = tree[2 * node_id + 1], tree[2 * node_id + 2]
        lc, rc = float(left.cover or 0.0), float(right.cover or 0.0)
        lv, rv = values[left.node_id], values[right.node_id]
        values[node_id] = (lc * lv + rc * rv) / (lc + rc) if lc + rc > 0 else (lv + rv) / 2
    return values


def split_label(part: BankPart, node: BankNode) -> str:
    """``bank:column`` for the bank's own split, ``party:group`` for a platform's.

    Raises
    ------
    AttributionRefusedError
        If the split's platform released no feature groups (its reason is named).
    """
    if node.rule is not None:
        return f"{part.party}:{node.rule.feature}"
    party = str(node.owner)
    groups = part.platform_groups.get(party)
    if groups is None or str(node.split_id) not in groups:
        reason = part.groups_withheld.get(party, "the model holds no feature groups of its splits")
        raise AttributionRefusedError(
            f"platform {party!r} did not release the feature groups of its splits ({reason}); "
            "its contributions cannot be explained by group. Score without reasons, or ask the "
            "platform to allow it (lab policy set explanations.group_attribution=allow) and "
            "retrain"
        )
    return f"{party}:{groups[str(node.split_id)]}"


def labels(part: BankPart) -> tuple[str, ...]:
    """Every label a split of ``part`` is credited to, sorted."""
    return tuple(
        sorted(
            {
                split_label(part, node)
                for tree in part.trees
                for node in tree.values()
                if node.weight is None
            }
        )
    )


def saabas(part: BankPart, bank_frame: pd.DataFrame, decisions: Decisions) -> Attribution:
    """Saabas contributions of every row of ``bank_frame`` (see the module docstring).

    Parameters
    ----------
    part : BankPart
        The bank's part, with node covers and its platforms' released groups.
    bank_frame : DataFrame
        The bank's own columns.
    decisions : mapping
        ``party -> (split_ids, bits)`` as for :meth:`BankPart.raw_scores`.

    Raises
    ------
    AttributionRefusedError
        If a platform withheld its groups.
    ExplanationUnavailableError
        If the part has no node covers.
    """
    names = labels(part)
    index = {label: j for j, label in enumerate(names)}
    n = len(bank_frame)
    columns = {
        party: {sid: j for j, sid in enumerate(ids)} for party, (ids, _) in decisions.items()
    }
    base = np.full(n, float(part.base_score))
    values = np.zeros((n, len(names)), dtype=np.float64)
    for tree in part.trees:
        value = node_values(tree)
        base += value[0]
        position = np.zeros(n, dtype=np.int64)
        active = np.ones(n, dtype=bool)
        while active.any():
            for node_id in np.unique(position[active]).tolist():
                node = tree[int(node_id)]
                rows = np.flatnonzero(active & (position == node_id))
                if node.weight is not None:
                    active[rows] = False
                    continue
                left = part.goes_left(node, rows, bank_frame, decisions, columns)
                child = np.where(left, 2 * node_id + 1, 2 * node_id + 2)
                step = (
                    np.where(left, value[2 * node_id + 1], value[2 * node_id + 2]) - value[node_id]
                )
                values[rows, index[split_label(part, node)]] += step
                position[rows] = child
    return Attribution(base=base, labels=names, values=values)
