"""The bank's encrypted WOE/IV in hetero LR: bad counts per platform bin, coarse bins, WOE.

The bank decrypts each platform's per-fine-bin bad counts (sums of its own encrypted labels,
checked against the bin sizes), merges fine bins into coarse ones and computes WOE and IV from
counts alone, with the same function for its own columns and the platforms' (anonymous, ordered)
bins; it bounds the loss's curvature from counts and WOE and sends each platform the fine ->
coarse mapping and the WOE of its own coarse bins, with the descent settings.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

import numpy as np

from features.binning import BinSpec
from features.woe import WoeTable, count_bins
from models.protocol import Envelope, PartyContext, PhaseClock, ProtocolError, dumps
from models.vertical import KeyPair, peer_public_key
from models.vertical_lr import batch_seed
from models.vertical_lr import fixedpoint as fp
from models.vertical_lr.core import curvature_bound
from models.vertical_lr.params import HeteroLRParams
from models.vertical_lr.state import CLOCK, KEY_PREFIX, PROTOCOL, forget_inputs, got, got_array
from secure_agg import paillier


def send_bins(ctx: PartyContext, state: dict[str, Any]) -> list[Envelope]:
    """Every platform's counts are in: fit every column's WOE table, send each its mapping."""
    params = HeteroLRParams(**state["params"])
    keys = KeyPair.load(
        ctx.store,
        prefix=KEY_PREFIX,
        allow_insecure_test_keys=ctx.guard.limits.allow_insecure_test_keys,
    )
    clock = CLOCK.load(ctx)
    y = ctx.store.get_array("hlr.y")
    fine = ctx.store.get_array("hlr.fine").astype(np.int32)
    specs = [BinSpec.from_dict(s) for s in ctx.store.get_json("hlr.specs")]
    tables = []
    for j, spec in enumerate(specs):
        total, bad = count_bins(fine[:, j], y, spec.n_bins + 1)
        tables.append(params.woe_table(spec.name, ctx.name, spec.kind, total, bad, spec))
    per_platform: dict[str, list[WoeTable]] = {}
    for p in state["platforms"]:
        per_platform[p] = _platform_tables(ctx, p, params, keys, clock)
        tables.extend(per_platform[p])
        key = got(ctx, p, "public_key")
        peer_public_key(key, ctx.guard.limits, f"platform '{p}''s Paillier key")
        ctx.store.put_json(f"hlr.platform_key.{p}", key)
    CLOCK.save(ctx, clock)
    ctx.store.put_json("hlr.tables", [t.to_dict() for t in tables])
    n_own = len(specs)
    n_train = float(state["n_train"])
    curvature = curvature_bound(
        [
            float(np.dot(np.asarray(t.total, dtype=np.float64), np.square(t.woe))) / n_train
            for t in tables
        ]
    )
    shares = {p: got(ctx, p, "seed_share") for p in state["platforms"]}
    state["seed"] = batch_seed.joint_seed(state["seed_nonce"], shares)
    settings = {
        "seed": state["seed"],
        "seed_nonce": state["seed_nonce"],
        "seed_shares": shares,
        "n_train": state["n_train"],
        "batch_size": params.batch_size,
        "platforms": state["platforms"],
        "lr": asdict(params.lr()),
        "curvature": curvature,
    }
    out = [
        Envelope(
            PROTOCOL,
            "bins",
            ctx.name,
            p,
            {
                "tables": dumps(
                    [
                        {"name": t.name, "mapping": list(t.mapping), "woe": list(t.woe)}
                        for t in theirs
                    ]
                ),
                "settings": dumps(settings),
            },
        )
        for p, theirs in per_platform.items()
    ]
    state.update(
        {
            "expect": "ready",
            "pending": list(state["platforms"]),
            "coef": [0.0] * n_own,
            "intercept": 0.0,
            "epoch": 0,
            "batch": 0,
            "epoch_start": [0.0] * (n_own + 1),
            "history": [],
            "curvature": curvature,
        }
    )
    ctx.store.put_json("hlr.state", state)
    forget_inputs(ctx, state, ("features", "totals", "enc_bad", "public_key", "seed_share"))
    return out


def _platform_tables(
    ctx: PartyContext,
    party: str,
    params: HeteroLRParams,
    keys: KeyPair,
    clock: PhaseClock,
) -> list[WoeTable]:
    """Decrypt a platform's per-bin bad counts and fit its (anonymous) WOE tables."""
    features = json.loads(got(ctx, party, "features"))
    totals = got_array(ctx, party, "totals").astype(np.int64)
    sizes = [int(f["n_fine"]) for f in features]
    if totals.size != sum(sizes):
        raise ProtocolError(
            f"platform '{party}' sent {totals.size} bin counts for {sum(sizes)} bins"
        )
    started = time.perf_counter()
    enc_bad = paillier.ciphertexts_from_array(
        keys.public, got_array(ctx, party, "enc_bad"), fingerprint=keys.public.fingerprint
    )
    bad_all = np.asarray(
        fp.from_residue(paillier.decrypt_many(keys.private, enc_bad), keys.public.n)
    )
    clock.since("decrypt", started, ops=len(enc_bad))
    if np.any(bad_all < 0) or np.any(bad_all > totals):
        raise ProtocolError(f"platform '{party}' sent bad counts that no label vector gives")
    out = []
    start = 0
    for f, size in zip(features, sizes, strict=True):
        stop = start + size
        out.append(
            params.woe_table(f["name"], party, f["kind"], totals[start:stop], bad_all[start:stop])
        )
        start = stop
    return out
