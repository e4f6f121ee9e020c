"""Re-randomisation with the sender's own randomness: ``c · y^n`` for a fresh uniform unit ``y``.

A party that returns ciphertexts to the key holder after homomorphic operations (SecureBoost's
platform, sending packed histogram sums to the bank) must hide *how* they were formed: which of
the key holder's ciphertexts were multiplied together. Re-randomising with the key holder's own
base (``h`` of an OU key, ``h_s`` of a DJN Paillier key) does not do that against a key holder
that deviates: it chooses the base, so it can choose one that leaves a component of every
ciphertext untouched (e.g. an OU ``g ≡ 1 mod q``, so ``h ≡ 1 mod q``), tag each row's
ciphertext in that component with a factor that does not change the plaintext, and read the
product of the tags of a bin's rows from the returned sum. This module takes the base out of
the key holder's hands: each outgoing ciphertext is multiplied by ``y^n``, ``y`` drawn by the
sender with :mod:`secrets`, uniformly from ``Z*_n`` and fresh per ciphertext. What the result
hides, and under which condition on the modulus, is argued per scheme in
:func:`secure_agg.ou.rerandomize_own` and :func:`secure_agg.paillier.rerandomize_own`.

Cost: one full ``n``-bit exponentiation per ciphertext (no fixed base, so no tables), modulo
``n`` (OU) or ``n²`` (Paillier). gmpy2's ``powmod_base_list`` releases the GIL, so batches are
spread over threads of the calling process. The factor ``y^n`` does not depend on the ciphertext,
so a sender that waits anyway may make it ahead (:func:`nth_power_factors`, kept in a
:class:`secure_agg.precompute.RandomnessPool` in the sender's own memory) and pass it as
``factors``: the result is the same function of a fresh uniform ``y``, each factor used once.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gmpy2

from secure_agg.worker_pool import default_workers

#: Batches below this many ciphertexts run on the calling thread (a 2048-bit exponentiation
#: takes milliseconds, so a handful already pays for starting threads).
THREAD_MIN_CIPHERTEXTS = 4


def uniform_units(n: int, count: int) -> list[Any]:
    """``count`` integers drawn independently and uniformly from ``Z*_n`` with :mod:`secrets`.

    Rejection sampling: ``y`` uniform in ``[1, n)``, redrawn while ``gcd(y, n) != 1``. For an
    RSA-type modulus a redraw has probability about ``2^-(k/3)`` (and finding one would reveal a
    factor of ``n``), so the loop runs once per value.
    """
    n_mpz = gmpy2.mpz(n)
    out: list[Any] = []
    while len(out) < count:
        y = gmpy2.mpz(secrets.randbelow(n - 1) + 1)
        if gmpy2.gcd(y, n_mpz) == 1:
            out.append(y)
    return out


def nth_power_factors(n: int, modulus: int, count: int, *, workers: int | None = None) -> list[int]:
    """``count`` factors ``y^n mod modulus``, a fresh ``y`` (:func:`uniform_units`) each.

    What :func:`nth_power_rerandomize` multiplies a ciphertext by, made ahead. Each factor is as
    secret as the re-randomisation it provides: it must be used for one ciphertext only, and
    never leave the process that made it.

    Parameters
    ----------
    n : int
        The public modulus (the exponent, and the group ``Z*_n`` that ``y`` is drawn from).
    modulus : int
        ``n`` for OU, ``n²`` for Paillier.
    count : int
    workers : int, optional
        Threads: ``None`` for all usable CPUs from :data:`THREAD_MIN_CIPHERTEXTS` factors on,
        1 for the calling thread.
    """
    if count <= 0:
        return []
    if workers is None:
        workers = default_workers() if count >= THREAD_MIN_CIPHERTEXTS else 1
    workers = max(1, min(int(workers), count))
    exponent, mod = gmpy2.mpz(n), gmpy2.mpz(modulus)
    ys = uniform_units(n, count)
    if workers == 1:
        return [int(r) for r in gmpy2.powmod_base_list(ys, exponent, mod)]
    per = math.ceil(count / workers)
    chunks = [ys[start : start + per] for start in range(0, count, per)]
    with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
        parts = pool.map(lambda chunk: gmpy2.powmod_base_list(chunk, exponent, mod), chunks)
        return [int(power) for part in parts for power in part]


def nth_power_rerandomize(
    ciphertexts: Sequence[int],
    n: int,
    modulus: int,
    *,
    factors: Sequence[int] = (),
    workers: int | None = None,
) -> list[int]:
    """``c · y^n mod modulus`` per ciphertext ``c``, a fresh ``y`` (:func:`uniform_units`) each.

    The caller checks the ciphertexts (range, units) and argues what the result hides.

    Parameters
    ----------
    ciphertexts : sequence of int
    n : int
        The public modulus (the exponent, and the group ``Z*_n`` that ``y`` is drawn from).
    modulus : int
        ``n`` for OU, ``n²`` for Paillier.
    factors : sequence of int, optional
        ``y^n mod modulus`` made ahead by the caller (:func:`nth_power_factors`), one for each
        of the first ciphertexts and used here only; the other ciphertexts get factors made now.
    workers : int, optional
        Threads: ``None`` for all usable CPUs from :data:`THREAD_MIN_CIPHERTEXTS` ciphertexts
        on, 1 for the calling thread.

    Returns
    -------
    list of int

    Raises
    ------
    ValueError
        If a factor made ahead is outside ``(0, modulus)`` (not one of this key's).
    """
    count = len(ciphertexts)
    k = min(len(factors), count)
    ahead = [gmpy2.mpz(f) for f in factors[:k]]
    if any(not 0 < f < modulus for f in ahead):
        raise ValueError("a re-randomisation factor made ahead is outside (0, modulus)")
    powers = ahead + [
        gmpy2.mpz(r) for r in nth_power_factors(n, modulus, count - k, workers=workers)
    ]
    mod = gmpy2.mpz(modulus)
    return [int(gmpy2.mpz(c) * r % mod) for c, r in zip(ciphertexts, powers, strict=True)]
