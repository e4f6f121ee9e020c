"""Key generation: admissible moduli for fast encryption and the DJN base.

:func:`generate_keypair` draws key pairs with :func:`phe.paillier.generate_paillier_keypair` and
keeps the first whose modulus is *admissible* for fast encryption (see
:mod:`secure_agg.paillier`): ``p ≡ q ≡ 3 (mod 4)`` and ``gcd(p-1, q-1) = 2`` (Damgård, Jurik &
Nielsen 2010; the same condition as SecretFlow HEU's ``paillier_zahlen`` and ABY's ``libdjn``),
and ``|p - q| > 2^(k/2 - 100)`` (FIPS 186-4 B.3.1, against Fermat factoring), and
``gcd(n, φ(n)) = 1`` (always true of primes of equal length; what the peers' own
re-randomisation, :func:`secure_agg.paillier.rerandomize_own`, relies on). About one pair in
six qualifies; a 2048-bit key takes 0.2-0.5 s here.

Randomness. phe draws the starting point of each prime with ``random.SystemRandom`` (in
``phe.util.getprimeover``), which reads ``os.urandom``, the OS CSPRNG, and moves to the next
prime with ``gmpy2.next_prime``; we re-test each prime with ``gmpy2.is_prime(p, 50)`` (GMP 6.3:
trial division, Baillie-PSW, then 26 Miller-Rabin rounds). Everything else drawn by the package
(the base of fast encryption, encryption exponents, the naive path's ``r``) comes from
:mod:`secrets`.
"""

from __future__ import annotations

import logging
import math
import operator
import secrets

import gmpy2
from phe import paillier as phe_paillier

from secure_agg.paillier.errors import PaillierError
from secure_agg.paillier.keys import (
    DEFAULT_KEY_BITS,
    MIN_TEST_KEY_BITS,
    PrivateKey,
    PublicKey,
    check_key_bits,
)

logger = logging.getLogger(__name__)


def _admissible(p: int, q: int, key_bits: int) -> bool:
    """DJN's modulus conditions plus the FIPS 186-4 distance of the primes."""
    return (
        p % 4 == 3
        and q % 4 == 3
        and math.gcd(p - 1, q - 1) == 2
        and math.gcd(p * q, (p - 1) * (q - 1)) == 1  # what rerandomize_own's argument needs
        and abs(p - q).bit_length() > key_bits // 2 - 100
        and bool(gmpy2.is_prime(p, 50))
        and bool(gmpy2.is_prime(q, 50))
    )


def generate_keypair(
    key_bits: int = DEFAULT_KEY_BITS, *, allow_insecure_test_keys: bool = False
) -> tuple[PublicKey, PrivateKey]:
    """A fresh Paillier key pair with an admissible modulus and a DJN base.

    Parameters
    ----------
    key_bits : int
        Bit length of ``n`` (even). At least :data:`DEFAULT_KEY_BITS` unless
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
    PaillierError
        If ``key_bits`` is odd or below :data:`MIN_TEST_KEY_BITS`.

    Notes
    -----
    Pairs come from :func:`phe.paillier.generate_paillier_keypair` (primes from the OS CSPRNG,
    see the module docstring); pairs whose modulus is not admissible are discarded. The DJN base
    is ``h_s = (-x²)^n mod n²`` with ``x`` from :mod:`secrets`.
    """
    key_bits = operator.index(key_bits)
    if key_bits % 2 or key_bits < MIN_TEST_KEY_BITS:
        raise PaillierError(f"key_bits must be even and at least {MIN_TEST_KEY_BITS}: {key_bits}")
    check_key_bits(key_bits, allow_insecure_test_keys)
    attempts = 0
    while True:
        attempts += 1
        _, phe_private = phe_paillier.generate_paillier_keypair(n_length=key_bits)
        p, q = int(phe_private.p), int(phe_private.q)
        del phe_private
        if _admissible(p, q, key_bits):
            break
    n = p * q
    while True:
        x = secrets.randbelow(n - 2) + 2
        if math.gcd(x, n) == 1:
            break
    h = (-x * x) % n
    public = PublicKey(n, int(gmpy2.powmod(h, n, n * n)))
    logger.debug("Paillier key %s after %d candidate pairs", public.fingerprint, attempts)
    return public, PrivateKey(public, p, q)
