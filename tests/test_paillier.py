"""Paillier primitives: encrypted results equal plaintext results; key handling; crypto edges."""

from __future__ import annotations

import copy
import functools
import hashlib
import pickle
import secrets

import gmpy2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secure_agg import paillier
from secure_agg.paillier import (
    InsecureKeyError,
    KeyMismatchError,
    PaillierError,
    PrivateKey,
    PublicKey,
    parallel,
    tables,
)


@functools.cache
def keys(bits: int) -> tuple[PublicKey, PrivateKey]:
    """One key pair per size for the whole module (test keys: allow_insecure_test_keys)."""
    return paillier.generate_keypair(bits, allow_insecure_test_keys=True)


def n_of(bits: int) -> int:
    return keys(bits)[0].n


# ---------------------------------------------------------------- keys


def test_default_key_is_2048_bit_admissible_and_round_trips() -> None:
    pub, priv = paillier.generate_keypair()
    assert pub.key_bits == 2048
    p, q = int(priv._p), int(priv._q)
    assert p * q == pub.n
    assert p % 4 == 3
    assert q % 4 == 3
    assert gmpy2.gcd(p - 1, q - 1) == 2
    assert pub.encryption_exponent_bytes * 8 == 1024
    for m in (0, 1, pub.n - 1, secrets.randbelow(pub.n)):
        assert priv.decrypt_int(pub.encrypt_int(m)) == m
    assert priv.decrypt_int(pub.encrypt_int_naive(7)) == 7


def test_short_keys_need_explicit_allow_insecure_test_keys() -> None:
    with pytest.raises(InsecureKeyError, match="allow_insecure_test_keys=True"):
        paillier.generate_keypair(1024)
    pub, _ = keys(1024)
    with pytest.raises(InsecureKeyError):
        PublicKey.from_bytes(pub.to_bytes())
    assert PublicKey.from_bytes(pub.to_bytes(), allow_insecure_test_keys=True) == pub


@pytest.mark.parametrize("bits", [1023, 128, 0])
def test_odd_or_tiny_key_sizes_are_refused(bits: int) -> None:
    with pytest.raises(PaillierError):
        paillier.generate_keypair(bits, allow_insecure_test_keys=True)


def test_public_key_serialises_and_fingerprints_n_and_h_s() -> None:
    pub, _ = keys(1024)
    raw = pub.to_bytes()
    again = PublicKey.from_bytes(raw, allow_insecure_test_keys=True)
    assert again == pub
    assert hash(again) == hash(pub)
    raw = pub.n.to_bytes(128, "big") + pub.h_s.to_bytes(256, "big")
    assert pub.fingerprint == hashlib.sha256(raw).hexdigest()[:16]
    # h_s is fingerprinted too: a key with another h_s has another fingerprint.
    assert paillier.PublicKey(pub.n, pub.h_s * 4 % pub.nsquare).fingerprint != pub.fingerprint
    assert pickle.loads(pickle.dumps(pub)) == pub  # public data may be pickled
    assert repr(pub) == f"PublicKey(bits=1024, fingerprint={pub.fingerprint})"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda raw: raw[:-1],
        lambda raw: raw + b"\x00",
        lambda raw: b"x" + raw[1:],
        lambda raw: raw[:30],
    ],
    ids=["truncated", "trailing", "bad-tag", "header-only"],
)
def test_malformed_public_key_bytes_are_refused(mutate: object) -> None:
    raw = keys(1024)[0].to_bytes()
    with pytest.raises(PaillierError):
        PublicKey.from_bytes(mutate(raw), allow_insecure_test_keys=True)  # type: ignore[operator]


@pytest.mark.parametrize("h_s", [0, 1, -1, "n"])
def test_degenerate_djn_bases_are_refused(h_s: object) -> None:
    n = n_of(512)
    value = {"n": n, -1: n * n - 1}.get(h_s, h_s)  # type: ignore[call-overload]
    with pytest.raises(PaillierError):
        PublicKey(n, value)


def test_even_or_square_moduli_are_refused() -> None:
    with pytest.raises(PaillierError):
        PublicKey(2**600, 3)
    p = int(gmpy2.next_prime(2**300))
    with pytest.raises(PaillierError):
        PublicKey(p * p, 3)


def test_private_key_is_not_picklable_and_repr_has_no_secrets() -> None:
    pub, priv = keys(1024)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError, match="must not be pickled"):
            pickle.dumps(priv, protocol=protocol)
    with pytest.raises(TypeError):
        copy.deepcopy(priv)
    with pytest.raises(TypeError):
        copy.copy(priv)
    text = repr(priv) + str(priv)
    assert "<secret>" in text
    assert pub.fingerprint in text
    for secret in (int(priv._p), int(priv._q)):
        assert str(secret)[:12] not in text
        assert f"{secret:x}"[:12] not in text
    assert not hasattr(priv, "__dict__")


def test_secret_bytes_round_trip_and_refuse_another_key() -> None:
    pub, priv = keys(1024)
    restored = PrivateKey.from_secret_bytes(pub, priv.to_secret_bytes())
    c = pub.encrypt_int(12345)
    assert restored.decrypt_int(c) == 12345
    with pytest.raises(KeyMismatchError):
        PrivateKey.from_secret_bytes(keys(512)[0], priv.to_secret_bytes())
    with pytest.raises(PaillierError) as info:
        PrivateKey.from_secret_bytes(pub, priv.to_secret_bytes()[:-3])
    assert str(int(priv._p))[:12] not in str(info.value)


def test_decryption_matches_phe() -> None:
    from phe import paillier as phe_paillier

    pub, priv = keys(1024)
    phe_pub = phe_paillier.PaillierPublicKey(pub.n)
    phe_priv = phe_paillier.PaillierPrivateKey(phe_pub, int(priv._p), int(priv._q))
    m = secrets.randbelow(pub.n)
    assert priv.decrypt_int(phe_pub.raw_encrypt(m)) == m
    assert phe_priv.raw_decrypt(pub.encrypt_int(m)) == m


# ---------------------------------------------------------------- encryption


def test_fast_and_naive_encryption_decrypt_and_are_randomised() -> None:
    pub, priv = keys(1024)
    for m in (0, 1, 2**100, pub.n - 1):
        fast = [pub.encrypt_int(m) for _ in range(3)]
        naive = [pub.encrypt_int_naive(m) for _ in range(3)]
        assert len(set(fast + naive)) == 6
        assert {priv.decrypt_int(c) for c in fast + naive} == {m}


def test_fast_ciphertexts_live_in_the_jacobi_one_subgroup() -> None:
    """The documented tell of DJN encryption: c mod n has Jacobi symbol +1, naive ones vary."""
    pub, _ = keys(512)
    fast = {gmpy2.jacobi(pub.encrypt_int(5) % pub.n, pub.n) for _ in range(40)}
    naive = {gmpy2.jacobi(pub.encrypt_int_naive(5) % pub.n, pub.n) for _ in range(40)}
    assert fast == {1}
    assert naive == {1, -1}


def test_fixed_base_table_equals_powmod() -> None:
    pub, _ = keys(512)
    table = tables.public_table(pub)
    for digits in (bytes(32), b"\x01" + bytes(31), secrets.token_bytes(32), b"\xff" * 80):
        exponent = int.from_bytes(digits, "little")
        assert table.power(digits) == gmpy2.powmod(pub.h_s, exponent, pub.nsquare)


def test_exponent_lengths_follow_the_key() -> None:
    pub, _ = keys(1024)
    assert pub.encryption_exponent_bytes == 64  # ⌈k/2⌉ bits
    assert pub.obfuscation_exponent_bytes == (1024 + paillier.STATISTICAL_BITS) // 8
    assert pub.ciphertext_bytes == 256


@pytest.mark.parametrize("m", [-1, "n", "n+1"])
def test_plaintexts_outside_zero_n_are_refused(m: object) -> None:
    pub, _ = keys(512)
    value = {"n": pub.n, "n+1": pub.n + 1}.get(m, m)  # type: ignore[call-overload]
    with pytest.raises(PaillierError, match=r"outside \[0, n\)"):
        pub.encrypt_int(value)
    with pytest.raises(PaillierError, match="plaintext 1 is outside"):
        paillier.encrypt_many(pub, [0, value])


@pytest.mark.parametrize("c", [0, -5, "n2"])
def test_ciphertexts_outside_range_are_refused(c: object) -> None:
    pub, priv = keys(512)
    value = pub.nsquare if c == "n2" else c
    with pytest.raises(PaillierError):
        priv.decrypt_int(value)  # type: ignore[arg-type]
    with pytest.raises(PaillierError):
        paillier.add(pub, 1, value)  # type: ignore[arg-type]


def test_obfuscation_keeps_the_plaintext_and_changes_the_ciphertext() -> None:
    pub, priv = keys(1024)
    c = paillier.add(pub, pub.encrypt_int(20), pub.encrypt_int(22))
    fresh = pub.obfuscate(c)
    assert fresh != c
    assert priv.decrypt_int(fresh) == 42
    many = paillier.obfuscate_many(pub, [c, c, 1])
    assert len(set(many)) == 3
    assert paillier.decrypt_many(priv, many) == [42, 42, 0]


def test_unknown_encryption_method_is_refused() -> None:
    with pytest.raises(PaillierError, match="unknown encryption method"):
        paillier.encrypt_many(keys(512)[0], [1], method="textbook")  # type: ignore[arg-type]


# ---------------------------------------------------------------- homomorphism


@given(st.lists(st.integers(min_value=0), min_size=1, max_size=12), st.data())
@settings(max_examples=40, deadline=None)
def test_encrypted_sums_equal_plaintext_sums(values: list[int], data: st.DataObject) -> None:
    pub, priv = keys(512)
    values = [v % pub.n for v in values]
    method = data.draw(st.sampled_from(["djn", "naive"]))
    cts = paillier.encrypt_many(pub, values, workers=1, method=method)
    total = cts[0]
    for c in cts[1:]:
        total = paillier.add(pub, total, c)
    assert priv.decrypt_int(total) == sum(values) % pub.n
    [grouped] = paillier.sum_groups(pub, cts, np.zeros(len(cts), dtype=np.int64), 1)
    assert grouped == total


@given(st.integers(min_value=0), st.integers())
@settings(max_examples=60, deadline=None)
def test_mul_const_with_any_integer_constant(m: int, k: int) -> None:
    pub, priv = keys(512)
    m %= pub.n
    c = pub.encrypt_int(m)
    assert priv.decrypt_int(paillier.mul_const(pub, c, k)) == (m * k) % pub.n


@pytest.mark.parametrize("k", [-1, -2, -(2**64), 0, 1, "n-1", "-(n-1)", "n", "-n", "2n+3"])
def test_mul_const_edges_including_negative_constants(k: object) -> None:
    pub, priv = keys(512)
    n = pub.n
    value = {"n-1": n - 1, "-(n-1)": -(n - 1), "n": n, "-n": -n, "2n+3": 2 * n + 3}.get(k, k)  # type: ignore[call-overload]
    c = pub.encrypt_int(1234)
    result = paillier.mul_const(pub, c, value)
    assert priv.decrypt_int(result) == (1234 * value) % n
    if value == 0:
        assert result == 1  # a transparent encryption of 0, as documented


def test_subtraction_via_negative_constant_gives_n_minus_difference() -> None:
    pub, priv = keys(512)
    diff = paillier.add(pub, pub.encrypt_int(5), paillier.mul_const(pub, pub.encrypt_int(8), -1))
    assert priv.decrypt_int(diff) == pub.n - 3


# ---------------------------------------------------------------- group sums


def _plain_group_sums(values: list[int], groups: np.ndarray, n_groups: int, n: int) -> list[int]:
    sums = [0] * n_groups
    for v, g in zip(values, groups.tolist(), strict=True):
        if g >= 0:
            sums[g] = (sums[g] + v) % n
    return sums


@given(
    st.lists(st.tuples(st.integers(min_value=0), st.integers(-1, 5)), max_size=30),
    st.integers(1, 6),
)
@settings(max_examples=30, deadline=None)
def test_group_sums_equal_plaintext_sums_property(
    rows: list[tuple[int, int]], n_groups: int
) -> None:
    pub, priv = keys(512)
    values = [v % pub.n for v, _ in rows]
    groups = np.array([g % (n_groups + 1) - 1 for _, g in rows], dtype=np.int64)  # in [-1, G)
    cts = paillier.encrypt_many(pub, values, workers=1)
    sums = paillier.sum_groups(pub, cts, groups, n_groups)
    assert [priv.decrypt_int(c) for c in sums] == _plain_group_sums(values, groups, n_groups, pub.n)


def test_sum_groups_equals_plaintext_group_sums_with_skips_and_empty_groups() -> None:
    pub, priv = keys(1024)
    rng = np.random.default_rng(3)
    values = [int(v) for v in rng.integers(0, 2**40, size=300)]
    groups = rng.integers(-1, 6, size=300)
    groups[groups == 4] = -1  # group 4 stays empty; 6 and 7 never occur
    cts = paillier.encrypt_many(pub, values, workers=1)
    sums = paillier.sum_groups(pub, cts, groups, 8)
    assert len(sums) == 8
    assert sums[4] == sums[6] == sums[7] == 1  # empty: the transparent encryption of 0
    assert paillier.decrypt_many(priv, sums, workers=1) == _plain_group_sums(
        values, groups, 8, pub.n
    )


def test_sum_groups_many_per_column_and_parallel_equals_serial() -> None:
    pub, priv = keys(1024)
    rng = np.random.default_rng(4)
    values = [int(v) for v in rng.integers(0, 2**50, size=400)]
    matrix = rng.integers(-1, 5, size=(400, 3)).astype(np.int16)
    cts = paillier.encrypt_many(pub, values, workers=1)
    serial = paillier.sum_groups_many(pub, cts, matrix, 5, workers=1)
    parallel = paillier.sum_groups_many(pub, cts, matrix, 5, workers=2)
    assert parallel == serial  # products are deterministic: identical ciphertexts
    for j in range(3):
        assert serial[j] == paillier.sum_groups(pub, cts, matrix[:, j], 5)
        assert paillier.decrypt_many(priv, serial[j]) == _plain_group_sums(
            values, matrix[:, j], 5, pub.n
        )


def test_sum_groups_many_with_no_rows_or_all_skipped() -> None:
    pub, _ = keys(512)
    assert paillier.sum_groups_many(pub, [], np.zeros((0, 2), dtype=int), 3) == [[1, 1, 1]] * 2
    cts = [pub.encrypt_int(1), pub.encrypt_int(2)]
    skipped = np.full((2, 1), -1)
    assert paillier.sum_groups_many(pub, cts, skipped, 2, workers=2) == [[1, 1]]


@pytest.mark.parametrize(
    ("matrix", "match"),
    [
        (np.array([[0], [-2]]), "group id -2 at row 1, column 0"),
        (np.array([[0], [3]]), r"group id 3 at row 1, column 0 is outside \[-1, 3\)"),
        (np.array([[0.0], [1.0]]), "must be integers"),
        (np.array([0, 1]), "must have shape"),
        (np.zeros((3, 1), dtype=int), "must have shape"),
    ],
)
def test_bad_group_matrices_are_refused(matrix: np.ndarray, match: str) -> None:
    pub, _ = keys(512)
    cts = [pub.encrypt_int(1), pub.encrypt_int(2)]
    with pytest.raises(PaillierError, match=match):
        paillier.sum_groups_many(pub, cts, matrix, 3)


# ---------------------------------------------------------------- batches and workers


def test_worker_pool_results_equal_serial_results() -> None:
    pub, priv = keys(1024)
    values = [secrets.randbelow(pub.n) for _ in range(41)] + [0, pub.n - 1]
    for method in ("djn", "naive"):
        cts = paillier.encrypt_many(pub, values, workers=2, method=method)  # type: ignore[arg-type]
        assert paillier.decrypt_many(priv, cts, workers=2) == values
        assert paillier.decrypt_many(priv, cts, workers=1) == values
    many = paillier.obfuscate_many(pub, cts, workers=2)
    assert paillier.decrypt_many(priv, many, workers=2) == values
    assert paillier.encrypt_many(pub, [], workers=2) == []
    assert paillier.decrypt_many(priv, [], workers=2) == []


def test_workers_below_one_are_refused() -> None:
    with pytest.raises(PaillierError, match="workers must be at least 1"):
        paillier.encrypt_many(keys(512)[0], [1, 2], workers=0)


def test_worker_refusal_surfaces_as_paillier_error() -> None:
    pub, _ = keys(512)
    with pytest.raises(PaillierError, match="unknown request"):
        parallel.run_in_workers(b"X", [(parallel.public_header(pub), b"")])


# ---------------------------------------------------------------- serialisation


def test_ciphertext_arrays_round_trip() -> None:
    pub, _ = keys(1024)
    cts = paillier.encrypt_many(pub, [0, 5, pub.n - 1])
    array = paillier.ciphertexts_to_array(pub, cts)
    assert array.dtype == np.uint8
    assert array.shape == (3, 256)
    assert paillier.ciphertexts_from_array(pub, array, fingerprint=pub.fingerprint) == cts
    assert paillier.ciphertexts_from_array(pub, array[:0]) == []


def test_ciphertext_arrays_refuse_other_keys_shapes_and_values() -> None:
    pub, _ = keys(1024)
    array = paillier.ciphertexts_to_array(pub, [pub.encrypt_int(1)])
    with pytest.raises(KeyMismatchError, match="not this key"):
        paillier.ciphertexts_from_array(pub, array, fingerprint=keys(512)[0].fingerprint)
    with pytest.raises(PaillierError, match="shape"):
        paillier.ciphertexts_from_array(pub, array[:, :-1])
    with pytest.raises(PaillierError, match="uint8"):
        paillier.ciphertexts_from_array(pub, array.astype(np.int16))
    with pytest.raises(PaillierError, match=r"ciphertext 0 is outside \(0, n²\)"):
        paillier.ciphertexts_from_array(pub, np.full((1, 256), 255, dtype=np.uint8))
    with pytest.raises(PaillierError):
        paillier.ciphertexts_from_array(pub, np.zeros((1, 256), dtype=np.uint8))
    with pytest.raises(KeyMismatchError):
        paillier.check_fingerprint(pub, "0" * 16)
    paillier.check_fingerprint(pub, pub.fingerprint)
