"""Okamoto–Uchiyama primitives: encrypted results equal plaintext results; keys; crypto edges."""

from __future__ import annotations

import copy
import functools
import pickle
import secrets

import gmpy2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secure_agg import ou, packing, paillier
from secure_agg.ou import (
    InsecureKeyError,
    KeyMismatchError,
    OUError,
    PlaintextOverflowError,
    PrivateKey,
    PublicKey,
    kernels,
    tables,
)


@functools.cache
def keys(bits: int) -> tuple[PublicKey, PrivateKey]:
    """One key pair per size for the whole module (test keys: allow_insecure_test_keys)."""
    return ou.generate_keypair(bits, allow_insecure_test_keys=True)


# ---------------------------------------------------------------- keys


def test_default_key_is_2048_bit_p2q_and_round_trips() -> None:
    pub, priv = ou.generate_keypair()
    assert pub.key_bits == 2048
    p, q = int(priv._p), int(priv._q)
    assert p * p * q == pub.n
    assert p.bit_length() == 682
    assert gmpy2.is_prime(p)
    assert gmpy2.is_prime(q)
    assert pub.plaintext_bits == 681
    assert pub.plaintext_bound < p
    assert pub.randomness_bits == 224
    assert pub.h == pow(pub.g, pub.n, pub.n)
    assert pow(pub.g, p - 1, p * p) != 1
    for m in (0, 1, pub.plaintext_bound - 1, secrets.randbelow(pub.plaintext_bound)):
        assert priv.decrypt_int(pub.encrypt_int(m)) == m


@pytest.mark.parametrize("bits", [512, 1024, 1536])
def test_short_keys_need_explicit_allow_insecure_test_keys(bits: int) -> None:
    with pytest.raises(InsecureKeyError, match="allow_insecure_test_keys=True"):
        ou.generate_keypair(bits)
    pub, _ = ou.generate_keypair(bits, allow_insecure_test_keys=True)
    assert pub.key_bits == bits
    with pytest.raises(InsecureKeyError, match="2048-bit floor"):
        PublicKey.from_bytes(pub.to_bytes())
    assert PublicKey.from_bytes(pub.to_bytes(), allow_insecure_test_keys=True) == pub


def test_tiny_keys_are_refused_even_for_tests() -> None:
    with pytest.raises(OUError, match="at least 512"):
        ou.generate_keypair(384, allow_insecure_test_keys=True)


def test_security_levels_and_exponent_lengths_follow_the_key() -> None:
    assert [ou.security_bits(b) for b in (1024, 2048, 3072, 7680)] == [80, 112, 128, 192]
    assert keys(1024)[0].randomness_bits == 160
    assert keys(1024)[0].plaintext_bits == 340
    assert keys(1024)[0].obfuscation_exponent_bytes == (1024 + 128) // 8


def test_public_key_serialises_and_fingerprints_n_g_and_h() -> None:
    pub, _ = keys(1024)
    raw = pub.to_bytes()
    back = PublicKey.from_bytes(raw, allow_insecure_test_keys=True)
    assert back == pub
    assert back.fingerprint == pub.fingerprint
    assert hash(back) == hash(pub)
    assert pickle.loads(pickle.dumps(pub)) == pub
    other_g = PublicKey(pub.n, pow(pub.g, 3, pub.n), pub.h)
    assert other_g.fingerprint != pub.fingerprint
    other_h = PublicKey(pub.n, pub.g, pow(pub.h, 3, pub.n))
    assert other_h.fingerprint != pub.fingerprint
    ppub, _ = paillier.generate_keypair(1024, allow_insecure_test_keys=True)
    assert ppub.fingerprint != pub.fingerprint


@pytest.mark.parametrize(
    "mutate",
    [
        lambda raw: raw[:-1],
        lambda raw: raw + b"\0",
        lambda raw: b"lab/xx" + raw[6:],
        lambda raw: raw[:20],
    ],
)
def test_malformed_public_key_bytes_are_refused(mutate: object) -> None:
    raw = keys(1024)[0].to_bytes()
    with pytest.raises(OUError):
        PublicKey.from_bytes(mutate(raw), allow_insecure_test_keys=True)  # type: ignore[operator]


def test_paillier_key_bytes_are_not_an_ou_key() -> None:
    ppub, _ = paillier.generate_keypair(1024, allow_insecure_test_keys=True)
    with pytest.raises(OUError, match="bad tag"):
        PublicKey.from_bytes(ppub.to_bytes(), allow_insecure_test_keys=True)


def test_degenerate_public_values_are_refused() -> None:
    pub, _ = keys(1024)
    for g, h in ((1, pub.h), (pub.n - 1, pub.h), (pub.g, 0), (pub.g, pub.n)):
        with pytest.raises(OUError, match="unit modulo n"):
            PublicKey(pub.n, g, h)
    with pytest.raises(OUError, match="not an OU modulus"):
        PublicKey(pub.n + 1, pub.g, pub.h)
    with pytest.raises(OUError, match="not an OU modulus"):
        PublicKey((2**300 + 7) ** 2, 3, 5)


def test_private_key_is_not_picklable_and_repr_has_no_secrets() -> None:
    pub, priv = keys(1024)
    with pytest.raises(TypeError, match="must not be pickled"):
        pickle.dumps(priv)
    with pytest.raises(TypeError):
        copy.copy(priv)
    text = repr(priv) + str(priv)
    assert pub.fingerprint in text
    assert str(int(priv._p)) not in text
    assert format(int(priv._p), "x") not in text


def test_secret_bytes_round_trip_and_refuse_another_key() -> None:
    pub, priv = keys(1024)
    back = PrivateKey.from_secret_bytes(pub, priv.to_secret_bytes())
    c = pub.encrypt_int(99)
    assert back.decrypt_int(c) == 99
    with pytest.raises(KeyMismatchError):
        PrivateKey.from_secret_bytes(keys(512)[0], priv.to_secret_bytes())
    with pytest.raises(OUError, match="bad tag"):
        PrivateKey.from_secret_bytes(pub, b"nope" + priv.to_secret_bytes())
    with pytest.raises(OUError, match="trailing"):
        PrivateKey.from_secret_bytes(pub, priv.to_secret_bytes() + b"\0")


def test_a_base_without_order_p_is_refused_by_the_key_holder() -> None:
    pub, priv = keys(1024)
    p, q = int(priv._p), int(priv._q)
    # g = h^(anything) has no p-part: g^(p-1) = 1 mod p², decryption would divide by zero.
    bad = PublicKey(pub.n, pub.h, pub.h)
    with pytest.raises(KeyMismatchError, match="not a valid OU base"):
        PrivateKey(bad, p, q)


# ---------------------------------------------------------------- encryption


def test_encryption_is_randomised_and_matches_the_formula() -> None:
    pub, priv = keys(1024)
    assert pub.encrypt_int(5) != pub.encrypt_int(5)
    r = secrets.token_bytes(pub.randomness_bytes)
    expected = pow(pub.g, 77, pub.n) * pow(pub.h, int.from_bytes(r, "little"), pub.n) % pub.n
    assert int(kernels.encrypt_one(pub, 77, r)) == expected
    assert priv.decrypt_int(expected) == 77


def test_fixed_base_tables_equal_powmod() -> None:
    pub, _ = keys(1024)
    g_table, h_table = tables.public_tables(pub)
    for _ in range(5):
        e = secrets.token_bytes(pub.obfuscation_exponent_bytes)
        assert int(h_table.power(e)) == pow(pub.h, int.from_bytes(e, "little"), pub.n)
        m = secrets.randbelow(pub.plaintext_bound)
        assert int(g_table.power(m.to_bytes(pub.plaintext_bytes, "little"))) == pow(pub.g, m, pub.n)


@pytest.mark.parametrize("bits", [512, 1024])
def test_largest_plaintext_and_edges_round_trip(bits: int) -> None:
    pub, priv = keys(bits)
    values = [0, 1, 2, pub.plaintext_bound - 1, pub.plaintext_bound // 2]
    assert ou.decrypt_many(priv, ou.encrypt_many(pub, values)) == values


@pytest.mark.parametrize("m", [-1, "bound", "p", 2**4096])
def test_plaintexts_outside_the_space_are_refused(m: object) -> None:
    pub, priv = keys(1024)
    value = {"bound": pub.plaintext_bound, "p": int(priv._p)}.get(m, m)  # type: ignore[call-overload]
    with pytest.raises(OUError, match="outside"):
        pub.encrypt_int(value)
    with pytest.raises(OUError, match="plaintext 1 is outside"):
        ou.encrypt_many(pub, [0, value])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2**339 - 1), min_size=1, max_size=6))
def test_round_trip_property(values: list[int]) -> None:
    pub, priv = keys(1024)
    assert ou.decrypt_many(priv, ou.encrypt_many(pub, values)) == values


# ---------------------------------------------------------------- homomorphism


@settings(max_examples=25, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**338),
    st.integers(min_value=0, max_value=2**338),
    st.integers(min_value=-(2**100), max_value=2**100),
)
def test_add_and_mul_const_equal_plaintext_results(a: int, b: int, k: int) -> None:
    pub, priv = keys(1024)
    ca, cb = pub.encrypt_int(a), pub.encrypt_int(b)
    assert priv.decrypt_int(ou.add(pub, ca, cb)) == a + b
    small = a >> 120
    product = ou.mul_const(pub, pub.encrypt_int(small), k)
    assert priv.decrypt_signed_int(product) == k * small


def test_mul_const_by_zero_and_one() -> None:
    pub, priv = keys(512)
    c = pub.encrypt_int(42)
    assert ou.mul_const(pub, c, 0) == 1
    assert priv.decrypt_int(ou.mul_const(pub, c, 1)) == 42
    assert priv.decrypt_signed_int(ou.mul_const(pub, c, -1)) == -42


def test_obfuscate_keeps_the_plaintext_and_changes_the_ciphertext() -> None:
    pub, priv = keys(1024)
    c = pub.encrypt_int(1234)
    fresh = pub.obfuscate(c)
    assert fresh != c
    assert priv.decrypt_int(fresh) == 1234
    many = ou.obfuscate_many(pub, [c, c])
    assert many[0] != many[1]
    assert ou.decrypt_many(priv, many) == [1234, 1234]


def test_sum_groups_many_equals_plaintext_histograms() -> None:
    pub, priv = keys(1024)
    rng = np.random.default_rng(0)
    n_rows, n_cols, n_groups = 40, 3, 5
    values = [int(v) for v in rng.integers(0, 2**40, n_rows)]
    matrix = rng.integers(-1, n_groups, size=(n_rows, n_cols))
    cts = ou.encrypt_many(pub, values)
    sums = ou.sum_groups_many(pub, cts, matrix, n_groups)
    for j in range(n_cols):
        for g in range(n_groups):
            expected = sum(v for v, gid in zip(values, matrix[:, j], strict=True) if gid == g)
            assert priv.decrypt_int(sums[j][g]) == expected
    single = ou.sum_groups(pub, cts, matrix[:, 0], n_groups)
    assert single == sums[0]


def test_empty_group_is_a_transparent_zero() -> None:
    pub, priv = keys(512)
    sums = ou.sum_groups(pub, ou.encrypt_many(pub, [3, 4]), np.array([0, 0]), 2)
    assert sums[1] == 1
    assert priv.decrypt_int(sums[1]) == 0
    assert priv.decrypt_int(sums[0]) == 7


@pytest.mark.parametrize(
    ("matrix", "n_groups", "match"),
    [
        (np.array([[0], [2]]), 2, "outside"),
        (np.array([[0], [-2]]), 2, "outside"),
        (np.array([[0.0], [1.0]]), 2, "integers"),
        (np.array([[0, 1]]), 2, "shape"),
        (np.array([[0], [1]]), -1, "non-negative"),
    ],
)
def test_bad_group_matrices_are_refused(matrix: np.ndarray, n_groups: int, match: str) -> None:
    pub, _ = keys(512)
    with pytest.raises(OUError, match=match):
        ou.sum_groups_many(pub, ou.encrypt_many(pub, [1, 2]), matrix, n_groups)


# ---------------------------------------------------------------- overflow and packing


def test_overflowing_sums_are_refused_not_returned() -> None:
    pub, priv = keys(1024)
    top = pub.plaintext_bound - 1
    # A sum in [bound, p) (p >= 1.5 * bound: its two top bits are set) is refused ...
    c = ou.add(pub, pub.encrypt_int(top), pub.encrypt_int(pub.plaintext_bound // 2))
    with pytest.raises(PlaintextOverflowError, match="overflowing sum"):
        priv.decrypt_int(c)
    with pytest.raises(PlaintextOverflowError):
        ou.decrypt_many(priv, [c])
    # ... but one past p wraps modulo the secret p, undetectably: encodings must prevent it.
    wrapped = ou.add(pub, pub.encrypt_int(top), pub.encrypt_int(top))
    assert priv.decrypt_int(wrapped) == 2 * top - int(priv._p)
    with pytest.raises(PlaintextOverflowError, match=r"\(-2\^339, 2\^339\)"):
        priv.decrypt_signed_int(pub.encrypt_int(pub.plaintext_bound // 2))
    with pytest.raises(PlaintextOverflowError):
        priv.decrypt_signed_int(ou.mul_const(pub, pub.encrypt_int(pub.plaintext_bound // 2), -1))


def test_packers_fit_the_ou_plaintext_space_at_capacity() -> None:
    pub, priv = keys(2048)
    key_bits = ou.packing_key_bits(pub)
    assert key_bits == 681
    packer = packing.SumPacker(150, key_bits)
    assert packer.capacity == (681 - packing.HEADROOM_BITS) // 150 == 4
    values = [2**150 - 1] * packer.capacity
    plain = sum(v << (150 * j) for j, v in enumerate(values))
    assert plain < pub.plaintext_bound
    assert packer.unpack([priv.decrypt_int(pub.encrypt_int(plain))], packer.capacity) == values
    with pytest.raises(packing.PackingError):
        packing.SumPacker(700, key_bits)
    gp = packing.GradientPacker(
        g_bound=1.0, h_bound=0.25, precision_bits=53, max_rows=30000, key_bits=key_bits
    )
    encoded = gp.encode(np.array([0.5, -0.25]), np.array([0.1, 0.2]))
    summed = ou.add(pub, *ou.encrypt_many(pub, encoded))
    g, h, count = gp.decode_sum(priv.decrypt_int(summed))
    assert count == 2
    assert g == pytest.approx(0.25)
    assert h == pytest.approx(0.3)


# ---------------------------------------------------------------- wrong key, wire format


def test_wrong_key_is_caught_by_fingerprint_or_refused() -> None:
    pub, _ = keys(1024)
    other_pub, other_priv = ou.generate_keypair(1024, allow_insecure_test_keys=True)
    cts = ou.encrypt_many(pub, [5] * 20)
    array = ou.ciphertexts_to_array(pub, cts)
    with pytest.raises(KeyMismatchError, match="not this OU key"):
        ou.ciphertexts_from_array(other_pub, array, fingerprint=pub.fingerprint)
    # Without the fingerprint a ciphertext of the other key decrypts to garbage or is refused.
    outcomes: list[int | str] = []
    for c in cts:
        if c >= other_pub.n:
            outcomes.append("out of range")
            continue
        try:
            outcomes.append(other_priv.decrypt_int(c))
        except PlaintextOverflowError:
            outcomes.append("refused")
    assert 5 not in outcomes


def test_wire_round_trip_and_tampering_is_refused() -> None:
    pub, priv = keys(1024)
    cts = ou.encrypt_many(pub, [1, 2, 3])
    array = ou.ciphertexts_to_array(pub, cts)
    assert array.shape == (3, pub.key_bytes)
    assert array.dtype == np.uint8
    back = ou.ciphertexts_from_array(pub, array, fingerprint=pub.fingerprint)
    assert ou.decrypt_many(priv, back) == [1, 2, 3]
    with pytest.raises(OUError, match="shape"):
        ou.ciphertexts_from_array(pub, array[:, 1:])
    with pytest.raises(OUError, match="shape"):
        ou.ciphertexts_from_array(pub, array.astype(np.int16))
    with pytest.raises(OUError, match="shape"):
        ou.ciphertexts_from_array(pub, array.reshape(-1))
    bad = array.copy()
    bad[1] = 0xFF  # n - 1 < value: outside (0, n)
    with pytest.raises(OUError, match="ciphertext 1 is outside"):
        ou.ciphertexts_from_array(pub, bad)
    bad[1] = 0
    with pytest.raises(OUError, match="ciphertext 1 is outside"):
        ou.ciphertexts_from_array(pub, bad)
    with pytest.raises(OUError, match="outside"):
        ou.ciphertexts_to_array(pub, [pub.n])
    n_minus_1 = ou.ciphertexts_from_array(pub, ou.ciphertexts_to_array(pub, [pub.n - 1]))
    assert n_minus_1 == [pub.n - 1]


def test_ciphertexts_out_of_range_are_refused_everywhere() -> None:
    pub, priv = keys(512)
    for c in (0, pub.n, -1):
        with pytest.raises(OUError):
            priv.decrypt_int(c)
        with pytest.raises(OUError):
            ou.add(pub, c, 1)
        with pytest.raises(OUError):
            pub.obfuscate(c)


# ---------------------------------------------------------------- C kernels


c_kernels = paillier.extension.active()
needs_c = pytest.mark.skipif(c_kernels is None, reason="secure_agg._gmp_kernels is not built")


@needs_c
@pytest.mark.parametrize("bits", [512, 1024, 2048])
def test_c_kernels_equal_python_with_the_same_randomness(
    bits: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    pub, priv = keys(bits)
    values = [0, 1, pub.plaintext_bound - 1] + [secrets.randbits(150) for _ in range(20)]
    randomness = secrets.token_bytes(pub.randomness_bytes * len(values))
    obf_randomness = secrets.token_bytes(pub.obfuscation_exponent_bytes * len(values))
    results = []
    for active in (c_kernels, None):
        monkeypatch.setattr(paillier, "_C", active)
        cts = [int(c) for c in kernels.encrypt(pub, values, randomness)]
        fresh = [int(c) for c in kernels.obfuscate(pub, cts, obf_randomness)]
        one = int(kernels.encrypt_one(pub, values[3], randomness[: pub.randomness_bytes]))
        results.append((cts, fresh, one))
    assert results[0] == results[1]
    assert ou.decrypt_many(priv, results[0][1]) == values


@needs_c
def test_c_kernels_refuse_bad_inputs() -> None:
    assert c_kernels is not None
    pub, _ = keys(512)
    width = pub.key_bytes
    encryptor = tables.public_c_encryptor(c_kernels, pub)
    size = pub.randomness_bytes
    with pytest.raises(ValueError, match="outside"):
        encryptor.rerandomize(pub.n.to_bytes(width, "big"), width, bytes(size), size)
    with pytest.raises(ValueError, match="outside"):
        encryptor.rerandomize(bytes(width), width, bytes(size), size)
    with pytest.raises(ValueError, match="randomness"):
        encryptor.encrypt(bytes(pub.plaintext_bytes), pub.plaintext_bytes, bytes(size - 1), size)
    with pytest.raises(ValueError, match="exceeds"):
        encryptor.encrypt(bytes(width), width, bytes(size), size)
    with pytest.raises(ValueError, match="below n"):
        c_kernels.OuEncryptor(
            pub.n.to_bytes(width, "big"), pub.n.to_bytes(width, "big"), b"\x02", 1, 1
        )
    with pytest.raises(ValueError, match="odd"):
        c_kernels.OuEncryptor((pub.n + 1).to_bytes(width, "big"), b"\x02", b"\x03", 1, 1)
