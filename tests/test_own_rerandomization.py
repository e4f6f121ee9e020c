"""The platform re-randomises with its own randomness: a bank's crafted key cannot read bins.

A bank that chooses its key can make the key's re-randomisation base trivial in one component
(OU: ``g ≡ 1 mod q`` so ``h ≡ 1 mod q``; Paillier: ``h_s ≡ 1 mod q²``), tag each row's
ciphertext there without changing its plaintext, and read from each returned sum exactly which
rows the platform put in that bin. These tests run that attack (the reviewer's proof of concept,
on small test keys) against the key-based re-randomisation, where it recovers every bin, and
against the platform's own (``c · y^n``), where the tags are gone.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from typing import Any

import gmpy2
import numpy as np
import pytest

from models.secureboost import crypto
from secure_agg import backends, ou, packing, paillier

ROWS = 12
TAU = 3


def _crt(a: int, m1: int, b: int, m2: int) -> int:
    """The residue modulo ``m1·m2`` that is ``a`` modulo ``m1`` and ``b`` modulo ``m2``."""
    return int(a + m1 * ((b - a) * gmpy2.invert(m1, m2) % m2))


@functools.cache
def _malicious_ou(bits: int = 1024) -> tuple[ou.PublicKey, ou.PrivateKey, int]:
    """An OU key of honest primes with ``g ≡ 1 mod q`` (so ``h = g^n ≡ 1 mod q``), and ``q``."""
    _, honest = ou.generate_keypair(bits, allow_insecure_test_keys=True)
    p, q = int(honest._p), int(honest._q)
    p2, n = p * p, p * p * q
    while True:
        g = _crt(secrets.randbelow(p2), p2, 1, q)
        if pow(g, p - 1, p2) != 1 and gmpy2.gcd(g, n) == 1:
            break
    public = ou.PublicKey(n, g, pow(g, n, n))
    return public, ou.PrivateKey(public, p, q), q


@functools.cache
def _malicious_paillier(bits: int = 1024) -> tuple[paillier.PublicKey, paillier.PrivateKey, int]:
    """A Paillier key of honest primes with ``h_s ≡ 1 mod q²``, and ``q²``."""
    honest, secret = paillier.generate_keypair(bits, allow_insecure_test_keys=True)
    p, q = int(secret._p), int(secret._q)
    h_s = _crt(honest.h_s % (p * p), p * p, 1, q * q)
    public = paillier.PublicKey(p * q, h_s)
    return public, paillier.PrivateKey(public, p, q), q * q


def _tags(scheme: str) -> tuple[Any, Any, int, list[int]]:
    """The key, its private half, the tag modulus and one tag per row (invisible to decryption).

    Row ``i``'s tag is ``τ^(2^i)`` in the component the key's base leaves alone, 1 elsewhere.
    """
    if scheme == "ou":
        public, private, q = _malicious_ou()
        p2 = public.n // q
        tags = [_crt(1, p2, pow(TAU, 1 << i, q), q) for i in range(ROWS)]
        return public, private, q, tags
    public, private, q2 = _malicious_paillier()
    p2 = public.nsquare // q2
    q = int(gmpy2.isqrt(q2))
    tags = [_crt(1, p2, pow(TAU, q << i, q2), q2) for i in range(ROWS)]
    return public, private, q2, tags


def _tagged_rows(scheme: str, values: list[int]) -> tuple[Any, Any, int, list[int], list[int]]:
    public, private, modulus, tags = _tags(scheme)
    mod = ou if scheme == "ou" else paillier
    big = public.n if scheme == "ou" else public.nsquare
    cts = [c * t % big for c, t in zip(mod.encrypt_many(public, values), tags, strict=True)]
    return public, private, modulus, tags, cts


def _residual(scheme: str, public: Any, c: int, plaintext: int, modulus: int) -> int:
    """What the bank reads: the ciphertext divided by its plaintext part, in the tag component."""
    if scheme == "ou":  # g ≡ 1 mod q, so g^m contributes nothing there
        return c % modulus
    return c * pow((1 + plaintext * public.n) % modulus, -1, modulus) % modulus


def _recovered_members(
    scheme: str, rerandomize: Callable[[Any, list[int]], list[int]]
) -> tuple[list[list[int]], list[list[int]], bool]:
    """Run the attack: (rows the bank reads per bin, true rows per bin, decryptions correct)."""
    values = [secrets.randbelow(1 << 40) for _ in range(ROWS)]
    public, private, modulus, tags, cts = _tagged_rows(scheme, values)
    backend = backends.OU if scheme == "ou" else backends.PAILLIER
    groups = np.array([[secrets.randbelow(3)] for _ in range(ROWS)])
    sums = backend.sum_groups_many(public, cts, groups, 3)[0]
    returned = rerandomize(public, sums)
    table: dict[int, int] = {}
    for members in range(1 << ROWS):
        acc = 1
        for i in range(ROWS):
            if members >> i & 1:
                acc = acc * tags[i] % modulus
        table[acc] = members
    read, truth, correct = [], [], True
    for b, c in enumerate(returned):
        plaintext = backend.decrypt(private, [c])[0]
        rows = [i for i in range(ROWS) if groups[i, 0] == b]
        correct &= plaintext == sum(values[i] for i in rows)
        members = table.get(_residual(scheme, public, c, plaintext, modulus), -1)
        read.append([i for i in range(ROWS) if members >= 0 and members >> i & 1])
        truth.append(rows)
    return read, truth, correct


def _ou_old(public: Any, cts: list[int]) -> list[int]:
    return ou.obfuscate_many(public, cts)


def _paillier_old(public: Any, cts: list[int]) -> list[int]:
    return paillier.obfuscate_many(public, cts)


@pytest.mark.parametrize(
    ("scheme", "old"), [("ou", _ou_old), ("paillier", _paillier_old)], ids=["ou", "paillier"]
)
def test_the_banks_base_lets_a_crafted_key_read_every_bin(
    scheme: str, old: Callable[[Any, list[int]], list[int]]
) -> None:
    """The reviewer's attack works through re-randomisation with the key's own base."""
    read, truth, correct = _recovered_members(scheme, old)
    assert correct
    assert read == truth


@pytest.mark.parametrize("scheme", ["ou", "paillier"])
def test_the_platforms_own_randomness_destroys_the_tags(scheme: str) -> None:
    """Through ``c · y^n`` the sums still decrypt, but no bin's membership can be read."""
    mod = ou if scheme == "ou" else paillier
    read, truth, correct = _recovered_members(scheme, mod.rerandomize_own)
    assert correct
    # A residual uniform in a group of ~2^340 elements hits one of the 4096 tag products with
    # probability ~2^-328: no bin is read (not even an empty one, whose tag product is 1).
    assert all(rows == [] for rows in read)
    assert any(truth)


@pytest.mark.parametrize("scheme", ["ou", "paillier"])
def test_the_tag_channel_is_uniform_after_own_rerandomisation(scheme: str) -> None:
    """Re-randomising one tagged ciphertext again and again: the old residual never moves, the
    new one is spread over the tag component (half quadratic residues, all distinct)."""
    public, private, modulus, _, cts = _tagged_rows(scheme, [7] * ROWS)
    mod = ou if scheme == "ou" else paillier
    q = modulus if scheme == "ou" else int(gmpy2.isqrt(modulus))
    c = cts[5]
    trials = 200
    old = {_residual(scheme, public, x, 7, modulus) for x in mod.obfuscate_many(public, [c] * 4)}
    assert len(old) == 1  # the key's base never touches the tag
    fresh = mod.rerandomize_own(public, [c] * trials)
    assert mod.decrypt_many(private, fresh) == [7] * trials
    residuals = [_residual(scheme, public, x, 7, modulus) for x in fresh]
    assert len(set(residuals)) == trials
    squares = sum(gmpy2.legendre(r % q, q) == 1 for r in residuals)
    # Binomial(200, 1/2): outside [60, 140] with probability below 1e-8.
    assert 60 <= squares <= 140


@pytest.mark.parametrize("scheme", ["ou", "paillier"])
def test_the_platform_cipher_packs_with_its_own_randomness(scheme: str) -> None:
    """The platform's SecureBoost path (``PlatformCipher.pack``) leaves the bank no tag.

    Through the key's base the bank can predict the tag component of every pack exactly
    (the Horner powers of its tags); through the platform's ``pack`` it cannot.
    """
    values = [secrets.randbelow(1 << 20) for _ in range(ROWS)]
    public, private, modulus, tags, cts = _tagged_rows(scheme, values)
    backend = backends.OU if scheme == "ou" else backends.PAILLIER
    layout = crypto.RowLayout(ROWS)
    cipher = crypto.PlatformCipher(public, layout, backend)
    packer = backend.sum_packer(public, layout.sum_bits)
    bits, capacity = layout.sum_bits, packer.capacity
    predicted = []
    for start in range(0, ROWS, capacity):
        acc = 1
        for j, t in enumerate(tags[start : start + capacity]):
            acc = acc * pow(t, 1 << (bits * j), modulus) % modulus
        predicted.append(acc)
    if scheme == "ou":
        old = ou.pack_sums(public, cts, bits, capacity)
    else:
        old = packing.SumPacker(bits, packer.key_bits).pack(public, cts)
    new = backend.from_array(public, cipher.pack(cts))
    for label, packed, expect_tagged in (("old", old, True), ("new", new, False)):
        plaintexts = backend.decrypt(private, packed)
        assert packer.unpack(plaintexts, ROWS) == values, label
        residuals = [
            _residual(scheme, public, c, m, modulus)
            for c, m in zip(packed, plaintexts, strict=True)
        ]
        assert (residuals == predicted) is expect_tagged, label


@pytest.mark.parametrize("scheme", ["ou", "paillier"])
def test_own_rerandomisation_keeps_plaintexts_and_refuses_non_units(scheme: str) -> None:
    mod: Any = ou if scheme == "ou" else paillier
    public, private = mod.generate_keypair(1024, allow_insecure_test_keys=True)
    values = [0, 1, 12345, (1 << 100) + 3]
    cts = mod.encrypt_many(public, values)
    for workers in (1, 2):
        again = mod.rerandomize_own(public, cts, workers=workers)
        assert mod.decrypt_many(private, again) == values
        assert all(a != c for a, c in zip(again, cts, strict=True))
    assert mod.rerandomize_own(public, []) == []
    # A ciphertext carrying a factor of n (a tag no unit removes) is refused, without naming
    # which one (that would say where a tagged row went).
    factor = int(private._q)
    bad = cts[2] * factor % (public.n if scheme == "ou" else public.nsquare)
    error = ou.OUError if scheme == "ou" else paillier.PaillierError
    with pytest.raises(error, match="a ciphertext is not a unit"):
        mod.rerandomize_own(public, [cts[0], bad])
    with pytest.raises(error):
        mod.rerandomize_own(public, [0])
