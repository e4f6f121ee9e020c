"""The bank's role in hetero LR: labels, its key pair, and the driver of every stage.

The bank bins its own columns, makes its key pair under its node's limits and sends each
platform its encrypted training labels; then, each time every platform has answered a stage,
it fits the WOE tables (:mod:`models.vertical_lr.bank_woe`), runs one mini-batch step
(:mod:`models.vertical_lr.bank_descent`) or, at the end, evaluates the model on its held-out
rows, builds the scorecard and keeps its part.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from features.binning import BinSpec, transform
from features.errors import DataError
from features.woe import WoeTable
from models.alignment import job_rows
from models.early_stopping import StoppingState
from models.evaluation import evaluate_scores
from models.protocol import COORDINATOR, Envelope, PartyContext, PhaseClock, ProtocolError, dumps
from models.scorecard import Scorecard, ScorecardScaling
from models.vertical import (
    aligned_features,
    bank_key_pair,
    bank_rows,
    check_platform_reply,
    fit_own_bins,
    labels,
    record_answer,
    validation,
)
from models.vertical_lr import batch_seed, checkpoint
from models.vertical_lr import fixedpoint as fp
from models.vertical_lr import validation as lr_validation
from models.vertical_lr.bank_descent import send_batch, send_updates, step
from models.vertical_lr.bank_woe import send_bins
from models.vertical_lr.params import HeteroLRParams
from models.vertical_lr.parts import BankLRPart
from models.vertical_lr.state import (
    CLOCK,
    KEY_PREFIX,
    PROTOCOL,
    VALID_KEY,
    cleanup,
    got,
    got_array,
    keep,
)
from secure_agg import paillier


class BankRole:
    """Bank side: labels, key pair, WOE tables of every column, its coefficients and the driver."""

    def handle(self, env: Envelope, ctx: PartyContext) -> list[Envelope]:
        """Run one stage (already checked against the bank's stage machine)."""
        if env.stage == "setup":
            return self._setup(env, ctx)
        state = ctx.store.get_json("hlr.state")
        check_platform_reply(PROTOCOL, env, state)
        if env.stage in ("partial", "cross_sums") and [
            env.integer("epoch"),
            env.integer("batch"),
        ] != [state["epoch"], state["batch"]]:
            raise ProtocolError(f"hetero_lr/{env.stage} from '{env.sender}' for another batch")
        keep(env, ctx)
        answered = record_answer(state, env.sender)
        ctx.store.put_json("hlr.state", state)
        if not answered:
            return []
        if env.stage == "counts":
            return send_bins(ctx, state)
        if env.stage == "ready":
            checkpoint.restore_bank(ctx, state)  # a resumed job: after its last common epoch
            return send_batch(ctx, state)
        if env.stage == "partial":
            return send_updates(ctx, state)
        if env.stage == "cross_sums":
            return step(ctx, state)
        return [self._finish(ctx, state)]

    def _setup(self, env: Envelope, ctx: PartyContext) -> list[Envelope]:
        settings = env.json("settings")
        params = HeteroLRParams(**settings["params"])
        platforms: list[str] = settings["platforms"]
        own, valid, y_valid = validation.hold_out(ctx, bank_rows(ctx), params.validation)
        train, y = own.train, own.y
        if y.size == 0 or y.min() == y.max():
            raise DataError(f"{ctx.table().path}: the training rows need both classes of the label")
        weights = validation.weights(ctx, own, params.class_weight)
        clock = PhaseClock()
        started = time.perf_counter()
        frame = aligned_features(ctx, own.rows, train)
        specs = fit_own_bins(ctx, frame, params.max_bin)
        fine = transform(frame, specs).bins
        clock.since("binning", started)
        started = time.perf_counter()
        keys = bank_key_pair(ctx, params.key_bits)
        fp.check_key(keys.public.n)
        clock.since("keygen", started)
        started = time.perf_counter()
        enc_y = paillier.encrypt_many_private(keys.private, [int(v) for v in y])
        clock.since("encrypt", started, ops=len(enc_y))
        CLOCK.save(ctx, clock)
        keys.save(ctx.store, prefix=KEY_PREFIX)
        ctx.store.put_array("hlr.y", y)
        ctx.store.put_array("hlr.train", train)
        ctx.store.put_array("hlr.fine", fine.astype(np.int16))
        if weights is not None:
            ctx.store.put_array("hlr.w", weights)
        if valid.any():
            valid_frame = aligned_features(ctx, own.rows, valid)
            ctx.store.put_array(VALID_KEY, valid)
            ctx.store.put_array("hlr.y_valid", y_valid)
            held = transform(valid_frame, specs).bins
            ctx.store.put_array("hlr.valid_fine", held.astype(np.int16))
        ctx.store.put_json("hlr.specs", [s.to_dict() for s in specs])
        state = {
            "params": asdict(params),
            "platforms": platforms,
            "order": settings["order"],
            "model_id": settings["model_id"],
            "expect": "counts",
            "pending": list(platforms),
            "n_train": int(train.sum()),
            "seed_nonce": batch_seed.draw(),
            "weighted": weights is not None,
            "validation": {"n": int(valid.sum()), "stopping": StoppingState().to_dict()},
        }
        init = {
            "max_bin": params.max_bin,
            "key_bits": keys.public.key_bits,
            "seed_commitment": batch_seed.commitment(state["seed_nonce"]),
        }
        if checkpoint.resume_offer(ctx, state) is not None:
            init["resume"] = True
        ctx.store.put_json("hlr.state", state)
        ciphertexts = paillier.ciphertexts_to_array(keys.public, enc_y)
        return [
            Envelope(
                PROTOCOL,
                "init",
                ctx.name,
                p,
                {
                    "settings": dumps(init),
                    "public_key": keys.public.to_bytes(),
                    "key": keys.public.fingerprint,
                    "train_mask": train,
                    "enc_y": ciphertexts,
                    **({"valid_mask": valid} if valid.any() else {}),
                },
            )
            for p in platforms
        ]

    def _finish(self, ctx: PartyContext, state: dict[str, Any]) -> Envelope:
        params = HeteroLRParams(**state["params"])
        rows = job_rows(ctx)
        train = ctx.store.get_array("hlr.train").astype(bool)
        label = labels(ctx.table())
        tables = [WoeTable.from_dict(t) for t in ctx.store.get_json("hlr.tables")]
        coefficients: dict[str, float] = {}
        own = [t for t in tables if t.party == ctx.name]
        best = lr_validation.best(state)
        coef = state["coef"] if best is None else best["coef"]
        intercept = float(state["intercept"] if best is None else best["intercept"])
        for t, c in zip(own, coef, strict=True):
            coefficients[f"{t.party}:{t.name}"] = float(c)
        platform_bins: dict[str, npt.NDArray[Any]] = {}
        refs: dict[str, dict[str, str]] = {}
        clocks: dict[str, Any] = {}
        test = (
            ~train
            if not lr_validation.enabled(state)
            else ~train & ~ctx.store.get_array(VALID_KEY).astype(bool)
        )
        n_test = int(test.sum())
        for p in state["platforms"]:
            coef = json.loads(got(ctx, p, "coef"))
            theirs = [t for t in tables if t.party == p]
            bins = got_array(ctx, p, "test_bins")
            if len(coef) != len(theirs) or bins.shape != (n_test, len(theirs)):
                raise ProtocolError(f"platform '{p}' released a final model of the wrong shape")
            for j, (t, c) in enumerate(zip(theirs, coef, strict=True)):
                coefficients[f"{p}:{t.name}"] = float(c)
                platform_bins[f"{p}:{t.name}"] = bins[:, j]
            refs[p] = json.loads(got(ctx, p, "part"))
            clocks[p] = json.loads(got(ctx, p, "clock"))
        specs = tuple(BinSpec.from_dict(s) for s in ctx.store.get_json("hlr.specs"))
        scaling = ScorecardScaling(
            base_points=params.base_points, base_odds=params.base_odds, pdo=params.pdo
        )
        card = Scorecard.build(
            [_keyed_table(t) for t in tables],
            coefficients,
            intercept,
            scaling,
            groups={
                f"{t.party}:{t.name}": params.groups.get(
                    f"{t.party}:{t.name}", params.groups.get(t.name, f"{t.party}:{t.name}")
                )
                for t in tables
            },
        )
        part = BankLRPart(
            party=ctx.name,
            model_id=state["model_id"],
            specs=specs,
            tables=tuple(tables),
            coefficients=coefficients,
            intercept=intercept,
            scorecard=card.to_dict(),
            platform_parts=refs,
            params=state["params"],
        )
        frame = aligned_features(ctx, rows, test)
        report = None
        if n_test:
            y_test = label[rows][test]
            report = evaluate_scores(y_test, part.predict_proba(frame, platform_bins)).to_dict()
        path = part.save(ctx.model_dir())
        clock = CLOCK.load(ctx)
        cleanup(ctx)
        return Envelope(
            PROTOCOL,
            "done",
            ctx.name,
            COORDINATOR,
            {
                "report": dumps(report),
                "history": dumps(state["history"]),
                "converged": bool(state.get("converged", False)),
                **(
                    {"validation": dumps(lr_validation.summary(state, params))}
                    if lr_validation.enabled(state)
                    else {}
                ),
                "seed": str(state["seed"]),
                "bank_part": dumps(
                    {
                        "model_id": part.model_id,
                        "content_hash": part.content_hash,
                        "path": str(path),
                    }
                ),
                "platform_parts": dumps(refs),
                "clock": dumps({ctx.name: clock.to_dict(), **clocks}),
            },
        )


def _keyed_table(table: WoeTable) -> WoeTable:
    """The table under its ``party:column`` key (the scorecard's feature names)."""
    return replace(table, name=f"{table.party}:{table.name}")
