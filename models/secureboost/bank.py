"""The bank's role in SecureBoost: labels, the key pair, and the driver of every tree.

The bank bins its own columns, makes its key pair under its node's limits, encrypts each tree's
gradients, decrypts the platforms' (noisy, packed) histogram sums, chooses every split
(:mod:`models.secureboost.bank_trees`), tells each platform the splits on its features and which
children to sum, and at the end evaluates the model on its held-out rows and keeps its part.
It waits for every platform at every stage.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import numpy as np
import numpy.typing as npt

from features.binning import BinSpec
from models.alignment import job_rows
from models.early_stopping import StoppingState
from models.evaluation import TEST_MASK_KEY, evaluate_scores
from models.protocol import (
    COORDINATOR,
    Envelope,
    PartyContext,
    PayloadValue,
    PhaseClock,
    ProtocolError,
    dumps,
)
from models.secureboost import bank_trees, bank_validation, checkpoint, crypto, stream, timing
from models.secureboost.core import base_score, gradients, sigmoid
from models.secureboost.params import SecureBoostParams
from models.secureboost.parts import BankNode, BankPart
from models.secureboost.state import (
    CLOCK,
    KEY_PREFIX,
    PENDING,
    PROTOCOL,
    VALID_KEY,
    YOURS,
    cleanup,
)
from models.split_reports import split_summary
from models.vertical import (
    KeyPair,
    aligned_features,
    bank_key_pair,
    bank_rows,
    check_platform_reply,
    fit_own_bins,
    labels,
    record_answer,
    validation,
)
from secure_agg import precompute


class BankRole:
    """Bank side: owns the labels, the key pair, the tree structure and every leaf weight."""

    def handle(self, env: Envelope, ctx: PartyContext) -> list[Envelope]:
        """Run one stage (already checked against the bank's stage machine).

        Times itself for the open tree's critical path (:mod:`models.secureboost.timing`).
        """
        started = time.perf_counter()
        if env.stage == "setup":
            return self._setup(env, ctx)
        state = ctx.store.get_json("sb.state")
        if env.stage == stream.STAGE:
            timing.handler_started(state, started)
            out = self._stream(env, ctx, state)
            timing.streamed(state, time.perf_counter() - started)
            timing.handler_ended(state, time.perf_counter())
            ctx.store.put_json("sb.state", state)
            return out
        check_platform_reply(PROTOCOL, env, state)
        timing.handler_started(state, started)
        timing.platform_replied(state, env)
        out = self._handle(env, ctx, state)
        timing.handler_ended(state, time.perf_counter())
        ctx.store.put_json("sb.state", state)
        return out

    def _handle(self, env: Envelope, ctx: PartyContext, state: dict[str, Any]) -> list[Envelope]:
        if env.stage == "ready":
            state["platforms"][env.sender] = {
                "features": env.json("features"),
                "noise": env.json("noise"),
            }
            if "boundaries" in env.payload:
                state["platforms"][env.sender]["boundaries"] = env.json("boundaries")
        elif env.stage in ("hist", "dirs"):
            self._collect(env, ctx, state)
        else:
            self._collect_decisions(env, ctx, state)
        answered = record_answer(state, env.sender)
        ctx.store.put_json("sb.state", state)
        if not answered:
            return []
        timing.hop_complete(state)
        return self._advance(ctx, state)

    # -- setup ----------------------------------------------------------------------------

    def _setup(self, env: Envelope, ctx: PartyContext) -> list[Envelope]:
        settings = env.json("settings")
        params = SecureBoostParams(**settings["params"])
        platforms: list[str] = settings["platforms"]
        own, valid, y_valid = validation.hold_out(ctx, bank_rows(ctx), params.validation)
        train, y = own.train, own.y
        weights = validation.weights(ctx, own, params.class_weight)
        specs = fit_own_bins(ctx, aligned_features(ctx, own.rows, train), params.max_bin)
        started = time.perf_counter()
        keys = bank_key_pair(ctx, params.key_bits, params.scheme)
        clock = PhaseClock()
        clock.add("keygen", time.perf_counter() - started)
        if precompute.enabled() and params.n_estimators > params.bank_only_trees:
            # The first federated tree's randomness, made while the platforms bin their columns.
            precompute.pool_for(keys.backend, keys.private).fill(int(train.sum()))
        CLOCK.save(ctx, clock)
        ctx.store.put_array("sb.y", y)
        ctx.store.put_array("sb.train", train)
        base = base_score(y, weights)
        ctx.store.put_array("sb.raw", np.full(y.size, base))
        if weights is not None:
            ctx.store.put_array("sb.w", weights)
        if valid.any():
            ctx.store.put_array(VALID_KEY, valid)
            ctx.store.put_array("sb.y_valid", y_valid)
            ctx.store.put_array("sb.raw_valid", np.full(y_valid.size, base))
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
            "validation": {"n": int(valid.sum()), "stopping": StoppingState().to_dict()},
        }
        ctx.store.put_json("sb.state", state)
        keys.save(ctx.store, prefix=KEY_PREFIX)
        # Public parameters of the job the platforms approved; they size their own
        # re-randomisation pools from the depth and stop filling them after the last tree.
        init_settings = {
            "max_bin": params.max_bin,
            "max_depth": params.max_depth,
            "n_estimators": params.n_estimators,
        }
        offer = checkpoint.resume_offer(ctx, state)
        if offer is not None:
            init_settings["resume"] = True
            ctx.store.put_json("sb.state", state)
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
                    **({"valid_mask": valid} if valid.any() else {}),
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
        clock = CLOCK.load(ctx)
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
        if "valid_bits" in env.payload:
            ids: list[str] = env.json("valid_ids")
            n_valid = int(ctx.store.get_array("sb.y_valid").size)
            bits = np.unpackbits(env.array("valid_bits"), axis=0, count=n_valid).astype(bool)
            bank_validation.keep_bits(ctx, env.sender, ids, bits.reshape(n_valid, len(ids)))
        replayed = env.payload.get(checkpoint.REPLAYED) is True
        if "sums" in env.payload or replayed:
            nodes: list[int] = env.json("nodes")
            if replayed:  # released before a resume: never twice, the bank kept it
                sums = checkpoint.kept_release(ctx, state, env.sender, nodes)
            else:
                cipher = _bank_cipher(ctx, state)
                if env.text("key") != cipher.fingerprint:
                    raise ProtocolError(f"'{env.sender}' sent sums under a different key")
                started = time.perf_counter()
                sums = cipher.decrypt_sums(env.array("sums"), env.integer("n_sums"))
                clock.add("decrypt", time.perf_counter() - started, cipher.last_decryptions)
                checkpoint.keep_release(ctx, state, env.sender, nodes, sums)
            widths = [f["n_bins"] + 1 for f in state["platforms"][env.sender]["features"]]
            offset = 0
            for node in nodes:
                per_feature = []
                for w in widths:
                    per_feature.append(sums[offset : offset + w])
                    offset += w
                bank_trees.put_hist(ctx, node, env.sender, per_feature)
        CLOCK.save(ctx, clock)

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
            **_released_groups(env, ids),
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
            checkpoint.restore_bank(ctx, state)  # a resumed job: after its last common tree
            return self._next_tree(ctx, state, params)
        if state.get("needs_assign"):
            return self._send_assign(ctx, state)
        return self._after_level(ctx, state, params)

    def _next_tree(
        self, ctx: PartyContext, state: dict[str, Any], params: SecureBoostParams
    ) -> list[Envelope]:
        while True:
            self._close_tree_timing(ctx, state)
            checkpoint.save_bank(ctx, state)
            state["tree"] += 1
            if state["tree"] >= params.n_estimators or bank_validation.stopped(state):
                return self._request_decisions(ctx, state, params)
            timing.open_tree(state, state["tree"], time.perf_counter())
            y = ctx.store.get_array("sb.y")
            raw = ctx.store.get_array("sb.raw")
            g, h = gradients(y, raw, _weights(ctx))
            ctx.store.put_array("sb.g", g)
            ctx.store.put_array("sb.h", h)
            ctx.store.put_array("sb.position", np.zeros(y.size, dtype=np.int64))
            ctx.store.put_json("sb.tree_nodes", {})
            state["level"] = 0
            state["tree_started"] = time.perf_counter()
            if state["tree"] < params.bank_only_trees:
                # Leakage control: this tree splits on bank features only; no message at all.
                bank_trees.grow_locally(ctx, state, params)
                continue
            if "layout" not in state:
                state["layout"] = _layout(state)
            cipher = _bank_cipher(ctx, state)
            state["stream"] = {"bounds": stream.bounds(int(g.size), params.gradient_chunks)}
            state["expect"] = ["hist"]
            state["pending"] = list(state["platforms"])
            state["awaiting_dirs"] = {}
            state["computed"] = [0]
            out = self._send_piece(ctx, state, params, cipher, 0)
            ctx.store.put_json("sb.state", state)
            return out

    def _stream(self, env: Envelope, ctx: PartyContext, state: dict[str, Any]) -> list[Envelope]:
        """Encrypt and send the next piece of the tree's gradients (the bank's own message)."""
        if env.sender != ctx.name:
            raise ProtocolError(
                f"secureboost/{env.stage} from '{env.sender}': only the bank sends it to itself"
            )
        piece = state.get("stream")
        expected = None if piece is None else piece.get("next")
        if (
            expected is None
            or env.integer("tree") != state["tree"]
            or env.integer(stream.CHUNK) != expected
        ):
            raise ProtocolError(
                f"secureboost/{env.stage} for tree {env.integer('tree')} piece "
                f"{env.integer(stream.CHUNK)}, expected tree {state['tree']} piece {expected}"
            )
        params = SecureBoostParams(**state["params"])
        return self._send_piece(ctx, state, params, _bank_cipher(ctx, state), int(expected))

    def _send_piece(
        self,
        ctx: PartyContext,
        state: dict[str, Any],
        params: SecureBoostParams,
        cipher: crypto.BankCipher,
        index: int,
    ) -> list[Envelope]:
        """Encrypt piece ``index`` of the tree's gradients; its ``tree`` messages (and the next).

        Unchunked (one piece), the messages are the protocol's ``tree`` messages as they always
        were. Otherwise each carries its first row, and a ``stream`` message to the bank itself
        follows unless the piece is the last: the coordinator relays it in the same hop as the
        piece, so the bank encrypts the next piece while the platforms sum this one
        (:mod:`models.secureboost.stream`).
        """
        cuts: list[int] = state["stream"]["bounds"]
        lo, hi = cuts[index], cuts[index + 1]
        last = index + 2 == len(cuts)
        g, h = ctx.store.get_array("sb.g")[lo:hi], ctx.store.get_array("sb.h")[lo:hi]
        clock = CLOCK.load(ctx)
        pool = (
            precompute.pool_for(cipher.backend, cipher.keys.private)
            if precompute.enabled()
            else None
        )
        started = time.perf_counter()
        factors, made_in = pool.take(int(g.size)) if pool is not None else ([], 0.0)
        gh = cipher.encrypt_gradients(g, h, factors)
        seconds = time.perf_counter() - started
        clock.add("encrypt", seconds, int(g.size))
        CLOCK.save(ctx, clock)
        timing.encrypted(state, seconds, len(factors), made_in)
        del factors  # each factor is used once: only its ciphertext remains
        if pool is not None and last:
            # The next tree's randomness, made while the platforms compute (none after
            # the last tree: the pool is forgotten at the end).
            more = state["tree"] + 1 < params.n_estimators
            pool.fill(cuts[-1] if more else 0)
        streamed = len(cuts) > 2
        payload: dict[str, PayloadValue] = {
            "tree": state["tree"],
            "gh": gh,
            "key": cipher.fingerprint,
        }
        if index == 0:
            payload["layout"] = dumps(state["layout"])
        if streamed:
            payload[stream.FIRST_ROW] = lo
            payload[stream.CHUNK] = index
        out = [Envelope(PROTOCOL, "tree", ctx.name, p, payload) for p in state["platforms"]]
        if last:
            state["stream"].pop("next", None)
        else:
            state["stream"]["next"] = index + 1
            out.append(
                Envelope(
                    PROTOCOL,
                    stream.STAGE,
                    ctx.name,
                    ctx.name,
                    {"tree": state["tree"], stream.CHUNK: index + 1},
                )
            )
        return out

    def _close_tree_timing(self, ctx: PartyContext, state: dict[str, Any]) -> None:
        """Record the finished tree's critical path in its metrics entry."""
        path = timing.close_tree(state, time.perf_counter())
        if path is None:
            return
        metrics = ctx.store.get_json("sb.metrics")
        if metrics and metrics[-1]["tree"] == path["tree"]:
            metrics[-1][timing.CRITICAL_PATH] = path
            ctx.store.put_json("sb.metrics", metrics)

    def _after_level(
        self, ctx: PartyContext, state: dict[str, Any], params: SecureBoostParams
    ) -> list[Envelope]:
        level_nodes = state["level_nodes"] if state["level"] > 0 else [0]
        depth = state["level"]
        if depth >= params.max_depth or not level_nodes:
            bank_trees.finish_tree(ctx, state, params)
            ctx.store.put_json("sb.state", state)
            return self._next_tree(ctx, state, params)
        splits = bank_trees.choose(ctx, state, params, level_nodes, bank_only=False)
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
                bank_trees.apply_bank_split(ctx, state, node, split, new_position)
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
                bank_trees.record_node(ctx, node, {"owner": owner, "split_id": split_id})
        last = depth + 1 >= params.max_depth
        compute = [] if last else bank_trees.smaller_children(ctx, splits, next_level)
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
            bank_trees.finish_tree(ctx, state, params)
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

    # -- the end --------------------------------------------------------------------------

    def _request_decisions(
        self, ctx: PartyContext, state: dict[str, Any], params: SecureBoostParams
    ) -> list[Envelope]:
        """Ask every platform to keep its part of the first ``n_trees`` trees (the model kept)."""
        trained = len(ctx.store.get_json("sb.trees"))
        state["n_trees"] = bank_validation.kept_trees(state, params, trained)
        state["expect"] = ["decisions"]
        state["pending"] = list(state["platforms"])
        ctx.store.put_json("sb.state", state)
        return [
            Envelope(
                PROTOCOL,
                "predict",
                ctx.name,
                p,
                {"model_id": f"{state['model_id']}-{p}", "n_trees": state["n_trees"]},
            )
            for p in state["platforms"]
        ]

    def _finish(
        self, ctx: PartyContext, state: dict[str, Any], params: SecureBoostParams
    ) -> Envelope:
        rows = job_rows(ctx)
        test = ctx.store.get_array(TEST_MASK_KEY).astype(bool)
        frame = aligned_features(ctx, rows, test)
        y_test = labels(ctx.table())[rows][test]
        refs = state.get("refs", {})
        specs = {s["name"]: BinSpec.from_dict(s) for s in ctx.store.get_json("sb.specs")}
        trained = ctx.store.get_json("sb.trees")
        kept = int(state["n_trees"])
        part = BankPart(
            party=ctx.name,
            model_id=state["model_id"],
            base_score=float(base_score(ctx.store.get_array("sb.y"), _weights(ctx))),
            trees=[
                {int(n["node_id"]): BankNode.from_dict(n) for n in tree} for tree in trained[:kept]
            ],
            bins=specs,
            platform_parts={
                p: {"model_id": r["model_id"], "content_hash": r["content_hash"]}
                for p, r in refs.items()
            },
            params=state["params"],
            platform_groups={p: r["groups"] for p, r in refs.items() if "groups" in r},
            groups_withheld={p: r["withheld"] for p, r in refs.items() if "withheld" in r},
        )
        decisions = {
            p: (r["split_ids"], ctx.store.get_array(f"sb.decisions.{p}")) for p, r in refs.items()
        }
        metrics = ctx.store.get_json("sb.metrics")
        report = None
        p_test = None
        if test.any():
            staged = part.raw_scores(frame, decisions, staged=True)
            for t, entry in enumerate(metrics[:kept]):
                entry["test_auc"] = float(evaluate_scores(y_test, sigmoid(staged[:, t])).auc)
            p_test = sigmoid(staged[:, -1])
            report = evaluate_scores(y_test, p_test).to_dict()
        train_raw = ctx.store.get_array("sb.raw")
        if kept < len(trained):
            # The model ends at the best tree: its importance and training scores are those
            # of the trees up to there.
            state["importance"] = state["validation"].get("best_importance", {})
            train_raw = ctx.store.get_array(bank_validation.BEST_RAW)
        splits = split_summary(ctx.store.get_array("sb.y"), sigmoid(train_raw), p_test)
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
                # Only a job with validation rows reports them (nothing new otherwise).
                **(
                    {"validation": dumps(bank_validation.summary(state, params, len(trained)))}
                    if bank_validation.enabled(state)
                    else {}
                ),
                "splits": dumps(splits),
            },
        )


#: Longest group label the bank accepts from a platform (published groups are short words).
MAX_GROUP_LABEL = 64


def _released_groups(env: Envelope, split_ids: list[str]) -> dict[str, Any]:
    """What a platform's ``decisions`` reply released to explain its splits, checked.

    ``{"groups": {split_id: group}}`` for exactly the platform's split ids, or ``{"withheld":
    reason}``; a reply with neither (an older platform) releases nothing.

    Raises
    ------
    ProtocolError
        If the groups do not name exactly the reply's splits, or a label is not a short string.
    """
    if "groups" in env.payload:
        groups = env.json("groups")
        if not isinstance(groups, dict) or sorted(groups) != sorted(split_ids):
            raise ProtocolError(
                f"secureboost/decisions from {env.sender}: groups must name exactly its "
                f"{len(split_ids)} split ids"
            )
        bad = [v for v in groups.values() if not isinstance(v, str) or not v]
        bad += [v for v in groups.values() if isinstance(v, str) and len(v) > MAX_GROUP_LABEL]
        if bad:
            raise ProtocolError(
                f"secureboost/decisions from {env.sender}: group labels must be non-empty "
                f"strings of at most {MAX_GROUP_LABEL} characters"
            )
        return {"groups": {str(k): str(v) for k, v in groups.items()}}
    if "groups_withheld" in env.payload:
        return {"withheld": env.text("groups_withheld")[:200]}
    return {}


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


def _weights(ctx: PartyContext) -> npt.NDArray[np.float64] | None:
    """The training rows' sample weights (``None``: unweighted)."""
    try:
        return ctx.store.get_array("sb.w")
    except KeyError:
        return None


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
        KeyPair.load(
            ctx.store,
            prefix=KEY_PREFIX,
            allow_insecure_test_keys=ctx.guard.limits.allow_insecure_test_keys,
        ),
        crypto.RowLayout(int(layout["max_rows"]), noise),
    )
