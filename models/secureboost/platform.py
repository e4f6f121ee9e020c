"""The platform's role in SecureBoost: its bins, its splits, encrypted histograms of its features.

The platform bins its own columns on the training rows the bank marked, sums the bank's
encrypted per-row gradients per (node, feature, bin), adds its own DP noise (its node's grant,
never the bank's word) and packs the sums; it applies the splits the bank chose on its features
and answers left or right, and at the end keeps its part (its split rules and bins) in its own
model store. It never decrypts anything: the bank holds the key.

Its own re-randomisation of every packed sum (``y^n`` for a fresh uniform ``y`` of its own,
:mod:`secure_agg.own_randomness`) costs a full exponentiation per packed ciphertext. The platform
makes these factors ahead, while it waits for the bank: a pool per job in its own process
(:func:`secure_agg.precompute.own_pool_for`), started when it receives the bank's key and
refilled to a tree's worth (:meth:`~models.secureboost.crypto.PlatformCipher.packs_per_tree`)
after each histogram reply; packing takes what is ready and makes the rest fresh. Each factor is
used once, never sent, logged or pickled, and forgotten at the end of the job
(:func:`models.secureboost.state.cleanup`, and ``job/end`` on every outcome).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from features.binning import BinSpec
from models.alignment import job_rows
from models.explanations import UNGROUPED
from models.guard import PolicyRefusalError
from models.protocol import Envelope, PartyContext, PayloadValue, PhaseClock, ProtocolError, dumps
from models.secureboost import checkpoint, crypto, stream
from models.secureboost.core import IntArray, Split, goes_left
from models.secureboost.params import HE_SCHEMES
from models.secureboost.parts import PlatformPart, RuleSplit
from models.secureboost.privacy import DP_MECHANISM, own_noise
from models.secureboost.settings import DEFAULTS
from models.secureboost.state import (
    CLOCK,
    PENDING,
    PROTOCOL,
    VALID_KEY,
    YOURS,
    cleanup,
    training_bins,
    validation_bins,
)
from models.secureboost.timing import COMPUTE_SECONDS, FRESH_PACKS, PRECOMPUTED_PACKS
from models.vertical import (
    aligned_columns,
    aligned_features,
    check_key_matches_job,
    fit_own_bins,
    peer_scheme_key,
    platform_rows,
    platform_validation_rows,
)
from secure_agg import precompute

#: Largest tree depth a job may ask for (:class:`models.secureboost.settings.SecureBoostSettings`).
MAX_DEPTH_LIMIT = 12


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
        if reply is None:
            # An earlier piece of a streamed tree: no answer; its seconds go with the last's.
            state = ctx.store.get_json("sb.state")
            state["stream_seconds"] = [*state.get("stream_seconds", []), seconds]
            ctx.store.put_json("sb.state", state)
            return []
        return [replace(reply, payload={**reply.payload, COMPUTE_SECONDS: seconds})]

    def _dispatch(self, env: Envelope, ctx: PartyContext) -> Envelope | None:
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
        # Validation rows (early stopping): this node's own policy decides whether it routes
        # them after every tree and how many, and its audit log records them.
        valid = platform_validation_rows(env, ctx, train)
        specs = fit_own_bins(ctx, aligned_columns(ctx, rows, train), int(settings["max_bin"]))
        # The noise comes from this node's own DP grant (reserved in its own ledger), never
        # from the bank's message.
        noise = own_noise(ctx, len(specs))
        ctx.store.put_array("sb.train", train)
        if valid.any():
            ctx.store.put_array(VALID_KEY, valid)
        ctx.store.put_json("sb.specs", [s.to_dict() for s in specs])
        ctx.store.put_json(
            "sb.state",
            {
                "bank": env.sender,
                "public_key": public_key.hex(),
                "settings": {
                    "max_bin": int(settings["max_bin"]),
                    **_pool_settings(settings),
                },
                "noise": noise,
                "splits": {},
                "tree": -1,
                "n_valid": int(valid.sum()),
            },
        )
        state = ctx.store.get_json("sb.state")
        offer = checkpoint.platform_offer(ctx, state, settings.get("resume") is True)
        ctx.store.put_json("sb.state", state)
        features = [{"name": s.name, "kind": s.kind, "n_bins": s.n_bins} for s in specs]
        # The first tree's re-randomisation factors, made while the bank sets up and encrypts.
        # The bank's row layout comes with the tree; until then it is estimated from the rows
        # and this node's own noise (the layout carries at least that much).
        own = crypto.NoiseSpec(noise["sigma_gh"], noise["sigma_count"]) if noise else None
        estimate = crypto.PlatformCipher(
            key, crypto.RowLayout(int(train.sum()), own), scheme.backend
        )
        self._refill(ctx, estimate, ctx.store.get_json("sb.state"), more=True)
        reply: dict[str, PayloadValue] = {"features": dumps(features), "noise": dumps(noise)}
        if offer is not None:
            reply["boundaries"] = dumps(offer)
        return env.reply("ready", reply)

    def _refill(
        self,
        ctx: PartyContext,
        cipher: crypto.PlatformCipher,
        state: dict[str, Any],
        *,
        more: bool,
    ) -> None:
        """Make a tree's worth of own re-randomisation factors while waiting (none if not ``more``).

        Called as the handler ends, right before its reply goes out: the background thread runs
        while the bank decrypts, chooses splits or encrypts the next tree.
        """
        if not precompute.enabled():
            return
        widths = [BinSpec.from_dict(s).n_bins + 1 for s in ctx.store.get_json("sb.specs")]
        target = cipher.packs_per_tree(sum(widths), int(state["settings"]["max_depth"]))
        pool = precompute.own_pool_for(ctx.name, cipher.backend, cipher.public)
        pool.fill(precompute.capped_target(target, cipher.factor_bytes) if more else 0)

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

    def _tree(self, env: Envelope, ctx: PartyContext, state: dict[str, Any]) -> Envelope | None:
        """A tree's encrypted gradients, whole or one piece of a stream; ``hist`` after the last.

        A streamed tree (:mod:`models.secureboost.stream`) comes in pieces of consecutive rows,
        each naming its first row; the platform adds each piece's root sums to those of the
        pieces before it (under encryption) and answers nothing until the last piece. The
        release is the same as for the whole tree at once: the root's packed sums, once.
        """
        first = env.integer(stream.FIRST_ROW) if stream.FIRST_ROW in env.payload else 0
        if first == 0:
            state = self._start_tree(env, ctx, state)
        elif env.integer("tree") != state["tree"] or first != state.get("received"):
            raise ProtocolError(
                f"secureboost/tree {env.integer('tree')} piece from row {first}; expected tree "
                f"{state['tree']} from row {state.get('received')}: pieces come in order"
            )
        cipher = self._cipher(ctx, state)
        if env.text("key") != cipher.fingerprint:
            raise ProtocolError("gradients were encrypted under a different key than announced")
        gh = env.array("gh")
        bins = training_bins(ctx)
        end = first + gh.shape[0]
        tree = int(state["tree"])
        if stream.FIRST_ROW not in env.payload and end != bins.shape[0]:
            raise ProtocolError(f"{gh.shape[0]} encrypted rows for {bins.shape[0]} training rows")
        if end > bins.shape[0] or (first > 0 and gh.shape[0] == 0):
            raise ProtocolError(
                f"{gh.shape[0]} encrypted rows from row {first} for {bins.shape[0]} training rows"
            )
        clock = CLOCK.load(ctx)
        if first == 0 and end == bins.shape[0]:  # the whole tree at once
            summed = None
            ctx.store.put_array("sb.gh", gh)
        else:
            last = end == bins.shape[0]
            pieces = int(state.get("pieces", 0)) if first else 0
            started = time.perf_counter()
            summed = self._add_piece(ctx, cipher, gh, bins[first:end], first=first, last=last)
            clock.add("histogram", time.perf_counter() - started, int(gh.shape[0]) * bins.shape[1])
            if not last:
                ctx.store.put_array(_piece_key(pieces), gh)
                state = {**state, "received": end, "pieces": pieces + 1}
                if not first:
                    state["stream_seconds"] = []
                ctx.store.put_json("sb.state", state)
                CLOCK.save(ctx, clock)
                return None
            gh = np.concatenate([ctx.store.get_array(_piece_key(i)) for i in range(pieces)] + [gh])
            for i in range(pieces):
                ctx.store.delete(_piece_key(i))
            ctx.store.delete(_PARTIAL_KEY)
            ctx.store.put_array("sb.gh", gh)
        earlier = state.get("stream_seconds")
        state = {k: v for k, v in state.items() if k not in _STREAM_STATE}
        ctx.store.put_json("sb.state", state)
        position = np.zeros(bins.shape[0], dtype=np.int64)
        payload = self._histograms(ctx, cipher, bins, position, [0], state, clock, summed)
        CLOCK.save(ctx, clock)
        self._refill(ctx, cipher, state, more=_more_histograms(state, tree, 0))
        if earlier is not None:
            payload[stream.STREAM_SECONDS] = dumps(earlier)
        return env.reply("hist", {"tree": tree, "level": 0, **payload})

    def _start_tree(
        self, env: Envelope, ctx: PartyContext, state: dict[str, Any]
    ) -> dict[str, Any]:
        """A new tree (its whole gradients or their first piece): checked, state reset."""
        if env.integer("tree") <= state["tree"]:
            raise ProtocolError(
                f"secureboost/tree {env.integer('tree')} after tree {state['tree']}: "
                "trees come in increasing order"
            )
        state = checkpoint.restore_platform(ctx, state, env.integer("tree"))
        checkpoint.save_platform(ctx, state)
        state = {k: v for k, v in state.items() if k not in _STREAM_STATE}
        state = {**state, "layout": env.json("layout"), "tree": env.integer("tree"), "level": 0}
        ctx.store.put_array("sb.position", np.zeros(training_bins(ctx).shape[0], dtype=np.int64))
        ctx.store.put_json("sb.state", state)
        return state

    def _add_piece(
        self,
        ctx: PartyContext,
        cipher: crypto.PlatformCipher,
        gh: npt.NDArray[Any],
        bins: npt.NDArray[np.integer[Any]],
        *,
        first: int,
        last: bool,
    ) -> list[list[int]]:
        """The root's encrypted sums over the rows so far: this piece's added to the earlier ones.

        Kept (ciphertexts only) until the next piece unless this one is the ``last``.
        """
        sums = cipher.group_sums(gh, bins, _width(ctx))
        if first:
            earlier = cipher.sums_from_array(ctx.store.get_array(_PARTIAL_KEY), len(sums))
            sums = cipher.add_sums(earlier, sums)
        if not last:
            ctx.store.put_array(_PARTIAL_KEY, cipher.sums_to_array(sums))
        return sums

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
        valid_ids: list[str] = []
        valid_bits: list[npt.NDArray[np.bool_]] = []
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
                    "tree": tree,
                }
                if state.get("n_valid"):
                    # The split's side for every validation row, as scoring would answer it.
                    column = validation_bins(ctx)[:, split.feature]
                    valid_ids.append(str(item["split_id"]))
                    valid_bits.append(goes_left(split, column, spec.missing_bin))
            state = {**state, "splits": table}
            clock.add("apply_splits", time.perf_counter() - started)
        compute: list[int] = env.json("compute")
        payload: dict[str, PayloadValue] = {"tree": tree, "level": level + 1}
        if env.stage == "level":
            payload["directions"] = directions
        if valid_ids:
            payload["valid_ids"] = dumps(valid_ids)
            payload["valid_bits"] = np.packbits(np.stack(valid_bits, axis=1), axis=0)
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
        cipher = None
        if compute and known:
            cipher = self._cipher(ctx, state)
            payload.update(self._histograms(ctx, cipher, bins, incoming, compute, state, clock))
            stage = "hist"
        elif compute:
            stage = "dirs"  # positions of other platforms' splits arrive with ``assign``
        CLOCK.save(ctx, clock)
        if cipher is not None:
            self._refill(ctx, cipher, state, more=_more_histograms(state, tree, level + 1))
        return env.reply(stage, payload)

    def _histograms(
        self,
        ctx: PartyContext,
        cipher: crypto.PlatformCipher,
        bins: npt.NDArray[np.integer[Any]],
        position: IntArray,
        nodes: list[int],
        state: dict[str, Any],
        clock: PhaseClock,
        summed: list[list[int]] | None = None,
    ) -> dict[str, PayloadValue]:
        """Sum (unless ``summed``: the root's sums of a streamed tree), noise, pack: ``hist``."""
        if checkpoint.released_before(ctx, state, nodes, position):
            # Released before this job was resumed: never twice (models.secureboost.checkpoint).
            return {"nodes": dumps(nodes), "n_sums": 0, checkpoint.REPLAYED: True}
        count = 0
        if state.get("noise") is not None:
            # Counted before anything is packed: a release beyond the grant never happens (a
            # streamed tree's root sums are computed piece by piece before, released here).
            count = ctx.guard.record_release(DP_MECHANISM)
        specs = ctx.store.get_json("sb.specs")
        widths = [int(s_n) + 1 for s_n in (BinSpec.from_dict(s).n_bins for s in specs)]
        width = _width(ctx)
        if summed is not None:
            sums = summed
        else:
            gh = ctx.store.get_array("sb.gh")
            slots = _node_slots(position, nodes, width)
            adds = int(np.count_nonzero(slots >= 0)) * bins.shape[1]
            started = time.perf_counter()
            sums = cipher.binned_sums(gh, bins, slots, width, len(nodes) * width)
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
        n_packs = cipher.n_packed(len(ordered))
        pool = (
            precompute.own_pool_for(ctx.name, cipher.backend, cipher.public)
            if precompute.enabled()
            else None
        )
        factors = pool.take(n_packs)[0] if pool is not None else []
        packed = cipher.pack(ordered, factors)
        precomputed = len(factors)
        del factors  # each factor is used once: only its re-randomised pack remains
        clock.add("pack", time.perf_counter() - started, len(ordered))
        if count:
            checkpoint.record_release(ctx, state, nodes, position, DP_MECHANISM, count)
        return {
            "nodes": dumps(nodes),
            "n_sums": len(ordered),
            "sums": packed,
            "key": cipher.fingerprint,
            PRECOMPUTED_PACKS: precomputed,
            FRESH_PACKS: n_packs - precomputed,
        }

    def _predict(self, env: Envelope, ctx: PartyContext, state: dict[str, Any]) -> Envelope:
        rows = job_rows(ctx)
        train = ctx.store.get_array("sb.train").astype(bool)
        held = ctx.store.get_array(VALID_KEY).astype(bool) if state.get("n_valid") else None
        test = ~train if held is None else ~train & ~held
        specs = {s["name"]: BinSpec.from_dict(s) for s in ctx.store.get_json("sb.specs")}
        kept = _kept_trees(env, state)
        splits = {
            k: RuleSplit.from_dict(v)
            for k, v in state["splits"].items()
            if int(v.get("tree", 0)) < kept
        }
        used = {rule.feature for rule in splits.values()}
        frame = aligned_features(ctx, rows, test, columns=used)  # the split columns only
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
        if state.get("n_valid"):
            ctx.guard.notify(
                "validation_released",
                {
                    "protocol": PROTOCOL,
                    "n_validation": int(state["n_valid"]),
                    "iterations": int(state["tree"]) + 1,
                    "iterations_kept": kept,
                },
            )
        clock = CLOCK.load(ctx)
        cleanup(ctx)
        return env.reply(
            "decisions",
            {
                **_group_release(ctx, splits),
                "split_ids": dumps(ids),
                "bits": np.packbits(bits, axis=0) if ids else np.zeros((0, 0), np.uint8),
                "n_rows": len(frame),
                "model_id": part.model_id,
                "content_hash": part.content_hash,
                "clock": dumps({"seconds": clock.seconds, "ops": clock.ops}),
            },
        )


#: Store keys of a streamed tree: the root's sums so far, and each earlier piece's ciphertexts.
_PARTIAL_KEY = "sb.stream.sums"
#: Platform state that lives only while a tree's gradients stream in.
_STREAM_STATE = ("received", "pieces", "stream_seconds")


def _piece_key(index: int) -> str:
    return f"sb.stream.gh.{index}"


def _width(ctx: PartyContext) -> int:
    """Histogram slots per (node, feature): the widest feature's bins + 1 (missing)."""
    widths = [BinSpec.from_dict(s).n_bins + 1 for s in ctx.store.get_json("sb.specs")]
    return max(widths) if widths else 1


def _kept_trees(env: Envelope, state: dict[str, Any]) -> int:
    """How many trees the bank keeps (early stopping); this part keeps its splits of those.

    The tree of each split is this node's own record (the ``tree`` message it answered), so the
    bank can only shorten the platform's part, never add to it.
    """
    kept = env.payload.get("n_trees", int(state["tree"]) + 1)
    if isinstance(kept, bool) or not isinstance(kept, int) or kept < 0:
        raise ProtocolError(f"secureboost/predict: n_trees must be an integer >= 0, got {kept!r}")
    return kept


def _group_release(ctx: PartyContext, splits: dict[str, RuleSplit]) -> dict[str, Any]:
    """The published feature group of each split, if this node's policy releases them.

    ``{"groups": {split_id: group}}`` (a column without a published group is
    :data:`UNGROUPED`), or ``{"groups_withheld": reason}`` naming the policy setting. The bank
    already knows which of this node's columns each split uses (it chose the split from the
    histograms); what this release adds is the group labels in the bank's model and reason
    codes, with this node's consent (docs/secureboost.md, "Explanations").
    """
    if not ctx.guard.limits.group_attribution:
        return {
            "groups_withheld": f"{ctx.name}'s node policy explanations.group_attribution=refuse"
        }
    published = ctx.guard.column_groups()
    groups = {sid: published.get(rule.feature, UNGROUPED) for sid, rule in splits.items()}
    ctx.guard.notify(
        "group_attribution_released",
        {"n_splits": len(groups), "groups": sorted(set(groups.values()))},
    )
    return {"groups": dumps(groups)}


def _more_histograms(state: dict[str, Any], tree: int, level: int) -> bool:
    """Whether histograms may follow the ones just computed for ``(tree, level)``.

    False after the deepest histogram level of the last tree (the bank asks for none at
    ``max_depth``): no factors are made that only the end of the job would forget.
    """
    settings = state["settings"]
    n_estimators = settings.get("n_estimators")
    last_level = level + 1 >= int(settings["max_depth"])
    return not (last_level and n_estimators is not None and tree + 1 >= int(n_estimators))


def _pool_settings(settings: dict[str, Any]) -> dict[str, int | None]:
    """``max_depth`` and ``n_estimators`` from the bank's init settings, checked.

    They only size this node's own pool of re-randomisation factors (a wrong value costs idle
    CPU or fresh factors, never correctness), but they come from a peer: bounded before use.
    """
    depth = settings.get("max_depth", DEFAULTS.max_depth)
    trees = settings.get("n_estimators")
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH_LIMIT:
        raise ProtocolError(
            f"secureboost/init: max_depth must be an integer in [1, {MAX_DEPTH_LIMIT}], "
            f"got {depth!r}"
        )
    if trees is not None and (isinstance(trees, bool) or not isinstance(trees, int) or trees < 1):
        raise ProtocolError(
            f"secureboost/init: n_estimators must be a positive integer, got {trees!r}"
        )
    return {"max_depth": depth, "n_estimators": trees}


def _node_slots(position: IntArray, nodes: list[int], width: int) -> npt.NDArray[np.int32]:
    """Each row's slot among ``nodes`` (int32; -1 for a row on none of them).

    A row's histogram group in a column is ``slot * width + bin``: the kernel makes it from the
    job's bins and these slots part by part (:func:`secure_agg.paillier.sum_binned_many`), so no
    process holds a rows x columns matrix of group ids, and a level sends a remote compute
    backend one int32 per row.
    """
    if len(nodes) * width >= 2**31:
        raise ProtocolError(f"{len(nodes)} nodes x {width} bins do not fit 32-bit group ids")
    slot = np.full(len(position), -1, dtype=np.int32)
    for i, node in enumerate(nodes):
        slot[position == node] = i
    return slot
