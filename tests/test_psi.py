"""Private set intersection: the primitive, the protocol's exactness, leakage and stages."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.errors import DataError
from features.synth import generate_uscc
from federated.party import DictStore, PartyRuntime
from federated.protocols import party_protocols
from federated.spec import AlignmentSpec, JobSpec, PartyBinding, PartySpec
from federated.transport import InProcessTransport, PartyError, TransportError, run_protocol
from models.alignment import (
    ALIGNED_ROWS_KEY,
    AlignmentSettings,
    conclude,
    plaintext_intersection,
    start_envelopes,
)
from models.guard import ALL_REVEAL_MODES, NodeLimits
from models.protocol import COORDINATOR, Envelope, ProtocolError
from secure_agg import psi

# ---------------------------------------------------------------- the primitive


def test_blinding_commutes_on_curve_and_twist() -> None:
    points = psi.hash_to_group([str(i).encode() for i in range(300)])
    a, b = psi.BlindingKey.generate(), psi.BlindingKey.generate()
    ab = psi.blind(psi.blind(points, a), b)
    ba = psi.blind(psi.blind(points, b), a)
    assert np.array_equal(ab, ba)
    assert len({row.tobytes() for row in ab}) == 300


@pytest.mark.skipif(psi.backend() != "libsodium", reason="libsodium not installed here")
def test_libsodium_and_openssl_agree() -> None:
    points = psi.hash_to_group([f"id{i}".encode() for i in range(500)])
    secret = psi.BlindingKey.generate().secret_bytes()
    data = points.tobytes()
    assert psi._blind_sodium(secret, data) == psi._blind_openssl(secret, data)


@pytest.mark.parametrize("blind", ["_blind_sodium", "_blind_openssl"])
def test_both_back_ends_refuse_low_order_points(blind: str) -> None:
    if blind == "_blind_sodium" and psi.backend() != "libsodium":
        pytest.skip("libsodium not installed here")
    with pytest.raises(psi.PSIError, match="point 1 is of low order"):
        getattr(psi, blind)(bytes(32), bytes([9]) + bytes(31) + bytes(32))


def test_parallel_blinding_equals_serial() -> None:
    points = psi.hash_to_group([f"id{i}".encode() for i in range(psi.PARALLEL_THRESHOLD + 5)])
    key = psi.BlindingKey.generate()
    assert np.array_equal(psi.blind(points, key, workers=2), psi.blind(points, key, workers=1))


def test_parallel_hash_and_blind_equals_serial() -> None:
    ids = [f"id{i}".encode() for i in range(psi.PARALLEL_THRESHOLD + 7)]
    key = psi.BlindingKey.generate()
    expected = psi.blind(psi.hash_to_group(ids, b"d"), key, workers=1)
    assert np.array_equal(psi.hash_and_blind(ids, key, b"d", workers=2), expected)


def test_hash_to_group_is_deterministic_and_domain_separated() -> None:
    ids = [b"91110000600037341L", b"x"]
    first = psi.hash_to_group(ids)
    assert np.array_equal(first, psi.hash_to_group(ids))
    assert not np.array_equal(first, psi.hash_to_group(ids, domain=b"other"))
    assert (first[:, -1] & 0x80 == 0).all()


@pytest.mark.parametrize("u", [0, 1], ids=["zero", "one"])
def test_low_order_points_are_refused(u: int) -> None:
    point = np.zeros((1, 32), dtype=np.uint8)
    point[0, 0] = u
    with pytest.raises(psi.PSIError, match="low order"):
        psi.blind(point, psi.BlindingKey.generate())


def test_malformed_points_are_refused() -> None:
    with pytest.raises(psi.PSIError, match=r"shape \(n, 32\)"):
        psi.blind(np.zeros((3, 31), dtype=np.uint8), psi.BlindingKey.generate())


def test_key_material_never_leaks() -> None:
    key = psi.BlindingKey.generate()
    assert "secret" in repr(key)
    assert key.secret_bytes().hex() not in repr(key)
    with pytest.raises(TypeError, match="must not be pickled"):
        pickle.dumps(key)
    other = psi.BlindingKey.generate()
    assert key.agree(other.public_bytes()) == other.agree(key.public_bytes())


@pytest.mark.parametrize(
    ("n_left", "n_right", "expected"),
    [(1, 1, 8), (50_000, 1_000_000, 10), (1_000_000, 1_000_000, 10), (10**9, 10**9, 13)],
)
def test_comparison_bytes(n_left: int, n_right: int, expected: int) -> None:
    assert psi.comparison_bytes(n_left, n_right) == expected
    # The bound it promises: n_left * n_right * 2^-(8 t) <= 2^-40.
    assert n_left * n_right / 2 ** (8 * expected) <= 2**-40


def test_permutation_is_a_permutation() -> None:
    perm = psi.permutation(1000)
    assert sorted(perm.tolist()) == list(range(1000))
    assert not np.array_equal(perm, np.arange(1000))


# ---------------------------------------------------------------- the protocol


def _spec(
    reveal: str = "both", id_scheme: str = "text", minimum: int = 1, platforms: int = 1
) -> JobSpec:
    parties = [PartySpec("bank", "bank", "id", "y")] + [
        PartySpec(f"platform{i}" if platforms > 1 else "platform", "platform", "id")
        for i in range(platforms)
    ]
    return JobSpec(
        job_id="psi-test",
        name="psi",
        kind="vertical",
        parties=tuple(parties),
        model={"type": "secureboost"},
        crypto={"key_bits": 2048},
        alignment=AlignmentSpec(reveal=reveal, id_scheme=id_scheme, min_intersection=minimum),  # type: ignore[arg-type]
        task="align",
    )


def _write(folder: Path, name: str, ids: Sequence[str], label: bool) -> Path:
    rng = np.random.default_rng(len(ids))
    frame = pd.DataFrame({"id": list(ids), "x": rng.normal(size=len(ids)).round(3)})
    if label:
        frame.insert(1, "y", np.arange(len(ids)) % 2)
    path = folder / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path


def _parties(
    folder: Path, bank_ids: Sequence[str], platform_ids: Sequence[Sequence[str]], spec: JobSpec
) -> dict[str, PartyRuntime]:
    folder.mkdir(parents=True, exist_ok=True)
    runtimes = {
        "bank": PartyRuntime(
            PartyBinding("bank", "bank", _write(folder, "bank", bank_ids, True)),
            DictStore(),
            party_protocols(),
            disclose_errors=True,
        )
    }
    # Unit tests of the protocol itself: every reveal mode allowed (the policy tests below use
    # the secure defaults).
    limits = NodeLimits(psi_reveal=ALL_REVEAL_MODES)
    for party, ids in zip(spec.by_role("platform"), platform_ids, strict=True):
        runtimes[party.name] = PartyRuntime(
            PartyBinding(party.name, "platform", _write(folder, party.name, ids, False)),
            DictStore(),
            party_protocols(),
            disclose_errors=True,
            limits=limits,
        )
    return runtimes


def _align(
    runtimes: dict[str, PartyRuntime],
    spec: JobSpec,
    tap: Callable[[str, Envelope], None] | None = None,
    transport: InProcessTransport | None = None,
) -> int:
    transport = transport or InProcessTransport(runtimes, tap=tap)  # type: ignore[arg-type]
    hello = Envelope("job", "hello", COORDINATOR, "*", {"job": spec.to_json()})
    transport.hello(hello)
    settings = AlignmentSettings(
        reveal=spec.alignment.reveal, min_intersection=spec.alignment.min_intersection
    )
    platforms = [p.name for p in spec.by_role("platform")]
    replies = run_protocol(transport, start_envelopes(spec.job_id, "bank", platforms, settings))
    return conclude(replies, "bank", settings).n_aligned


def _aligned_ids(runtime: PartyRuntime) -> list[str]:
    rows = runtime.store.get_array(ALIGNED_ROWS_KEY)
    return runtime.table().ids[rows].tolist()


def _random_ids(rng: np.random.Generator, n: int, prefix: str = "91") -> list[str]:
    return [f"{prefix}{v:016d}" for v in rng.choice(10**12, size=n, replace=False)]


@pytest.mark.parametrize(
    ("n_bank", "n_platform", "overlap"),
    [(50, 80, 0.6), (300, 1000, 0.9), (400, 150, 1.0), (25_000, 30_000, 0.6)],
    ids=["small", "subset-mostly", "platform-inside-bank", "parallel-size"],
)
def test_intersection_is_exact_on_random_sets(
    tmp_path: Path, n_bank: int, n_platform: int, overlap: float
) -> None:
    rng = np.random.default_rng(n_bank)
    common_n = int(min(n_bank, n_platform) * overlap)
    pool = _random_ids(rng, n_bank + n_platform)
    common = pool[:common_n]
    bank = common + pool[common_n:n_bank]
    platform = common + pool[n_bank : n_bank + n_platform - common_n]
    rng.shuffle(bank)
    rng.shuffle(platform)
    spec = _spec()
    runtimes = _parties(tmp_path, bank, [platform], spec)
    assert _align(runtimes, spec) == common_n
    expected = plaintext_intersection(bank, platform).tolist()
    # Exact (no false positives or negatives), and both sides hold the same order.
    assert _aligned_ids(runtimes["bank"]) == expected
    assert _aligned_ids(runtimes["platform"]) == expected


_USCC = generate_uscc(3, np.random.default_rng(5))

ADVERSARIAL: list[tuple[str, list[str], list[str], str, list[str]]] = [
    # name, bank ids, platform ids, id scheme, expected intersection
    ("case-matters", ["Ab1", "ab2", "X"], ["ab1", "AB2", "X"], "text", ["X"]),
    ("casefold", ["Ab1", "ab2", "X"], ["ab1", "AB2", "x"], "casefold", ["x", "ab1", "ab2"]),
    ("whitespace", [" a", "b ", "c"], ["a", " b", "c "], "text", ["a", "b", "c"]),
    ("leading-zeros", ["01", "1", "001"], ["1", "0001"], "text", ["1"]),
    ("prefixes", ["9", "91", "911", "9111"], ["91", "9111", "91111"], "text", ["91", "9111"]),
    ("unicode", ["企业甲", "e\u0301", "é"], ["企业甲", "é", "企业乙"], "text", ["é", "企业甲"]),
    ("long", ["x" * 500, "y" * 499], ["x" * 500, "y" * 500], "text", ["x" * 500]),
    (
        "uscc",
        [_USCC[0], _USCC[1]],
        [_USCC[0].lower(), _USCC[2]],
        "uscc",
        [_USCC[0]],
    ),
]


@pytest.mark.parametrize(
    ("name", "bank", "platform", "scheme", "expected"), ADVERSARIAL, ids=[a[0] for a in ADVERSARIAL]
)
def test_intersection_is_exact_on_adversarial_ids(
    tmp_path: Path,
    name: str,
    bank: list[str],
    platform: list[str],
    scheme: str,
    expected: list[str],
) -> None:
    spec = _spec(id_scheme=scheme)
    runtimes = _parties(tmp_path, bank, [platform], spec)
    assert _align(runtimes, spec) == len(expected)
    assert _aligned_ids(runtimes["bank"]) == _aligned_ids(runtimes["platform"])
    assert sorted(_aligned_ids(runtimes["bank"])) == sorted(expected)


def test_ids_that_collide_after_normalisation_are_duplicates(tmp_path: Path) -> None:
    spec = _spec(id_scheme="casefold")
    runtimes = _parties(tmp_path, ["A1", "a1", "b"], [["a1", "b"]], spec)
    with pytest.raises(PartyError, match="duplicate id"):
        _align(runtimes, spec)


def test_invalid_uscc_is_refused(tmp_path: Path) -> None:
    spec = _spec(id_scheme="uscc")
    runtimes = _parties(tmp_path, ["91110000600037341L", "91110000600037341N"], [["a"]], spec)
    with pytest.raises(PartyError, match="not valid uscc codes"):
        _align(runtimes, spec)


@pytest.mark.parametrize(
    ("minimum", "message"), [(1, "no enterprise is known"), (5, "no enterprise")]
)
def test_empty_intersection_is_an_error(tmp_path: Path, minimum: int, message: str) -> None:
    spec = _spec(minimum=minimum)
    runtimes = _parties(tmp_path, ["a", "b"], [["c", "d"]], spec)
    with pytest.raises(PartyError, match=message) as info:
        _align(runtimes, spec)
    assert info.value.error_type == "DataError"


def test_tiny_intersection_is_an_error(tmp_path: Path) -> None:
    spec = _spec(minimum=3)
    runtimes = _parties(tmp_path, ["a", "b", "c"], [["a", "b", "z"]], spec)
    with pytest.raises(PartyError, match=r"only 2 enterprises .*min_intersection=3"):
        _align(runtimes, spec)


def test_three_party_intersection(tmp_path: Path) -> None:
    spec = _spec(platforms=2)
    bank = [f"e{i}" for i in range(100)]
    p0 = [f"e{i}" for i in range(0, 150, 2)]
    p1 = [f"e{i}" for i in range(0, 150, 3)]
    runtimes = _parties(tmp_path, bank, [p0, p1], spec)
    expected = plaintext_intersection(bank, p0, p1).tolist()
    assert _align(runtimes, spec) == len(expected)
    for runtime in runtimes.values():
        assert _aligned_ids(runtime) == expected


@pytest.mark.parametrize("reveal", ["bank", "size"])
def test_platform_learns_only_what_reveal_allows(tmp_path: Path, reveal: str) -> None:
    spec = _spec(reveal=reveal)
    seen: list[Envelope] = []
    runtimes = _parties(tmp_path, ["a", "b", "c", "d"], [["b", "c", "x"]], spec)
    assert _align(runtimes, spec, tap=lambda d, env: d == "to_party" and seen.append(env)) == 2
    assert _aligned_ids(runtimes["bank"]) == ["b", "c"]
    with pytest.raises(KeyError):
        runtimes["platform"].store.get_array(ALIGNED_ROWS_KEY)
    to_platform = [e for e in seen if e.recipient == "platform" and e.stage == "result"]
    assert len(to_platform) == 1
    if reveal == "bank":
        assert dict(to_platform[0].payload) == {}
    else:
        assert dict(to_platform[0].payload) == {"n_aligned": 2}


# ---------------------------------------------------------------- leakage


def _unkeyed_hashes(value: str) -> list[bytes]:
    raw = value.encode()
    digests = [hashlib.new(name, raw).digest() for name in ("md5", "sha1", "sha256", "sha512")]
    digests += list(psi.hash_to_group([raw])) and [psi.hash_to_group([raw])[0].tobytes()]
    digests += [psi.hash_to_group([raw], psi.HASH_DOMAIN + b"/psi-test")[0].tobytes()]
    return [d[:8] for d in digests]


def test_message_capture_holds_no_plaintext_id_or_unkeyed_hash(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pool = _random_ids(rng, 700)
    bank, platform = pool[:400], pool[200:700]
    spec = _spec()
    runtimes = _parties(tmp_path, bank, [platform], spec)
    seen: list[Envelope] = []
    _align(runtimes, spec, tap=lambda _d, env: seen.append(env))
    blobs: list[bytes] = []
    for env in seen:
        for value in env.payload.values():
            if isinstance(value, np.ndarray):
                blobs.append(value.tobytes())
            elif isinstance(value, bytes):
                blobs.append(value)
            else:
                blobs.append(str(value).encode())
    haystack = b"\x00".join(blobs)
    for value in pool:  # members and non-members alike
        assert value.encode() not in haystack
        for digest in _unkeyed_hashes(value):
            assert digest not in haystack, value


# ---------------------------------------------------------------- stage transitions


def _started(tmp_path: Path) -> tuple[dict[str, PartyRuntime], InProcessTransport, list[Envelope]]:
    spec = _spec()
    runtimes = _parties(tmp_path, ["a", "b", "c"], [["b", "c", "d"]], spec)
    transport = InProcessTransport(runtimes)  # type: ignore[arg-type]
    transport.hello(Envelope("job", "hello", COORDINATOR, "*", {"job": spec.to_json()}))
    replies = transport.exchange(
        start_envelopes(spec.job_id, "bank", ["platform"], AlignmentSettings(min_intersection=1))
    )
    return runtimes, transport, replies


def test_valid_sequence_of_stages(tmp_path: Path) -> None:
    _runtimes, transport, first = _started(tmp_path)
    assert sorted((e.sender, e.stage, e.recipient) for e in first) == [
        ("bank", "blinded", "platform"),
        ("platform", "blinded", "bank"),
    ]
    second = transport.exchange(first)
    assert sorted((e.sender, e.stage) for e in second) == [
        ("bank", "blinded_ok"),
        ("platform", "double"),
    ]
    third = transport.exchange([e for e in second if e.recipient != COORDINATOR])
    assert sorted((e.sender, e.stage, e.recipient) for e in third) == [
        ("bank", "done", COORDINATOR),
        ("bank", "result", "platform"),
    ]
    fourth = transport.exchange([e for e in third if e.recipient != COORDINATOR])
    assert [(e.sender, e.stage) for e in fourth] == [("platform", "done")]


@pytest.mark.parametrize(
    ("recipient", "stage", "message"),
    [
        ("bank", "double", "not allowed after 'start'"),
        ("platform", "result", "not allowed after 'start'"),
        ("bank", "start", "not allowed after 'start'"),
        ("platform", "start", "not allowed after 'start'"),
        ("bank", "result", "unknown stage 'result'"),
        ("platform", "double", "unknown stage 'double'"),
        ("bank", "teleport", "unknown stage 'teleport'"),
    ],
)
def test_invalid_stage_after_start(
    tmp_path: Path, recipient: str, stage: str, message: str
) -> None:
    _, transport, _ = _started(tmp_path)
    sender = "platform" if recipient == "bank" else "bank"
    with pytest.raises(PartyError, match=message):
        run_protocol(transport, [Envelope("psi", stage, sender, recipient, {})])


def test_psi_before_hello_is_refused(tmp_path: Path) -> None:
    spec = _spec()
    runtimes = _parties(tmp_path, ["a"], [["a"]], spec)
    transport = InProcessTransport(runtimes)  # type: ignore[arg-type]
    with pytest.raises(PartyError, match="before 'hello'"):
        run_protocol(transport, start_envelopes("j", "bank", ["platform"], AlignmentSettings()))


def test_blinded_from_a_stranger_is_refused(tmp_path: Path) -> None:
    _runtimes, transport, first = _started(tmp_path)
    forged = [
        Envelope("psi", "blinded", "mallory", "bank", dict(e.payload))
        for e in first
        if e.recipient == "bank"
    ]
    with pytest.raises(PartyError, match="'mallory', which is not a peer"):
        run_protocol(transport, forged)


def test_malformed_points_in_protocol_are_refused(tmp_path: Path) -> None:
    _, transport, first = _started(tmp_path)
    env = next(e for e in first if e.recipient == "platform")
    bad = Envelope(
        "psi",
        "blinded",
        "bank",
        "platform",
        {"points": np.zeros((3, 16), np.uint8), "agree": env.payload["agree"]},
    )
    with pytest.raises(PartyError, match=r"not an \(n, 32\) byte array"):
        run_protocol(transport, [bad])


def test_out_of_range_positions_are_refused(tmp_path: Path) -> None:
    _runtimes, transport, first = _started(tmp_path)
    second = transport.exchange(first)
    third = transport.exchange([e for e in second if e.recipient != COORDINATOR])
    result = next(e for e in third if e.stage == "result")
    bad = Envelope(
        "psi", "result", "bank", "platform", {"positions": np.array([7], dtype=np.uint32)}
    )
    assert result.recipient == "platform"
    with pytest.raises(PartyError, match="outside this party's set"):
        run_protocol(transport, [bad])


class _Tampering(InProcessTransport):
    """A coordinator that drops one aligned position on its way to the platform."""

    def exchange(self, envelopes: Sequence[Envelope]) -> list[Envelope]:
        changed = []
        for env in envelopes:
            if env.protocol == "psi" and env.stage == "result":
                positions = env.array("positions")
                env = Envelope(
                    env.protocol, env.stage, env.sender, env.recipient, {"positions": positions[1:]}
                )
            changed.append(env)
        return super().exchange(changed)


def test_tampered_alignment_is_detected(tmp_path: Path) -> None:
    spec = _spec()
    runtimes = _parties(tmp_path, ["a", "b", "c"], [["b", "c", "d"]], spec)
    with pytest.raises(
        ProtocolError, match=r"disagree on the intersection size|different aligned ids"
    ):
        _align(runtimes, spec, transport=_Tampering(runtimes))  # type: ignore[arg-type]


def test_unknown_recipient_is_a_transport_error(tmp_path: Path) -> None:
    _, transport, _ = _started(tmp_path)
    with pytest.raises(TransportError, match="no party 'ghost'"):
        transport.exchange([Envelope("psi", "blinded", "bank", "ghost", {})])


def test_data_error_class_is_preserved(tmp_path: Path) -> None:
    spec = _spec(minimum=10)
    runtimes = _parties(tmp_path, ["a", "b"], [["a", "b"]], spec)
    with pytest.raises(PartyError) as info:
        _align(runtimes, spec)
    assert info.value.error_type == DataError.__name__
