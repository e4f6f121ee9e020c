"""Secure-aggregation building blocks: Shamir, the mask PRG, fixed point, config, messages."""

from __future__ import annotations

import itertools
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secure_agg.secagg import (
    BadShareError,
    InputError,
    MessageError,
    NotEnoughSharesError,
    PublicKeysMessage,
    SecAggConfig,
    SecAggConfigError,
    UnmaskSharesMessage,
    decode_message,
    encode_message,
    fixedpoint,
    prg,
    shamir,
)
from secure_agg.secagg.channel import KeyPair
from secure_agg.secagg.shamir import PRIME, Share

SECRET = bytes(range(32))

# ---------------------------------------------------------------- Shamir


def test_any_t_of_n_shares_reconstruct() -> None:
    shares = shamir.split(SECRET, 3, [1, 2, 3, 4, 5])
    for subset in itertools.combinations(shares, 3):
        assert shamir.combine(list(subset), 3) == SECRET
    assert shamir.combine(shares, 3) == SECRET  # all five, the extra two checked


@settings(max_examples=40, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    n=st.integers(1, 9),
    data=st.data(),
)
def test_shamir_round_trip_and_refusal_below_threshold(
    secret: bytes, n: int, data: st.DataObject
) -> None:
    t = data.draw(st.integers(1, n))
    xs = data.draw(st.lists(st.integers(1, 2**32 - 1), min_size=n, max_size=n, unique=True))
    shares = shamir.split(secret, t, xs)
    subset = data.draw(st.permutations(shares)).copy()[:t]
    assert shamir.combine(subset, t) == secret
    with pytest.raises(NotEnoughSharesError, match=f"{t} are needed"):
        shamir.combine(subset[: t - 1], t)


def _lagrange_at(points: list[tuple[int, int]], z: int) -> int:
    total = 0
    for i, (xi, yi) in enumerate(points):
        num, den = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                num = num * (z - xj) % PRIME
                den = den * (xi - xj) % PRIME
        total = (total + yi * num * pow(den, -1, PRIME)) % PRIME
    return total


@pytest.mark.parametrize("guess", [bytes(32), b"\xff" * 32, SECRET[::-1]])
def test_fewer_than_t_shares_are_consistent_with_every_secret(guess: bytes) -> None:
    # t - 1 shares plus *any* candidate secret define a valid sharing: the shares rule nothing out.
    t = 4
    shares = shamir.split(SECRET, t, [1, 2, 3, 4, 5, 6])[: t - 1]
    points = [(0, int.from_bytes(guess, "big"))] + [(s.x, s.y) for s in shares]
    completing = Share(9, _lagrange_at(points, 9))
    assert shamir.combine([*shares, completing], t) == guess


def test_inconsistent_or_repeated_shares_are_refused() -> None:
    shares = shamir.split(SECRET, 2, [1, 2, 3])
    forged = Share(shares[2].x, (shares[2].y + 1) % PRIME)
    with pytest.raises(BadShareError, match="inconsistent"):
        shamir.combine([shares[0], shares[1], forged], 2)
    with pytest.raises(BadShareError, match="same evaluation point"):
        shamir.combine([shares[0], shares[0]], 2)
    other = shamir.split(b"\x01" * 32, 2, [3, 4])
    with pytest.raises(BadShareError):  # a share of another secret among them
        shamir.combine([shares[0], shares[1], other[0]], 2)


def test_share_serialisation_and_misuse() -> None:
    share = shamir.split(SECRET, 2, [7, 8])[0]
    assert Share.from_bytes(share.to_bytes()) == share
    assert len(share.to_bytes()) == shamir.SHARE_BYTES
    assert str(share.y) not in repr(share)
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(share)
    with pytest.raises(BadShareError):
        Share.from_bytes(b"\x00" * 5)
    with pytest.raises(BadShareError):
        Share(0, 1)  # x = 0 would be the secret itself
    with pytest.raises(InputError):
        shamir.split(b"short", 2, [1, 2])
    with pytest.raises(InputError):
        shamir.split(SECRET, 3, [1, 2])
    with pytest.raises(InputError):
        shamir.split(SECRET, 2, [1, 1])


def test_shamir_coefficients_are_fresh() -> None:
    first = shamir.split(SECRET, 2, [1, 2])
    second = shamir.split(SECRET, 2, [1, 2])
    assert first[0].y != second[0].y


# ---------------------------------------------------------------- PRG


def test_prg_is_deterministic_per_key_and_a_prefix_stream() -> None:
    seed = b"\x11" * 32
    a = prg.self_mask(seed, round_id=3, owner=1, length=1000, modulus_bits=32)
    b = prg.self_mask(seed, round_id=3, owner=1, length=1000, modulus_bits=32)
    assert np.array_equal(a, b)
    short = prg.self_mask(seed, round_id=3, owner=1, length=10, modulus_bits=32)
    assert np.array_equal(short, a[:10])
    assert a.dtype == np.uint64
    assert int(a.max()) < 2**32


def test_prg_differs_across_keys_rounds_owners_and_purposes() -> None:
    seed = b"\x22" * 32
    base = prg.self_mask(seed, round_id=1, owner=1, length=64, modulus_bits=64)
    variants = [
        prg.self_mask(b"\x23" + seed[1:], round_id=1, owner=1, length=64, modulus_bits=64),
        prg.self_mask(seed, round_id=2, owner=1, length=64, modulus_bits=64),
        prg.self_mask(seed, round_id=1, owner=2, length=64, modulus_bits=64),
        prg.pairwise_mask(seed, round_id=1, pair=(1, 2), length=64, modulus_bits=64),
    ]
    for other in variants:
        assert (other != base).mean() > 0.99
    assert np.array_equal(
        prg.pairwise_mask(seed, round_id=1, pair=(1, 2), length=64, modulus_bits=64),
        prg.pairwise_mask(seed, round_id=1, pair=(2, 1), length=64, modulus_bits=64),
    )


def _legacy_fold(seed: bytes) -> int:
    """Flower's legacy ``pseudo_rand_gen`` seed: the 32-byte secret XOR-folded to 32 bits."""
    folded = 0
    for i in range(0, len(seed), 4):
        folded ^= int.from_bytes(seed[i : i + 4], "little")
    return folded


def test_seeds_the_legacy_generator_confuses_give_unrelated_masks() -> None:
    # These two secrets fold to the same 32-bit numpy seed, so the legacy PRG masks them equally.
    first = b"\x01\x02\x03\x04" + b"\x09" * 4 + bytes(24)
    second = b"\x09" * 4 + b"\x01\x02\x03\x04" + bytes(24)
    assert _legacy_fold(first) == _legacy_fold(second)
    a = prg.pairwise_mask(first, round_id=0, pair=(0, 1), length=256, modulus_bits=32)
    b = prg.pairwise_mask(second, round_id=0, pair=(0, 1), length=256, modulus_bits=32)
    assert (a != b).mean() > 0.99


def test_prg_output_is_balanced() -> None:
    words = prg.expand(b"\x33" * 32, 50_000, 32)
    bits = (words[:, None] >> np.arange(32, dtype=np.uint64)) & np.uint64(1)
    # each bit position is a fair coin: 5 standard deviations of a binomial mean
    assert np.abs(bits.mean(axis=0) - 0.5).max() < 5 * np.sqrt(0.25 / len(words))


def test_prg_refuses_bad_parameters() -> None:
    with pytest.raises(InputError):
        prg.expand(b"short", 4, 32)
    with pytest.raises(InputError):
        prg.expand(b"\x00" * 32, 4, 65)
    with pytest.raises(InputError):
        prg.pairwise_mask(b"\x00" * 32, round_id=0, pair=(3, 3), length=4, modulus_bits=32)


# ---------------------------------------------------------------- fixed point


@settings(max_examples=60, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 7),
    length=st.integers(1, 16),
    bits=st.sampled_from([2, 8, 16, 24, 32]),
    clip=st.sampled_from([0.5, 1.0, 8.0, 100.0]),
    stochastic=st.booleans(),
)
def test_decoded_sum_is_within_the_stated_bound(
    data: st.DataObject, n: int, length: int, bits: int, clip: float, stochastic: bool
) -> None:
    modulus = fixedpoint.required_modulus_bits(n, bits)
    floats = st.floats(-3 * clip, 3 * clip, allow_nan=False)
    vectors = [
        np.array(data.draw(st.lists(floats, min_size=length, max_size=length))) for _ in range(n)
    ]
    common: dict[str, Any] = {
        "clipping_range": clip,
        "quantization_bits": bits,
        "modulus_bits": modulus,
    }
    total = np.zeros(length, dtype=np.uint64)
    for vector in vectors:
        total += fixedpoint.encode(vector, stochastic=stochastic, **common)
    decoded = fixedpoint.decode_sum(fixedpoint.reduce(total, modulus), **common)
    exact = sum(np.clip(v, -clip, clip) for v in vectors)
    bound = fixedpoint.error_bound(
        n, clipping_range=clip, quantization_bits=bits, stochastic=stochastic
    )
    assert np.abs(decoded - exact).max() <= bound


def test_extremes_decode_exactly_at_the_largest_safe_modulus_use() -> None:
    bits, n = 24, 256
    modulus = fixedpoint.required_modulus_bits(n, bits)
    assert modulus == 32  # the defaults hold 256 clients
    common: dict[str, Any] = {
        "clipping_range": 8.0,
        "quantization_bits": bits,
        "modulus_bits": modulus,
    }
    for value in (8.0, -8.0, np.inf, -np.inf):
        one = fixedpoint.encode(np.array([value]), **common)
        total = fixedpoint.reduce(one * np.uint64(n), modulus)
        assert fixedpoint.decode_sum(total, **common)[0] == np.sign(value) * 8.0 * n


def test_stochastic_rounding_is_unbiased_where_rounding_to_nearest_is_not() -> None:
    common: dict[str, Any] = {"clipping_range": 1.0, "quantization_bits": 4, "modulus_bits": 16}
    step = fixedpoint.step(1.0, 4)
    x = np.full(40_000, 0.3 * step)  # a third of a step: always rounds down to nearest
    nearest = fixedpoint.decode_sum(fixedpoint.encode(x, **common), **common)
    assert np.allclose(nearest, 0.0)
    stochastic = fixedpoint.decode_sum(fixedpoint.encode(x, stochastic=True, **common), **common)
    # mean error 0 within 5 standard errors (each draw is 0 or one step)
    assert abs(stochastic.mean() - x[0]) < 5 * step * 0.5 / np.sqrt(len(x))


def test_encode_refuses_nan_and_matrices() -> None:
    common: dict[str, Any] = {"clipping_range": 1.0, "quantization_bits": 8, "modulus_bits": 16}
    with pytest.raises(InputError, match="NaN"):
        fixedpoint.encode(np.array([0.0, np.nan]), **common)
    with pytest.raises(InputError, match="1-d"):
        fixedpoint.encode(np.zeros((2, 2)), **common)


def test_ring_conversions_round_trip() -> None:
    levels = np.array([-5, -1, 0, 1, 2**20], dtype=np.int64)
    for bits in (32, 64):
        assert np.array_equal(fixedpoint.to_signed(fixedpoint.to_ring(levels, bits), bits), levels)


# ---------------------------------------------------------------- config


def _config(**overrides: object) -> SecAggConfig:
    values: dict[str, object] = {
        "round_id": 1,
        "client_ids": (3, 1, 2, 4),
        "threshold": 3,
        "vector_length": 5,
    }
    values.update(overrides)
    return SecAggConfig(**values)  # type: ignore[arg-type]


def test_config_normalises_and_round_trips_through_bytes() -> None:
    config = _config(client_ids=[np.int64(3), 1, 2, 4], clipping_range=2)
    assert config.client_ids == (1, 2, 3, 4)
    assert config.clipping_range == 2.0
    assert SecAggConfig.from_bytes(config.to_bytes()) == config
    assert config.to_bytes() == _config(clipping_range=2.0).to_bytes()
    assert config.max_dropouts == 1
    assert config.word_dtype is np.uint32
    assert _config(modulus_bits=40).word_dtype is np.uint64


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"threshold": 1}, "threshold"),
        ({"threshold": 5}, "threshold"),
        ({"client_ids": (1, 1, 2)}, "distinct"),
        ({"client_ids": (1,), "threshold": 2}, "2.."),
        ({"client_ids": (-1, 2, 3)}, "client id"),
        ({"round_id": -1}, "round_id"),
        ({"round_id": True}, "round_id"),
        ({"vector_length": 0}, "vector_length"),
        ({"clipping_range": float("nan")}, "clipping_range"),
        ({"clipping_range": 0.0}, "clipping_range"),
        ({"quantization_bits": 33}, "quantization_bits"),
        ({"modulus_bits": 24}, "modulus_bits >= 26"),
        ({"neighbours": 3}, "even"),
        ({"neighbours": 0}, "neighbours"),
        ({"stochastic_rounding": 1}, "stochastic_rounding"),
    ],
)
def test_config_refuses_bad_values_naming_them(overrides: dict[str, object], match: str) -> None:
    with pytest.raises(SecAggConfigError, match=match):
        _config(**overrides)


def test_threshold_is_bounded_by_the_neighbourhood() -> None:
    ids = tuple(range(10))
    assert _config(client_ids=ids, neighbours=4, threshold=5).neighbourhood_size == 5
    with pytest.raises(SecAggConfigError, match="threshold"):
        _config(client_ids=ids, neighbours=4, threshold=6)
    assert _config(client_ids=ids, neighbours=12, threshold=10).neighbourhood_size == 10


def test_config_from_bad_bytes_is_a_message_error() -> None:
    with pytest.raises(MessageError):
        SecAggConfig.from_bytes(b"not json")
    broken = _config().to_bytes().replace(b'"threshold":3', b'"threshold":9')
    with pytest.raises(MessageError, match="threshold"):
        SecAggConfig.from_bytes(broken)


# ---------------------------------------------------------------- messages and keys


def test_messages_encode_to_flat_records_and_back() -> None:
    message = UnmaskSharesMessage(
        round_id=1,
        sender=2,
        seed_owner_ids=np.array([1, 2]),
        seed_shares=np.zeros((2, shamir.SHARE_BYTES), dtype=np.uint8),
        mask_key_owner_ids=np.array([], dtype=np.int64),
        mask_key_shares=np.zeros((0, shamir.SHARE_BYTES), dtype=np.uint8),
    )
    record = encode_message(message)
    assert all(isinstance(v, bytes | int | np.ndarray) for v in record.values())
    decoded = decode_message(dict(record))
    assert isinstance(decoded, UnmaskSharesMessage)
    assert np.array_equal(decoded.seed_owner_ids, [1, 2])
    assert not decoded.seed_shares.flags.writeable
    assert "seed_shares=uint8[2, 70]" in repr(decoded)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"kind": b"secagg/nope"}, "unknown"),
        ({"extra": 1}, "unexpected keys"),
        ({"sender": True}, "must be an int"),
        ({"sender": -3}, "outside"),
        ({"mask_key": b"short"}, "32 bytes"),
        ({"encryption_key": "text"}, "bytes"),
    ],
)
def test_decode_refuses_malformed_records(change: dict[str, Any], match: str) -> None:
    record: dict[str, Any] = dict(
        encode_message(
            PublicKeysMessage(round_id=1, sender=2, encryption_key=b"a" * 32, mask_key=b"b" * 32)
        )
    )
    record.update(change)
    with pytest.raises(MessageError, match=match):
        decode_message(record)
    missing = dict(record)
    missing.pop("round_id")
    with pytest.raises(MessageError):
        decode_message(missing)


def test_key_pairs_agree_hide_themselves_and_refuse_pickling() -> None:
    a, b = KeyPair.generate(), KeyPair.generate()
    assert a.agree(b.public_bytes) == b.agree(a.public_bytes)
    assert a.secret_bytes().hex() not in repr(a)
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(a)
    with pytest.raises(MessageError, match="low-order"):
        a.agree(bytes(32))
