"""Packing: exact sums at the bounds, refusals beyond them, tamper and wrong-key detection."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from secure_agg import paillier
from secure_agg.packing import (
    HEADROOM_BITS,
    GradientPacker,
    KeyMismatchError,
    PackingError,
    SumPacker,
    TamperedError,
    check_fingerprint,
)
from secure_agg.paillier import PrivateKey, PublicKey


@functools.cache
def keys(bits: int, which: int = 0) -> tuple[PublicKey, PrivateKey]:
    return paillier.generate_keypair(bits, allow_insecure_test_keys=True)


TYPICAL = {"g_bound": 1.0, "h_bound": 0.25, "precision_bits": 53, "max_rows": 30_000}


# ---------------------------------------------------------------- layout


def test_typical_secureboost_layout_and_capacity() -> None:
    packer = GradientPacker(**TYPICAL, key_bits=2048)
    assert (packer.g_slot_bits, packer.h_slot_bits, packer.count_slot_bits) == (69, 66, 15)
    assert packer.bits_per_sum == 150
    assert packer.sum_packer().capacity == 13 == (2048 - HEADROOM_BITS) // 150
    assert GradientPacker(**TYPICAL, key_bits=1024).sum_packer().capacity == 6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"precision_bits": 1000}, "absurd"),
        ({"precision_bits": 300, "key_bits": 512}, "lower precision_bits or max_rows"),
        ({"g_bound": -1.0}, "g_bound must be finite and positive"),
        ({"h_bound": float("inf")}, "h_bound must be finite and positive"),
        ({"g_bound": "x"}, "g_bound must be a number"),
        ({"max_rows": 0}, "max_rows must be at least 1"),
        ({"max_rows": 2.5}, "max_rows must be an integer"),
        ({"key_bits": 100}, "key_bits must be at least"),
    ],
)
def test_bad_configurations_are_refused_with_the_fix(kwargs: dict[str, object], match: str) -> None:
    settings_ = {**TYPICAL, "key_bits": 2048, **kwargs}
    with pytest.raises(PackingError, match=match):
        GradientPacker(**settings_)  # type: ignore[arg-type]


def test_sum_packer_refuses_values_wider_than_the_key() -> None:
    with pytest.raises(PackingError, match="do not fit"):
        SumPacker(1024 - HEADROOM_BITS + 1, 1024)
    assert SumPacker(1024 - HEADROOM_BITS, 1024).capacity == 1


def test_errors_form_a_hierarchy() -> None:
    assert issubclass(TamperedError, PackingError)
    assert issubclass(PackingError, ValueError)
    assert issubclass(KeyMismatchError, ValueError)


# ---------------------------------------------------------------- encode / decode in plaintext


def test_max_rows_at_every_bound_decode_exactly_without_overflow() -> None:
    packer = GradientPacker(**TYPICAL, key_bits=2048)
    rows = packer.max_rows
    for g, h in ((1.0, 0.25), (-1.0, 0.0), (1.0, 0.0), (-1.0, 0.25)):
        [m] = packer.encode([g], [h])
        assert packer.decode_sum(rows * m) == (rows * g, rows * h, rows)
    # mixed extremes: half the rows at +g_bound, half at -g_bound
    [up], [down] = packer.encode([1.0], [0.25]), packer.encode([-1.0], [0.25])
    assert packer.decode_sum(15_000 * up + 15_000 * down) == (0.0, 7500.0, 30_000)


def test_empty_sum_decodes_to_zero_rows() -> None:
    packer = GradientPacker(**TYPICAL, key_bits=2048)
    assert packer.decode_sum(0) == (0.0, 0.0, 0)


def test_one_row_beyond_max_rows_is_refused_at_encode_time() -> None:
    packer = GradientPacker(1.0, 0.25, 20, 10, 512)
    assert len(packer.encode(np.zeros(10), np.zeros(10))) == 10
    with pytest.raises(PackingError, match="11 rows exceed max_rows=10"):
        packer.encode(np.zeros(11), np.zeros(11))


@pytest.mark.parametrize(
    ("g", "h", "match"),
    [
        ([0.0, np.nextafter(1.0, 2.0)], [0.0, 0.0], r"g\[1\] = 1.0000000000000002 is outside"),
        ([-1.5, 0.0], [0.0, 0.0], r"g\[0\] = -1.5 is outside \[-1.0, 1.0\]"),
        ([0.0, 0.0], [0.0, -1e-300], r"h\[1\] = -1e-300 is outside \[0.0, 0.25\]"),
        ([0.0, 0.0], [0.25, 0.2500001], r"h\[1\] = 0.2500001"),
        ([np.nan, 0.0], [0.0, 0.0], r"g\[0\] = nan"),
        ([0.0, 0.0], [np.inf, 0.0], r"h\[0\] = inf"),
    ],
)
def test_values_beyond_the_bounds_are_refused_naming_index_and_value(
    g: list[float], h: list[float], match: str
) -> None:
    packer = GradientPacker(**TYPICAL, key_bits=2048)
    with pytest.raises(PackingError, match=match):
        packer.encode(g, h)


def test_mismatched_shapes_are_refused() -> None:
    packer = GradientPacker(**TYPICAL, key_bits=2048)
    with pytest.raises(PackingError, match="equally long"):
        packer.encode([0.0, 0.1], [0.0])
    with pytest.raises(PackingError, match="one-dimensional"):
        packer.encode([[0.0]], [[0.0]])


@given(
    hnp.arrays(np.float64, st.integers(1, 60), elements=st.floats(-1.0, 1.0)),
    st.data(),
)
@settings(max_examples=80, deadline=None)
def test_sums_of_encodings_decode_to_the_float_sums(g: np.ndarray, data: st.DataObject) -> None:
    packer = GradientPacker(**TYPICAL, key_bits=2048)
    h = data.draw(hnp.arrays(np.float64, g.shape, elements=st.floats(0.0, 0.25)))
    subset = data.draw(hnp.arrays(np.bool_, g.shape))
    codes = packer.encode(g, h)
    total = sum(code for code, keep in zip(codes, subset, strict=True) if keep)
    g_sum, h_sum, count = packer.decode_sum(total)
    tolerance = len(g) * 2.0 ** -(packer.precision_bits + 1) + 1e-15
    assert count == int(subset.sum())
    assert math.isclose(g_sum, math.fsum(g[subset]), abs_tol=tolerance)
    assert math.isclose(h_sum, math.fsum(h[subset]), abs_tol=tolerance)


def test_values_on_the_fixed_point_grid_round_trip_exactly() -> None:
    packer = GradientPacker(**TYPICAL, key_bits=2048)
    g = np.array([0.5, -0.375, 2.0**-53, -1.0, 1.0])
    h = np.array([0.25, 0.125, 2.0**-53, 0.0, 0.0])
    for gi, hi, code in zip(g, h, packer.encode(g, h), strict=True):
        assert packer.decode_sum(code) == (gi, hi, 1)


def test_plaintexts_no_honest_sum_can_produce_are_tampered() -> None:
    packer = GradientPacker(1.0, 0.25, 20, 10, 512)
    low = packer.g_slot_bits + packer.h_slot_bits
    [code] = packer.encode([1.0], [0.25])
    with pytest.raises(TamperedError, match="11 rows, more than max_rows=10"):
        packer.decode_sum(11 * code)
    with pytest.raises(TamperedError, match="cannot be a sum"):
        packer.decode_sum(1 << packer.bits_per_sum)
    with pytest.raises(TamperedError, match="cannot be a sum"):
        packer.decode_sum(-1)
    with pytest.raises(TamperedError, match="out of range for 0 rows"):
        packer.decode_sum(1)  # a gradient total with no rows
    with pytest.raises(TamperedError, match="out of range for 1 rows"):
        packer.decode_sum((1 << low) + 2 * packer.g_offset + 1)
    with pytest.raises(TamperedError, match="out of range for 1 rows"):
        packer.decode_sum((1 << low) + ((packer.h_max + 1) << packer.g_slot_bits))


# ---------------------------------------------------------------- SumPacker


def test_sum_packer_round_trip_at_capacity_with_extreme_values() -> None:
    pub, priv = keys(1024)
    packer = SumPacker(37, 1024)
    k = packer.capacity
    values = [0, (1 << 37) - 1] + [(i * 7919) % (1 << 37) for i in range(k - 2)]
    cts = paillier.encrypt_many(pub, values, workers=1)
    packed = packer.pack(pub, cts, workers=1)
    assert len(packed) == 1
    assert packer.unpack(paillier.decrypt_many(priv, packed), k) == values
    more = [*values, (1 << 37) - 1]  # capacity + 1 values: two packed ciphertexts
    packed = packer.pack(pub, [*cts, pub.encrypt_int((1 << 37) - 1)], workers=1)
    assert len(packed) == 2 == packer.n_packed(k + 1)
    assert packer.unpack(paillier.decrypt_many(priv, packed), k + 1) == more
    assert packer.pack(pub, []) == []
    assert packer.unpack([], 0) == []


@given(st.integers(1, 300), st.data())
@settings(max_examples=25, deadline=None)
def test_sum_packer_round_trip_property(bits: int, data: st.DataObject) -> None:
    pub, priv = keys(1024)
    packer = SumPacker(bits, 1024)
    count = data.draw(st.integers(0, 2 * packer.capacity + 1))
    values = data.draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=count, max_size=count))
    cts = paillier.encrypt_many(pub, values, workers=1)
    packed = packer.pack(pub, cts, rerandomize=data.draw(st.booleans()), workers=1)
    assert len(packed) == packer.n_packed(count)
    assert packer.unpack([priv.decrypt_int(c) for c in packed], count) == values


def test_packing_rerandomises_by_default() -> None:
    pub, priv = keys(512)
    packer = SumPacker(40, 512)
    cts = [pub.encrypt_int(3), pub.encrypt_int(4)]
    plain = packer.pack(pub, cts, rerandomize=False)
    fresh = packer.pack(pub, cts)
    assert plain != fresh
    assert [priv.decrypt_int(c) for c in plain] == [priv.decrypt_int(c) for c in fresh]
    assert packer.unpack([priv.decrypt_int(fresh[0])], 2) == [3, 4]


def test_parallel_packing_equals_serial_packing() -> None:
    pub, priv = keys(1024)
    packer = SumPacker(60, 1024)
    values = list(range(1, 3 * packer.capacity + 5))
    cts = paillier.encrypt_many(pub, values, workers=1)
    serial = packer.pack(pub, cts, rerandomize=False, workers=1)
    assert packer.pack(pub, cts, rerandomize=False, workers=2) == serial
    fresh = packer.pack(pub, cts, workers=2)
    assert packer.unpack(paillier.decrypt_many(priv, fresh), len(values)) == values


def test_unpack_refuses_extra_bits_and_wrong_counts() -> None:
    packer = SumPacker(10, 512)
    with pytest.raises(TamperedError, match="more than its 3 slots"):
        packer.unpack([1 << 30], 3)
    with pytest.raises(TamperedError):
        packer.unpack([-1], 1)
    with pytest.raises(PackingError, match="need 1 packed plaintexts, got 2"):
        packer.unpack([0, 0], 3)


def test_pack_refuses_a_shorter_key_than_configured() -> None:
    pub, _ = keys(512)
    with pytest.raises(KeyMismatchError, match="1024-bit keys"):
        SumPacker(40, 1024).pack(pub, [pub.encrypt_int(1)])


# ---------------------------------------------------------------- end to end with encryption


def test_encrypted_histogram_of_max_rows_at_the_bounds_decodes_exactly() -> None:
    """max_rows rows, all at +g_bound / h_bound, encrypted, summed, packed, decrypted."""
    pub, priv = keys(1024)
    gp = GradientPacker(1.0, 0.25, 53, 300, 1024)
    g = np.where(np.arange(300) % 2 == 0, 1.0, -1.0)
    g[:100] = 1.0
    h = np.full(300, 0.25)
    cts = paillier.encrypt_many(pub, gp.encode(g, h), workers=1)
    groups = np.zeros((300, 2), dtype=np.int64)
    groups[::3, 1] = 1
    sums = paillier.sum_groups_many(pub, cts, groups, 2, workers=1)
    flat = [c for column in sums for c in column]
    sp = gp.sum_packer()
    plaintexts = sp.unpack(paillier.decrypt_many(priv, sp.pack(pub, flat)), len(flat))
    g_sums, h_sums, counts = gp.decode_sums(plaintexts)
    expected_g = [g.sum(), 0.0, g[groups[:, 1] == 0].sum(), g[groups[:, 1] == 1].sum()]
    expected_h = [75.0, 0.0, h[groups[:, 1] == 0].sum(), h[groups[:, 1] == 1].sum()]
    assert g_sums.tolist() == expected_g  # exact: every value is on the fixed-point grid
    assert h_sums.tolist() == expected_h
    assert counts.tolist() == [300, 0, 200, 100]


def test_secureboost_flow_matches_numpy_histograms() -> None:
    pub, priv = keys(1024)
    rng = np.random.default_rng(7)
    n_rows, n_features, n_bins = 250, 3, 6
    g = rng.uniform(-1, 1, n_rows)
    h = rng.uniform(0, 0.25, n_rows)
    bins = rng.integers(0, n_bins, size=(n_rows, n_features))
    bins[rng.random((n_rows, n_features)) < 0.1] = -1  # rows outside the node
    gp = GradientPacker(1.0, 0.25, 53, n_rows, 1024)
    cts = paillier.encrypt_many(pub, gp.encode(g, h), workers=2)
    sums = paillier.sum_groups_many(pub, cts, bins, n_bins, workers=2)
    flat = [c for column in sums for c in column]
    sp = gp.sum_packer()
    packed = sp.pack(pub, flat, workers=2)
    g_sums, h_sums, counts = gp.decode_sums(
        sp.unpack(paillier.decrypt_many(priv, packed, workers=2), len(flat))
    )
    for j in range(n_features):
        for b in range(n_bins):
            mask = bins[:, j] == b
            index = j * n_bins + b
            assert counts[index] == mask.sum()
            assert g_sums[index] == pytest.approx(g[mask].sum(), abs=1e-12)
            assert h_sums[index] == pytest.approx(h[mask].sum(), abs=1e-12)


def test_wrong_key_decryption_is_detected_as_tampering() -> None:
    pub, _ = keys(1024)
    _, other_priv = keys(1024, which=1)
    gp = GradientPacker(**TYPICAL, key_bits=1024)
    cts = paillier.encrypt_many(pub, gp.encode([0.5] * 8, [0.1] * 8))
    sp = gp.sum_packer()
    packed = sp.pack(pub, cts)
    # Decrypting under another key of the same size: garbage that no honest sum produces.
    wrong = [other_priv.decrypt_int(c % other_priv.public_key.nsquare or 1) for c in packed]
    with pytest.raises(TamperedError):
        sp.unpack(wrong, len(cts))
    for c in cts:
        with pytest.raises(TamperedError):
            gp.decode_sum(other_priv.decrypt_int(c % other_priv.public_key.nsquare or 1))


def test_tampered_ciphertexts_are_detected() -> None:
    pub, priv = keys(1024)
    gp = GradientPacker(**TYPICAL, key_bits=1024)
    cts = paillier.encrypt_many(pub, gp.encode([0.25, -0.5], [0.1, 0.2]))
    [total] = paillier.sum_groups(pub, cts, np.zeros(2, dtype=int), 1)
    assert gp.decode_sum(priv.decrypt_int(total))[2] == 2
    # multiplied by an encryption of a large value
    big = paillier.add(pub, total, pub.encrypt_int(1 << 200))
    with pytest.raises(TamperedError, match="cannot be a sum"):
        gp.decode_sum(priv.decrypt_int(big))
    # more rows claimed than max_rows
    count_bit = 1 << (gp.g_slot_bits + gp.h_slot_bits)
    forged = paillier.add(pub, total, pub.encrypt_int(gp.max_rows * count_bit))
    with pytest.raises(TamperedError, match="more than max_rows"):
        gp.decode_sum(priv.decrypt_int(forged))
    # negated (n - m): cannot be a sum
    with pytest.raises(TamperedError):
        gp.decode_sum(priv.decrypt_int(paillier.mul_const(pub, total, -1)))


def test_fingerprints_tag_ciphertexts_with_their_key() -> None:
    pub, _ = keys(512)
    other, _ = keys(512, which=1)
    check_fingerprint(pub, pub.fingerprint)
    with pytest.raises(KeyMismatchError):
        check_fingerprint(pub, other.fingerprint)
    array = paillier.ciphertexts_to_array(other, [other.encrypt_int(1)])
    with pytest.raises(KeyMismatchError):
        paillier.ciphertexts_from_array(pub, array, fingerprint=other.fingerprint)
