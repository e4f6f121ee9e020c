"""Streamed gradients (``gradient_chunks``): the same model, the same releases, checked pieces."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from federated.estimators import SecureBoostClassifier
from federated.party import DictStore, PartyRuntime
from federated.protocols import party_protocols
from federated.spec import PartyBinding
from federated.transport import InProcessTransport
from models.protocol import Envelope, ProtocolError
from models.secureboost import stream, timing
from models.secureboost.params import SecureBoostParams
from models.secureboost.settings import MAX_GRADIENT_CHUNKS, SecureBoostSettings
from tests.test_secureboost_protocol import KEYS, _core, _data

PARAMS: dict[str, Any] = {
    "n_estimators": 3,
    "max_depth": 3,
    "max_bin": 8,
    "min_child_samples": 5,
    **KEYS,
}


@pytest.mark.parametrize(
    ("n_rows", "chunks", "expected"),
    [
        (10, 1, [0, 10]),  # one piece: the unchunked protocol
        (10, 3, [0, 4, 7, 10]),  # uneven: the first pieces are one row longer
        (9, 3, [0, 3, 6, 9]),
        (3, 8, [0, 1, 2, 3]),  # more pieces than rows: one row each
        (1, 4, [0, 1]),
        (0, 4, [0, 0]),  # no rows: one empty piece
    ],
)
def test_bounds_cut_every_row_once_into_nonempty_pieces(
    n_rows: int, chunks: int, expected: list[int]
) -> None:
    cuts = stream.bounds(n_rows, chunks)
    assert cuts == expected
    sizes = np.diff(cuts)
    assert cuts[0] == 0
    assert cuts[-1] == n_rows
    assert n_rows == 0 or (sizes >= 1).all()
    assert sizes.max() - sizes.min() <= 1


def test_bounds_refuse_nonsense() -> None:
    with pytest.raises(ProtocolError, match="at least 1"):
        stream.bounds(10, 0)
    with pytest.raises(ProtocolError, match="-1 rows"):
        stream.bounds(-1, 2)


def test_the_setting_has_one_default_and_bounds() -> None:
    assert (
        SecureBoostParams().gradient_chunks
        == SecureBoostSettings(type="secureboost").gradient_chunks
    )
    with pytest.raises(ValueError, match="gradient_chunks=0"):
        SecureBoostParams(gradient_chunks=0)
    with pytest.raises(ValueError, match="gradient_chunks"):
        SecureBoostSettings(type="secureboost", gradient_chunks=MAX_GRADIENT_CHUNKS + 1)


def _fit(n: int, seed: int, chunks: int, **extra: Any) -> tuple[SecureBoostClassifier, Any]:
    bank, y, platforms = _data(n, seed=seed)
    clf = SecureBoostClassifier(**{**PARAMS, **extra}, gradient_chunks=chunks)
    return clf.fit(bank, y, platforms), (bank, y, platforms)


@pytest.mark.parametrize("scheme", ["paillier", "ou"])
@pytest.mark.parametrize(
    ("n", "chunks"),
    [(500, 3), (40, MAX_GRADIENT_CHUNKS)],  # uneven last piece; more pieces than rows
    ids=["uneven", "more-pieces-than-rows"],
)
def test_streamed_and_whole_gradients_give_the_same_model(scheme: str, n: int, chunks: int) -> None:
    keys = {"key_bits": 1024} if scheme == "ou" else {}  # OU packs sums into p, a third of n
    whole, (bank, y, platforms) = _fit(n, 4, 1, scheme=scheme, **keys)
    streamed, _ = _fit(n, 4, chunks, scheme=scheme, **keys)
    assert streamed.bank_part_.to_dict()["trees"] == whole.bank_part_.to_dict()["trees"]
    assert streamed.platform_parts_["platform"].splits == whole.platform_parts_["platform"].splits
    proba = streamed.predict_proba(bank, platforms)[:, 1]
    assert np.array_equal(proba, whole.predict_proba(bank, platforms)[:, 1])
    core, tables = _core(bank, y, platforms, **PARAMS)
    assert np.abs(proba - core.predict_proba(tables)).max() < 1e-6


def test_two_platforms_stream_and_equal_the_core() -> None:
    bank, y, platforms = _data(400, seed=3)
    frame = platforms["platform"]
    split = {"platform_a": frame[["tax_score"]], "platform_b": frame[["grade", "employees"]]}
    clf = SecureBoostClassifier(**PARAMS, gradient_chunks=4).fit(bank, y, split)
    core, tables = _core(bank, y, split, **PARAMS)
    assert np.abs(clf.predict_proba(bank, split)[:, 1] - core.predict_proba(tables)).max() < 1e-6


def test_a_dp_job_streams_and_counts_the_same_releases() -> None:
    bank, y, platforms = _data(600, seed=9)
    dp = {"n_estimators": 3, "max_depth": 2, "max_bin": 8, "dp_epsilon": 8.0, **KEYS}
    streamed = SecureBoostClassifier(**dp, gradient_chunks=5).fit(bank, y, platforms)
    events = streamed.privacy_["platform"]["events"]
    assert len(events) == 1
    assert events[0]["steps"] == 3 * 2  # one release per histogram level, pieces or not
    assert np.isfinite(streamed.predict_proba(bank, platforms)).all()


def test_pieces_cross_in_the_hop_of_the_banks_next_piece_and_sums_are_released_once() -> None:
    bank, y, platforms = _data(300, seed=5)
    n_train = len(y)  # the estimator trains on every row
    seen: list[tuple[int, Envelope]] = []
    original = InProcessTransport.exchange

    def tapped(self: InProcessTransport, envelopes: Any) -> list[Envelope]:
        hop = self.stats.hops
        seen.extend((hop, env) for env in envelopes)
        return original(self, envelopes)

    InProcessTransport.exchange = tapped  # type: ignore[method-assign]
    try:
        clf = SecureBoostClassifier(**{**PARAMS, "n_estimators": 2}, gradient_chunks=3)
        clf.fit(bank, y, platforms)
    finally:
        InProcessTransport.exchange = original  # type: ignore[method-assign]
    sb = [(hop, env) for hop, env in seen if env.protocol == "secureboost"]
    pieces = [(hop, env) for hop, env in sb if env.stage == "tree"]
    own = [(hop, env) for hop, env in sb if env.stage == stream.STAGE]
    assert len(pieces) == 2 * 3
    assert len(own) == 2 * 2
    for tree in (0, 1):
        rows = [env.array("gh").shape[0] for _, env in pieces if env.payload["tree"] == tree]
        firsts = [env.payload[stream.FIRST_ROW] for _, env in pieces if env.payload["tree"] == tree]
        assert sum(rows) == n_train
        assert firsts == [0, rows[0], rows[0] + rows[1]]
        # each of the bank's own messages is in flight in the same hop as the piece before it
        hops = {
            env.payload[stream.CHUNK]: hop for hop, env in pieces if env.payload["tree"] == tree
        }
        for hop, env in own:
            if env.payload["tree"] == tree:
                assert env.sender == env.recipient == "bank"
                assert hop == hops[env.payload[stream.CHUNK] - 1]
                assert set(env.payload) == {"tree", stream.CHUNK}  # no data
    # the root's sums are released once per tree, after the last piece
    roots = [env for _, env in sb if env.stage == "hist" and env.payload.get("level") == 0]
    assert len(roots) == 2
    for env in roots:
        assert len(env.json(stream.STREAM_SECONDS)) == 2


def test_the_critical_path_counts_overlap_and_its_parts_sum_to_the_wall() -> None:
    clf, _ = _fit(300, 6, 3)
    for entry in clf.outcome_.per_tree:
        path = entry["critical_path"]
        assert sum(path[p] for p in timing.PARTS) == pytest.approx(path["wall"], abs=1e-9)
        assert path["overlap"] >= 0.0
        assert path["platform_compute"] >= 0.0
        assert path["platform_idle"] == pytest.approx(
            path["wall"] - path["platform_compute"] - path["overlap"]
        )
    assert "overlap_mean" in timing.summarize(clf.outcome_.per_tree)


def test_overlap_is_the_shorter_side_of_each_streamed_hop() -> None:
    state: dict[str, Any] = {}
    timing.open_tree(state, 0, 0.0)
    timing.streamed(state, 0.3)  # the bank's piece 1, beside the platform's piece 0
    timing.streamed(state, 0.1)  # piece 2, beside piece 1
    reply = Envelope(
        "secureboost",
        "hist",
        "p",
        "bank",
        {timing.COMPUTE_SECONDS: 0.5, stream.STREAM_SECONDS: "[0.2, 0.4]"},
    )
    timing.platform_replied(state, reply)
    timing.hop_complete(state)
    path = timing.close_tree(state, 2.0)
    assert path is not None
    assert path["overlap"] == pytest.approx(0.2 + 0.1)
    assert path["platform_compute"] == pytest.approx(0.2 + 0.4 + 0.5 - 0.3)
    bad = Envelope("secureboost", "hist", "p", "bank", {stream.STREAM_SECONDS: "[-1]"})
    timing.open_tree(state, 1, 0.0)
    with pytest.raises(ProtocolError, match="nonnegative"):
        timing.platform_replied(state, bad)


def _runtime(role: str) -> PartyRuntime:
    return PartyRuntime(
        PartyBinding(role, role, __file__),
        DictStore(),
        party_protocols(),  # type: ignore[arg-type]
    )


def test_only_the_bank_sends_itself_the_next_piece_and_only_the_expected_one() -> None:
    bank = _runtime("bank")
    bank.store.put_json("secureboost.stage", "hist")
    state = {"platforms": {"platform": {}}, "tree": 2, "stream": {"bounds": [0, 5, 10], "next": 1}}
    bank.store.put_json("sb.state", state)
    forged = Envelope("secureboost", stream.STAGE, "platform", "bank", {"tree": 2, "chunk": 1})
    out = bank.dispatch(forged)
    assert out[0].stage == "error"
    assert "only the bank" in str(out[0].payload["message"])
    replayed = Envelope("secureboost", stream.STAGE, "bank", "bank", {"tree": 2, "chunk": 0})
    out = bank.dispatch(replayed)
    assert out[0].stage == "error"
    assert "expected tree 2 piece 1" in str(out[0].payload["message"])


def test_a_platform_takes_pieces_only_in_order() -> None:
    platform = _runtime("platform")
    platform.store.put_json("secureboost.stage", "tree")
    platform.store.put_json(
        "sb.state", {"bank": "bank", "settings": {}, "tree": 1, "received": 100}
    )
    late = Envelope(
        "secureboost", "tree", "bank", "platform", {"tree": 1, stream.FIRST_ROW: 150, "chunk": 2}
    )
    out = platform.dispatch(late)
    assert out[0].stage == "error"
    assert "expected tree 1 from row 100: pieces come in order" in str(out[0].payload["message"])
