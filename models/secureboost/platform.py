"""The platform's role in SecureBoost: its bins, its splits, encrypted histograms of its features.

The platform bins its own columns on the training rows the bank marked, sums the bank's
encrypted per-row gradients per (node, feature, bin), adds its own DP noise (its node's grant,
never the bank's word) and packs the sums; it applies the splits the bank chose on its features
and answers left or right, and at the end keeps its part (its split rules and bins) in its own
model store. It never decrypts anything: the bank holds the key.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from features.binning import BinSpec
from models.alignment import job_rows
from models.guard import PolicyRefusalError
from models.protocol import Envelope, PartyContext, PayloadValue, PhaseClock, ProtocolError, dumps
from models.secureboost import crypto
from models.secureboost.core import IntArray, Split, goes_left
from models.secureboost.params import HE_SCHEMES
from models.secureboost.parts import PlatformPart, RuleSplit
from models.secureboost.privacy import DP_MECHANISM, own_noise
from models.secureboost.state import CLOCK, PENDING, YOURS, cleanup, training_bins
from models.secureboost.timing import COMPUTE_SECONDS
from models.vertical import (
    aligned_features,
    check_key_matches_job,
    fit_own_bins,
    peer_scheme_key,
    platform_rows,
)


class PlatformRole:
    """Platform side: its bins, its split rules, its own noise; never a key or a gradient."""

    def handle(self, env: Envelope, ctx: PartyContext) -> list[Envelope]:
        """Run one stage (already checked against the platform's stage machine).

        Every reply carries ``compute_seconds``, the wall time of this handler: the bank's
        per-tree critical path (:mod:`models.secureboost.timing`) tells the platform's compute
        from transport and runtime overhead with it. It reveals no more than the timings the
        coordinator already sees.
        """
        started = time.perf_counter()
        reply = self._dispatch(env, ctx)
        seconds = time.perf_counter() - started
        return [replace(reply, payload={**reply.payload, COMPUTE_SECONDS: seconds})]

    def _dispatch(self, env: Envelope, ctx: PartyContext) -> Envelope:
        state = ctx.store.get_json("sb.state") or {}
        if env.stage != "init" and env.sender != state.get("bank"):
            raise ProtocolError(f"secureboost/{env.stage} from '{env.sender}', not this job's bank")
        if env.stage == "init":
            return self._init(env, ctx)
        if env.stage == "tree":
            return self._tree(env, ctx, state)
        if env.stage in ("level", "assign"):
            return self._level(env, ctx, state)
        return self._predict(env, ctx, state)

    def _init(self, env: Envelope, ctx: PartyContext) -> Envelope:
        settings = env.json("settings")
        public_key = env.payload.get("public_key")
        if not isinstance(public_key, bytes):
            raise ProtocolError("secureboost/init lacks the bank's public key")
        # The key's scheme is read from the key and checked against this node's own policy
        # (scheme, min and max size) and against the job this node approved, before any data
        # is read or anything is computed with the key.
        scheme, key = peer_scheme_key(public_key, ctx.guard.limits, "the bank's key", HE_SCHEMES)
        check_key_matches_job(
            scheme.name, int(key.key_bits), ctx.guard.job_crypto(), HE_SCHEMES, "the bank's key"
        )
        rows, train = platform_rows(env, ctx)
        specs = fit_own_bins(ctx, aligned_features(ctx, rows, train), int(settings["max_bin"]))
        # The noise comes from this node's own DP grant (reserved in its own ledger), never
        # from the bank's message.
        noise = own_noise(ctx, len(specs))
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
            allow_insecure_test_keys=limits.allow_insecure_test_keys,
        )

    def _tree(self, env: Envelope, ctx: PartyContext, state: dict[str, Any]) -> Envelope:
        if env.integer("tree") <= state["tree"]:
            raise ProtocolError(
                f"secureboost/tree {env.integer('tree')} after tree {state['tree']}: "
                "trees come in increasing order"
            )
        state = {**state, "layout": env.json("layout")}
        cipher = self._cipher(ctx, state)
        if env.text("key") != cipher.fingerprint:
            raise ProtocolError("gradients were encrypted under a different key than announced")
        gh = env.array("gh")
        bins = training_bins(ctx)
        if gh.shape[0] != bins.shape[0]:
            raise ProtocolError(f"{gh.shape[0]} encrypted rows for {bins.shape[0]} training rows")
        tree = env.integer("tree")
        state = {**state, "tree": tree, "level": 0}
        position = np.zeros(bins.shape[0], dtype=np.int64)
        ctx.store.put_array("sb.gh", gh)
        ctx.store.put_array("sb.position", position)
        ctx.store.put_json("sb.state", state)
        clock = CLOCK.load(ctx)
        payload = self._histograms(ctx, cipher, bins, position, [0], state, clock)
        CLOCK.save(ctx, clock)
        return env.reply("hist", {"tree": tree, "level": 0, **payload})

    def _level(self, env: Envelope, ctx: PartyContext, state: dict[str, Any]) -> Envelope:
        tree, level = env.integer("tree"), env.integer("level")
        if tree != state["tree"]:
            raise ProtocolError(
                f"secureboost/{env.stage} for tree {tree}, expected {state['tree']}"
            )
        bins = training_bins(ctx)
        position = ctx.store.get_array("sb.position")
        incoming = env.array("position").astype(np.int64)
        if incoming.shape != position.shape:
            raise ProtocolError("position vector has the wrong length")
        clock = CLOCK.load(ctx)
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
        CLOCK.save(ctx, clock)
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
        frame = aligned_features(ctx, rows, ~train)
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
        clock = CLOCK.load(ctx)
        cleanup(ctx)
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
