"""Key generation: ``n = p²q`` with ``p`` of exactly ``⌊k/3⌋`` bits, the base ``g``, ``h = g^n``.

Primes. ``p`` is the next prime after a uniform ``⌊k/3⌋``-bit odd integer with its two top bits
set, ``q`` likewise with ``k - 2⌊k/3⌋`` bits (682 and 684 bits at ``k = 2048``); pairs whose
``n`` does not have exactly ``k`` bits, or where one prime divides the other minus one (what
:func:`secure_agg.ou.rerandomize_own` needs), are drawn again. Starting points come from
:func:`secrets.randbits` (the OS CSPRNG); ``gmpy2.next_prime`` finds the prime and
``gmpy2.is_prime(·, 50)`` (GMP: trial division, Baillie-PSW, Miller-Rabin) re-tests it. ``p``
having exactly ``⌊k/3⌋`` bits is what makes the public plaintext bound ``2^(⌊k/3⌋ - 1)`` lie
below ``p`` (:attr:`~secure_agg.ou.keys.PublicKey.plaintext_bits`); its two top bits make
``p >= 1.5 · 2^(⌊k/3⌋ - 1)``, so a sum that overflows the bound by less than half of it is
refused at decryption rather than wrapped.

Bases. ``g`` is uniform in ``[2, n - 1)`` (:mod:`secrets`), a unit, with
``g^(p-1) mod p²`` of order ``p`` (``≠ 1``; otherwise decryption could not divide by its ``L``),
and ``h = g^n mod n`` (Okamoto & Uchiyama 1998, §3). A 2048-bit key takes ~15-35 ms here.
"""

from __future__ import annotations

import logging
import math
import operator
import secrets

import gmpy2

from secure_agg.ou.errors import OUError
from secure_agg.ou.keys import (
    DEFAULT_KEY_BITS,
    MIN_TEST_KEY_BITS,
    PrivateKey,
    PublicKey,
    check_key_bits,
    prime_bits,
)

logger = logging.getLogger(__name__)

#: Rounds of ``gmpy2.is_prime`` re-testing each prime (as :mod:`secure_agg.paillier.keygen`).
PRIME_TEST_ROUNDS = 50


def _prime(bits: int) -> int:
    """A prime of exactly ``bits`` bits, the next after a CSPRNG draw with its top two bits set."""
    while True:
        start = secrets.randbits(bits) | (3 << (bits - 2)) | 1
        p = int(gmpy2.next_prime(start))
        if p.bit_length() == bits and gmpy2.is_prime(p, PRIME_TEST_ROUNDS):
            return p


def generate_keypair(
    key_bits: int = DEFAULT_KEY_BITS, *, allow_insecure_test_keys: bool = False
) -> tuple[PublicKey, PrivateKey]:
    """A fresh OU key pair with a ``key_bits``-bit ``n = p²q``.

    Parameters
    ----------
    key_bits : int
        Bit length of ``n``. At least :data:`DEFAULT_KEY_BITS` unless
        ``allow_insecure_test_keys=True``.
    allow_insecure_test_keys : bool
        Allow keys down to :data:`MIN_TEST_KEY_BITS` bits. For tests only.

    Returns
    -------
    (PublicKey, PrivateKey)

    Raises
    ------
    InsecureKeyError
        If ``key_bits`` is below :data:`DEFAULT_KEY_BITS` without ``allow_insecure_test_keys=True``.
    OUError
        If ``key_bits`` is below :data:`MIN_TEST_KEY_BITS`.
    """
    key_bits = operator.index(key_bits)
    if key_bits < MIN_TEST_KEY_BITS:
        raise OUError(f"key_bits must be at least {MIN_TEST_KEY_BITS}: {key_bits}")
    check_key_bits(key_bits, allow_insecure_test_keys)
    p_bits = prime_bits(key_bits)
    p = _prime(p_bits)
    p2 = p * p
    while True:
        q = _prime(key_bits - 2 * p_bits)
        n = p2 * q
        # Neither prime divides the other minus one: then y ↦ y^n reaches every unit that
        # decrypts to 0, which the peers' own re-randomisation relies on
        # (secure_agg.ou.rerandomize_own). Fails with probability ~2^-(k/3) at most.
        coprime = (q - 1) % p != 0 and (p - 1) % q != 0
        if q != p and coprime and n.bit_length() == key_bits:
            break
    while True:
        g = secrets.randbelow(n - 3) + 2
        if math.gcd(g, n) == 1 and gmpy2.powmod(g % p2, p - 1, p2) != 1:
            break
    public = PublicKey(n, g, int(gmpy2.powmod(g, n, n)))
    logger.debug("OU key %s generated", public.fingerprint)
    return public, PrivateKey(public, p, q)
