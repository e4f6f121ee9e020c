"""The bank's validation in SecureBoost: score each finished tree on the validation rows.

The bank holds validation rows out of its training rows (:func:`models.early_stopping.
validation_mask`). After every tree it routes them through the tree as scoring would: its own
splits on its own columns, each platform split by the left/right bit the platform sent for
every validation row with its ``level`` reply (the platform evaluates its own splits, its
thresholds never leave it). It adds each row's leaf weight to the row's score, computes AUC, KS
and log-loss, and takes one step of early stopping; the state lives in the bank's store and
its ``sb.state`` (``validation``), so a job resumed after a completed tree decides the same.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import numpy.typing as npt

from features.binning import BinSpec
from models.alignment import job_rows
from models.early_stopping import StoppingState, observe, validation_metrics
from models.protocol import PartyContext, ProtocolError
from models.secureboost.params import SecureBoostParams
from models.secureboost.parts import BankNode, BankPart
from models.secureboost.state import VALID_KEY
from models.vertical import aligned_features

#: Store key prefixes of a platform's validation bits of the open tree (ids and bit matrix).
#: Store array of the training rows' raw scores after the best tree so far (the kept model's).
BEST_RAW = "sb.raw_best"

_IDS = "sb.valid_ids."
_BITS = "sb.valid_bits."


def enabled(state: dict[str, Any]) -> bool:
    """Whether this job holds out validation rows."""
    return int(state.get("validation", {}).get("n", 0)) > 0


def stopped(state: dict[str, Any]) -> bool:
    """Whether early stopping ended training (no more trees)."""
    return bool(state.get("validation", {}).get("stopping", {}).get("stopped"))


def keep_bits(ctx: PartyContext, party: str, ids: list[str], bits: npt.NDArray[np.bool_]) -> None:
    """Keep a platform's left/right bits of its new splits for every validation row."""
    n_valid = int(ctx.store.get_array("sb.y_valid").size)
    if bits.shape != (n_valid, len(ids)):
        raise ProtocolError(
            f"'{party}' sent validation bits of shape {bits.shape}, expected ({n_valid}, "
            f"{len(ids)})"
        )
    known: list[str] = ctx.store.get_json(_IDS + party) or []
    before = ctx.store.get_array(_BITS + party) if known else np.zeros((n_valid, 0), dtype=bool)
    ctx.store.put_json(_IDS + party, known + ids)
    ctx.store.put_array(_BITS + party, np.concatenate([before, bits], axis=1))


def score_tree(
    ctx: PartyContext,
    state: dict[str, Any],
    params: SecureBoostParams,
    tree: list[dict[str, Any]],
) -> dict[str, float]:
    """Route the validation rows through the finished ``tree``; return its validation metrics.

    Takes one step of early stopping (``state["validation"]["stopping"]``) and, when this tree
    is the best so far, keeps a copy of the split importance up to it (what the truncated model
    reports).
    """
    decisions: dict[str, tuple[list[str], npt.NDArray[np.bool_]]] = {}
    for party in state["platforms"]:
        ids: list[str] = ctx.store.get_json(_IDS + party) or []
        if ids:
            decisions[party] = (ids, ctx.store.get_array(_BITS + party).astype(bool))
        ctx.store.delete(_IDS + party)
        ctx.store.delete(_BITS + party)
    specs = {s["name"]: BinSpec.from_dict(s) for s in ctx.store.get_json("sb.specs")}
    one_tree = BankPart(
        party=ctx.name,
        model_id=state["model_id"],
        base_score=0.0,
        trees=[{int(n["node_id"]): BankNode.from_dict(n) for n in tree}],
        bins=specs,
        platform_parts={},
    )
    valid = ctx.store.get_array(VALID_KEY).astype(bool)
    frame = aligned_features(ctx, job_rows(ctx), valid)
    raw = ctx.store.get_array("sb.raw_valid") + one_tree.raw_scores(frame, decisions)
    ctx.store.put_array("sb.raw_valid", raw)
    metrics = validation_metrics(ctx.store.get_array("sb.y_valid"), raw)
    section = state["validation"]
    before = StoppingState.from_dict(section.get("stopping"))
    after = observe(before, int(state["tree"]), metrics, params.validation)
    section["stopping"] = after.to_dict()
    if after.best_iteration == int(state["tree"]):
        section["best_importance"] = copy.deepcopy(state.get("importance", {}))
        ctx.store.put_array(BEST_RAW, ctx.store.get_array("sb.raw"))
    return {f"valid_{k}": v for k, v in metrics.items()}


def kept_trees(state: dict[str, Any], params: SecureBoostParams, trained: int) -> int:
    """How many trees the model keeps: up to the best one with early stopping, else all."""
    best = StoppingState.from_dict(state.get("validation", {}).get("stopping")).best_iteration
    if params.validation.rounds is None or best < 0:
        return trained
    return best + 1


def summary(state: dict[str, Any], params: SecureBoostParams, trained: int) -> dict[str, Any]:
    """What the job reports of validation (``None`` values when it held out no rows)."""
    plan = params.validation
    stopping = StoppingState.from_dict(state.get("validation", {}).get("stopping"))
    kept = kept_trees(state, params, trained)
    return {
        "n_validation": int(state.get("validation", {}).get("n", 0)),
        "fraction": plan.fraction,
        "metric": plan.metric,
        "early_stopping_rounds": plan.rounds,
        "iterations_trained": trained,
        "iterations_kept": kept,
        "best_iteration": stopping.best_iteration if stopping.best_iteration >= 0 else None,
        "best_score": stopping.best_score,
        "stopped_early": stopping.stopped,
    }
