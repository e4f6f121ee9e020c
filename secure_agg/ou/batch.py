"""Batches: encrypt, re-randomise and decrypt many values; encryption factors made ahead.

Randomness for a whole batch is drawn at once with :func:`secrets.token_bytes` and handed to the
kernels (:mod:`secure_agg.ou.kernels`). With the C kernels, which release the GIL, large batches
of encryption and re-randomisation are split over threads of this process
(:func:`secure_agg.paillier.parallel.in_threads`, the pool Paillier's C kernels use): one set of
tables, nothing to start. Results do not depend on the split. Decryption (gmpy2, which holds the
GIL) runs in the calling thread.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import gmpy2

from secure_agg.ou import kernels
from secure_agg.ou.errors import OUError
from secure_agg.paillier import extension, parallel

if TYPE_CHECKING:
    from secure_agg.ou.keys import PrivateKey, PublicKey


def _threads(workers: int | None, count: int) -> int:
    """Threads for a batch of ``count`` (1 without the C kernels: gmpy2 holds the GIL)."""
    if extension.active() is None:
        return 1
    return parallel.workers_for(workers, count, parallel.THREAD_MIN_ENCRYPT, count)


def _split_run(
    fn: Callable[[list[int], bytes], list[Any]],
    values: list[int],
    randomness: bytes,
    size: int,
    workers: int,
) -> list[int]:
    """``fn`` over runs of ``values`` and their ``size``-byte randomness, on ``workers`` threads."""
    parts = [
        (values[a:b], randomness[a * size : b * size])
        for a, b in parallel.split(len(values), workers)
    ]

    def run(part: tuple[list[int], bytes]) -> list[Any]:
        return fn(*part)

    out: list[int] = []
    if len(parts) <= 1:
        for part in parts:
            out.extend(int(c) for c in run(part))
        return out
    pool = parallel.thread_pool(len(parts))
    for chunk in pool.map(run, parts):
        out.extend(int(c) for c in chunk)
    return out


def encrypt_many(
    pub: PublicKey, plaintexts: Sequence[int], *, workers: int | None = None
) -> list[int]:
    """Encrypt plaintexts in ``[0, 2^plaintext_bits)`` (see :meth:`PublicKey.encrypt_int`).

    ``workers``: ``None`` uses every usable CPU's thread from
    :data:`~secure_agg.paillier.parallel.THREAD_MIN_ENCRYPT` plaintexts on (C kernels only),
    ``k`` uses ``k`` threads.

    Raises
    ------
    OUError
        Naming the index of the first plaintext outside the plaintext space.
    """
    values = kernels.check_plaintexts(pub, plaintexts)
    size = pub.randomness_bytes
    randomness = secrets.token_bytes(size * len(values))

    def run(part: list[int], r: bytes) -> list[Any]:
        return kernels.encrypt(pub, part, r)

    return _split_run(run, values, randomness, size, _threads(workers, len(values)))


def random_factors(pub: PublicKey, count: int, *, workers: int | None = None) -> list[int]:
    """``count`` fresh encryption factors ``h^r mod n`` (``r`` from :mod:`secrets`).

    The randomness half of :func:`encrypt_many` (same exponent length, so the same ciphertext
    distribution), computed before the plaintexts are known; finish with
    :func:`encrypt_with_factors`. A factor is as secret as the plaintext it will hide
    (``c / f = g^m``): keep it in the encrypting party's memory and use it once
    (:mod:`secure_agg.precompute`).
    """
    size = pub.randomness_bytes
    randomness = secrets.token_bytes(size * count)

    def run(part: list[int], r: bytes) -> list[Any]:
        return kernels.randomness_parts(pub, r)

    return _split_run(run, [0] * count, randomness, size, _threads(workers, count))


def encrypt_with_factors(
    pub: PublicKey,
    plaintexts: Sequence[int],
    factors: Sequence[int],
    *,
    workers: int | None = None,
) -> list[int]:
    """``g^m · f mod n`` for each plaintext and its own factor of :func:`random_factors`.

    Equal to :func:`encrypt_many`'s ciphertext with the factor's exponent; costs the ``g^m``
    half (from the fixed-base table) and one multiplication.

    Raises
    ------
    OUError
        If the counts differ, a plaintext is outside the plaintext space or a factor outside
        ``(0, n)``.
    """
    values = kernels.check_plaintexts(pub, plaintexts)
    if len(factors) != len(values):
        raise OUError(f"{len(factors)} factors for {len(values)} plaintexts")

    def run(part: list[int], _: bytes) -> list[Any]:
        return kernels.plaintext_parts(pub, part)

    parts = _split_run(run, values, bytes(len(values)), 1, _threads(workers, len(values)))
    n = pub._n
    out = []
    for gm, f in zip(parts, factors, strict=True):
        x = gmpy2.mpz(f)
        if not 0 < x < n:
            raise OUError("an encryption factor is outside (0, n)")
        out.append(int(gm * x % n))
    return out


def obfuscate_many(
    pub: PublicKey, ciphertexts: Sequence[int], *, workers: int | None = None
) -> list[int]:
    """Re-randomise ciphertexts (see :meth:`PublicKey.obfuscate`), on threads as encryption."""
    cts = kernels.check_ciphertexts(pub, ciphertexts)
    size = pub.obfuscation_exponent_bytes
    randomness = secrets.token_bytes(size * len(cts))

    def run(part: list[int], r: bytes) -> list[Any]:
        return kernels.obfuscate(pub, part, r)

    return _split_run(run, cts, randomness, size, _threads(workers, len(cts)))


def decrypt_many(
    priv: PrivateKey, ciphertexts: Sequence[int], *, signed: bool = False
) -> list[int]:
    """Decrypt ciphertexts under ``priv``: unsigned by default, signed if asked.

    Raises
    ------
    OUError
        If a ciphertext is outside ``(0, n)``.
    PlaintextOverflowError
        If one decrypts outside the plaintext space (see :meth:`PrivateKey.decrypt_int`).
    """
    cts = kernels.check_ciphertexts(priv.public_key, ciphertexts)
    return [int(priv._check_bound(m, signed=signed)) for m in kernels.decrypt(priv, cts)]
