"""A small vertical model type defined outside the lab: a one-level stump on a platform column.

It exists to prove that a model type is defined in one place: this module is its settings, its
party protocol, its coordinator steps and its descriptor, and the lab trains it end to end
through Flower once ``LAB_MODEL_TYPES=tests.extra_model:STUMP`` names it (no file under
``lab/`` or ``federated/`` knows it).

Protocol ``stump`` (one bank, one platform):

``setup`` (coordinator -> bank)
    The bank encrypts its training labels (Paillier, its key, sized by its own node's limits)
    and sends them with the training-row mask (``init``).
``init`` (bank -> platform)
    The platform checks the bank's key against its own limits, bins each of its columns on the
    training rows and answers per (column, bin) the row count and the encrypted bad count.
``counts`` (platform -> bank)
    The bank decrypts, picks the column whose bins separate bad rates best (weighted Gini
    decrease), and asks for that column's bins of its test rows (``pick``).
``pick`` / ``bins``
    The platform answers the test rows' bins of the picked column; the bank predicts each row's
    training bad rate of its bin, evaluates and reports ``done``.

What each party learns: the bank, per-bin row and bad counts of every platform column
(anonymous bins) and the test rows' bins of one column; the platform, ciphertexts and which of
its columns was picked; the coordinator, ciphertexts, sizes and the evaluation report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, cast

import numpy as np
from pydantic import Field

from features.binning import fit_transform
from models.alignment import job_rows
from models.evaluation import TEST_MASK_KEY, evaluate_scores
from models.model_type import ModelSettings, ModelType, PrivacyDescription, StartRequest, Trained
from models.protocol import (
    COORDINATOR,
    Envelope,
    PartyContext,
    ProtocolError,
    RoleDispatch,
    StageMachine,
    dumps,
)
from secure_agg import paillier

PROTOCOL = "stump"


class StumpSettings(ModelSettings):
    """A one-level stump on the best-separating platform column."""

    type: Literal["stump"]
    n_bins: Annotated[int, Field(ge=2, le=64)] = 8


_BANK = StageMachine(
    PROTOCOL, {"setup": {StageMachine.START}, "counts": {"setup"}, "bins": {"counts"}}
)
_PLATFORM = StageMachine(PROTOCOL, {"init": {StageMachine.START}, "pick": {"init"}})


def _keys(ctx: PartyContext, bits: int) -> tuple[paillier.PublicKey, paillier.PrivateKey]:
    limits = ctx.guard.limits
    limits.check_key(bits, "the stump's Paillier key")
    return paillier.generate_keypair(bits, allow_insecure_test_keys=limits.allow_insecure_test_keys)


class _Bank:
    def handle(self, env: Envelope, ctx: PartyContext) -> list[Envelope]:
        _BANK.advance(ctx.store, env)
        if env.stage == "setup":
            return [self._setup(env, ctx)]
        if env.stage == "counts":
            return [self._pick(env, ctx)]
        return [self._done(env, ctx)]

    def _setup(self, env: Envelope, ctx: PartyContext) -> Envelope:
        settings = env.json("settings")
        [platform] = settings["platforms"]
        rows = job_rows(ctx)
        train = ~ctx.store.get_array(TEST_MASK_KEY).astype(bool)
        label = ctx.table().label
        if label is None:
            raise ProtocolError("the bank has no labels")
        y = label[rows][train].astype(np.int64)
        public, private = _keys(ctx, int(settings["key_bits"]))
        ctx.store.put_json("stump.key", public.to_bytes().hex())
        ctx.store.put_array("stump.secret", np.frombuffer(private.to_secret_bytes(), np.uint8))
        ctx.store.put_array("stump.y", y)
        enc = paillier.encrypt_many(public, [int(v) for v in y])
        return Envelope(
            PROTOCOL,
            "init",
            ctx.name,
            platform,
            {
                "n_bins": int(settings["n_bins"]),
                "public_key": public.to_bytes(),
                "train_mask": train,
                "enc_y": paillier.ciphertexts_to_array(public, enc),
            },
        )

    def _pick(self, env: Envelope, ctx: PartyContext) -> Envelope:
        limits = ctx.guard.limits
        public = paillier.PublicKey.from_bytes(
            bytes.fromhex(ctx.store.get_json("stump.key")),
            allow_insecure_test_keys=limits.allow_insecure_test_keys,
        )
        private = paillier.PrivateKey.from_secret_bytes(
            public, ctx.store.get_array("stump.secret").astype(np.uint8).tobytes()
        )
        totals = env.array("totals").astype(np.int64)  # (columns, bins)
        bad = np.asarray(
            paillier.decrypt_many(
                private, paillier.ciphertexts_from_array(public, env.array("enc_bad"))
            ),
            dtype=np.float64,
        ).reshape(totals.shape)
        rates = (bad + 0.5) / (totals + 1.0)
        overall = bad.sum(axis=1, keepdims=True) / np.maximum(totals.sum(axis=1, keepdims=True), 1)
        gain = (totals * (overall * (1 - overall) - rates * (1 - rates))).sum(axis=1)
        best = int(np.argmax(gain))
        ctx.store.put_array("stump.rates", rates[best])
        return env.reply("pick", {"column": best})

    def _done(self, env: Envelope, ctx: PartyContext) -> Envelope:
        rows = job_rows(ctx)
        test = ctx.store.get_array(TEST_MASK_KEY).astype(bool)
        label = ctx.table().label
        if label is None:
            raise ProtocolError("the bank has no labels")
        bins = env.array("bins").astype(np.int64)
        if bins.shape != (int(test.sum()),):
            raise ProtocolError("the platform answered bins of the wrong shape")
        scores = ctx.store.get_array("stump.rates")[bins]
        report = evaluate_scores(label[rows][test], scores).to_dict()
        for key in ("stump.secret", "stump.key", "stump.y", "stump.rates"):
            ctx.store.delete(key)
        return Envelope(PROTOCOL, "done", ctx.name, COORDINATOR, {"report": dumps(report)})


class _Platform:
    def handle(self, env: Envelope, ctx: PartyContext) -> list[Envelope]:
        _PLATFORM.advance(ctx.store, env)
        if env.stage == "init":
            return [self._counts(env, ctx)]
        return [self._bins(env, ctx)]

    def _counts(self, env: Envelope, ctx: PartyContext) -> Envelope:
        limits = ctx.guard.limits
        raw = env.payload.get("public_key")
        if not isinstance(raw, bytes):
            raise ProtocolError("stump/init lacks the bank's public key")
        public = paillier.PublicKey.from_bytes(
            raw, allow_insecure_test_keys=limits.allow_insecure_test_keys
        )
        limits.check_key(public.key_bits, "the bank's Paillier key")
        rows = job_rows(ctx)
        train = env.array("train_mask").astype(bool)
        if train.size != rows.size:
            raise ProtocolError("the training mask does not cover the aligned rows")
        table = ctx.table()
        n_bins = env.integer("n_bins")
        binned = fit_transform(
            table.features.iloc[rows].reset_index(drop=True), table.feature_kinds, n_bins
        )
        width = int(binned.bins.max()) + 1
        enc_y = paillier.ciphertexts_from_array(public, env.array("enc_y"))
        if len(enc_y) != int(train.sum()):
            raise ProtocolError("one encrypted label per training row is expected")
        sums = paillier.sum_groups_many(public, enc_y, binned.bins[train], width)
        totals = np.stack(
            [np.bincount(binned.bins[train][:, j], minlength=width) for j in range(len(sums))]
        )
        enc_bad = [c for column in sums for c in column[:width]]
        ctx.store.put_array("stump.bins", binned.bins[~train].astype(np.int64))
        return env.reply(
            "counts",
            {
                "totals": totals.astype(np.int64),
                "enc_bad": paillier.ciphertexts_to_array(
                    public, paillier.obfuscate_many(public, enc_bad)
                ),
            },
        )

    def _bins(self, env: Envelope, ctx: PartyContext) -> Envelope:
        column = env.integer("column")
        bins = ctx.store.get_array("stump.bins")
        if not 0 <= column < bins.shape[1]:
            raise ProtocolError(f"stump/pick names column {column}, which this party lacks")
        ctx.store.delete("stump.bins")
        return env.reply("bins", {"bins": bins[:, column]})


class StumpParty(RoleDispatch):
    """Party side of the ``stump`` protocol."""

    name = PROTOCOL

    def __init__(self) -> None:
        super().__init__(_Bank(), _Platform())


def _start(request: StartRequest) -> Envelope:
    settings = cast(StumpSettings, request.settings)
    payload = {
        "platforms": request.platforms,
        "n_bins": settings.n_bins,
        "key_bits": int(request.crypto.get("key_bits", paillier.DEFAULT_KEY_BITS)),
    }
    return Envelope(PROTOCOL, "setup", COORDINATOR, request.bank, {"settings": dumps(payload)})


def _conclude(replies: Sequence[Envelope]) -> Trained:
    [done] = [e for e in replies if e.stage == "done"]
    report: dict[str, Any] = done.json("report")
    return Trained(report=report, details={})


STUMP = ModelType(
    name="stump",
    kind="vertical",
    settings=StumpSettings,
    privacy=PrivacyDescription(
        bank_learns=(
            "per-bin row and bad counts of every platform column, and the test rows' bins of "
            "one column"
        ),
        platform_learns="ciphertexts, and which of its columns was picked",
        coordinator_learns="ciphertexts, sizes, the evaluation report",
        without_dp="exact per-bin label counts of platform columns",
    ),
    party=StumpParty,
    start=_start,
    conclude=_conclude,
    releases_statistics=lambda settings: True,
)
