"""The bank's mini-batch descent in hetero LR: residuals out, gradients and cross terms in.

Per batch the bank encrypts its residual part ``0.25 u_B + 0.5 - y`` under its key; when every
platform has answered it decrypts each platform's masked gradient and returns it, and sums the
platform-key ciphertexts of ``0.25 u_P`` per own coarse bin, weighted by its WOE (the cross
terms of its own gradient), masked and re-randomised with the bank's own randomness
(:func:`models.vertical_lr.arithmetic.masked`) for the platform to decrypt. With the platforms'
unmasked cross terms it takes its own step; after the last batch of an epoch it stops once its
own weights and every platform's (one bit each) settled, or after ``max_epochs``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from features.woe import WoeTable
from models.protocol import Envelope, PartyContext, ProtocolError, dumps
from models.vertical import KeyPair, peer_public_key
from models.vertical_lr import arithmetic, checkpoint, validation
from models.vertical_lr import fixedpoint as fp
from models.vertical_lr.core import batch_schedule, relative_change
from models.vertical_lr.params import HeteroLRParams
from models.vertical_lr.state import CLOCK, KEY_PREFIX, PROTOCOL, forget_inputs, got, got_array
from secure_agg import paillier


def _own(
    ctx: PartyContext,
) -> tuple[list[WoeTable], npt.NDArray[np.int32], npt.NDArray[np.float64]]:
    """The bank's own WOE tables, the coarse bins of its training rows, their WOE encoding."""
    tables = [
        WoeTable.from_dict(t) for t in ctx.store.get_json("hlr.tables") if t["party"] == ctx.name
    ]
    fine = ctx.store.get_array("hlr.fine").astype(np.int32)
    coarse = arithmetic.coarse(fine, [t.mapping for t in tables])
    return tables, coarse, arithmetic.woe_matrix(coarse, [t.woe for t in tables])


def _schedule(state: dict[str, Any]) -> list[npt.NDArray[np.intp]]:
    params = HeteroLRParams(**state["params"])
    return batch_schedule(state["n_train"], params.batch_size, state["epoch"], state["seed"])


def send_batch(ctx: PartyContext, state: dict[str, Any]) -> list[Envelope]:
    """Send every platform the encrypted residual part of the current batch's rows."""
    keys = KeyPair.load(
        ctx.store,
        prefix=KEY_PREFIX,
        allow_insecure_test_keys=ctx.guard.limits.allow_insecure_test_keys,
    )
    if state["batch"] == 0:
        state["epoch_started"] = time.time()  # wall clock: parties may run in other processes
        checkpoint.save_bank(ctx, state)
    rows = _schedule(state)[state["batch"]]
    _, _, x = _own(ctx)
    y = ctx.store.get_array("hlr.y")
    u = x[rows] @ np.asarray(state["coef"], dtype=np.float64) + float(state["intercept"])
    residual = 0.25 * u + 0.5 - y[rows]
    weights = _weights(ctx)
    extra: dict[str, Any] = {}
    clock = CLOCK.load(ctx)
    if weights is None:
        r = fp.encode(residual)
    else:
        # Weighted: [[w r]] at 2 SCALE_BITS and [[w]]; a platform adds [[w]]^(0.25 u_P), so
        # the weights reach it only encrypted under the bank's key.
        r = fp.encode(weights[rows] * residual, bits=2 * fp.SCALE_BITS)
        started = time.perf_counter()
        enc_w = paillier.encrypt_many_private(
            keys.private, fp.to_residue(fp.encode(weights[rows]), keys.public.n)
        )
        clock.since("encrypt_weights", started, ops=len(enc_w))
        extra["enc_w"] = paillier.ciphertexts_to_array(keys.public, enc_w)
    started = time.perf_counter()
    enc = paillier.encrypt_many_private(keys.private, fp.to_residue(r, keys.public.n))
    clock.since("encrypt", started, ops=len(enc))
    CLOCK.save(ctx, clock)
    ctx.store.put_json("hlr.r", [str(v) for v in r])
    state.update({"expect": "partial", "pending": list(state["platforms"])})
    ctx.store.put_json("hlr.state", state)
    array = paillier.ciphertexts_to_array(keys.public, enc)
    return [
        Envelope(
            PROTOCOL,
            "batch",
            ctx.name,
            p,
            {"epoch": state["epoch"], "batch": state["batch"], "enc_r": array, **extra},
        )
        for p in state["platforms"]
    ]


def send_updates(ctx: PartyContext, state: dict[str, Any]) -> list[Envelope]:
    """Every partial is in: return each platform's gradient and masked cross terms to decrypt."""
    limits = ctx.guard.limits
    keys = KeyPair.load(
        ctx.store, prefix=KEY_PREFIX, allow_insecure_test_keys=limits.allow_insecure_test_keys
    )
    rows = _schedule(state)[state["batch"]]
    tables, coarse, _ = _own(ctx)
    clock = CLOCK.load(ctx)
    out = []
    masks: dict[str, list[str]] = {}
    for p in state["platforms"]:
        started = time.perf_counter()
        enc_grad = paillier.ciphertexts_from_array(
            keys.public,
            got_array(ctx, p, "enc_grad"),
            fingerprint=keys.public.fingerprint,
        )
        grad = fp.from_residue(paillier.decrypt_many(keys.private, enc_grad), keys.public.n)
        clock.since("decrypt", started, ops=len(enc_grad))
        platform_key = peer_public_key(
            ctx.store.get_json(f"hlr.platform_key.{p}"), limits, f"platform '{p}''s key"
        )
        enc_u = paillier.ciphertexts_from_array(platform_key, got_array(ctx, p, "enc_u"))
        if len(enc_u) != rows.size:
            raise ProtocolError(
                f"platform '{p}' sent {len(enc_u)} partial logits for {rows.size} rows"
            )
        started = time.perf_counter()
        weights = _weights(ctx)
        if weights is not None:
            # Each row's [[0.25 u_P]] times its weight (the bank's own, in the clear here).
            enc_u = arithmetic.scaled(platform_key, enc_u, fp.encode(weights[rows]))
        cross, total = arithmetic.weighted_sums(
            platform_key, enc_u, coarse[rows], [t.woe for t in tables]
        )
        clock.since("cross_sums", started, ops=int(coarse[rows].size))
        started = time.perf_counter()
        # Re-randomised with the bank's own randomness, not the platform key's base: a crafted
        # platform key cannot keep tags on its per-row partial logits through these sums.
        masked, mask = arithmetic.masked(platform_key, [*cross, total])
        clock.since("mask", started, ops=len(masked))
        masks[p] = [str(m) for m in mask]
        out.append(
            Envelope(
                PROTOCOL,
                "update",
                ctx.name,
                p,
                {
                    "epoch": state["epoch"],
                    "batch": state["batch"],
                    "grad": dumps([str(v) for v in grad]),
                    "enc_cross": paillier.ciphertexts_to_array(platform_key, masked),
                },
            )
        )
    CLOCK.save(ctx, clock)
    forget_inputs(ctx, state, ("enc_grad", "enc_u", "epoch", "batch"))
    ctx.store.put_json("hlr.masks", masks)
    state.update({"expect": "cross_sums", "pending": list(state["platforms"])})
    ctx.store.put_json("hlr.state", state)
    return out


def step(ctx: PartyContext, state: dict[str, Any]) -> list[Envelope]:
    """Every platform's cross terms are in: take the bank's step; next batch, epoch or finish."""
    params = HeteroLRParams(**state["params"])
    lr = params.lr()
    schedule = _schedule(state)
    rows = schedule[state["batch"]]
    tables, coarse, _ = _own(ctx)
    r = np.asarray([int(v) for v in ctx.store.get_json("hlr.r")], dtype=object)
    masks = ctx.store.get_json("hlr.masks")
    cross = [0] * (len(tables) + 1)
    votes = []
    for p in state["platforms"]:
        sums = [int(v) for v in json.loads(got(ctx, p, "sums"))]
        values = fp.unmask(sums, [int(m) for m in masks[p]])
        cross = [a + b for a, b in zip(cross, values, strict=True)]
        if state["batch"] == len(schedule) - 1:
            votes.append(bool(got(ctx, p, "converged")))
    grads = []
    r_bits = residual_bits(bool(state.get("weighted")))
    for j, table in enumerate(tables):
        weights = fp.encode(np.asarray(table.woe, dtype=np.float64))
        own = sum((int(w) * int(r[coarse[rows, j] == b].sum()) for b, w in enumerate(weights)), 0)
        grads.append((own + cross[j]) / float(1 << (r_bits + fp.SCALE_BITS)) / rows.size)
    grad_b = (int(r.sum()) + cross[-1]) / float(1 << r_bits) / rows.size
    coef = np.asarray(state["coef"], dtype=np.float64)
    if state["batch"] == 0:
        state["epoch_start"] = [*coef.tolist(), float(state["intercept"])]
    rate = lr.rate(state["epoch"], float(state["curvature"]))
    coef = coef - rate * (np.asarray(grads) + lr.l2 * coef)
    intercept = float(state["intercept"]) - rate * grad_b
    state.update({"coef": coef.tolist(), "intercept": intercept})
    forget_inputs(ctx, state, ("sums", "converged", "epoch", "batch"))
    ctx.store.delete("hlr.masks")
    ctx.store.delete("hlr.r")
    if state["batch"] < len(schedule) - 1:
        state["batch"] += 1
        return send_batch(ctx, state)
    start = np.asarray(state["epoch_start"], dtype=np.float64)
    change = relative_change(coef - start[:-1], intercept - start[-1], coef, intercept)
    settled = change < lr.tol and all(votes)
    entry = {
        "epoch": state["epoch"],
        "change": change,
        "platforms_settled": all(votes),
        "seconds": time.time() - float(state["epoch_started"]),
        "batches": len(schedule),
    }
    if validation.enabled(state):
        logits = {p: got_array(ctx, p, "valid_u").astype(np.float64) for p in state["platforms"]}
        entry.update(validation.score_epoch(ctx, state, params, logits))
        forget_inputs(ctx, state, ("valid_u",))
    state["history"].append(entry)
    state["epoch"] += 1
    state["batch"] = 0
    stopped = validation.stopped(state)
    if settled or stopped or state["epoch"] >= lr.max_epochs:
        best = validation.best(state)
        extra = {} if best is None else {"epoch": int(best["epoch"])}
        state.update(
            {
                "expect": "final",
                "pending": list(state["platforms"]),
                "converged": settled and not stopped,
            }
        )
        ctx.store.put_json("hlr.state", state)
        return [
            Envelope(
                PROTOCOL,
                "finish",
                ctx.name,
                p,
                {"model_id": f"{state['model_id']}-{p}", **extra},
            )
            for p in state["platforms"]
        ]
    return send_batch(ctx, state)


def residual_bits(weighted: bool) -> int:
    """Fractional bits of the residuals a gradient sums: ``w r`` carries twice ``r``'s."""
    return 2 * fp.SCALE_BITS if weighted else fp.SCALE_BITS


def _weights(ctx: PartyContext) -> npt.NDArray[np.float64] | None:
    """The training rows' sample weights (``None``: unweighted)."""
    try:
        return ctx.store.get_array("hlr.w")
    except KeyError:
        return None
