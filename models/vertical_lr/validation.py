"""The bank's validation in hetero LR: score each epoch's model on the validation rows.

The bank holds validation rows out of its training rows (:func:`models.early_stopping.
validation_mask`); each platform, with its reply to the last batch of an epoch, sends the
partial logit ``x_P · w_P`` of every validation row under its coefficients of that epoch (what
scoring those rows with that epoch's model would reveal; its node's policy decides whether it
serves validation rows at all). The bank adds its own part, computes AUC, KS and log-loss and
takes one step of early stopping; it keeps its own coefficients of the best epoch, and at the
end asks each platform for its coefficients of that epoch (the model kept). The state lives in
the bank's ``hlr.state`` (``validation``), so a job resumed after a completed epoch decides the
same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from features.woe import WoeTable
from models.early_stopping import StoppingState, observe, validation_metrics
from models.protocol import PartyContext, ProtocolError
from models.vertical_lr import arithmetic
from models.vertical_lr.params import HeteroLRParams


def enabled(state: dict[str, Any]) -> bool:
    """Whether this job holds out validation rows."""
    return int(state.get("validation", {}).get("n", 0)) > 0


def stopped(state: dict[str, Any]) -> bool:
    """Whether early stopping ended training."""
    return bool(state.get("validation", {}).get("stopping", {}).get("stopped"))


def score_epoch(
    ctx: PartyContext,
    state: dict[str, Any],
    params: HeteroLRParams,
    platform_logits: Mapping[str, npt.NDArray[np.float64]],
) -> dict[str, float]:
    """The validation metrics of the epoch just finished (``state`` holds its coefficients).

    ``platform_logits[p]`` is platform ``p``'s partial logit of every validation row.
    """
    tables = [
        WoeTable.from_dict(t) for t in ctx.store.get_json("hlr.tables") if t["party"] == ctx.name
    ]
    fine = ctx.store.get_array("hlr.valid_fine").astype(np.int32)
    x = arithmetic.woe_matrix(
        arithmetic.coarse(fine, [t.mapping for t in tables]), [t.woe for t in tables]
    )
    coef = np.asarray(state["coef"], dtype=np.float64)
    z = x @ coef + float(state["intercept"])
    for party, u in platform_logits.items():
        if u.shape != z.shape or not np.isfinite(u).all():
            raise ProtocolError(
                f"platform '{party}' sent {u.shape} validation logits for {z.shape} rows"
            )
        z = z + u
    metrics = validation_metrics(ctx.store.get_array("hlr.y_valid"), z)
    section = state["validation"]
    epoch = int(state["epoch"])
    after = observe(
        StoppingState.from_dict(section.get("stopping")), epoch, metrics, params.validation
    )
    section["stopping"] = after.to_dict()
    if after.best_iteration == epoch:
        section["best"] = {
            "epoch": epoch,
            "coef": coef.tolist(),
            "intercept": float(state["intercept"]),
        }
    return {f"valid_{k}": v for k, v in metrics.items()}


def best(state: dict[str, Any]) -> dict[str, Any] | None:
    """The bank's coefficients of the epoch the model keeps (``None``: the last epoch's).

    Only with early stopping; without ``early_stopping_rounds`` the last epoch is kept.
    """
    if not enabled(state) or HeteroLRParams(**state["params"]).validation.rounds is None:
        return None
    found: dict[str, Any] | None = state["validation"].get("best")
    return found


def summary(state: dict[str, Any], params: HeteroLRParams) -> dict[str, Any]:
    """What the job reports of validation."""
    plan = params.validation
    stopping = StoppingState.from_dict(state["validation"].get("stopping"))
    trained = len(state.get("history", []))
    kept = best(state)
    return {
        "n_validation": int(state["validation"]["n"]),
        "fraction": plan.fraction,
        "metric": plan.metric,
        "early_stopping_rounds": plan.rounds,
        "iterations_trained": trained,
        "iterations_kept": trained if kept is None else int(kept["epoch"]) + 1,
        "best_iteration": stopping.best_iteration if stopping.best_iteration >= 0 else None,
        "best_score": stopping.best_score,
        "stopped_early": stopping.stopped,
    }
