"""Hetero LR's checkpoints: each party's state at an epoch boundary (:mod:`models.vertical.resume`).

The bank writes its boundary as it sends the first batch of the next epoch, a platform as that
batch reaches it. A resumed job runs its setup again (fresh key pairs at every party, the
encrypted WOE/IV stage, which computes the same tables from the same rows) and then continues
after the newest epoch the bank and every platform hold.

What a boundary holds
---------------------
========  ======================================================================================
bank      its coefficients and intercept, the epoch, the per-epoch history, the batch schedule's
          seed, the early-stopping state, a digest of its training rows and labels
platform  its own coefficients (and those of every epoch, for the best one early stopping
          names) and its descent settings (with the same seed), a row digest
========  ======================================================================================

The batch schedule's seed was drawn jointly (:mod:`models.vertical_lr.batch_seed`) when the job
started; each party resumes with the seed of its own checkpoint, so the resumed epochs use the
same batches as an uninterrupted run and no party chooses the seed alone. No key, no ciphertext
and no mask is kept: a boundary holds none. A feature that adds state to the loop (early
stopping) adds its names to :data:`BANK_STATE` or :data:`PLATFORM_STATE`.
"""

from __future__ import annotations

import json
from typing import Any

from models.protocol import PartyContext
from models.vertical import resume
from models.vertical_lr.state import PROTOCOL, got

#: Keys of the bank's protocol state kept at a boundary.
BANK_STATE: tuple[str, ...] = ("epoch", "coef", "intercept", "history", "seed", "validation")
#: Keys of a platform's protocol state kept at a boundary.
PLATFORM_STATE: tuple[str, ...] = ("coef", "settings", "coef_by_epoch")


def save_bank(ctx: PartyContext, state: dict[str, Any]) -> None:
    """Keep the bank's state before epoch ``state["epoch"]`` (at its first batch)."""
    boundary = int(state["epoch"]) - 1
    resume.save(
        ctx, PROTOCOL, boundary, state, BANK_STATE, train_key="hlr.train", labels_key="hlr.y"
    )


def resume_offer(ctx: PartyContext, state: dict[str, Any]) -> list[int] | None:
    """Boundaries the bank can resume from (``None``: not a resumed job); remembered in state."""
    held = resume.bank_offer(ctx, PROTOCOL)
    if held is not None:
        state["resume"] = held
    return held


def restore_bank(ctx: PartyContext, state: dict[str, Any]) -> int | None:
    """Continue a resumed job after the newest epoch the bank and every platform hold.

    Called once every platform answered ``ready``; each reported its boundaries in ``counts``.
    """
    held: list[int] | None = state.pop("resume", None)
    if held is None:
        return None
    theirs = {p: json.loads(got(ctx, p, "boundaries") or "null") for p in state["platforms"]}
    checkpoint = resume.bank_restore(
        ctx, PROTOCOL, held, theirs, train_key="hlr.train", labels_key="hlr.y"
    )
    state.update(checkpoint.docs["state"])
    state["batch"] = 0
    state["resumed_from"] = checkpoint.boundary
    return checkpoint.boundary


def platform_offer(ctx: PartyContext, state: dict[str, Any], asked: bool) -> list[int] | None:
    """Boundaries this platform resumes from, when the bank asked to resume (``init``)."""
    held = resume.platform_offer(ctx, PROTOCOL, asked)
    if held is not None:
        state["resume"] = True
    return held


def at_epoch_start(ctx: PartyContext, state: dict[str, Any], epoch: int) -> None:
    """At a platform's first batch of ``epoch``: restore a resumed job, then keep a boundary."""
    if state.pop("resume", False):
        checkpoint = resume.platform_restore(ctx, PROTOCOL, epoch - 1, train_key="hlr.train")
        state.update(checkpoint.docs["state"])
    resume.save(ctx, PROTOCOL, epoch - 1, state, PLATFORM_STATE, train_key="hlr.train")
