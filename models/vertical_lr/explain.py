"""Per-enterprise contributions of a hetero LR model: ``coefficient · WOE`` summed by group.

The model's margin is ``intercept + Σ_features coef_f · WOE_f[bin_f]``, so each feature's term
is its exact contribution and ``intercept + Σ contributions == margin``. The bank's own columns
are credited by name; a platform's columns only by their feature group (the groups the job
resolved from the platform's published feature set, kept in the scorecard), summed within the
group, so a reason code never names a platform column.

What it reveals, and why no platform gate: every input is already the bank's. Training released
each platform column's coefficient and the WOE of its anonymous coarse bins to the bank (the
scorecard is built from them), and scoring answers each enterprise's coarse bin per platform
column (:mod:`models.vertical_lr.serving`). The per-column terms, hence the per-group sums, are
a function of those, so a policy switch at the platform could not withhold them from a curious
bank; the platform's protection is what its endpoint answers at all (authorized enterprises,
purposes, its own rate limits). See docs/hetero_lr.md, "Explanations".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from models.explanations import UNGROUPED, Attribution
from models.vertical_lr.parts import BankLRPart


def feature_labels(part: BankLRPart) -> dict[str, str]:
    """``party:column`` -> the label its contribution is credited to.

    The bank's columns: ``bank:column``; a platform's: ``party:group`` (``party:ungrouped`` when
    the job knew no group for it, never the column's name).
    """
    # The scorecard names its features by key (``party:column``), as the coefficients are.
    groups = {str(f["name"]): str(f["group"]) for f in part.scorecard.get("features", [])}
    out: dict[str, str] = {}
    for table in part.tables:
        key = part.table_key(table)
        if table.party == part.party:
            out[key] = key
            continue
        group = groups.get(key, UNGROUPED)
        out[key] = f"{table.party}:{UNGROUPED if group in (table.name, key) else group}"
    return out


def contributions(
    part: BankLRPart, frame: pd.DataFrame, platform_bins: Mapping[str, npt.NDArray[Any]]
) -> Attribution:
    """Each row's contributions by the bank's columns and the platforms' groups.

    Parameters
    ----------
    part : BankLRPart
        The bank's part.
    frame : DataFrame
        The bank's own columns.
    platform_bins : mapping
        ``party:column`` -> coarse bin per row (what the platform's endpoint answers).
    """
    bins = part.coarse_bins(frame, platform_bins)
    labels = feature_labels(part)
    names = tuple(sorted(set(labels.values())))
    index = {label: j for j, label in enumerate(names)}
    values = np.zeros((len(frame), len(names)), dtype=np.float64)
    for table in part.tables:
        key = part.table_key(table)
        woe = np.asarray(table.woe, dtype=np.float64)[bins[key]]
        values[:, index[labels[key]]] += part.coefficients[key] * woe
    base = np.full(len(frame), part.intercept, dtype=np.float64)
    return Attribution(base=base, labels=names, values=values)


def group_importance(part: BankLRPart) -> pd.DataFrame:
    """Global importance per ``(party, group)``: IV and the spread of the group's terms.

    A feature's ``spread`` is the standard deviation of its term ``coef · WOE`` over the
    training rows (``|coef| · sd(WOE)``, from the per-bin row counts; what
    ``HeteroLRClassifier.feature_importances_`` normalises); a group's is the sum of its
    features' (an upper bound of its sum's standard deviation: the joint distribution of the
    columns is not in the part). Groups are the scorecard's (the published ones; a column
    without one is ``ungrouped``). Returns ``party``, ``group``, ``features``, ``iv``,
    ``spread``, ``spread_share``, largest spread first.
    """
    groups = {str(f["name"]): str(f["group"]) for f in part.scorecard.get("features", [])}
    rows = []
    for table in part.tables:
        key = part.table_key(table)
        group = groups.get(key, UNGROUPED)
        woe = np.asarray(table.woe, dtype=np.float64)
        counts = np.asarray(table.total, dtype=np.float64)
        spread = 0.0
        if counts.sum() > 0:
            mean = float(np.average(woe, weights=counts))
            spread = abs(part.coefficients[key]) * float(
                np.sqrt(np.average((woe - mean) ** 2, weights=counts))
            )
        rows.append(
            {
                "party": table.party,
                "group": UNGROUPED if group in (table.name, key) else group,
                "feature": key,
                "iv": float(table.iv),
                "spread": spread,
            }
        )
    frame = pd.DataFrame(rows, columns=["party", "group", "feature", "iv", "spread"])
    out = (
        frame.groupby(["party", "group"], sort=True)
        .agg(features=("feature", "nunique"), iv=("iv", "sum"), spread=("spread", "sum"))
        .reset_index()
    )
    total = float(out["spread"].sum())
    out["spread_share"] = out["spread"] / total if total else 0.0
    out = out.sort_values(["spread", "party", "group"], ascending=[False, True, True])
    return out.reset_index(drop=True)
