"""The ``hetero_lr`` protocol: encrypted WOE/IV binning, then vertical logistic regression.

Between the bank (labels, its own columns, a Paillier key pair) and one or more platforms
(columns, each with its own Paillier key pair); no trusted third party: the coordinator only
relays ciphertexts and masked sums. Rows are the job's aligned training rows (after PSI) in the
agreed order; the bank's test rows never take part in training.

Stages
------
``setup`` (coordinator -> bank)
    The bank bins its columns (quantile fine bins on its training rows), computes its own WOE
    tables, generates its key pair and sends each platform ``init``: the public key, the
    training-row mask and its training labels encrypted (one ciphertext per row).
``init`` (bank -> platform)
    The platform fits fine bins on its training rows, sums the encrypted labels per
    (column, fine bin) and answers ``counts``: per column its name, kind and number of bins, the
    row count of every bin, the encrypted bad count of every bin, and its own public key.
``bins`` (bank -> platform)
    The bank decrypts the bad counts, merges fine bins (monotone optimal binning, from counts
    alone), computes WOE and IV and sends each platform the fine -> coarse mapping and the WOE
    of its coarse bins, with the batch schedule's seed and the descent settings.
``batch`` (bank -> platform)
    Per mini-batch: the bank's residual part ``r = 0.25 u_B + 0.5 - y`` of the batch rows,
    encrypted under the bank's key. With several platforms each sends the others its
    ``0.25 u_P`` encrypted under the bank's key (``peer``).
``partial`` (platform -> bank)
    The platform adds its ``0.25 u_P`` to get ``[[d]]``, sums it per coarse bin, weights the
    sums by its WOE values (its gradient ``Σ d·x``), masks and re-randomises them; it also sends
    ``0.25 u_P`` encrypted under its *own* key.
``update`` (bank -> platform)
    The bank decrypts the masked gradient (learning only gradient + mask) and returns it; it sums
    the platform-key ciphertexts of ``u_P`` per bank coarse bin, weights them by its own WOE
    (the cross term of its gradient), masks and re-randomises them.
``cross_sums`` (platform -> bank)
    The platform unmasks its gradient and takes its step; it decrypts the bank's masked cross
    terms (learning only term + mask) and returns them, refusing a batch with fewer than
    ``rows_per_cross_term`` rows per term (its own policy). At the last batch of an epoch it adds
    one bit: whether its own weights settled (relative change below ``tol``). The bank unmasks
    and takes its step; it stops when it and every platform settled.
``finish`` / ``final``
    After the last epoch the platform saves its part (bins and mapping) and releases its
    coefficients and the coarse bins of the bank's test rows; the bank evaluates, builds the
    scorecard and reports ``done`` to the coordinator.

What each party learns
----------------------
================  ==============================================================================
bank              per column of every platform: the number of fine bins, the row count and the
                  bad count of every (anonymous, ordered) fine bin, hence WOE and IV; per batch
                  its own gradient (which includes ``Σ_{i∈bin} u_P,i`` per own coarse bin,
                  over batches of at least the platform's ``min_batch_size`` rows); one bit
                  per platform and epoch (its weights settled); the platforms' coefficients
                  and, for its test rows, their coarse bins at the end. Never a platform
                  value, bin edge, per-row partial logit or norm of a platform's weights.
platform          ciphertexts it cannot read; the coarse mapping and WOE of its own bins (a
                  per-bin label statistic: the bank's bad-rate ratio per coarse bin), its own
                  gradient and coefficients. Never a label, a residual or a bank value.
coordinator       ciphertexts, masked sums it cannot unmask, sizes, timings; the bank's
                  evaluation report, per-epoch history and model references (``done``).
================  ==============================================================================

The WOE the platform receives is what any WOE-encoded model needs where the values are; with
one-hot bins instead its own coefficients would carry the same per-bin information.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import gmpy2
import numpy as np
import numpy.typing as npt

from features.binning import BinSpec, fit_transform
from features.errors import DataError
from features.woe import WoeTable, count_bins
from models.alignment import job_rows
from models.evaluation import TEST_MASK_KEY, evaluate_scores
from models.guard import NodeLimits, PolicyRefusalError
from models.protocol import (
    COORDINATOR,
    Envelope,
    PartyContext,
    PhaseClock,
    ProtocolError,
    RoleDispatch,
    StageMachine,
    dumps,
)
from models.scorecard import Scorecard, ScorecardScaling
from models.secureboost.crypto import KeyPair
from models.vertical_lr import fixedpoint as fp
from models.vertical_lr.core import (
    LRParams,
    batch_count,
    batch_schedule,
    curvature_bound,
    relative_change,
)
from models.vertical_lr.parts import BankLRPart, PlatformLRPart
from secure_agg import paillier

PROTOCOL = "hetero_lr"
_KEY = "hlr.key"

_BANK = StageMachine(
    PROTOCOL,
    {
        "setup": {StageMachine.START},
        "counts": {"setup", "counts"},
        "ready": {"counts", "ready"},
        "partial": {"ready", "partial", "cross_sums"},
        "cross_sums": {"partial", "cross_sums"},
        "final": {"cross_sums", "final"},
    },
)
_PLATFORM = StageMachine(
    PROTOCOL,
    {
        "init": {StageMachine.START},
        "bins": {"init"},
        "batch": {"bins", "update", "peer"},
        "peer": {"bins", "batch", "update", "peer"},
        "update": {"batch", "peer"},
        "finish": {"update"},
    },
)


@dataclass(frozen=True)
class HeteroLRParams:
    """Settings of a hetero LR job (validated by the experiment config)."""

    learning_rate: float = 1.0
    decay: float = 1.0
    l2: float = 1e-3
    batch_size: int = 2048
    max_epochs: int = 10
    tol: float = 0.02
    max_bin: int = 20
    binning: Literal["monotone", "quantile"] = "monotone"
    min_bin_share: float = 0.05
    max_woe_bins: int = 8
    woe_alpha: float = 0.5
    base_points: float = 600.0
    base_odds: float = 50.0
    pdo: float = 20.0
    groups: dict[str, str] = field(default_factory=dict)
    key_bits: int = 2048
    insecure_test_keys: bool = False

    def lr(self) -> LRParams:
        """The descent settings (always the Taylor residual: see the module docstring)."""
        return LRParams(
            learning_rate=self.learning_rate,
            decay=self.decay,
            l2=self.l2,
            batch_size=self.batch_size,
            max_epochs=self.max_epochs,
            tol=self.tol,
            gradient="taylor",
        )

    def woe_table(
        self,
        name: str,
        party: str,
        kind: str,
        total: npt.ArrayLike,
        bad: npt.ArrayLike,
        spec: BinSpec | None = None,
    ) -> WoeTable:
        """Coarse bins, WOE and IV of one column from its fine-bin counts, with these settings."""
        if kind not in ("numeric", "categorical"):
            raise ProtocolError(f"column '{name}' has unknown kind {kind!r}")
        return WoeTable.fit(
            name,
            party,
            "numeric" if kind == "numeric" else "categorical",
            total,
            bad,
            spec=spec,
            method=self.binning,
            min_bin_share=self.min_bin_share,
            max_bins=self.max_woe_bins,
            alpha=self.woe_alpha,
        )

    @classmethod
    def from_spec(cls, model: dict[str, Any], crypto_cfg: dict[str, Any]) -> HeteroLRParams:
        """Build from the experiment's ``model`` and ``crypto`` sections."""
        names = set(cls.__dataclass_fields__) - {"key_bits", "insecure_test_keys"}
        values = {k: v for k, v in model.items() if k in names}
        scorecard = model.get("scorecard") or {}
        for key in ("base_points", "base_odds", "pdo", "groups"):
            if key in scorecard:
                values[key] = scorecard[key]
        return cls(
            **values,
            key_bits=int(crypto_cfg.get("key_bits", 2048)),
            insecure_test_keys=bool(crypto_cfg.get("insecure_test_keys", False)),
        )


_CLOCK = "hlr.clock"


def _load_clock(ctx: PartyContext) -> PhaseClock:
    return PhaseClock.load(ctx.store, _CLOCK)


def _save_clock(ctx: PartyContext, clock: PhaseClock) -> None:
    clock.save(ctx.store, _CLOCK)


def _fine_bins(
    ctx: PartyContext, rows: npt.NDArray[np.intp], train: npt.NDArray[np.bool_], max_bin: int
) -> tuple[tuple[BinSpec, ...], npt.NDArray[np.int32]]:
    """Fit fine bins on this party's training rows; return the specs and the binned rows."""
    table = ctx.table()
    binned = fit_transform(
        table.features.iloc[rows[train]].reset_index(drop=True), table.feature_kinds, max_bin
    )
    return binned.specs, binned.bins


def _coarse(
    fine: npt.NDArray[np.int32], mappings: Sequence[Sequence[int]]
) -> npt.NDArray[np.int32]:
    out = np.empty_like(fine, dtype=np.int32)
    for j, mapping in enumerate(mappings):
        out[:, j] = np.asarray(mapping, dtype=np.int32)[fine[:, j]]
    return out


def _woe_matrix(
    coarse: npt.NDArray[np.int32], woe: Sequence[Sequence[float]]
) -> npt.NDArray[np.float64]:
    out = np.empty(coarse.shape, dtype=np.float64)
    for j, values in enumerate(woe):
        out[:, j] = np.asarray(values, dtype=np.float64)[coarse[:, j]]
    return out


def _weighted_sums(
    pub: paillier.PublicKey,
    ciphertexts: Sequence[int],
    coarse: npt.NDArray[np.int32],
    woe: Sequence[Sequence[float]],
) -> tuple[list[int], int]:
    """``[[Σ_i c_i · W_j(i)]]`` per column and ``[[Σ_i c_i]]``: bin sums, then one power per bin."""
    n_groups = max((len(w) for w in woe), default=1)
    groups = np.column_stack([coarse, np.zeros(coarse.shape[0], dtype=np.int32)])
    sums = paillier.sum_groups_many(pub, ciphertexts, groups, n_groups)
    n2 = gmpy2.mpz(pub.nsquare)
    out = []
    for j, values in enumerate(woe):
        acc = gmpy2.mpz(1)
        for b, weight in enumerate(fp.encode(np.asarray(values, dtype=np.float64))):
            if weight and sums[j][b] != 1:
                acc = acc * paillier.mul_const(pub, sums[j][b], weight) % n2
        out.append(int(acc))
    return out, sums[-1][0]


def _masked(pub: paillier.PublicKey, ciphertexts: Sequence[int]) -> tuple[list[int], list[int]]:
    """Add fresh masks under encryption and re-randomise; return (ciphertexts, masks)."""
    mask = fp.masks(len(ciphertexts))
    n, n2 = gmpy2.mpz(pub.n), gmpy2.mpz(pub.nsquare)
    shifted = [int(gmpy2.mpz(c) * (1 + n * m) % n2) for c, m in zip(ciphertexts, mask, strict=True)]
    return paillier.obfuscate_many(pub, shifted), mask


def _public(raw: bytes | str, limits: NodeLimits, whose: str) -> paillier.PublicKey:
    """A peer's public key, refused unless this node's own policy accepts its size."""
    data = bytes.fromhex(raw) if isinstance(raw, str) else raw
    key = paillier.PublicKey.from_bytes(data, allow_insecure=limits.allow_insecure_test_keys)
    limits.check_key(key.key_bits, whose)
    return key


def _check_schedule(ctx: PartyContext, settings: dict[str, Any]) -> None:
    """Refuse a batch schedule over fewer rows than this platform's policy allows.

    Per batch the bank learns weighted sums of the platform's partial logits ``u_P`` over the
    batch's rows (its cross terms); over one row such a sum is that row's partial logit.
    """
    train = ctx.store.get_array("hlr.train").astype(bool)
    n_train = int(settings["n_train"])
    if n_train != int(train.sum()):
        raise ProtocolError(
            f"hetero_lr/bins declares {n_train} training rows but its mask marked {train.sum()}"
        )
    batch = int(settings["batch_size"])
    smallest = n_train if batch <= 0 else min(batch, n_train)
    limits = ctx.guard.limits
    if smallest < limits.min_batch_size:
        raise PolicyRefusalError(
            f"the bank's mini-batches hold {smallest} rows, below this platform's policy "
            f"hetero_lr.min_batch_size={limits.min_batch_size}: per batch the bank learns sums "
            "of the platform's partial logits over the batch; use larger batches"
        )


def _n_batches(n_train: int, batch_size: int) -> int:
    """Mini-batches of one epoch (:func:`models.vertical_lr.core.batch_count`)."""
    return batch_count(n_train, batch_size)


# --------------------------------------------------------------------------------- platform


class _Platform:
    """Platform side: its bins, its key pair, its coefficients."""

    def handle(self, env: Envelope, ctx: PartyContext) -> list[Envelope]:
        _PLATFORM.advance(ctx.store, env)
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
        limits = ctx.guard.limits
        rows = job_rows(ctx)
        train = env.array("train_mask").astype(bool)
        if train.size != rows.size:
            raise ProtocolError(
                f"train mask covers {train.size} rows but {ctx.name} aligned {rows.size}"
            )
        bank_key = _public(
            env.payload["public_key"],  # type: ignore[arg-type]
            limits,
            "the bank's Paillier key",
        )
        clock = PhaseClock()
        started = time.perf_counter()
        specs, fine = _fine_bins(ctx, rows, train, int(settings["max_bin"]))
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
        enc_bad = paillier.obfuscate_many(bank_key, enc_bad)
        totals = np.concatenate(
            [np.bincount(fine[:, j], minlength=s.n_bins + 1) for j, s in enumerate(specs)]
        ).astype(np.int64)
        clock.since("woe_sums", started, ops=int(fine.size))
        started = time.perf_counter()
        # This node's own key protects its partial logits: its size is this node's decision.
        own = KeyPair.generate(
            limits.key_bits_for(int(settings["key_bits"])),
            insecure=limits.allow_insecure_test_keys,
        )
        fp.check_key(own.public.n)
        own.save(ctx.store, prefix=_KEY)
        clock.since("keygen", started)
        _save_clock(ctx, clock)
        ctx.store.put_array("hlr.train", train)
        ctx.store.put_array("hlr.fine", fine.astype(np.int16))
        ctx.store.put_json("hlr.specs", [s.to_dict() for s in specs])
        ctx.store.put_json(
            "hlr.state",
            {"bank": env.sender, "bank_key": bank_key.to_bytes().hex()},
        )
        features = [{"name": s.name, "kind": s.kind, "n_fine": s.n_bins + 1} for s in specs]
        return env.reply(
            "counts",
            {
                "features": dumps(features),
                "totals": totals,
                "enc_bad": paillier.ciphertexts_to_array(bank_key, enc_bad),
                "public_key": own.public.to_bytes(),
            },
        )

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
        _check_schedule(ctx, settings)
        state.update(
            {
                "tables": tables,
                "settings": settings,
                "peers": [p for p in settings["platforms"] if p != ctx.name],
                "coef": [0.0] * len(tables),
                "epoch_start": [0.0] * len(tables),
            }
        )
        ctx.store.put_json("hlr.state", state)
        return env.reply("ready")

    def _matrix(self, ctx: PartyContext, state: dict[str, Any]) -> tuple[Any, Any]:
        fine = ctx.store.get_array("hlr.fine").astype(np.int32)
        coarse = _coarse(fine, [t["mapping"] for t in state["tables"]])
        return coarse, _woe_matrix(coarse, [t["woe"] for t in state["tables"]])

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
        rows = self._rows(state, epoch, batch)
        _, x = self._matrix(ctx, state)
        u = fp.encode(0.25 * (x[rows] @ np.asarray(state["coef"], dtype=np.float64)))
        state["current"] = {"epoch": epoch, "batch": batch, "u": [str(v) for v in u]}
        ctx.store.put_array("hlr.enc_r", env.array("enc_r"))
        ctx.store.put_json("hlr.state", state)
        out = []
        if state["peers"]:
            clock = _load_clock(ctx)
            started = time.perf_counter()
            bank_key = _public(state["bank_key"], ctx.guard.limits, "the bank's Paillier key")
            shares = paillier.encrypt_many(bank_key, fp.to_residue(u, bank_key.n))
            clock.since("encrypt_peer", started, ops=len(u))
            _save_clock(ctx, clock)
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
        clock = _load_clock(ctx)
        limits = ctx.guard.limits
        bank_key = _public(state["bank_key"], limits, "the bank's Paillier key")
        n, n2 = gmpy2.mpz(bank_key.n), gmpy2.mpz(bank_key.nsquare)
        u = [int(v) for v in current["u"]]
        started = time.perf_counter()
        enc_r = paillier.ciphertexts_from_array(bank_key, ctx.store.get_array("hlr.enc_r"))
        if len(enc_r) != len(u):
            raise ProtocolError(f"{len(enc_r)} encrypted residuals for a batch of {len(u)} rows")
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
        grads, _ = _weighted_sums(
            bank_key, [int(c) for c in d], coarse[rows], [t["woe"] for t in state["tables"]]
        )
        clock.since("gradient_sums", started, ops=int(coarse[rows].size))
        started = time.perf_counter()
        masked, mask = _masked(bank_key, grads)
        own = KeyPair.load(ctx.store, insecure=limits.allow_insecure_test_keys, prefix=_KEY)
        enc_u = paillier.encrypt_many_private(own.private, fp.to_residue(u, own.public.n))
        clock.since("encrypt", started, ops=len(u) + len(grads))
        _save_clock(ctx, clock)
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
        g = np.asarray(grad, dtype=np.float64) / float(1 << (2 * fp.SCALE_BITS)) / rows.size
        rate = params.rate(current["epoch"], float(settings["curvature"]))
        coef = coef - rate * (g + params.l2 * coef)
        state["coef"] = coef.tolist()
        clock = _load_clock(ctx)
        started = time.perf_counter()
        limits = ctx.guard.limits
        own = KeyPair.load(ctx.store, insecure=limits.allow_insecure_test_keys, prefix=_KEY)
        cross = paillier.ciphertexts_from_array(
            own.public, env.array("enc_cross"), fingerprint=own.public.fingerprint
        )
        if len(cross) * limits.rows_per_cross_term > rows.size:
            raise PolicyRefusalError(
                f"the bank asks this platform to decrypt {len(cross)} weighted sums of a batch of "
                f"{rows.size} rows; its policy hetero_lr.rows_per_cross_term="
                f"{limits.rows_per_cross_term} needs {len(cross) * limits.rows_per_cross_term}+ "
                "rows per batch so the sums never pin down single rows"
            )
        plain = fp.from_residue(paillier.decrypt_many(own.private, cross), own.public.n)
        clock.since("decrypt", started, ops=len(cross))
        _save_clock(ctx, clock)
        payload: dict[str, Any] = {
            "epoch": current["epoch"],
            "batch": current["batch"],
            "sums": dumps([str(v) for v in plain]),
        }
        n_batches = _n_batches(int(settings["n_train"]), int(settings["batch_size"]))
        if current["batch"] == n_batches - 1:
            # One bit per epoch: whether this party's own coefficients have settled. The
            # bank never sees the platform's coefficient norms or their change.
            start = np.asarray(state["epoch_start"], dtype=np.float64)
            payload["converged"] = bool(relative_change(coef - start, 0.0, coef, 0.0) < params.tol)
        state["current"] = None
        ctx.store.put_json("hlr.state", state)
        return env.reply("cross_sums", payload)

    def _finish(self, env: Envelope, ctx: PartyContext, state: dict[str, Any]) -> Envelope:
        rows = job_rows(ctx)
        train = ctx.store.get_array("hlr.train").astype(bool)
        specs = tuple(BinSpec.from_dict(s) for s in ctx.store.get_json("hlr.specs"))
        mappings = tuple(tuple(int(v) for v in t["mapping"]) for t in state["tables"])
        part = PlatformLRPart(
            party=ctx.name,
            model_id=env.text("model_id"),
            specs=specs,
            mappings=mappings,
            bank=state["bank"],  # served to this bank only
        )
        frame = ctx.table().features.iloc[rows[~train]].reset_index(drop=True)
        test_bins = part.coarse_bins(frame)
        part.save(ctx.model_dir())
        clock = _load_clock(ctx)
        _cleanup(ctx)
        return env.reply(
            "final",
            {
                "coef": dumps(state["coef"]),
                "test_bins": test_bins,
                "part": dumps({"model_id": part.model_id, "content_hash": part.content_hash}),
                "clock": dumps(clock.to_dict()),
            },
        )


# --------------------------------------------------------------------------------- bank


class _Bank:
    """Bank side: labels, key pair, WOE tables of every column, its coefficients and the driver."""

    def handle(self, env: Envelope, ctx: PartyContext) -> list[Envelope]:
        _BANK.advance(ctx.store, env)
        if env.stage == "setup":
            return self._setup(env, ctx)
        state = ctx.store.get_json("hlr.state")
        if env.sender not in state["platforms"]:
            raise ProtocolError(f"hetero_lr/{env.stage} from '{env.sender}', not a platform here")
        if env.stage != state["expect"]:
            raise ProtocolError(
                f"hetero_lr/{env.stage} from '{env.sender}' while waiting for {state['expect']}"
            )
        if env.sender not in state["pending"]:
            raise ProtocolError(f"hetero_lr/{env.stage} from '{env.sender}' arrived twice")
        if env.stage in ("partial", "cross_sums") and [
            env.integer("epoch"),
            env.integer("batch"),
        ] != [state["epoch"], state["batch"]]:
            raise ProtocolError(f"hetero_lr/{env.stage} from '{env.sender}' for another batch")
        self._keep(env, ctx, state)
        state["pending"] = [p for p in state["pending"] if p != env.sender]
        ctx.store.put_json("hlr.state", state)
        if state["pending"]:
            return []
        if env.stage == "counts":
            return self._send_bins(ctx, state)
        if env.stage == "ready":
            return self._send_batch(ctx, state)
        if env.stage == "partial":
            return self._send_updates(ctx, state)
        if env.stage == "cross_sums":
            return self._step(ctx, state)
        return [self._finish(ctx, state)]

    def _keep(self, env: Envelope, ctx: PartyContext, state: dict[str, Any]) -> None:
        """Store what a platform sent until every platform has answered the stage."""
        prefix = f"hlr.in.{env.sender}"
        for key, value in env.payload.items():
            if isinstance(value, np.ndarray):
                ctx.store.put_array(f"{prefix}.{key}", value)
            elif isinstance(value, bytes):
                ctx.store.put_json(f"{prefix}.{key}", value.hex())
            else:
                ctx.store.put_json(f"{prefix}.{key}", value)

    def _got(self, ctx: PartyContext, party: str, key: str) -> Any:
        return ctx.store.get_json(f"hlr.in.{party}.{key}")

    def _got_array(self, ctx: PartyContext, party: str, key: str) -> npt.NDArray[Any]:
        return ctx.store.get_array(f"hlr.in.{party}.{key}")

    # -- setup and binning ------------------------------------------------------------------

    def _setup(self, env: Envelope, ctx: PartyContext) -> list[Envelope]:
        settings = env.json("settings")
        params = HeteroLRParams(**settings["params"])
        platforms: list[str] = settings["platforms"]
        rows = job_rows(ctx)
        try:
            test = ctx.store.get_array(TEST_MASK_KEY).astype(bool)
        except KeyError as exc:
            raise ProtocolError("the bank has no evaluation split: run job/split first") from exc
        train = ~test
        table = ctx.table()
        if table.label is None:
            raise DataError(f"{table.path}: the bank's table has no labels")
        y = table.label[rows][train].astype(np.int64)
        if y.size == 0 or y.min() == y.max():
            raise DataError(f"{table.path}: the training rows need both classes of the label")
        clock = PhaseClock()
        started = time.perf_counter()
        specs, fine = _fine_bins(ctx, rows, train, params.max_bin)
        clock.since("binning", started)
        started = time.perf_counter()
        limits = ctx.guard.limits
        key_bits = limits.key_bits_for(params.key_bits)
        limits.check_key(key_bits, "the bank's own Paillier key")
        keys = KeyPair.generate(key_bits, insecure=limits.allow_insecure_test_keys)
        fp.check_key(keys.public.n)
        clock.since("keygen", started)
        started = time.perf_counter()
        enc_y = paillier.encrypt_many_private(keys.private, [int(v) for v in y])
        clock.since("encrypt", started, ops=len(enc_y))
        _save_clock(ctx, clock)
        keys.save(ctx.store, prefix=_KEY)
        ctx.store.put_array("hlr.y", y)
        ctx.store.put_array("hlr.train", train)
        ctx.store.put_array("hlr.fine", fine.astype(np.int16))
        ctx.store.put_json("hlr.specs", [s.to_dict() for s in specs])
        state = {
            "params": asdict(params),
            "platforms": platforms,
            "order": settings["order"],
            "model_id": settings["model_id"],
            "expect": "counts",
            "pending": list(platforms),
            "n_train": int(train.sum()),
            "seed": secrets.randbits(63),
        }
        ctx.store.put_json("hlr.state", state)
        init = {"max_bin": params.max_bin, "key_bits": key_bits}
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
                },
            )
            for p in platforms
        ]

    def _send_bins(self, ctx: PartyContext, state: dict[str, Any]) -> list[Envelope]:
        params = HeteroLRParams(**state["params"])
        keys = KeyPair.load(
            ctx.store, insecure=ctx.guard.limits.allow_insecure_test_keys, prefix=_KEY
        )
        clock = _load_clock(ctx)
        y = ctx.store.get_array("hlr.y")
        fine = ctx.store.get_array("hlr.fine").astype(np.int32)
        specs = [BinSpec.from_dict(s) for s in ctx.store.get_json("hlr.specs")]
        tables = []
        for j, spec in enumerate(specs):
            total, bad = count_bins(fine[:, j], y, spec.n_bins + 1)
            tables.append(params.woe_table(spec.name, ctx.name, spec.kind, total, bad, spec))
        per_platform: dict[str, list[WoeTable]] = {}
        for p in state["platforms"]:
            per_platform[p] = self._platform_tables(ctx, p, params, keys, clock)
            tables.extend(per_platform[p])
            key = self._got(ctx, p, "public_key")
            _public(key, ctx.guard.limits, f"platform '{p}''s Paillier key")
            ctx.store.put_json(f"hlr.platform_key.{p}", key)
        _save_clock(ctx, clock)
        ctx.store.put_json("hlr.tables", [t.to_dict() for t in tables])
        n_own = len(specs)
        n_train = float(state["n_train"])
        curvature = curvature_bound(
            [
                float(np.dot(np.asarray(t.total, dtype=np.float64), np.square(t.woe))) / n_train
                for t in tables
            ]
        )
        settings = {
            "seed": state["seed"],
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
        self._forget_inputs(ctx, state, ("features", "totals", "enc_bad", "public_key"))
        return out

    def _platform_tables(
        self,
        ctx: PartyContext,
        party: str,
        params: HeteroLRParams,
        keys: KeyPair,
        clock: PhaseClock,
    ) -> list[WoeTable]:
        """Decrypt a platform's per-bin bad counts and fit its (anonymous) WOE tables."""
        features = json.loads(self._got(ctx, party, "features"))
        totals = self._got_array(ctx, party, "totals").astype(np.int64)
        sizes = [int(f["n_fine"]) for f in features]
        if totals.size != sum(sizes):
            raise ProtocolError(
                f"platform '{party}' sent {totals.size} bin counts for {sum(sizes)} bins"
            )
        started = time.perf_counter()
        enc_bad = paillier.ciphertexts_from_array(
            keys.public, self._got_array(ctx, party, "enc_bad"), fingerprint=keys.public.fingerprint
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
                params.woe_table(
                    f["name"], party, f["kind"], totals[start:stop], bad_all[start:stop]
                )
            )
            start = stop
        return out

    def _forget_inputs(self, ctx: PartyContext, state: dict[str, Any], keys: Sequence[str]) -> None:
        for p in state["platforms"]:
            for key in keys:
                ctx.store.delete(f"hlr.in.{p}.{key}")

    # -- training ---------------------------------------------------------------------------

    def _own(
        self, ctx: PartyContext
    ) -> tuple[list[WoeTable], npt.NDArray[np.int32], npt.NDArray[np.float64]]:
        tables = [
            WoeTable.from_dict(t)
            for t in ctx.store.get_json("hlr.tables")
            if t["party"] == ctx.name
        ]
        fine = ctx.store.get_array("hlr.fine").astype(np.int32)
        coarse = _coarse(fine, [t.mapping for t in tables])
        return tables, coarse, _woe_matrix(coarse, [t.woe for t in tables])

    def _schedule(self, state: dict[str, Any]) -> list[npt.NDArray[np.intp]]:
        params = HeteroLRParams(**state["params"])
        return batch_schedule(state["n_train"], params.batch_size, state["epoch"], state["seed"])

    def _send_batch(self, ctx: PartyContext, state: dict[str, Any]) -> list[Envelope]:
        keys = KeyPair.load(
            ctx.store, insecure=ctx.guard.limits.allow_insecure_test_keys, prefix=_KEY
        )
        if state["batch"] == 0:
            state["epoch_started"] = time.time()  # wall clock: parties may run in other processes
        rows = self._schedule(state)[state["batch"]]
        _, _, x = self._own(ctx)
        y = ctx.store.get_array("hlr.y")
        u = x[rows] @ np.asarray(state["coef"], dtype=np.float64) + float(state["intercept"])
        r = fp.encode(0.25 * u + 0.5 - y[rows])
        clock = _load_clock(ctx)
        started = time.perf_counter()
        enc = paillier.encrypt_many_private(keys.private, fp.to_residue(r, keys.public.n))
        clock.since("encrypt", started, ops=len(enc))
        _save_clock(ctx, clock)
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
                {"epoch": state["epoch"], "batch": state["batch"], "enc_r": array},
            )
            for p in state["platforms"]
        ]

    def _send_updates(self, ctx: PartyContext, state: dict[str, Any]) -> list[Envelope]:
        limits = ctx.guard.limits
        keys = KeyPair.load(ctx.store, insecure=limits.allow_insecure_test_keys, prefix=_KEY)
        rows = self._schedule(state)[state["batch"]]
        tables, coarse, _ = self._own(ctx)
        clock = _load_clock(ctx)
        out = []
        masks: dict[str, list[str]] = {}
        for p in state["platforms"]:
            started = time.perf_counter()
            enc_grad = paillier.ciphertexts_from_array(
                keys.public,
                self._got_array(ctx, p, "enc_grad"),
                fingerprint=keys.public.fingerprint,
            )
            grad = fp.from_residue(paillier.decrypt_many(keys.private, enc_grad), keys.public.n)
            clock.since("decrypt", started, ops=len(enc_grad))
            platform_key = _public(
                ctx.store.get_json(f"hlr.platform_key.{p}"), limits, f"platform '{p}''s key"
            )
            enc_u = paillier.ciphertexts_from_array(platform_key, self._got_array(ctx, p, "enc_u"))
            if len(enc_u) != rows.size:
                raise ProtocolError(
                    f"platform '{p}' sent {len(enc_u)} partial logits for {rows.size} rows"
                )
            started = time.perf_counter()
            cross, total = _weighted_sums(
                platform_key, enc_u, coarse[rows], [t.woe for t in tables]
            )
            clock.since("cross_sums", started, ops=int(coarse[rows].size))
            started = time.perf_counter()
            masked, mask = _masked(platform_key, [*cross, total])
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
        _save_clock(ctx, clock)
        self._forget_inputs(ctx, state, ("enc_grad", "enc_u", "epoch", "batch"))
        ctx.store.put_json("hlr.masks", masks)
        state.update({"expect": "cross_sums", "pending": list(state["platforms"])})
        ctx.store.put_json("hlr.state", state)
        return out

    def _step(self, ctx: PartyContext, state: dict[str, Any]) -> list[Envelope]:
        params = HeteroLRParams(**state["params"])
        lr = params.lr()
        schedule = self._schedule(state)
        rows = schedule[state["batch"]]
        tables, coarse, _ = self._own(ctx)
        r = np.asarray([int(v) for v in ctx.store.get_json("hlr.r")], dtype=object)
        masks = ctx.store.get_json("hlr.masks")
        cross = [0] * (len(tables) + 1)
        votes = []
        for p in state["platforms"]:
            sums = [int(v) for v in json.loads(self._got(ctx, p, "sums"))]
            values = fp.unmask(sums, [int(m) for m in masks[p]])
            cross = [a + b for a, b in zip(cross, values, strict=True)]
            if state["batch"] == len(schedule) - 1:
                votes.append(bool(self._got(ctx, p, "converged")))
        grads = []
        for j, table in enumerate(tables):
            weights = fp.encode(np.asarray(table.woe, dtype=np.float64))
            own = sum(
                (int(w) * int(r[coarse[rows, j] == b].sum()) for b, w in enumerate(weights)), 0
            )
            grads.append((own + cross[j]) / float(1 << (2 * fp.SCALE_BITS)) / rows.size)
        grad_b = (int(r.sum()) + cross[-1]) / float(1 << fp.SCALE_BITS) / rows.size
        coef = np.asarray(state["coef"], dtype=np.float64)
        if state["batch"] == 0:
            state["epoch_start"] = [*coef.tolist(), float(state["intercept"])]
        rate = lr.rate(state["epoch"], float(state["curvature"]))
        coef = coef - rate * (np.asarray(grads) + lr.l2 * coef)
        intercept = float(state["intercept"]) - rate * grad_b
        state.update({"coef": coef.tolist(), "intercept": intercept})
        self._forget_inputs(ctx, state, ("sums", "converged", "epoch", "batch"))
        ctx.store.delete("hlr.masks")
        ctx.store.delete("hlr.r")
        if state["batch"] < len(schedule) - 1:
            state["batch"] += 1
            return self._send_batch(ctx, state)
        start = np.asarray(state["epoch_start"], dtype=np.float64)
        change = relative_change(coef - start[:-1], intercept - start[-1], coef, intercept)
        settled = change < lr.tol and all(votes)
        state["history"].append(
            {
                "epoch": state["epoch"],
                "change": change,
                "platforms_settled": all(votes),
                "seconds": time.time() - float(state["epoch_started"]),
                "batches": len(schedule),
            }
        )
        state["epoch"] += 1
        state["batch"] = 0
        if settled or state["epoch"] >= lr.max_epochs:
            state.update(
                {
                    "expect": "final",
                    "pending": list(state["platforms"]),
                    "converged": settled,
                }
            )
            ctx.store.put_json("hlr.state", state)
            return [
                Envelope(
                    PROTOCOL,
                    "finish",
                    ctx.name,
                    p,
                    {"model_id": f"{state['model_id']}-{p}"},
                )
                for p in state["platforms"]
            ]
        return self._send_batch(ctx, state)

    # -- the end ----------------------------------------------------------------------------

    def _finish(self, ctx: PartyContext, state: dict[str, Any]) -> Envelope:
        params = HeteroLRParams(**state["params"])
        rows = job_rows(ctx)
        train = ctx.store.get_array("hlr.train").astype(bool)
        table = ctx.table()
        if table.label is None:
            raise DataError(f"{table.path}: the bank's table has no labels")
        tables = [WoeTable.from_dict(t) for t in ctx.store.get_json("hlr.tables")]
        coefficients: dict[str, float] = {}
        own = [t for t in tables if t.party == ctx.name]
        for t, c in zip(own, state["coef"], strict=True):
            coefficients[f"{t.party}:{t.name}"] = float(c)
        platform_bins: dict[str, npt.NDArray[Any]] = {}
        refs: dict[str, dict[str, str]] = {}
        clocks: dict[str, Any] = {}
        n_test = int((~train).sum())
        for p in state["platforms"]:
            coef = json.loads(self._got(ctx, p, "coef"))
            theirs = [t for t in tables if t.party == p]
            bins = self._got_array(ctx, p, "test_bins")
            if len(coef) != len(theirs) or bins.shape != (n_test, len(theirs)):
                raise ProtocolError(f"platform '{p}' released a final model of the wrong shape")
            for j, (t, c) in enumerate(zip(theirs, coef, strict=True)):
                coefficients[f"{p}:{t.name}"] = float(c)
                platform_bins[f"{p}:{t.name}"] = bins[:, j]
            refs[p] = json.loads(self._got(ctx, p, "part"))
            clocks[p] = json.loads(self._got(ctx, p, "clock"))
        specs = tuple(BinSpec.from_dict(s) for s in ctx.store.get_json("hlr.specs"))
        scaling = ScorecardScaling(
            base_points=params.base_points, base_odds=params.base_odds, pdo=params.pdo
        )
        card = Scorecard.build(
            [_keyed_table(t) for t in tables],
            coefficients,
            float(state["intercept"]),
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
            intercept=float(state["intercept"]),
            scorecard=card.to_dict(),
            platform_parts=refs,
            params=state["params"],
        )
        frame = table.features.iloc[rows[~train]].reset_index(drop=True)
        report = None
        if n_test:
            y_test = table.label[rows][~train]
            report = evaluate_scores(y_test, part.predict_proba(frame, platform_bins)).to_dict()
        path = part.save(ctx.model_dir())
        clock = _load_clock(ctx)
        _cleanup(ctx)
        return Envelope(
            PROTOCOL,
            "done",
            ctx.name,
            COORDINATOR,
            {
                "report": dumps(report),
                "history": dumps(state["history"]),
                "converged": bool(state.get("converged", False)),
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


def _cleanup(ctx: PartyContext) -> None:
    for key in ("hlr.fine", "hlr.y", "hlr.r", "hlr.masks", "hlr.enc_r", "hlr.clock"):
        ctx.store.delete(key)
    KeyPair.forget(ctx.store, prefix=_KEY)


class HeteroLRParty(RoleDispatch):
    """Party side of the protocol; dispatches on the party's role."""

    name = PROTOCOL

    def __init__(self) -> None:
        super().__init__(_Bank(), _Platform())


# ------------------------------------------------------------------------------- coordinator


def start_envelope(
    bank: str, platforms: list[str], order: list[str], params: HeteroLRParams, job_id: str
) -> Envelope:
    """The coordinator's only message: ``setup`` to the bank."""
    settings = {
        "params": asdict(params),
        "platforms": platforms,
        "order": order,
        "model_id": f"hlr-{job_id}-{secrets.token_hex(4)}",
    }
    return Envelope(PROTOCOL, "setup", COORDINATOR, bank, {"settings": dumps(settings)})


@dataclass(frozen=True)
class HeteroLROutcome:
    """What the coordinator receives when training ends (aggregates and references)."""

    report: dict[str, Any] | None
    history: list[dict[str, Any]]
    converged: bool
    seed: int
    bank_part: dict[str, Any]
    platform_parts: dict[str, dict[str, str]]
    clock: dict[str, Any]


def conclude(replies: Sequence[Envelope]) -> HeteroLROutcome:
    """Read the bank's ``done`` report."""
    done = [e for e in replies if e.stage == "done"]
    if len(done) != 1:
        raise ProtocolError(f"expected one hetero_lr/done, got {len(done)}")
    env = done[0]
    return HeteroLROutcome(
        report=env.json("report"),
        history=env.json("history"),
        converged=bool(env.payload.get("converged")),
        seed=int(env.text("seed")),
        bank_part=env.json("bank_part"),
        platform_parts=env.json("platform_parts"),
        clock=env.json("clock"),
    )
