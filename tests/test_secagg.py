"""SecAgg/SecAgg+ protocol: exact sums, masking, dropouts, and every stage transition."""

from __future__ import annotations

import hashlib
import logging
import pickle
from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secure_agg.secagg import (
    AuthenticationError,
    EncryptedSharesMessage,
    InputError,
    MaskedVectorMessage,
    MaskedVectorRequest,
    MessageError,
    PublicKeysMessage,
    SecAggClient,
    SecAggConfig,
    SecAggConfigError,
    SecAggServer,
    SetupMessage,
    ShareKeysRequest,
    Stage,
    StageError,
    TooManyDropoutsError,
    UnmaskRequest,
    UnmaskSharesMessage,
    _entropy,
    fixedpoint,
    run_round,
)
from secure_agg.secagg.messages import Record

Vectors = dict[int, npt.NDArray[np.float64]]


def make_config(n: int = 5, threshold: int = 3, length: int = 8, **extra: object) -> SecAggConfig:
    return SecAggConfig(
        round_id=7,
        client_ids=tuple(range(10, 10 + n)),
        threshold=threshold,
        vector_length=length,
        **extra,  # type: ignore[arg-type]
    )


def random_vectors(config: SecAggConfig, seed: int = 0, scale: float = 1.0) -> Vectors:
    rng = np.random.default_rng(seed)
    return {cid: rng.normal(scale=scale, size=config.vector_length) for cid in config.client_ids}


def clipped_sum(
    config: SecAggConfig, vectors: Vectors, ids: Iterable[int]
) -> npt.NDArray[np.float64]:
    r = config.clipping_range
    return np.asarray(np.sum([np.clip(vectors[c], -r, r) for c in ids], axis=0), dtype=np.float64)


def encoded(config: SecAggConfig, vector: npt.NDArray[np.float64]) -> npt.NDArray[np.uint64]:
    return fixedpoint.encode(
        vector,
        clipping_range=config.clipping_range,
        quantization_bits=config.quantization_bits,
        modulus_bits=config.modulus_bits,
    )


class Round:
    """Drives one round by hand so tests can drop, replay or tamper with any message."""

    def __init__(self, config: SecAggConfig) -> None:
        self.config = config
        self.server = SecAggServer(config)
        self.clients = {cid: SecAggClient(cid, config) for cid in config.client_ids}
        self.vectors = random_vectors(config)
        self.setup_message: SetupMessage | None = None

    def setup(self) -> tuple[SetupMessage, list[PublicKeysMessage]]:
        setup = self.setup_message = self.server.setup()
        return setup, [client.setup(setup) for client in self.clients.values()]

    def to_share_keys(self) -> dict[int, ShareKeysRequest]:
        return self.server.share_keys(self.setup()[1])

    def to_collect(self) -> dict[int, MaskedVectorRequest]:
        requests = self.to_share_keys()
        return self.server.collect_masked_vectors(
            [self.clients[c].share_keys(r) for c, r in requests.items()]
        )

    def masked(self, requests: dict[int, MaskedVectorRequest]) -> list[MaskedVectorMessage]:
        return [
            self.clients[c].collect_masked_vectors(r, self.vectors[c]) for c, r in requests.items()
        ]

    def to_unmask(self) -> dict[int, UnmaskRequest]:
        return self.server.unmask(self.masked(self.to_collect()))

    def finish(self) -> npt.NDArray[np.float64]:
        requests = self.to_unmask()
        return self.server.finish([self.clients[c].unmask(r) for c, r in requests.items()])


# ---------------------------------------------------------------- correctness


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(3, 7),
    data=st.data(),
    length=st.integers(1, 12),
    bits=st.sampled_from([8, 16, 24]),
    clip=st.sampled_from([1.0, 8.0]),
)
def test_decoded_sum_equals_plain_sum_within_the_quantization_bound(
    n: int, data: st.DataObject, length: int, bits: int, clip: float
) -> None:
    threshold = data.draw(st.integers(2, n), label="threshold")
    config = make_config(n, threshold, length, clipping_range=clip, quantization_bits=bits)
    floats = st.floats(-2 * clip, 2 * clip, allow_nan=False)  # some values get clipped
    vectors = {
        cid: np.array(data.draw(st.lists(floats, min_size=length, max_size=length)))
        for cid in config.client_ids
    }
    result = run_round(config, vectors).result()
    expected = clipped_sum(config, vectors, config.client_ids)
    assert result.dtype == np.float64
    assert np.abs(result - expected).max() <= config.error_bound(n)


def test_secagg_plus_sparse_graph_sums_correctly_with_stochastic_rounding() -> None:
    config = make_config(11, 3, 50, neighbours=4, stochastic_rounding=True)
    vectors = random_vectors(config, seed=3)
    server = run_round(config, vectors)
    assert all(len(members) == 5 for members in server.neighbourhoods.values())
    expected = clipped_sum(config, vectors, config.client_ids)
    assert np.abs(server.result() - expected).max() <= config.error_bound()


# ---------------------------------------------------------------- what the server sees


def looks_uniform(words: npt.NDArray[np.unsignedinteger], bits: int) -> bool:
    """Every bit position is a fair coin and the top byte is flat (chi-square), within 6 sigma."""
    values = words.astype(np.uint64)
    positions = np.arange(bits, dtype=np.uint64)
    ones = ((values[:, None] >> positions) & np.uint64(1)).mean(axis=0)
    if np.abs(ones - 0.5).max() > 6 * np.sqrt(0.25 / len(values)):
        return False
    top = (values >> np.uint64(bits - 8)).astype(np.int64)
    counts = np.bincount(top, minlength=256)
    expected = len(values) / 256
    chi2 = ((counts - expected) ** 2 / expected).sum()
    return bool(chi2 < 255 + 6 * np.sqrt(2 * 255))


def test_every_masked_vector_differs_from_its_input_and_looks_uniform() -> None:
    config = make_config(4, 3, 20_000)
    vectors = random_vectors(config, scale=0.01)  # tiny inputs: very non-uniform encodings
    received: list[Record] = []
    run_round(config, vectors, observe=received.append)
    masked = [r for r in received if r["kind"] == MaskedVectorMessage.KIND]
    assert len(masked) == 4
    for record in masked:
        sender = record["sender"]
        vector = record["masked_vector"]
        assert isinstance(sender, int)
        assert isinstance(vector, np.ndarray)
        plain = encoded(config, vectors[sender])
        assert (vector.astype(np.uint64) == plain).mean() < 0.001
        assert looks_uniform(vector, config.modulus_bits)
        assert not looks_uniform(plain, config.modulus_bits)  # the check can tell


def test_server_log_never_contains_an_unmasked_vector() -> None:
    config = make_config(5, 3, 256)
    vectors = random_vectors(config, seed=9)
    received: list[Record] = []
    run_round(config, vectors, observe=received.append)
    assert {r["kind"] for r in received} == {
        PublicKeysMessage.KIND,
        EncryptedSharesMessage.KIND,
        MaskedVectorMessage.KIND,
        UnmaskSharesMessage.KIND,
    }
    payload = b"".join(
        v.tobytes() if isinstance(v, np.ndarray) else v
        for record in received
        for v in record.values()
        if isinstance(v, bytes | np.ndarray)
    )
    arrays = [v for record in received for v in record.values() if isinstance(v, np.ndarray)]
    for cid, vector in vectors.items():
        plain = encoded(config, vector)
        wire = plain.astype(config.word_dtype)
        for needle in (vector.tobytes()[:32], wire.tobytes()[:32], wire.tobytes()[-32:]):
            assert needle not in payload, f"client {cid}'s input leaked"
        for array in arrays:
            if array.shape == plain.shape:
                assert (array.astype(np.uint64) == plain).mean() < 0.05


@pytest.fixture
def replayable_entropy(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Make the CSPRNG a deterministic stream; calling the fixture's value restarts it."""
    state = {"counter": 0}

    def random_bytes(n: int) -> bytes:
        state["counter"] += 1
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{state['counter']}/{len(out)}".encode()).digest()
        return out[:n]

    def random_below(n: int) -> int:
        return int.from_bytes(random_bytes(64), "big") % n

    monkeypatch.setattr(_entropy, "random_bytes", random_bytes)
    monkeypatch.setattr(_entropy, "random_below", random_below)

    def restart() -> None:
        state["counter"] = 0

    return restart


def test_masks_do_not_depend_on_anyones_input(replayable_entropy: Callable[[], None]) -> None:
    config = make_config(5, 3, 64)
    first = random_vectors(config, seed=1)
    second = dict(first)
    second[12] = random_vectors(config, seed=2)[12]  # only client 12's input changes

    def masked_vectors(vectors: Vectors) -> dict[int, npt.NDArray[np.uint64]]:
        replayable_entropy()
        received: list[Record] = []
        run_round(config, vectors, observe=received.append)
        return {
            r["sender"]: r["masked_vector"].astype(np.uint64)  # type: ignore[union-attr,misc]
            for r in received
            if r["kind"] == MaskedVectorMessage.KIND
        }

    a, b = masked_vectors(first), masked_vectors(second)
    for cid in config.client_ids:
        if cid != 12:
            assert np.array_equal(a[cid], b[cid])
    # client 12's own mask y - x is the same for both inputs
    mask_a = fixedpoint.reduce(a[12] - encoded(config, first[12]), config.modulus_bits)
    mask_b = fixedpoint.reduce(b[12] - encoded(config, second[12]), config.modulus_bits)
    assert np.array_equal(mask_a, mask_b)


def test_no_secret_reaches_the_logs(
    replayable_entropy: Callable[[], None], caplog: pytest.LogCaptureFixture
) -> None:
    drawn: list[bytes] = []
    original = _entropy.random_bytes

    def recording(n: int) -> bytes:
        out = original(n)
        drawn.append(out)
        return out

    _entropy.random_bytes = recording  # undone by the fixture's monkeypatch
    config = make_config(4, 3, 4)
    with caplog.at_level(logging.DEBUG, logger="secure_agg"):
        run_round(config, random_vectors(config), drop={10: Stage.COLLECT_MASKED_VECTORS})
    assert caplog.records  # something was logged
    for secret in drawn:
        assert secret.hex() not in caplog.text
        assert repr(secret) not in caplog.text


# ---------------------------------------------------------------- dropouts


@pytest.mark.parametrize(
    "drop",
    [
        {10: Stage.SETUP, 11: Stage.SETUP},
        {10: Stage.SHARE_KEYS, 11: Stage.COLLECT_MASKED_VECTORS},
        {10: Stage.COLLECT_MASKED_VECTORS, 14: Stage.COLLECT_MASKED_VECTORS},
        {10: Stage.UNMASK, 11: Stage.UNMASK},
        {12: Stage.COLLECT_MASKED_VECTORS, 13: Stage.UNMASK},
    ],
    ids=["setup", "share-then-collect", "before-masking", "after-masking", "before-and-after"],
)
def test_up_to_n_minus_t_dropouts_give_the_survivors_sum(drop: dict[int, str]) -> None:
    config = make_config(5, 3, 16)
    vectors = random_vectors(config, seed=4)
    server = run_round(config, vectors, drop=drop)
    after_masking = {c for c, s in drop.items() if s == Stage.UNMASK}
    included = [c for c in config.client_ids if c not in drop or c in after_masking]
    assert server.summed_clients == frozenset(included)
    expected = clipped_sum(config, vectors, included)
    assert np.abs(server.result() - expected).max() <= config.error_bound(len(included))
    assert set().union(*server.dropped.values()) == set(drop)


@pytest.mark.parametrize(
    "stages",
    [
        (Stage.SETUP,) * 3,
        (Stage.SHARE_KEYS,) * 3,
        (Stage.COLLECT_MASKED_VECTORS,) * 3,
        (Stage.UNMASK,) * 3,
        (Stage.SHARE_KEYS, Stage.COLLECT_MASKED_VECTORS, Stage.UNMASK),
    ],
)
def test_n_minus_t_plus_one_dropouts_abort_without_any_sum(stages: tuple[str, ...]) -> None:
    config = make_config(5, 3, 16)
    drop = dict(zip((10, 11, 12), stages, strict=True))
    with pytest.raises(TooManyDropoutsError, match="fewer than the threshold 3"):
        run_round(config, random_vectors(config), drop=drop)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(3, 7), data=st.data())
def test_random_dropouts_succeed_exactly_when_at_most_n_minus_t_drop(
    n: int, data: st.DataObject
) -> None:
    threshold = data.draw(st.integers(2, n))
    config = make_config(n, threshold, 6)
    stage = st.sampled_from([None, *Stage.ALL])
    drop = {
        cid: s for cid in config.client_ids if (s := data.draw(stage, label=str(cid))) is not None
    }
    vectors = random_vectors(config, seed=n)
    if len(drop) > n - threshold:
        with pytest.raises(TooManyDropoutsError):
            run_round(config, vectors, drop=drop)
        return
    server = run_round(config, vectors, drop=drop)
    included = [c for c in config.client_ids if drop.get(c, Stage.UNMASK) == Stage.UNMASK]
    expected = clipped_sum(config, vectors, included)
    assert np.abs(server.result() - expected).max() <= config.error_bound(len(included))


def test_sparse_graph_tolerates_dropouts_per_neighbourhood() -> None:
    # Each neighbourhood is 5 consecutive clients of the (random) ring; clients 4 ring positions
    # apart never share one neighbourhood in threes, so every neighbourhood keeps >= 3 live.
    config = make_config(12, 3, 10, neighbours=4)
    game = Round(config)
    setup, keys = game.setup()
    ring = [int(c) for c in setup.ring]
    at_share, at_collect, at_unmask = ring[0], ring[4], ring[8]
    share_requests = game.server.share_keys(keys)
    shares = [game.clients[c].share_keys(r) for c, r in share_requests.items() if c != at_share]
    mask_requests = game.server.collect_masked_vectors(shares)
    masked = [
        game.clients[c].collect_masked_vectors(r, game.vectors[c])
        for c, r in mask_requests.items()
        if c != at_collect
    ]
    unmask_requests = game.server.unmask(masked)
    result = game.server.finish(
        [game.clients[c].unmask(r) for c, r in unmask_requests.items() if c != at_unmask]
    )
    included = [c for c in config.client_ids if c not in (at_share, at_collect)]
    expected = clipped_sum(config, game.vectors, included)
    assert np.abs(result - expected).max() <= config.error_bound(len(included))


def test_sparse_graph_refuses_to_unmask_survivors_split_in_two() -> None:
    config = make_config(10, 2, 4, neighbours=2)  # a ring: each client has 2 neighbours
    game = Round(config)
    requests = game.to_collect()
    # Walk the ring (each neighbourhood is {previous, self, next}); clients 5 apart cut it in two.
    graph = game.server.neighbourhoods
    order = [config.client_ids[0]]
    while len(order) < config.n_clients:
        order.append(next(c for c in sorted(graph[order[-1]]) if c not in order))
    cut = {order[0], order[5]}
    replies = [m for m in game.masked(requests) if m.sender not in cut]
    with pytest.raises(TooManyDropoutsError, match="2 groups"):
        game.server.unmask(replies)
    assert game.server.stage == Stage.ABORTED
    with pytest.raises(StageError, match="aborted"):
        game.server.result()


# ---------------------------------------------------------------- stage transitions


def test_valid_transitions_in_order() -> None:
    game = Round(make_config(4, 3, 5))
    server, clients = game.server, game.clients
    assert server.stage == Stage.NEW
    assert {c.stage for c in clients.values()} == {Stage.SETUP}
    _, keys = game.setup()
    assert server.stage == Stage.SETUP
    assert {c.stage for c in clients.values()} == {Stage.SHARE_KEYS}
    share_requests = server.share_keys(keys)
    assert server.stage == Stage.SHARE_KEYS
    shares = [clients[c].share_keys(r) for c, r in share_requests.items()]
    assert {c.stage for c in clients.values()} == {Stage.COLLECT_MASKED_VECTORS}
    mask_requests = server.collect_masked_vectors(shares)
    assert server.stage == Stage.COLLECT_MASKED_VECTORS
    masked = game.masked(mask_requests)
    assert {c.stage for c in clients.values()} == {Stage.UNMASK}
    unmask_requests = server.unmask(masked)
    assert server.stage == Stage.UNMASK
    with pytest.raises(StageError, match="no result yet"):
        server.result()
    replies = [clients[c].unmask(r) for c, r in unmask_requests.items()]
    assert {c.stage for c in clients.values()} == {Stage.DONE}
    server.finish(replies)
    assert server.stage == Stage.DONE
    assert server.result().shape == (5,)


def _server_messages(config: SecAggConfig, client_id: int) -> dict[str, object]:
    """One valid server message of every stage for ``client_id`` (from a separate round)."""
    game = Round(config)
    setup, keys = game.setup()
    share = game.server.share_keys(keys)
    mask = game.server.collect_masked_vectors(
        [game.clients[c].share_keys(r) for c, r in share.items()]
    )
    unmask = game.server.unmask(game.masked(mask))
    return {
        Stage.SETUP: setup,
        Stage.SHARE_KEYS: share[client_id],
        Stage.COLLECT_MASKED_VECTORS: mask[client_id],
        Stage.UNMASK: unmask[client_id],
    }


def _call(client: SecAggClient, stage: str, message: object) -> object:
    if stage == Stage.COLLECT_MASKED_VECTORS:
        return client.collect_masked_vectors(message, np.zeros(client.config.vector_length))  # type: ignore[arg-type]
    return getattr(client, stage)(message)


@pytest.mark.parametrize("at", Stage.ALL)
def test_client_refuses_every_message_of_another_stage(at: str) -> None:
    config = make_config(4, 3, 5)
    messages = _server_messages(config, 10)
    game = Round(config)
    client = game.clients[10]
    if at == Stage.SHARE_KEYS:
        game.setup()
    elif at == Stage.COLLECT_MASKED_VECTORS:
        game.to_collect()
    elif at == Stage.UNMASK:
        game.masked(game.to_collect())
    assert client.stage == at
    for stage in Stage.ALL:
        if stage != at:
            with pytest.raises(StageError, match="out of order"):
                _call(client, stage, messages[stage])
            assert client.stage == at  # refused before anything ran


def test_client_refuses_wrong_round_wrong_recipient_and_wrong_kind() -> None:
    config = make_config(4, 3, 5)
    game = Round(config)
    requests = game.to_share_keys()
    client = game.clients[10]
    mine = requests[10]
    other_round = ShareKeysRequest(
        round_id=8,
        recipient=10,
        client_ids=mine.client_ids,
        encryption_keys=mine.encryption_keys,
        mask_keys=mine.mask_keys,
    )
    with pytest.raises(StageError, match="round 8"):
        client.share_keys(other_round)
    with pytest.raises(StageError, match="for client 11"):
        client.share_keys(requests[11])
    with pytest.raises(StageError, match="expects a ShareKeysRequest"):
        client.share_keys(game.setup_message)  # type: ignore[arg-type]
    assert client.stage == Stage.SHARE_KEYS
    client.share_keys(mine)  # the right message is still accepted
    with pytest.raises(StageError, match="out of order"):
        client.share_keys(mine)  # repeated


def test_client_refuses_a_setup_it_did_not_agree_to() -> None:
    config = make_config(4, 3, 5)
    other = make_config(4, 2, 5)
    setup = SecAggServer(other).setup()
    client = SecAggClient(10, config)
    replay = SetupMessage(round_id=7, config=setup.config, ring=setup.ring)
    with pytest.raises(MessageError, match=r"\['threshold'\]"):
        client.setup(replay)
    bad_ring = SetupMessage(round_id=7, config=config.to_bytes(), ring=np.array([10, 11, 12, 99]))
    with pytest.raises(MessageError, match="permutation"):
        client.setup(bad_ring)
    assert client.stage == Stage.SETUP
    with pytest.raises(SecAggConfigError, match="not among"):
        SecAggClient(99, config)


def test_client_refuses_keys_that_are_not_its_neighbours_or_not_its_own() -> None:
    config = make_config(4, 3, 5)
    game = Round(config)
    mine = game.to_share_keys()[10]
    swapped = ShareKeysRequest(
        round_id=7,
        recipient=10,
        client_ids=mine.client_ids,
        encryption_keys=mine.encryption_keys[::-1],
        mask_keys=mine.mask_keys[::-1],
    )
    with pytest.raises(MessageError, match="own public keys"):
        game.clients[10].share_keys(swapped)
    too_few = ShareKeysRequest(
        round_id=7,
        recipient=10,
        client_ids=mine.client_ids[:2],
        encryption_keys=mine.encryption_keys[:2],
        mask_keys=mine.mask_keys[:2],
    )
    with pytest.raises(TooManyDropoutsError):
        game.clients[10].share_keys(too_few)
    assert game.clients[10].stage == Stage.ABORTED


@pytest.mark.parametrize("tamper", ["flip-bit", "misaddressed", "other-sender"])
def test_tampered_share_ciphertext_fails_authentication_and_aborts(tamper: str) -> None:
    config = make_config(4, 3, 5)
    game = Round(config)
    requests = game.to_collect()
    mine, theirs = requests[10], requests[11]
    ciphertexts = mine.ciphertexts.copy()
    senders = mine.sender_ids.copy()
    if tamper == "flip-bit":
        ciphertexts[0, 40] ^= 1
    elif tamper == "misaddressed":  # client 12's ciphertext for client 11, relayed to client 10
        mine_row = int(np.flatnonzero(senders == 12)[0])
        their_row = int(np.flatnonzero(theirs.sender_ids == 12)[0])
        ciphertexts[mine_row] = theirs.ciphertexts[their_row]
    else:  # the right ciphertext attributed to another sender
        senders[[0, 1]] = senders[[1, 0]]
    forged = MaskedVectorRequest(
        round_id=7, recipient=10, sender_ids=senders, ciphertexts=ciphertexts
    )
    client = game.clients[10]
    with pytest.raises(AuthenticationError, match="failed authentication"):
        client.collect_masked_vectors(forged, np.zeros(5))
    assert client.stage == Stage.ABORTED
    with pytest.raises(StageError, match="aborted"):
        client.collect_masked_vectors(mine, np.zeros(5))


def test_client_refuses_bad_vectors_without_changing_state() -> None:
    game = Round(make_config(4, 3, 5))
    request = game.to_collect()[10]
    client = game.clients[10]
    with pytest.raises(InputError, match="shape"):
        client.collect_masked_vectors(request, np.zeros(6))
    with pytest.raises(InputError, match="NaN"):
        client.collect_masked_vectors(request, np.array([0, 1, np.nan, 0, 0]))
    assert client.stage == Stage.COLLECT_MASKED_VECTORS
    client.collect_masked_vectors(request, np.zeros(5))


def test_client_never_reveals_both_secrets_of_one_client() -> None:
    config = make_config(4, 2, 5)
    game = Round(config)
    request = game.to_unmask()[10]
    client = game.clients[10]
    both = UnmaskRequest(
        round_id=7,
        recipient=10,
        survivor_ids=request.survivor_ids,
        dropped_ids=request.survivor_ids[1:2],
    )
    with pytest.raises(MessageError, match="both secrets"):
        client.unmask(both)
    partial = UnmaskRequest(
        round_id=7,
        recipient=10,
        survivor_ids=request.survivor_ids[:3],
        dropped_ids=np.array([], dtype=np.int64),
    )
    with pytest.raises(MessageError, match="exactly"):
        client.unmask(partial)
    too_few = UnmaskRequest(
        round_id=7,
        recipient=10,
        survivor_ids=np.array([10]),
        dropped_ids=request.survivor_ids[request.survivor_ids != 10],
    )
    with pytest.raises(TooManyDropoutsError):
        client.unmask(too_few)
    assert client.stage == Stage.ABORTED


def test_server_refuses_out_of_order_calls() -> None:
    game = Round(make_config(4, 3, 5))
    server = game.server
    with pytest.raises(StageError, match="at stage 'new'"):
        server.share_keys([])
    _, keys = game.setup()
    with pytest.raises(StageError, match="setup runs once"):
        server.setup()
    with pytest.raises(StageError, match="at stage 'setup'"):
        server.unmask([])
    requests = server.share_keys(keys)
    with pytest.raises(StageError, match="at stage 'share_keys'"):
        server.share_keys(keys)  # the setup stage's replies again
    shares = [game.clients[c].share_keys(r) for c, r in requests.items()]
    with pytest.raises(StageError, match="expects EncryptedSharesMessage"):
        server.collect_masked_vectors(keys)  # type: ignore[arg-type]
    assert server.stage == Stage.SHARE_KEYS
    server.collect_masked_vectors(shares)


def test_server_refuses_repeated_foreign_late_and_other_round_replies() -> None:
    config = make_config(5, 3, 5)
    game = Round(config)
    server = game.server
    _, keys = game.setup()
    outsider = PublicKeysMessage(
        round_id=7, sender=99, encryption_key=b"x" * 32, mask_key=b"y" * 32
    )
    stale = PublicKeysMessage(
        round_id=6, sender=10, encryption_key=keys[0].encryption_key, mask_key=keys[0].mask_key
    )
    for batch, match in [
        ([*keys, keys[0]], "repeated"),
        ([*keys[1:], outsider], "not a participant"),
        ([stale, *keys[1:]], "round 6"),
    ]:
        with pytest.raises(StageError, match=match):
            server.share_keys(batch)
        assert server.stage == Stage.SETUP  # nothing ran
    requests = server.share_keys(keys[1:])  # client 10 dropped at setup
    assert 10 not in requests
    assert server.dropped[Stage.SETUP] == {10}
    shares = [game.clients[c].share_keys(r) for c, r in requests.items()]
    late_reply = EncryptedSharesMessage(
        round_id=7,
        sender=10,
        recipient_ids=np.array([], dtype=np.int64),
        ciphertexts=np.zeros((0, shares[0].ciphertexts.shape[1]), dtype=np.uint8),
    )
    with pytest.raises(StageError, match="dropped earlier"):
        server.collect_masked_vectors([*shares, late_reply])
    server.collect_masked_vectors(shares)


def test_server_refuses_malformed_vectors_and_replies() -> None:
    config = make_config(4, 3, 5)
    game = Round(config)
    requests = game.to_collect()
    masked = game.masked(requests)
    short = MaskedVectorMessage(round_id=7, sender=10, masked_vector=np.zeros(4, dtype=np.uint32))
    with pytest.raises(MessageError, match=r"uint32\[5\]"):
        game.server.unmask([short, *masked[1:]])
    assert game.server.stage == Stage.COLLECT_MASKED_VECTORS
    unmask = game.server.unmask(masked)
    replies = [game.clients[c].unmask(r) for c, r in unmask.items()]
    shifted = UnmaskSharesMessage(
        round_id=7,
        sender=10,
        seed_owner_ids=replies[0].seed_owner_ids[1:],
        seed_shares=replies[0].seed_shares[1:],
        mask_key_owner_ids=replies[0].mask_key_owner_ids,
        mask_key_shares=replies[0].mask_key_shares,
    )
    with pytest.raises(MessageError, match="does not answer"):
        game.server.finish([shifted, *replies[1:]])
    game.server.finish(replies)
    assert game.server.stage == Stage.DONE


def test_state_machines_hold_no_picklable_secrets() -> None:
    game = Round(make_config(3, 2, 4))
    game.setup()
    client = game.clients[10]
    with pytest.raises(TypeError, match="must not be pickled"):
        pickle.dumps(client)
    secret = client._encryption.secret_bytes()  # type: ignore[union-attr]
    assert secret.hex() not in repr(client)
    assert repr(secret) not in repr(client)
