"""The ``secureboost`` protocol: vertical gradient boosting over Paillier-encrypted gradients.

The bank (active party: labels, its own features) and one or more platforms (passive parties:
features) grow the trees of :mod:`models.secureboost.core` together. Rows are the aligned rows of
the job (after PSI) in the agreed order; the bank's test rows never take part in training.

Stages
------
``setup`` (coordinator -> bank)
    The bank bins its columns (on its training rows), generates a Paillier key pair (2048 bits
    by default) and sends each platform ``init``: the public key and the training-row mask.
``init`` (bank -> platform)
    The platform bins its columns on the training rows and answers ``ready`` with, per feature,
    its name, kind and number of bins (never edges or categories).
``tree`` (bank -> platform)
    Per tree: the encrypted, packed (g, h, 1) of every training row. The platform sums them
    per (node, feature, bin) under encryption, packs several sums per ciphertext and answers
    ``hist``.
``level`` (bank -> platform)
    Per level: the splits the bank chose on this platform's features (as anonymous
    ``(feature index, bins going left, missing side)``, referenced by a split id), the node of
    every training row the bank already knows, and which nodes to compute next. The platform
    applies its splits, answers with their left/right directions and, in the same message,
    the next level's histograms (``hist``), or only directions at the last level (``dirs``).
    Only the smaller child of each split is computed: the bank derives its sibling by
    subtracting it from the parent (histogram subtraction, in the clear, at the bank).
``predict`` (bank -> platform)
    After the last tree: the platform saves its part in its own store and answers
    ``decisions``: left/right of each of its splits for the bank's test rows.
``done`` (bank -> coordinator)
    Evaluation report, per-tree metrics, timings, operation counts, model references.

One exchange per tree level, not per node. With several platforms, a level whose splits
belong to a platform other than the receiver needs one more exchange (``assign``).

What each party learns
----------------------
================  ==============================================================================
bank              per-(node, bin) sums of g and h and the row count of every platform feature
                  (so: the instance partition each platform split induces, and per-bin
                  gradient statistics of anonymous bins); the platform's feature names, kinds
                  and bin counts; left/right decisions of platform splits for its test rows.
                  Never a platform value, edge or category. With ``dp_epsilon`` the bin sums
                  carry calibrated Gaussian noise.
platform          the training-row mask, which training rows share a node at every level
                  (the instance space, as in every SecureBoost), ciphertexts it cannot read, the
                  splits chosen on its own features. Never a label, gradient or leaf weight.
coordinator       ciphertexts, bit vectors of directions and node ids, sizes, timings.
================  ==============================================================================

These are the known leakages of SecureBoost (Cheng et al. 2021, "SecureBoost: a lossless
federated learning framework"): the label holder sees per-bin statistics and partitions.
Mitigations: ``bank_only_trees`` (the first trees split on bank features only, where the
partition would reveal most about labels) and ``dp_epsilon`` (noise on the platform's
histograms, accounted as Gaussian-mechanism privacy events).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from features.binning import BinKind, BinSpec, fit_bins, transform
from features.errors import DataError
from models.alignment import job_rows
from models.evaluation import TEST_MASK_KEY, evaluate_scores
from models.guard import PolicyRefusalError, ReleaseGrant
from models.privacy import PrivacyEvent
from models.protocol import (
    COORDINATOR,
    Envelope,
    PartyContext,
    PayloadValue,
    PhaseClock,
    ProtocolError,
    RoleDispatch,
    StageMachine,
    dumps,
)
from models.secureboost import crypto
from models.secureboost.core import (
    IntArray,
    Split,
    TreeParams,
    base_score,
    goes_left,
    gradients,
    grow_level,
    histogram,
    leaf_weight,
    sigmoid,
)
from models.secureboost.parts import BankNode, BankPart, PlatformPart, RuleSplit
from secure_agg import paillier

PROTOCOL = "secureboost"

_BANK = StageMachine(
    PROTOCOL,
    {
        "setup": {StageMachine.START},
        "ready": {"setup", "ready"},
        "hist": {"ready", "hist", "dirs"},
        "dirs": {"hist", "dirs"},
        "decisions": {"ready", "hist", "dirs", "decisions"},
    },
)
_PLATFORM = StageMachine(
    PROTOCOL,
    {
        "init": {StageMachine.START},
        "tree": {"init", "level"},
        "level": {"tree", "level", "assign"},
        "assign": {"level"},
        "predict": {"init", "level"},
    },
)

#: Node id marking rows whose next node the receiving platform decides itself.
YOURS = -2
#: Node id marking rows whose next node another platform decides (an ``assign`` follows).
PENDING = -3


@dataclass(frozen=True)
class SecureBoostParams:
    """Settings of a SecureBoost job (validated by the experiment config)."""

    n_estimators: int = 30
    max_depth: int = 3
    max_bin: int = 32
    learning_rate: float = 0.3
    reg_lambda: float = 1.0
    min_child_weight: float = 1.0
    min_child_samples: int = 20
    min_split_gain: float = 0.0
    bank_only_trees: int = 0
    key_bits: int = 2048
    insecure_test_keys: bool = False
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5

    @property
    def tree(self) -> TreeParams:
        """The core's growth settings."""
        return TreeParams(
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            reg_lambda=self.reg_lambda,
            min_child_weight=self.min_child_weight,
            min_child_samples=self.min_child_samples,
            min_split_gain=self.min_split_gain,
        )

    @classmethod
    def from_spec(cls, model: dict[str, Any], crypto_cfg: dict[str, Any]) -> SecureBoostParams:
        """Build from a job spec's ``model`` and ``crypto`` sections."""
        crypto_keys = ("key_bits", "insecure_test_keys")
        fields = {
            k: v for k, v in model.items() if k in cls.__dataclass_fields__ and k not in crypto_keys
        }
        return cls(
            **fields,
            key_bits=int(crypto_cfg.get("key_bits", 2048)),
            insecure_test_keys=bool(crypto_cfg.get("insecure_test_keys", False)),
        )


_CLOCK = "sb.clock"


def _load_clock(ctx: PartyContext) -> PhaseClock:
    return PhaseClock.load(ctx.store, _CLOCK)


def _save_clock(ctx: PartyContext, clock: PhaseClock) -> None:
    clock.save(ctx.store, _CLOCK)


def _kinds(ctx: PartyContext) -> dict[str, BinKind]:
    return {name: kind for name, kind in ctx.table().feature_kinds.items()}


def _bin_features(
    ctx: PartyContext, rows: npt.NDArray[np.intp], train: npt.NDArray[np.bool_], max_bin: int
) -> tuple[BinSpec, ...]:
    """Fit bins on this party's training rows (bin edges stay with the party)."""
    frame = ctx.table().features.iloc[rows[train]].reset_index(drop=True)
    kinds = _kinds(ctx)
    return tuple(fit_bins(frame[c], kinds[c], max_bin) for c in frame.columns)


_BIN_CACHE: OrderedDict[str, npt.NDArray[np.int32]] = OrderedDict()
_BIN_CACHE_SIZE = 4  # a process may act for several parties (embedded runtime, estimator)


def _training_bins(ctx: PartyContext) -> npt.NDArray[np.int32]:
    """This party's binned training rows, recomputed from its table and cached per process.

    The matrix (rows x features) can be hundreds of megabytes; keeping it in the party's
    message-to-message state would copy it on every hop. It is a pure function of the table,
    the training rows and the bin specs, all of which the party has at hand.
    """
    specs_raw = ctx.store.get_json("sb.specs")
    rows = job_rows(ctx)
    train = ctx.store.get_array("sb.train").astype(bool)
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
        frame = table.features.iloc[rows[train]].reset_index(drop=True)
        cached = transform(frame, specs).bins
        _BIN_CACHE[key] = cached
        while len(_BIN_CACHE) > _BIN_CACHE_SIZE:
            _BIN_CACHE.popitem(last=False)
    else:
        _BIN_CACHE.move_to_end(key)
    return cached


# --------------------------------------------------------------------------------- platform


class _Platform:
    """Platform side."""

    def handle(self, env: Envelope, ctx: PartyContext) -> list[Envelope]:
        _PLATFORM.advance(ctx.store, env)
        state = ctx.store.get_json("sb.state") or {}
        if env.stage != "init" and env.sender != state.get("bank"):
            raise ProtocolError(f"secureboost/{env.stage} from '{env.sender}', not this job's bank")
        if env.stage == "init":
            return [self._init(env, ctx)]
        if env.stage == "tree":
            return [self._tree(env, ctx, state)]
        if env.stage in ("level", "assign"):
            return [self._level(env, ctx, state)]
        return [self._predict(env, ctx, state)]

    def _init(self, env: Envelope, ctx: PartyContext) -> Envelope:
        settings = env.json("settings")
        rows = job_rows(ctx)
        train = env.array("train_mask").astype(bool)
        if train.size != rows.size:
            raise ProtocolError(
                f"train mask covers {train.size} rows but {ctx.name} aligned {rows.size}"
            )
        public_key = env.payload.get("public_key")
        if not isinstance(public_key, bytes):
            raise ProtocolError("secureboost/init lacks the bank's public key")
        limits = ctx.guard.limits
        bank_key = paillier.PublicKey.from_bytes(
            public_key, allow_insecure=limits.allow_insecure_test_keys
        )
        limits.check_key(bank_key.key_bits, "the bank's Paillier key")
        specs = _bin_features(ctx, rows, train, int(settings["max_bin"]))
        # The noise comes from this node's own DP grant (reserved in its own ledger), never
        # from the bank's message.
        noise = _own_noise(ctx, len(specs))
        ctx.store.put_array("sb.train", train)
        ctx.store.put_json("sb.specs", [s.to_dict() for s in specs])
        ctx.store.put_json(
            "sb.state",
            {
                "bank": env.sender,
                "public_key": public_key.hex(),
                "settings": {"max_bin": int(settings["max_bin"])},
                "noise": noise,
                "splits": {},
                "tree": -1,
            },
        )
        features = [{"name": s.name, "kind": s.kind, "n_bins": s.n_bins} for s in specs]
        return env.reply("ready", {"features": dumps(features), "noise": dumps(noise)})

    def _cipher(self, ctx: PartyContext, state: dict[str, Any]) -> crypto.PlatformCipher:
        layout = state.get("layout")
        if layout is None:
            raise ProtocolError("no row layout yet: secureboost/tree must come first")
        noise = crypto.NoiseSpec(**layout["noise"]) if layout["noise"] else None
        own = state.get("noise")
        if own is not None and (
            noise is None
            or noise.sigma_gh < float(own["sigma_gh"])
            or noise.sigma_count < float(own["sigma_count"])
        ):
            raise PolicyRefusalError(
                "the bank's row layout carries less noise than this node's DP grant requires "
                f"({own}); the platform adds at least its own noise to every release"
            )
        limits = ctx.guard.limits
        return crypto.PlatformCipher.from_public_bytes(
            bytes.fromhex(state["public_key"]),
            key_bits=limits.min_key_bits,
            max_rows=int(layout["max_rows"]),
            noise=noise,
            insecure=limits.allow_insecure_test_keys,
        )

    def _tree(self, env: Envelope, ctx: PartyContext, state: dict[str, Any]) -> Envelope:
        state = {**state, "layout": env.json("layout")}
        cipher = self._cipher(ctx, state)
        if env.text("key") != cipher.fingerprint:
            raise ProtocolError("gradients were encrypted under a different key than announced")
        gh = env.array("gh")
        bins = _training_bins(ctx)
        if gh.shape[0] != bins.shape[0]:
            raise ProtocolError(f"{gh.shape[0]} encrypted rows for {bins.shape[0]} training rows")
        tree = env.integer("tree")
        state = {**state, "tree": tree, "level": 0}
        position = np.zeros(bins.shape[0], dtype=np.int64)
        ctx.store.put_array("sb.gh", gh)
        ctx.store.put_array("sb.position", position)
        ctx.store.put_json("sb.state", state)
        clock = _load_clock(ctx)
        payload = self._histograms(ctx, cipher, bins, position, [0], state, clock)
        _save_clock(ctx, clock)
        return env.reply("hist", {"tree": tree, "level": 0, **payload})

    def _level(self, env: Envelope, ctx: PartyContext, state: dict[str, Any]) -> Envelope:
        tree, level = env.integer("tree"), env.integer("level")
        if tree != state["tree"]:
            raise ProtocolError(
                f"secureboost/{env.stage} for tree {tree}, expected {state['tree']}"
            )
        bins = _training_bins(ctx)
        position = ctx.store.get_array("sb.position")
        incoming = env.array("position").astype(np.int64)
        if incoming.shape != position.shape:
            raise ProtocolError("position vector has the wrong length")
        clock = _load_clock(ctx)
        directions = np.full(position.shape, -1, dtype=np.int8)
        if env.stage == "level":
            splits: list[dict[str, Any]] = env.json("splits")
            started = time.perf_counter()
            table = dict(state["splits"])
            for item in splits:
                node = int(item["node"])
                rows = np.flatnonzero((position == node) & (incoming == YOURS))
                split = Split(
                    owner=0,
                    feature=int(item["feature"]),
                    kind=ctx.store.get_json("sb.specs")[int(item["feature"])]["kind"],
                    left_bins=tuple(int(b) for b in item["left_bins"]),
                    missing_left=bool(item["missing_left"]),
                    gain=0.0,
                    left_count=0,
                    right_count=0,
                )
                spec = BinSpec.from_dict(ctx.store.get_json("sb.specs")[split.feature])
                left = goes_left(split, bins[rows, split.feature], spec.missing_bin)
                directions[rows] = left.astype(np.int8)
                incoming[rows] = np.where(left, 2 * node + 1, 2 * node + 2)
                table[str(item["split_id"])] = {
                    "feature": spec.name,
                    "left_bins": list(split.left_bins),
                    "missing_left": split.missing_left,
                }
            state = {**state, "splits": table}
            clock.add("apply_splits", time.perf_counter() - started)
        compute: list[int] = env.json("compute")
        payload: dict[str, PayloadValue] = {"tree": tree, "level": level + 1}
        if env.stage == "level":
            payload["directions"] = directions
        if (incoming == YOURS).any():
            raise ProtocolError("rows left undecided: a split was not sent to its owner")
        known = not (incoming == PENDING).any()
        if known:
            ctx.store.put_array("sb.position", incoming)
        else:
            ctx.store.put_array("sb.position", np.where(incoming == PENDING, position, incoming))
        state = {**state, "level": level + 1}
        ctx.store.put_json("sb.state", state)
        stage = "dirs"
        if compute and known:
            payload.update(
                self._histograms(
                    ctx, self._cipher(ctx, state), bins, incoming, compute, state, clock
                )
            )
            stage = "hist"
        elif compute:
            stage = "dirs"  # positions of other platforms' splits arrive with ``assign``
        _save_clock(ctx, clock)
        return env.reply(stage, payload)

    def _histograms(
        self,
        ctx: PartyContext,
        cipher: crypto.PlatformCipher,
        bins: npt.NDArray[np.int32],
        position: IntArray,
        nodes: list[int],
        state: dict[str, Any],
        clock: PhaseClock,
    ) -> dict[str, PayloadValue]:
        if state.get("noise") is not None:
            # Counted before anything is computed: a release beyond the grant never happens.
            ctx.guard.record_release(DP_MECHANISM)
        gh = ctx.store.get_array("sb.gh")
        specs = ctx.store.get_json("sb.specs")
        widths = [int(s_n) + 1 for s_n in (BinSpec.from_dict(s).n_bins for s in specs)]
        width = max(widths) if widths else 1
        slot = {node: i for i, node in enumerate(nodes)}
        node_slot = np.array([slot.get(int(p), -1) for p in position], dtype=np.int64)
        groups = np.where(node_slot[:, None] >= 0, node_slot[:, None] * width + bins, -1)
        started = time.perf_counter()
        sums = cipher.group_sums(gh, groups, len(nodes) * width)
        adds = int((node_slot >= 0).sum()) * bins.shape[1]
        clock.add("histogram", time.perf_counter() - started, adds)
        ordered = [
            sums[f][i * width + b]
            for i in range(len(nodes))
            for f in range(len(widths))
            for b in range(widths[f])
        ]
        started = time.perf_counter()
        if cipher.layout.noise is not None:
            ordered = cipher.add_noise(ordered)
        packed = cipher.pack(ordered)
        clock.add("pack", time.perf_counter() - started, len(ordered))
        return {
            "nodes": dumps(nodes),
            "n_sums": len(ordered),
            "sums": packed,
            "key": cipher.fingerprint,
        }

    def _predict(self, env: Envelope, ctx: PartyContext, state: dict[str, Any]) -> Envelope:
        rows = job_rows(ctx)
        train = ctx.store.get_array("sb.train").astype(bool)
        frame = ctx.table().features.iloc[rows[~train]].reset_index(drop=True)
        specs = {s["name"]: BinSpec.from_dict(s) for s in ctx.store.get_json("sb.specs")}
        splits = {k: RuleSplit.from_dict(v) for k, v in state["splits"].items()}
        used = {rule.feature for rule in splits.values()}
        part = PlatformPart(
            party=ctx.name,
            model_id=env.text("model_id"),
            splits=splits,
            bins={name: spec for name, spec in specs.items() if name in used},
            bank=state["bank"],  # served to this bank only
        )
        ids = sorted(splits)
        bits = part.decisions(frame, ids)
        part.save(ctx.model_dir())
        clock = _load_clock(ctx)
        _cleanup(ctx)
        return env.reply(
            "decisions",
            {
                "split_ids": dumps(ids),
                "bits": np.packbits(bits, axis=0) if ids else np.zeros((0, 0), np.uint8),
                "n_rows": len(frame),
                "model_id": part.model_id,
                "content_hash": part.content_hash,
                "clock": dumps({"seconds": clock.seconds, "ops": clock.ops}),
            },
        )


# ------------------------------------------------------------------------------------- bank


class _Bank:
    """Bank side: owns the labels, the key pair, the tree structure and every leaf weight."""

    def handle(self, env: Envelope, ctx: PartyContext) -> list[Envelope]:
        _BANK.advance(ctx.store, env)
        if env.stage == "setup":
            return self._setup(env, ctx)
        state = ctx.store.get_json("sb.state")
        if env.sender not in state["platforms"]:
            raise ProtocolError(f"secureboost/{env.stage} from '{env.sender}', not a platform here")
        if env.stage not in state["expect"]:
            raise ProtocolError(
                f"secureboost/{env.stage} from '{env.sender}' while waiting for {state['expect']}"
            )
        if env.sender not in state["pending"]:
            raise ProtocolError(f"secureboost/{env.stage} from '{env.sender}' arrived twice")
        if env.stage == "ready":
            state["platforms"][env.sender] = {
                "features": env.json("features"),
                "noise": env.json("noise"),
            }
        elif env.stage in ("hist", "dirs"):
            self._collect(env, ctx, state)
        else:
            self._collect_decisions(env, ctx, state)
        state["pending"] = [p for p in state["pending"] if p != env.sender]
        ctx.store.put_json("sb.state", state)
        if state["pending"]:
            return []
        return self._advance(ctx, state)

    # -- setup ----------------------------------------------------------------------------

    def _setup(self, env: Envelope, ctx: PartyContext) -> list[Envelope]:
        settings = env.json("settings")
        params = SecureBoostParams(**settings["params"])
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
        specs = _bin_features(ctx, rows, train, params.max_bin)
        limits = ctx.guard.limits
        key_bits = limits.key_bits_for(params.key_bits)
        limits.check_key(key_bits, "the bank's own Paillier key")
        started = time.perf_counter()
        keys = crypto.KeyPair.generate(key_bits, insecure=limits.allow_insecure_test_keys)
        clock = PhaseClock()
        clock.add("keygen", time.perf_counter() - started)
        _save_clock(ctx, clock)
        ctx.store.put_array("sb.y", y)
        ctx.store.put_array("sb.train", train)
        ctx.store.put_array("sb.raw", np.full(y.size, base_score(y)))
        ctx.store.put_json("sb.specs", [s.to_dict() for s in specs])
        ctx.store.put_json("sb.trees", [])
        ctx.store.put_json("sb.metrics", [])
        state = {
            "params": asdict(params),
            "platforms": {p: {} for p in platforms},
            "order": settings["order"],
            "expect": ["ready"],
            "pending": list(platforms),
            "tree": -1,
            "model_id": settings["model_id"],
            "max_rows": int(train.sum()),
        }
        ctx.store.put_json("sb.state", state)
        keys.save(ctx.store)
        init_settings = {"max_bin": params.max_bin}
        return [
            Envelope(
                PROTOCOL,
                "init",
                ctx.name,
                p,
                {
                    "settings": dumps(init_settings),
                    "public_key": keys.public.to_bytes(),
                    "train_mask": train,
                },
            )
            for p in platforms
        ]

    # -- receiving ------------------------------------------------------------------------

    def _collect(self, env: Envelope, ctx: PartyContext, state: dict[str, Any]) -> None:
        if env.integer("tree") != state["tree"] or env.integer("level") != state["level"]:
            raise ProtocolError(
                f"secureboost/{env.stage} for tree {env.integer('tree')} level "
                f"{env.integer('level')}, expected tree {state['tree']} level {state['level']}"
            )
        clock = _load_clock(ctx)
        if "directions" in env.payload:
            directions = env.array("directions").astype(np.int8)
            position = ctx.store.get_array("sb.position")
            mine = state["awaiting_dirs"].get(env.sender, [])
            for node in mine:
                rows = np.flatnonzero(position == node)
                if (directions[rows] < 0).any():
                    raise ProtocolError(f"'{env.sender}' left rows of node {node} undecided")
                position[rows] = np.where(directions[rows] == 1, 2 * node + 1, 2 * node + 2)
            ctx.store.put_array("sb.position", position)
        if "sums" in env.payload:
            cipher = _bank_cipher(ctx, state)
            if env.text("key") != cipher.fingerprint:
                raise ProtocolError(f"'{env.sender}' sent sums under a different key")
            nodes: list[int] = env.json("nodes")
            started = time.perf_counter()
            sums = cipher.decrypt_sums(env.array("sums"), env.integer("n_sums"))
            clock.add("decrypt", time.perf_counter() - started, cipher.last_decryptions)
            widths = [f["n_bins"] + 1 for f in state["platforms"][env.sender]["features"]]
            offset = 0
            for node in nodes:
                per_feature = []
                for w in widths:
                    per_feature.append(sums[offset : offset + w])
                    offset += w
                _put_hist(ctx, node, env.sender, per_feature)
        _save_clock(ctx, clock)

    def _collect_decisions(self, env: Envelope, ctx: PartyContext, state: dict[str, Any]) -> None:
        ids: list[str] = env.json("split_ids")
        n_rows = env.integer("n_rows")
        bits = env.array("bits")
        decisions = (
            np.unpackbits(bits, axis=0, count=n_rows).astype(bool)
            if ids
            else np.zeros((n_rows, 0), bool)
        )
        ctx.store.put_array(f"sb.decisions.{env.sender}", decisions)
        refs = state.setdefault("refs", {})
        refs[env.sender] = {
            "model_id": env.text("model_id"),
            "content_hash": env.text("content_hash"),
            "split_ids": ids,
            "clock": env.json("clock"),
        }

    # -- driving --------------------------------------------------------------------------

    def _advance(self, ctx: PartyContext, state: dict[str, Any]) -> list[Envelope]:
        """Everything the bank can do once every awaited platform has answered."""
        params = SecureBoostParams(**state["params"])
        if "decisions" in state["expect"]:
            return [self._finish(ctx, state, params)]
        if "ready" in state["expect"]:
            return self._next_tree(ctx, state, params)
        if state.get("needs_assign"):
            return self._send_assign(ctx, state)
        return self._after_level(ctx, state, params)

    def _next_tree(
        self, ctx: PartyContext, state: dict[str, Any], params: SecureBoostParams
    ) -> list[Envelope]:
        while True:
            state["tree"] += 1
            if state["tree"] >= params.n_estimators:
                return self._request_decisions(ctx, state)
            y = ctx.store.get_array("sb.y")
            raw = ctx.store.get_array("sb.raw")
            g, h = gradients(y, raw)
            ctx.store.put_array("sb.g", g)
            ctx.store.put_array("sb.h", h)
            ctx.store.put_array("sb.position", np.zeros(y.size, dtype=np.int64))
            ctx.store.put_json("sb.tree_nodes", {})
            state["level"] = 0
            state["tree_started"] = time.perf_counter()
            if state["tree"] < params.bank_only_trees:
                # Leakage control: this tree splits on bank features only; no message at all.
                self._grow_locally(ctx, state, params)
                continue
            clock = _load_clock(ctx)
            if "layout" not in state:
                state["layout"] = _layout(state)
            cipher = _bank_cipher(ctx, state)
            started = time.perf_counter()
            gh = cipher.encrypt_gradients(g, h)
            clock.add("encrypt", time.perf_counter() - started, int(g.size))
            _save_clock(ctx, clock)
            state["expect"] = ["hist"]
            state["pending"] = list(state["platforms"])
            state["awaiting_dirs"] = {}
            state["computed"] = [0]
            ctx.store.put_json("sb.state", state)
            return [
                Envelope(
                    PROTOCOL,
                    "tree",
                    ctx.name,
                    p,
                    {
                        "tree": state["tree"],
                        "gh": gh,
                        "key": cipher.fingerprint,
                        "layout": dumps(state["layout"]),
                    },
                )
                for p in state["platforms"]
            ]

    def _grow_locally(
        self, ctx: PartyContext, state: dict[str, Any], params: SecureBoostParams
    ) -> None:
        level = [0]
        for depth in range(params.max_depth + 1):
            state["level"] = depth
            splits = (
                self._choose(ctx, state, params, level, bank_only=True)
                if depth < params.max_depth
                else {}
            )
            next_level: list[int] = []
            position = ctx.store.get_array("sb.position")
            for node in level:
                split = splits.get(node)
                if split is None:
                    continue
                self._apply_bank_split(ctx, state, node, split, position)
                next_level += [2 * node + 1, 2 * node + 2]
            ctx.store.put_array("sb.position", position)
            level = next_level
            if not level:
                break
        self._finish_tree(ctx, state, params)

    def _after_level(
        self, ctx: PartyContext, state: dict[str, Any], params: SecureBoostParams
    ) -> list[Envelope]:
        level_nodes = state["level_nodes"] if state["level"] > 0 else [0]
        depth = state["level"]
        if depth >= params.max_depth or not level_nodes:
            self._finish_tree(ctx, state, params)
            ctx.store.put_json("sb.state", state)
            return self._next_tree(ctx, state, params)
        splits = self._choose(ctx, state, params, level_nodes, bank_only=False)
        position = ctx.store.get_array("sb.position")
        order: list[str] = state["order"]
        bank_index = order.index(ctx.name)
        per_platform: dict[str, list[dict[str, Any]]] = {p: [] for p in state["platforms"]}
        next_level: list[int] = []
        new_position = position.copy()
        owner_of_node: dict[int, str] = {}
        for node in level_nodes:
            split = splits.get(node)
            if split is None:
                continue
            next_level += [2 * node + 1, 2 * node + 2]
            owner = order[split.owner]
            owner_of_node[node] = owner
            if split.owner == bank_index:
                self._apply_bank_split(ctx, state, node, split, new_position)
            else:
                split_id = f"t{state['tree']}n{node}"
                per_platform[owner].append(
                    {
                        "node": node,
                        "split_id": split_id,
                        "feature": split.feature,
                        "left_bins": list(split.left_bins),
                        "missing_left": split.missing_left,
                    }
                )
                self._record_node(ctx, node, {"owner": owner, "split_id": split_id})
        last = depth + 1 >= params.max_depth
        compute = [] if last else _smaller_children(ctx, splits, next_level)
        state["level"] = depth + 1
        state["level_nodes"] = next_level
        state["computed"] = compute
        state["awaiting_dirs"] = {
            p: [s["node"] for s in items] for p, items in per_platform.items()
        }
        needs_dirs = [p for p, items in per_platform.items() if items]
        multi = len(needs_dirs) > 1 or (needs_dirs and len(state["platforms"]) > 1)
        if not next_level or (last and not needs_dirs):
            ctx.store.put_array("sb.position", new_position)
            self._finish_tree(ctx, state, params)
            ctx.store.put_json("sb.state", state)
            return self._next_tree(ctx, state, params)
        ctx.store.put_array("sb.position", new_position)
        state["needs_assign"] = bool(multi and compute)
        state["expect"] = ["hist", "dirs"]
        state["pending"] = list(state["platforms"]) if (compute or needs_dirs) else []
        if not state["pending"]:
            ctx.store.put_json("sb.state", state)
            return self._after_level(ctx, state, params)
        envelopes = []
        for party in state["pending"]:
            outgoing = new_position.copy()
            for node, owner in owner_of_node.items():
                rows = position == node
                if owner == party:
                    outgoing[rows] = YOURS
                elif owner != ctx.name:
                    outgoing[rows] = PENDING
            envelopes.append(
                Envelope(
                    PROTOCOL,
                    "level",
                    ctx.name,
                    party,
                    {
                        "tree": state["tree"],
                        "level": depth,
                        "splits": dumps(per_platform[party]),
                        "position": outgoing.astype(np.int32),
                        "compute": dumps([] if state["needs_assign"] else compute),
                    },
                )
            )
        ctx.store.put_json("sb.state", state)
        return envelopes

    def _send_assign(self, ctx: PartyContext, state: dict[str, Any]) -> list[Envelope]:
        state["needs_assign"] = False
        state["expect"] = ["hist"]
        state["pending"] = list(state["platforms"])
        state["level"] -= 1  # the assign answers for the same level the level message named
        position = ctx.store.get_array("sb.position")
        ctx.store.put_json("sb.state", state)
        envelopes = [
            Envelope(
                PROTOCOL,
                "assign",
                ctx.name,
                p,
                {
                    "tree": state["tree"],
                    "level": state["level"],
                    "position": position.astype(np.int32),
                    "compute": dumps(state["computed"]),
                },
            )
            for p in state["platforms"]
        ]
        state["level"] += 1
        ctx.store.put_json("sb.state", state)
        return envelopes

    # -- splits and trees -----------------------------------------------------------------

    def _choose(
        self,
        ctx: PartyContext,
        state: dict[str, Any],
        params: SecureBoostParams,
        nodes: Sequence[int],
        *,
        bank_only: bool,
    ) -> dict[int, Split | None]:
        started = time.perf_counter()
        order: list[str] = state["order"]
        bank_index = order.index(ctx.name)
        g, h = ctx.store.get_array("sb.g"), ctx.store.get_array("sb.h")
        position = ctx.store.get_array("sb.position")
        bins = _training_bins(ctx)
        specs = [BinSpec.from_dict(s) for s in ctx.store.get_json("sb.specs")]
        histograms: dict[int, list[list[IntArray]]] = {}
        totals: dict[int, tuple[int, int, int]] = {}
        kinds: list[list[BinKind]] = []
        for party in order:
            if party == ctx.name:
                kinds.append([s.kind for s in specs])
            else:
                kinds.append([f["kind"] for f in state["platforms"][party].get("features", [])])
        for node in nodes:
            rows = np.flatnonzero(position == node)
            totals[node] = (int(g[rows].sum()), int(h[rows].sum()), int(rows.size))
            per_party: list[list[IntArray]] = []
            for party in order:
                if party == ctx.name:
                    per_party.append(
                        [
                            histogram(bins[rows, f], s.n_bins, g[rows], h[rows])
                            for f, s in enumerate(specs)
                        ]
                    )
                elif bank_only:
                    per_party.append([])
                else:
                    per_party.append(_get_hist(ctx, node, party, state))
            histograms[node] = per_party
        owners = {bank_index} if bank_only else set(range(len(order)))
        splits = grow_level(nodes, histograms, kinds, totals, params.tree, owners)
        for split in splits.values():
            if split is not None:
                importance = state.setdefault("importance", {})
                key = f"{order[split.owner]}:{split.feature}"
                entry = importance.setdefault(key, {"splits": 0, "gain": 0.0})
                entry["splits"] += 1
                entry["gain"] += split.gain
        clock = _load_clock(ctx)
        clock.add("split_search", time.perf_counter() - started)
        _save_clock(ctx, clock)
        return splits

    def _apply_bank_split(
        self,
        ctx: PartyContext,
        state: dict[str, Any],
        node: int,
        split: Split,
        position: IntArray,
    ) -> None:
        bins = _training_bins(ctx)
        spec = BinSpec.from_dict(ctx.store.get_json("sb.specs")[split.feature])
        rows = np.flatnonzero(position == node)
        left = goes_left(split, bins[rows, split.feature], spec.missing_bin)
        position[rows] = np.where(left, 2 * node + 1, 2 * node + 2)
        rule = RuleSplit(spec.name, split.left_bins, split.missing_left)
        self._record_node(ctx, node, {"owner": ctx.name, "rule": rule.to_dict()})

    def _record_node(self, ctx: PartyContext, node: int, entry: dict[str, Any]) -> None:
        nodes = ctx.store.get_json("sb.tree_nodes") or {}
        nodes[str(node)] = entry
        ctx.store.put_json("sb.tree_nodes", nodes)

    def _finish_tree(
        self, ctx: PartyContext, state: dict[str, Any], params: SecureBoostParams
    ) -> None:
        started = time.perf_counter()
        g, h = ctx.store.get_array("sb.g"), ctx.store.get_array("sb.h")
        position = ctx.store.get_array("sb.position")
        raw = ctx.store.get_array("sb.raw")
        y = ctx.store.get_array("sb.y")
        nodes = ctx.store.get_json("sb.tree_nodes") or {}
        tree: list[dict[str, Any]] = []
        for node_id, entry in sorted(nodes.items(), key=lambda kv: int(kv[0])):
            rule = entry.get("rule")
            tree.append(
                BankNode(
                    node_id=int(node_id),
                    owner=entry["owner"],
                    rule=None if rule is None else RuleSplit.from_dict(rule),
                    split_id=entry.get("split_id"),
                ).to_dict()
            )
        # Every child of a split is a node, even one no training row reached (possible when
        # noisy counts chose the split): it is a leaf of weight -0/(0 + lambda) = 0, as in the
        # plaintext core, so any row routed there at prediction time finds it.
        leaves = set(np.unique(position).tolist())
        for node_id in nodes:
            parent = int(node_id)
            for child in (2 * parent + 1, 2 * parent + 2):
                if str(child) not in nodes:
                    leaves.add(child)
        for leaf in sorted(leaves):
            rows = position == leaf
            weight = leaf_weight(int(g[rows].sum()), int(h[rows].sum()), params.tree)
            raw[rows] += weight
            tree.append(BankNode(node_id=int(leaf), weight=weight).to_dict())
        ctx.store.put_array("sb.raw", raw)
        trees = ctx.store.get_json("sb.trees")
        trees.append(tree)
        ctx.store.put_json("sb.trees", trees)
        p = sigmoid(raw)
        eps = 1e-12
        logloss = float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)))
        metrics = ctx.store.get_json("sb.metrics")
        metrics.append(
            {
                "tree": state["tree"],
                "train_logloss": logloss,
                "seconds": time.perf_counter() - float(state.get("tree_started", started)),
                "leaves": len(np.unique(position)),
                "bank_only": state["tree"] < params.bank_only_trees,
            }
        )
        ctx.store.put_json("sb.metrics", metrics)
        # Forget every histogram of this tree: the next tree's nodes reuse the same ids.
        for party in state["platforms"]:
            for node in range(2 ** (params.max_depth + 1)):
                ctx.store.delete(_hist_key(node, party))
        clock = _load_clock(ctx)
        clock.add("leaves", time.perf_counter() - started)
        _save_clock(ctx, clock)

    # -- the end --------------------------------------------------------------------------

    def _request_decisions(self, ctx: PartyContext, state: dict[str, Any]) -> list[Envelope]:
        state["expect"] = ["decisions"]
        state["pending"] = list(state["platforms"])
        ctx.store.put_json("sb.state", state)
        return [
            Envelope(
                PROTOCOL,
                "predict",
                ctx.name,
                p,
                {"model_id": f"{state['model_id']}-{p}"},
            )
            for p in state["platforms"]
        ]

    def _finish(
        self, ctx: PartyContext, state: dict[str, Any], params: SecureBoostParams
    ) -> Envelope:
        rows = job_rows(ctx)
        test = ctx.store.get_array(TEST_MASK_KEY).astype(bool)
        table = ctx.table()
        frame = table.features.iloc[rows[test]].reset_index(drop=True)
        if table.label is None:
            raise DataError(f"{table.path}: the bank's table has no labels")
        y_test = table.label[rows][test]
        refs = state.get("refs", {})
        specs = {s["name"]: BinSpec.from_dict(s) for s in ctx.store.get_json("sb.specs")}
        part = BankPart(
            party=ctx.name,
            model_id=state["model_id"],
            base_score=float(base_score(ctx.store.get_array("sb.y"))),
            trees=[
                {int(n["node_id"]): BankNode.from_dict(n) for n in tree}
                for tree in ctx.store.get_json("sb.trees")
            ],
            bins=specs,
            platform_parts={
                p: {"model_id": r["model_id"], "content_hash": r["content_hash"]}
                for p, r in refs.items()
            },
            params=state["params"],
        )
        decisions = {
            p: (r["split_ids"], ctx.store.get_array(f"sb.decisions.{p}")) for p, r in refs.items()
        }
        metrics = ctx.store.get_json("sb.metrics")
        report = None
        if test.any():
            staged = part.raw_scores(frame, decisions, staged=True)
            for t, entry in enumerate(metrics):
                entry["test_auc"] = float(evaluate_scores(y_test, sigmoid(staged[:, t])).auc)
            report = evaluate_scores(y_test, sigmoid(staged[:, -1])).to_dict()
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
                "per_tree": dumps(metrics),
                "bank_part": dumps(
                    {
                        "model_id": part.model_id,
                        "content_hash": part.content_hash,
                        "path": str(path),
                    }
                ),
                "platform_parts": dumps(part.platform_parts),
                "clock": dumps(
                    {
                        ctx.name: {"seconds": clock.seconds, "ops": clock.ops},
                        **{p: r["clock"] for p, r in refs.items()},
                    }
                ),
                "importance": dumps(_importance(state, ctx, specs)),
            },
        )


def _own_noise(ctx: PartyContext, n_features: int) -> dict[str, float] | None:
    """The Gaussian noise this platform adds to each level's histograms, from its own grant.

    One record moves (g, h, 1) into one bin per feature: the L2 sensitivity of a level's
    release is ``sqrt(F * (1 + 1/16 + 1))`` in (gradient, hessian, count) units, with
    ``|g| <= 1`` and ``h <= 1/4`` (the bank encrypts gradients of the logistic loss, which the
    platform cannot check under encryption: the honest-but-curious assumption).
    """
    grant = ctx.guard.grant(DP_MECHANISM)
    if grant is None:
        return None
    sensitivity = float(np.sqrt(n_features * (1.0 + 1.0 / 16.0 + 1.0)))
    return {
        "sigma_gh": grant.noise_multiplier * sensitivity * crypto.scale(),
        "sigma_count": grant.noise_multiplier * sensitivity,
    }


def _importance(
    state: dict[str, Any], ctx: PartyContext, specs: dict[str, BinSpec]
) -> list[dict[str, Any]]:
    names = list(specs)
    out = []
    for key, entry in sorted(state.get("importance", {}).items()):
        party, index = key.rsplit(":", 1)
        if party == ctx.name:
            feature = names[int(index)]
        else:
            feature = state["platforms"][party]["features"][int(index)]["name"]
        out.append({"party": party, "feature": feature, **entry})
    return out


def _layout(state: dict[str, Any]) -> dict[str, Any]:
    """The row layout every party uses: room for the largest noise any platform adds."""
    noises = [p["noise"] for p in state["platforms"].values() if p.get("noise")]
    noise = None
    if noises:
        noise = {
            "sigma_gh": max(n["sigma_gh"] for n in noises),
            "sigma_count": max(n["sigma_count"] for n in noises),
        }
    return {"max_rows": state["max_rows"], "noise": noise}


def _bank_cipher(ctx: PartyContext, state: dict[str, Any]) -> crypto.BankCipher:
    layout = state["layout"]
    noise = crypto.NoiseSpec(**layout["noise"]) if layout["noise"] else None
    return crypto.BankCipher(
        crypto.KeyPair.load(ctx.store, insecure=ctx.guard.limits.allow_insecure_test_keys),
        crypto.RowLayout(int(layout["max_rows"]), noise),
    )


def _smaller_children(
    ctx: PartyContext, splits: dict[int, Split | None], next_level: list[int]
) -> list[int]:
    """For each split, the child with fewer rows: the platform computes only that one."""
    compute = []
    for node, split in splits.items():
        if split is None:
            continue
        left, right = 2 * node + 1, 2 * node + 2
        compute.append(left if split.left_count <= split.right_count else right)
    return sorted(c for c in compute if c in next_level)


def _hist_key(node: int, party: str) -> str:
    return f"sb.hist.{party}.{node}"


def _put_hist(ctx: PartyContext, node: int, party: str, per_feature: list[IntArray]) -> None:
    flat = np.concatenate(per_feature) if per_feature else np.zeros((0, 3), np.int64)
    ctx.store.put_array(_hist_key(node, party), flat)


def _get_hist(ctx: PartyContext, node: int, party: str, state: dict[str, Any]) -> list[IntArray]:
    widths = [f["n_bins"] + 1 for f in state["platforms"][party]["features"]]
    try:
        flat = ctx.store.get_array(_hist_key(node, party))
    except KeyError:
        # The larger child: parent minus its sibling, in the clear (histogram subtraction).
        parent = (node - 1) // 2
        sibling = node + 1 if node % 2 == 1 else node - 1
        flat = ctx.store.get_array(_hist_key(parent, party)) - ctx.store.get_array(
            _hist_key(sibling, party)
        )
        ctx.store.put_array(_hist_key(node, party), flat)
    out, offset = [], 0
    for w in widths:
        out.append(flat[offset : offset + w])
        offset += w
    return out


#: The DP mechanism of SecureBoost: Gaussian noise on each level's platform histograms.
DP_MECHANISM = "secureboost-histogram-noise"


def releases_per_platform(params: SecureBoostParams) -> int:
    """Noisy histogram releases of one platform: one per level of every platform-using tree."""
    return max(1, (params.n_estimators - params.bank_only_trees) * params.max_depth)


def noise_multiplier(params: SecureBoostParams, n_platforms: int) -> float:
    """Noise multiplier making all histogram releases of a job (ε, δ)-DP (RDP accountant).

    Calibrated over every platform's releases together, so each platform's own releases
    (fewer) stay within (ε, δ) on its data.
    """
    from opacus.accountants.utils import get_noise_multiplier

    if params.dp_epsilon is None:
        raise ValueError("dp_epsilon is not set")
    return float(
        get_noise_multiplier(
            target_epsilon=params.dp_epsilon,
            target_delta=params.dp_delta,
            sample_rate=1.0,
            steps=releases_per_platform(params) * max(1, n_platforms),
            accountant="rdp",
        )
    )


def release_grants(params: SecureBoostParams, n_platforms: int) -> tuple[ReleaseGrant, ...]:
    """What a platform's node grants a job with these settings (nothing without DP).

    The node computes this from the job spec itself and reserves its events in its own ledger;
    its protocol step then adds this noise and counts every release.
    """
    if params.dp_epsilon is None:
        return ()
    return (
        ReleaseGrant(
            mechanism=DP_MECHANISM,
            noise_multiplier=noise_multiplier(params, n_platforms),
            max_releases=releases_per_platform(params),
            delta=params.dp_delta,
        ),
    )


def planned_privacy_events(params: SecureBoostParams, n_platforms: int) -> list[PrivacyEvent]:
    """The privacy events one platform's data will undergo at most (none without DP)."""
    return [e for g in release_grants(params, n_platforms) for e in g.events(g.max_releases)]


def _cleanup(ctx: PartyContext) -> None:
    for key in ("sb.gh", "sb.g", "sb.h", "sb.position", "sb.raw", "sb.y"):
        ctx.store.delete(key)
    if ctx.role == "bank":
        crypto.KeyPair.forget(ctx.store)


class SecureBoostParty(RoleDispatch):
    """Party side of the protocol; dispatches on the party's role."""

    name = PROTOCOL

    def __init__(self) -> None:
        super().__init__(_Bank(), _Platform())


# ------------------------------------------------------------------------------- coordinator


def start_envelope(
    bank: str, platforms: list[str], order: list[str], params: SecureBoostParams, job_id: str
) -> Envelope:
    """The coordinator's only message: ``setup`` to the bank."""
    model_id = f"sb-{job_id}-{secrets.token_hex(4)}"
    settings = {
        "params": asdict(params),
        "platforms": platforms,
        "order": order,
        "model_id": model_id,
    }
    return Envelope(PROTOCOL, "setup", COORDINATOR, bank, {"settings": dumps(settings)})


@dataclass(frozen=True)
class SecureBoostOutcome:
    """What the coordinator receives when training ends (aggregates and references)."""

    report: dict[str, Any]
    per_tree: list[dict[str, Any]]
    bank_part: dict[str, Any]
    platform_parts: dict[str, dict[str, str]]
    clock: dict[str, Any]
    importance: list[dict[str, Any]]


def conclude(replies: Sequence[Envelope]) -> SecureBoostOutcome:
    """Read the bank's ``done`` report."""
    done = [e for e in replies if e.stage == "done"]
    if len(done) != 1:
        raise ProtocolError(f"expected one secureboost/done, got {len(done)}")
    env = done[0]
    return SecureBoostOutcome(
        report=env.json("report"),
        per_tree=env.json("per_tree"),
        bank_part=env.json("bank_part"),
        platform_parts=env.json("platform_parts"),
        clock=env.json("clock"),
        importance=env.json("importance"),
    )


def describe_stage_counts(per_tree: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Summary of per-tree seconds (for reports)."""
    seconds = [float(t["seconds"]) for t in per_tree]
    return {
        "trees": float(len(seconds)),
        "mean_seconds_per_tree": float(np.mean(seconds)) if seconds else 0.0,
        "max_seconds_per_tree": float(np.max(seconds)) if seconds else 0.0,
    }


__all__ = [
    "PROTOCOL",
    "SecureBoostOutcome",
    "SecureBoostParams",
    "SecureBoostParty",
    "conclude",
    "json",
    "start_envelope",
]
