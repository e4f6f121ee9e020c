"""What both SecureBoost roles share: the protocol's name, row markers and kept state.

A party's state between messages lives in its own party store under ``sb.*`` keys (the
stage machines under ``secureboost.stage``); its binned training rows are recomputed from its
own table when needed and cached per process (:func:`training_bins`), never stored.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import numpy.typing as npt

from features.binning import BinSpec, transform
from models.alignment import job_rows
from models.protocol import PartyContext, dumps
from models.vertical import KeyPair, PartyClock, aligned_features
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

_BIN_CACHE: OrderedDict[str, npt.NDArray[np.int32]] = OrderedDict()
_BIN_CACHE_SIZE = 4  # a process may act for several parties (embedded runtime, estimator)


def training_bins(ctx: PartyContext) -> npt.NDArray[np.int32]:
    """This party's binned training rows, recomputed from its table and cached per process.

    The matrix (rows x features) can be hundreds of megabytes; keeping it in the party's
    message-to-message state would copy it on every hop. It is a pure function of the table,
    the training rows and the bin specs, all of which the party has at hand.
    """
    return _binned(ctx, "sb.train")


def validation_bins(ctx: PartyContext) -> npt.NDArray[np.int32]:
    """This party's binned validation rows (binned with its training rows' specs), cached."""
    return _binned(ctx, VALID_KEY)


def _binned(ctx: PartyContext, mask_key: str) -> npt.NDArray[np.int32]:
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
        cached = transform(aligned_features(ctx, rows, train), specs).bins
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
