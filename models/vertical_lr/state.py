"""What both hetero LR roles share: the protocol's name and the state a party keeps.

A party's state between messages lives in its own party store under ``hlr.*`` keys (the stage
machines under ``hetero_lr.stage``): its key pair, its clock, its fine bins and, at the bank,
what each platform sent until every platform has answered the stage (the bank's inbox).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from models.protocol import Envelope, PartyContext
from models.vertical import KeyPair, PartyClock

PROTOCOL = "hetero_lr"

#: Store key prefix of a party's own key pair (``.public`` and ``.secret``: node-local only).
KEY_PREFIX = "hlr.key"

#: Store key of a party's validation mask over the job's aligned rows (absent: none).
VALID_KEY = "hlr.valid"

#: Each party's seconds and operation counts per phase.
CLOCK = PartyClock("hlr.clock")


def keep(env: Envelope, ctx: PartyContext) -> None:
    """Store what a platform sent until every platform has answered the stage."""
    prefix = f"hlr.in.{env.sender}"
    for key, value in env.payload.items():
        if isinstance(value, np.ndarray):
            ctx.store.put_array(f"{prefix}.{key}", value)
        elif isinstance(value, bytes):
            ctx.store.put_json(f"{prefix}.{key}", value.hex())
        else:
            ctx.store.put_json(f"{prefix}.{key}", value)


def got(ctx: PartyContext, party: str, key: str) -> Any:
    """A non-array payload entry ``party`` sent (bytes come back as hex)."""
    return ctx.store.get_json(f"hlr.in.{party}.{key}")


def got_array(ctx: PartyContext, party: str, key: str) -> npt.NDArray[Any]:
    """An array payload entry ``party`` sent."""
    return ctx.store.get_array(f"hlr.in.{party}.{key}")


def forget_inputs(ctx: PartyContext, state: dict[str, Any], keys: Sequence[str]) -> None:
    """Drop the kept entries ``keys`` of every platform (their stage is done)."""
    for p in state["platforms"]:
        for key in keys:
            ctx.store.delete(f"hlr.in.{p}.{key}")


def cleanup(ctx: PartyContext) -> None:
    """Forget the training state of a finished protocol and the party's key pair."""
    for key in (
        "hlr.fine",
        "hlr.y",
        "hlr.r",
        "hlr.masks",
        "hlr.enc_r",
        "hlr.enc_w",
        "hlr.clock",
        "hlr.w",
        "hlr.valid_fine",
    ):
        ctx.store.delete(key)
    KeyPair.forget(ctx.store, prefix=KEY_PREFIX)
