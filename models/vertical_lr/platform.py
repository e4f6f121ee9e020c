"""The platform's role in hetero LR: its bins, its key pair, its coefficients.

The platform bins its own columns on the training rows the bank marked and sums the bank's
encrypted labels per fine bin (the bank's WOE/IV inputs), re-randomised with its own randomness
(:func:`secure_agg.paillier.rerandomize_own`) before they return to the bank: a bank that crafted
its key's base ``h_s`` to leave a component of its ciphertexts alone cannot read from the sums
which of its tagged label ciphertexts fell in which bin (so which platform bin each row is in,
column by column; ``tests/test_hetero_lr_rerandomization.py``). It receives the coarse mapping
and WOE of its own bins; per mini-batch it adds its partial logits to the bank's encrypted
residuals, returns its masked gradient (masked and re-randomised the same way,
:func:`models.vertical_lr.arithmetic.masked`) and its partial logits under its own key, unmasks
its gradient and takes its step; it decrypts the bank's masked cross terms only for batches its
own policy allows (:mod:`models.vertical_lr.privacy`). At the end it keeps its part (bins and
mapping) and releases its coefficients and the coarse bins of the bank's test rows.
"""

from __future__ import annotations

import time
from typing import Any

import gmpy2
import numpy as np
import numpy.typing as npt

from features.binning import BinSpec, transform
from models.alignment import job_rows
from models.protocol import Envelope, PartyContext, PhaseClock, ProtocolError, dumps
from models.vertical import (
    KeyPair,
    aligned_features,
    fit_own_bins,
    peer_public_key,
    platform_rows,
    platform_validation_rows,
)
from models.vertical_lr import arithmetic, batch_seed, checkpoint
from models.vertical_lr import fixedpoint as fp
from models.vertical_lr.bank_descent import residual_bits
from models.vertical_lr.core import LRParams, batch_count, batch_schedule, relative_change
from models.vertical_lr.parts import PlatformLRPart
from models.vertical_lr.privacy import check_cross_terms, check_schedule
from models.vertical_lr.state import CLOCK, KEY_PREFIX, PROTOCOL, VALID_KEY, cleanup
from secure_agg import paillier


class PlatformRole:
    """Platform side: its bins, its key pair, its coefficients."""

    def handle(self, env: Envelope, ctx: PartyContext) -> list[Envelope]:
        """Run one stage (already checked against the platform's stage machine)."""
        state = ctx.store.get_json("hlr.state") or {}
        if env.stage == "init":
            return [self._init(env, ctx)]
        allowed = (
            {state.get("bank"), *state.get("peers", [])}
            if env.stage == "peer"
            else {state.get("bank")}
        )
        if env.sender not in allowed:
            raise ProtocolError(f"hetero_lr/{env.stage} from '{env.sender}' is not expected here")
        if env.stage == "bins":
            return [self._bins(env, ctx, state)]
        if env.stage == "batch":
            return self._batch(env, ctx, state)
        if env.stage == "peer":
            return self._peer(env, ctx, state)
        if env.stage == "update":
            return [self._update(env, ctx, state)]
        return [self._finish(env, ctx, state)]

    def _init(self, env: Envelope, ctx: PartyContext) -> Envelope:
        settings = env.json("settings")
        committed = batch_seed.checked(
            settings.get("seed_commitment"),
            "hetero_lr/init's seed commitment (the batch schedule's seed is drawn jointly)",
        )
        limits = ctx.guard.limits
        rows, train = platform_rows(env, ctx)
        # Validation rows (early stopping): this node's own policy decides whether it scores
        # them after every epoch and how many, and its audit log records them.
        valid = platform_validation_rows(env, ctx, train)
        bank_key = peer_public_key(
            env.payload["public_key"],  # type: ignore[arg-type]
            limits,
            "the bank's Paillier key",
        )
        clock = PhaseClock()
        started = time.perf_counter()
        frame = aligned_features(ctx, rows, train)
        specs = fit_own_bins(ctx, frame, int(settings["max_bin"]))
        fine = transform(frame, specs).bins
        clock.since("binning", started)
        started = time.perf_counter()
        enc_y = paillier.ciphertexts_from_array(
            bank_key, env.array("enc_y"), fingerprint=env.text("key")
        )
        if len(enc_y) != int(train.sum()):
            raise ProtocolError(
                f"{len(enc_y)} encrypted labels for {int(train.sum())} training rows"
            )
        n_groups = max(s.n_bins + 1 for s in specs)
        sums = paillier.sum_groups_many(bank_key, enc_y, fine, n_groups)
        enc_bad = [c for s, col in zip(specs, sums, strict=True) for c in col[: s.n_bins + 1]]
        # The sums go back to the bank, who holds the key: re-randomise them with this node's
        # own randomness (c * y^n, y from secrets), not the bank's base h_s, which a crafted key
        # can make leave a tag on each label ciphertext that names its rows' fine bins.
        enc_bad = paillier.rerandomize_own(bank_key, enc_bad)
        totals = np.concatenate(
            [np.bincount(fine[:, j], minlength=s.n_bins + 1) for j, s in enumerate(specs)]
        ).astype(np.int64)
        clock.since("woe_sums", started, ops=int(fine.size))
        started = time.perf_counter()
        # This node's own key protects its partial logits: its size is this node's decision.
        own = KeyPair.for_node(limits, int(settings["key_bits"]))
        fp.check_key(own.public.n)
        own.save(ctx.store, prefix=KEY_PREFIX)
        clock.since("keygen", started)
        CLOCK.save(ctx, clock)
        ctx.store.put_array("hlr.train", train)
        ctx.store.put_array("hlr.fine", fine.astype(np.int16))
        ctx.store.put_json("hlr.specs", [s.to_dict() for s in specs])
        if valid.any():
            ctx.store.put_array(VALID_KEY, valid)
            held = transform(aligned_features(ctx, rows, valid), specs).bins
            ctx.store.put_array("hlr.valid_fine", held.astype(np.int16))
        share = batch_seed.draw()
        state: dict[str, Any] = {
            "bank": env.sender,
            "bank_key": bank_key.to_bytes().hex(),
            "seed_commitment": committed,
            "seed_share": share,
            "n_valid": int(valid.sum()),
        }
        offer = checkpoint.platform_offer(ctx, state, settings.get("resume") is True)
        ctx.store.put_json("hlr.state", state)
        features = [{"name": s.name, "kind": s.kind, "n_fine": s.n_bins + 1} for s in specs]
        reply: dict[str, Any] = {
            "features": dumps(features),
            "totals": totals,
            "enc_bad": paillier.ciphertexts_to_array(bank_key, enc_bad),
            "public_key": own.public.to_bytes(),
            "seed_share": share,
        }
        if offer is not None:
            reply["boundaries"] = dumps(offer)
        return env.reply("counts", reply)

    def _bins(self, env: Envelope, ctx: PartyContext, state: dict[str, Any]) -> Envelope:
        tables = env.json("tables")
        settings = env.json("settings")
        specs = ctx.store.get_json("hlr.specs")
        if [t["name"] for t in tables] != [s["name"] for s in specs]:
            raise ProtocolError("hetero_lr/bins does not cover this platform's columns in order")
        for t, s in zip(tables, specs, strict=True):
            n_fine = BinSpec.from_dict(s).n_bins + 1
            mapping = t["mapping"]
            if len(mapping) != n_fine or min(mapping) < 0 or max(mapping) >= len(t["woe"]):
                raise ProtocolError(f"hetero_lr/bins: bad coarse mapping for column '{t['name']}'")
        check_schedule(ctx, settings)
        seed = batch_seed.check_reveal(
            state["seed_commitment"],
            settings.get("seed_nonce"),
            settings.get("seed_shares"),
            ctx.name,
            state["seed_share"],
        )
        if settings.get("seed") != seed:
            raise ProtocolError("hetero_lr/bins declares a seed other than the joint one")
        state.update(
            {
                "tables": tables,
                "settings": settings,
                "peers": [p for p in settings["platforms"] if p != ctx.name],
                "coef": [0.0] * len(tables),
                "epoch_start": [0.0] * len(tables),
                "coef_by_epoch": [],
            }
        )
        ctx.store.put_json("hlr.state", state)
        return env.reply("ready")

    def _matrix(self, ctx: PartyContext, state: dict[str, Any]) -> tuple[Any, Any]:
        fine = ctx.store.get_array("hlr.fine").astype(np.int32)
        bins = arithmetic.coarse(fine, [t["mapping"] for t in state["tables"]])
        return bins, arithmetic.woe_matrix(bins, [t["woe"] for t in state["tables"]])

    def _rows(self, state: dict[str, Any], epoch: int, batch: int) -> npt.NDArray[np.intp]:
        settings = state["settings"]
        schedule = batch_schedule(
            int(settings["n_train"]), int(settings["batch_size"]), epoch, int(settings["seed"])
        )
        if not 0 <= batch < len(schedule):
            raise ProtocolError(f"hetero_lr: no batch {batch} in epoch {epoch}")
        return schedule[batch]

    def _batch(self, env: Envelope, ctx: PartyContext, state: dict[str, Any]) -> list[Envelope]:
        epoch, batch = env.integer("epoch"), env.integer("batch")
        if batch == 0:
            checkpoint.at_epoch_start(ctx, state, epoch)
        rows = self._rows(state, epoch, batch)
        _, x = self._matrix(ctx, state)
        u = fp.encode(0.25 * (x[rows] @ np.asarray(state["coef"], dtype=np.float64)))
        weighted = "enc_w" in env.payload
        state["current"] = {
            "epoch": epoch,
            "batch": batch,
            "u": [str(v) for v in u],
            "weighted": weighted,
        }
        ctx.store.put_array("hlr.enc_r", env.array("enc_r"))
        if weighted:
            ctx.store.put_array("hlr.enc_w", env.array("enc_w"))
        ctx.store.put_json("hlr.state", state)
        out = []
        if state["peers"]:
            clock = CLOCK.load(ctx)
            started = time.perf_counter()
            bank_key = peer_public_key(
                state["bank_key"], ctx.guard.limits, "the bank's Paillier key"
            )
            if weighted:
                # [[w]]^(0.25 u_P) times a fresh encryption of 0: this platform's weighted share
                # under the bank's key. Without the fresh randomness a peer holding [[w]] could
                # find the small exponent 0.25 u_P of each row (a short discrete logarithm).
                powers = arithmetic.scaled(bank_key, self._enc_w(ctx, bank_key, len(u)), u)
                zeros = paillier.encrypt_many(bank_key, [0] * len(u))
                n2 = gmpy2.mpz(bank_key.nsquare)
                shares = [int(a * gmpy2.mpz(z) % n2) for a, z in zip(powers, zeros, strict=True)]
            else:
                shares = paillier.encrypt_many(bank_key, fp.to_residue(u, bank_key.n))
            clock.since("encrypt_peer", started, ops=len(u))
            CLOCK.save(ctx, clock)
            out = [
                Envelope(
                    PROTOCOL,
                    "peer",
                    ctx.name,
                    peer,
                    {
                        "epoch": epoch,
                        "batch": batch,
                        "enc_u": paillier.ciphertexts_to_array(bank_key, shares),
                    },
                )
                for peer in state["peers"]
            ]
        return out + self._maybe_partial(ctx, state)

    def _peer(self, env: Envelope, ctx: PartyContext, state: dict[str, Any]) -> list[Envelope]:
        if env.sender not in state.get("peers", []):
            raise ProtocolError(f"hetero_lr/peer from '{env.sender}', not a platform of this job")
        ctx.store.put_array(f"hlr.peer.{env.sender}", env.array("enc_u"))
        received = dict(state.get("received", {}))
        received[env.sender] = [env.integer("epoch"), env.integer("batch")]
        state["received"] = received
        ctx.store.put_json("hlr.state", state)
        return self._maybe_partial(ctx, state)

    def _maybe_partial(self, ctx: PartyContext, state: dict[str, Any]) -> list[Envelope]:
        current = state.get("current")
        if current is None or current.get("sent"):
            return []
        at = [current["epoch"], current["batch"]]
        received = state.get("received", {})
        if any(received.get(p) != at for p in state["peers"]):
            return []
        clock = CLOCK.load(ctx)
        limits = ctx.guard.limits
        bank_key = peer_public_key(state["bank_key"], limits, "the bank's Paillier key")
        n, n2 = gmpy2.mpz(bank_key.n), gmpy2.mpz(bank_key.nsquare)
        u = [int(v) for v in current["u"]]
        started = time.perf_counter()
        enc_r = paillier.ciphertexts_from_array(bank_key, ctx.store.get_array("hlr.enc_r"))
        if len(enc_r) != len(u):
            raise ProtocolError(f"{len(enc_r)} encrypted residuals for a batch of {len(u)} rows")
        if current.get("weighted"):
            # [[w r]] [[w]]^(0.25 u_P) = [[w d]]: the bank's weights stay encrypted.
            scaled = arithmetic.scaled(bank_key, self._enc_w(ctx, bank_key, len(u)), u)
            d = [gmpy2.mpz(c) * s % n2 for c, s in zip(enc_r, scaled, strict=True)]
            ctx.store.delete("hlr.enc_w")
        else:
            d = [gmpy2.mpz(c) * (1 + n * (v % n)) % n2 for c, v in zip(enc_r, u, strict=True)]
        for peer in state["peers"]:
            shares = paillier.ciphertexts_from_array(
                bank_key, ctx.store.get_array(f"hlr.peer.{peer}")
            )
            if len(shares) != len(d):
                raise ProtocolError(
                    f"platform '{peer}' sent {len(shares)} shares for {len(d)} rows"
                )
            d = [a * b % n2 for a, b in zip(d, shares, strict=True)]
            ctx.store.delete(f"hlr.peer.{peer}")
        clock.since("residual", started, ops=len(d) * (1 + len(state["peers"])))
        coarse, _ = self._matrix(ctx, state)
        rows = self._rows(state, current["epoch"], current["batch"])
        started = time.perf_counter()
        grads, _ = arithmetic.weighted_sums(
            bank_key, [int(c) for c in d], coarse[rows], [t["woe"] for t in state["tables"]]
        )
        clock.since("gradient_sums", started, ops=int(coarse[rows].size))
        started = time.perf_counter()
        # Masked, and re-randomised with this node's own randomness (not the bank key's base).
        masked, mask = arithmetic.masked(bank_key, grads)
        own = KeyPair.load(
            ctx.store, prefix=KEY_PREFIX, allow_insecure_test_keys=limits.allow_insecure_test_keys
        )
        enc_u = paillier.encrypt_many_private(own.private, fp.to_residue(u, own.public.n))
        clock.since("encrypt", started, ops=len(u) + len(grads))
        CLOCK.save(ctx, clock)
        current.update({"sent": True, "mask": [str(m) for m in mask]})
        state["current"] = current
        ctx.store.delete("hlr.enc_r")
        ctx.store.put_json("hlr.state", state)
        return [
            Envelope(
                PROTOCOL,
                "partial",
                ctx.name,
                state["bank"],
                {
                    "epoch": current["epoch"],
                    "batch": current["batch"],
                    "enc_grad": paillier.ciphertexts_to_array(bank_key, masked),
                    "enc_u": paillier.ciphertexts_to_array(own.public, enc_u),
                },
            )
        ]

    def _update(self, env: Envelope, ctx: PartyContext, state: dict[str, Any]) -> Envelope:
        current = state.get("current") or {}
        if not current.get("sent") or [env.integer("epoch"), env.integer("batch")] != [
            current["epoch"],
            current["batch"],
        ]:
            raise ProtocolError("hetero_lr/update does not answer this platform's last partial")
        settings = state["settings"]
        params = LRParams(**settings["lr"])
        rows = self._rows(state, current["epoch"], current["batch"])
        grad = fp.unmask([int(v) for v in env.json("grad")], [int(m) for m in current["mask"]])
        coef = np.asarray(state["coef"], dtype=np.float64)
        if current["batch"] == 0:
            state["epoch_start"] = coef.tolist()
        bits = residual_bits(bool(current.get("weighted"))) + fp.SCALE_BITS
        g = np.asarray(grad, dtype=np.float64) / float(1 << bits) / rows.size
        rate = params.rate(current["epoch"], float(settings["curvature"]))
        coef = coef - rate * (g + params.l2 * coef)
        state["coef"] = coef.tolist()
        clock = CLOCK.load(ctx)
        started = time.perf_counter()
        limits = ctx.guard.limits
        own = KeyPair.load(
            ctx.store, prefix=KEY_PREFIX, allow_insecure_test_keys=limits.allow_insecure_test_keys
        )
        cross = paillier.ciphertexts_from_array(
            own.public, env.array("enc_cross"), fingerprint=own.public.fingerprint
        )
        check_cross_terms(limits, len(cross), rows.size)
        plain = fp.from_residue(paillier.decrypt_many(own.private, cross), own.public.n)
        clock.since("decrypt", started, ops=len(cross))
        CLOCK.save(ctx, clock)
        payload: dict[str, Any] = {
            "epoch": current["epoch"],
            "batch": current["batch"],
            "sums": dumps([str(v) for v in plain]),
        }
        n_batches = batch_count(int(settings["n_train"]), int(settings["batch_size"]))
        if current["batch"] == n_batches - 1:
            # One bit per epoch: whether this party's own coefficients have settled. The
            # bank never sees the platform's coefficient norms or their change.
            start = np.asarray(state["epoch_start"], dtype=np.float64)
            payload["converged"] = bool(relative_change(coef - start, 0.0, coef, 0.0) < params.tol)
            state["coef_by_epoch"] = [*state.get("coef_by_epoch", []), coef.tolist()]
            if state.get("n_valid"):
                # This epoch's partial logit of every validation row: what scoring those rows
                # with this epoch's model would reveal (allowed by this node's policy at init).
                payload["valid_u"] = self._valid_logits(ctx, state, coef)
        state["current"] = None
        ctx.store.put_json("hlr.state", state)
        return env.reply("cross_sums", payload)

    def _enc_w(self, ctx: PartyContext, bank_key: Any, count: int) -> list[int]:
        enc_w = paillier.ciphertexts_from_array(bank_key, ctx.store.get_array("hlr.enc_w"))
        if len(enc_w) != count:
            raise ProtocolError(f"{len(enc_w)} encrypted weights for a batch of {count} rows")
        return enc_w

    def _valid_logits(
        self, ctx: PartyContext, state: dict[str, Any], coef: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        fine = ctx.store.get_array("hlr.valid_fine").astype(np.int32)
        bins = arithmetic.coarse(fine, [t["mapping"] for t in state["tables"]])
        x = arithmetic.woe_matrix(bins, [t["woe"] for t in state["tables"]])
        return np.asarray(x @ coef, dtype=np.float64)

    def _finish(self, env: Envelope, ctx: PartyContext, state: dict[str, Any]) -> Envelope:
        rows = job_rows(ctx)
        train = ctx.store.get_array("hlr.train").astype(bool)
        held = ctx.store.get_array(VALID_KEY).astype(bool) if state.get("n_valid") else None
        test = ~train if held is None else ~train & ~held
        coef = _kept_coef(env, state)
        specs = tuple(BinSpec.from_dict(s) for s in ctx.store.get_json("hlr.specs"))
        mappings = tuple(tuple(int(v) for v in t["mapping"]) for t in state["tables"])
        part = PlatformLRPart(
            party=ctx.name,
            model_id=env.text("model_id"),
            specs=specs,
            mappings=mappings,
            bank=state["bank"],  # served to this bank only
        )
        frame = aligned_features(ctx, rows, test)
        test_bins = part.coarse_bins(frame)
        part.save(ctx.model_dir())
        if state.get("n_valid"):
            ctx.guard.notify(
                "validation_released",
                {
                    "protocol": PROTOCOL,
                    "n_validation": int(state["n_valid"]),
                    "iterations": len(state.get("coef_by_epoch", [])),
                },
            )
        clock = CLOCK.load(ctx)
        cleanup(ctx)
        return env.reply(
            "final",
            {
                "coef": dumps(coef),
                "test_bins": test_bins,
                "part": dumps({"model_id": part.model_id, "content_hash": part.content_hash}),
                "clock": dumps(clock.to_dict()),
            },
        )


def _kept_coef(env: Envelope, state: dict[str, Any]) -> list[float]:
    """The coefficients the model keeps: the last epoch's, or the epoch the bank names.

    With early stopping the bank names its best epoch; this node releases its own coefficients
    of that epoch (one set, never more) and checks the epoch is one it trained.
    """
    if "epoch" not in env.payload:
        return [float(c) for c in state["coef"]]
    epoch = env.payload["epoch"]
    trained = state.get("coef_by_epoch", [])
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < len(trained):
        raise ProtocolError(
            f"hetero_lr/finish names epoch {epoch!r}; this platform trained {len(trained)}"
        )
    return [float(c) for c in trained[epoch]]
