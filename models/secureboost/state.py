"""What both SecureBoost roles share: the protocol's name, row markers and kept state.

A party's state between messages lives in its own party store under ``sb.*`` keys (the
stage machines under ``secureboost.stage``); its binned training rows are derived from its own
table when needed, kept beside the table in its store when the table is kept there
(:func:`features.columnar.kept_matrix`, memory-mapped) and cached per process
(:func:`training_bins`), never in the message-to-message state.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import numpy as np
import numpy.typing as npt

from features.binning import BinSpec, compact_dtype, transform_compact
from features.columnar import kept_matrix
from models.alignment import job_rows
from models.protocol import PartyContext, dumps
from models.vertical import KeyPair, PartyClock
from secure_agg import precompute

PROTOCOL = "secureboost"

#: Node id marking rows whose next node the receiving platform decides itself.
YOURS = -2
#: Node id marking rows whose next node another platform decides (an ``assign`` follows).
PENDING = -3

#: Store key prefix of the bank's key pair (``.public`` and ``.secret``: node-local only).
KEY_PREFIX = "sb.key"

#: Store key of a party's validation mask over the job's aligned rows (absent: none).
VALID_KEY = "sb.valid"

#: Each party's seconds and operation counts per phase.
CLOCK = PartyClock("sb.clock")

_BIN_CACHE: OrderedDict[str, npt.NDArray[np.integer[Any]]] = OrderedDict()
_BIN_CACHE_SIZE = 4  # a process may act for several parties (embedded runtime, estimator)


def training_bins(ctx: PartyContext) -> npt.NDArray[np.integer[Any]]:
    """This party's binned training rows, recomputed from its table and cached per process.

    The matrix (rows x features; ``uint8`` for up to 255 bins: one byte per row x feature,
    :func:`features.binning.transform_compact`, built column by column) is the one copy of the
    rows a party keeps for the job; keeping it in the party's message-to-message state would
    copy it on every hop. It is a pure function of the table, the training rows and the bin
    specs, all of which the party has at hand.
    """
    return _binned(ctx, "sb.train")


def validation_bins(ctx: PartyContext) -> npt.NDArray[np.integer[Any]]:
    """This party's binned validation rows (binned with its training rows' specs), cached."""
    return _binned(ctx, VALID_KEY)


def _binned(ctx: PartyContext, mask_key: str) -> npt.NDArray[np.integer[Any]]:
    specs_raw = ctx.store.get_json("sb.specs")
    rows = job_rows(ctx)
    train = ctx.store.get_array(mask_key).astype(bool)
    table = ctx.table()
    key = hashlib.sha256(
        b"|".join(
            [
                ctx.name.encode(),
                table.digest.encode(),
                rows.astype(np.int64).tobytes(),
                np.packbits(train).tobytes(),
                dumps(specs_raw).encode(),
            ]
        )
    ).hexdigest()
    cached = _BIN_CACHE.get(key)
    if cached is None:
        specs = tuple(BinSpec.from_dict(s) for s in specs_raw)
        selected = rows[train]
        cached = kept_matrix(
            table,
            f"bins-{key[:32]}",
            (len(selected), len(specs)),
            compact_dtype(specs),
            lambda out: transform_compact(table.features, specs, selected, out=out),
        )
        _BIN_CACHE[key] = cached
        while len(_BIN_CACHE) > _BIN_CACHE_SIZE:
            _BIN_CACHE.popitem(last=False)
    else:
        _BIN_CACHE.move_to_end(key)
    return cached


def cleanup(ctx: PartyContext) -> None:
    """Forget the training state of a finished protocol (and the bank's key pair).

    A platform also drops its own precomputed re-randomisation factors
    (:func:`secure_agg.precompute.forget_own_pools`); on failure ``job/end`` drops every pool of
    the process (:func:`secure_agg.precompute.forget_pools`).
    """
    for key in ("sb.gh", "sb.g", "sb.h", "sb.position", "sb.raw", "sb.y", "sb.w", "sb.raw_valid"):
        ctx.store.delete(key)
    precompute.forget_own_pools(ctx.name)
    if ctx.role == "bank":
        KeyPair.forget(ctx.store, prefix=KEY_PREFIX)
