"""OU kernels on one process: encryption, re-randomisation, decryption, group sums.

Every kernel that needs randomness takes it from its caller, drawn with
:func:`secrets.token_bytes`. Encryption and re-randomisation run in C when the extension is in
use (``secure_agg._gmp_kernels.OuEncryptor``, switched like Paillier's kernels by
:mod:`secure_agg.paillier.extension`); the Python loops here are the reference, and both give
the same integers from the same randomness, and so do the group sums of the histogram kernel
(``OuEncryptor.group_sums``, :func:`group_sums_c`). Decryption (one GMP powmod) stays in Python.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import gmpy2
import numpy as np
import numpy.typing as npt

from secure_agg.ou import tables
from secure_agg.ou.errors import OUError
from secure_agg.paillier import extension, parallel

if TYPE_CHECKING:
    from secure_agg.ou.keys import PrivateKey, PublicKey


def check_plaintexts(pub: PublicKey, plaintexts: Sequence[int]) -> list[int]:
    """The plaintexts as ``int``, each checked to lie in ``[0, 2^plaintext_bits)``.

    Raises
    ------
    OUError
        Naming the index of the first plaintext outside the space (not its value).
    """
    values = [operator.index(m) for m in plaintexts]
    bound = pub.plaintext_bound
    for index, m in enumerate(values):
        if not 0 <= m < bound:
            raise OUError(
                f"plaintext {index} is outside [0, 2^{pub.plaintext_bits}) for this OU key"
            )
    return values


def check_ciphertexts(pub: PublicKey, ciphertexts: Sequence[int]) -> list[int]:
    """The ciphertexts as ``int``, each checked to lie in ``(0, n)``."""
    values = [operator.index(c) for c in ciphertexts]
    n = pub.n
    for index, c in enumerate(values):
        if not 0 < c < n:
            raise OUError(f"ciphertext {index} is outside (0, n) for OU key {pub.fingerprint}")
    return values


def encrypt_one(pub: PublicKey, m: int, r: bytes) -> Any:
    """``g^m · h^r mod n`` for a checked ``m`` and the exponent of little-endian bytes ``r``."""
    if extension.active() is not None:
        return encrypt(pub, [m], r)[0]
    g_table, h_table = tables.public_tables(pub)
    gm = g_table.power(m.to_bytes(pub.plaintext_bytes, "little"))
    return gm * h_table.power(r) % pub._n


def encrypt(pub: PublicKey, values: Sequence[int], randomness: bytes) -> list[Any]:
    """:func:`encrypt_one` of checked plaintexts, ``randomness_bytes`` of ``randomness`` each."""
    size = pub.randomness_bytes
    c_kernels = extension.active()
    if c_kernels is not None:
        width = pub.plaintext_bytes
        data = b"".join(m.to_bytes(width, "big") for m in values)
        out = tables.public_c_encryptor(c_kernels, pub).encrypt(data, width, randomness, size)
        return _from_bytes(out, pub.ciphertext_bytes)
    return [
        encrypt_one(pub, m, randomness[i * size : (i + 1) * size]) for i, m in enumerate(values)
    ]


def plaintext_parts(pub: PublicKey, values: Sequence[int]) -> list[Any]:
    """``g^m mod n`` of checked plaintexts: the plaintext half of :func:`encrypt`.

    In C, :func:`encrypt` with a zero exponent (the ``h`` table contributes nothing).
    """
    c_kernels = extension.active()
    if c_kernels is not None:
        width = pub.plaintext_bytes
        data = b"".join(m.to_bytes(width, "big") for m in values)
        zeros = bytes(len(values))
        out = tables.public_c_encryptor(c_kernels, pub).encrypt(data, width, zeros, 1)
        return _from_bytes(out, pub.ciphertext_bytes)
    g_table = tables.public_tables(pub)[0]
    return [g_table.power(m.to_bytes(pub.plaintext_bytes, "little")) for m in values]


def randomness_parts(pub: PublicKey, randomness: bytes) -> list[Any]:
    """``h^r mod n`` for exponents of ``randomness_bytes`` each: :func:`encrypt`'s other half.

    In C, re-randomisation of the ciphertext 1 with the (short) encryption exponents.
    """
    size = pub.randomness_bytes
    count = len(randomness) // size
    c_kernels = extension.active()
    if c_kernels is not None:
        width = pub.ciphertext_bytes
        ones = (1).to_bytes(width, "big") * count
        out = tables.public_c_encryptor(c_kernels, pub).rerandomize(ones, width, randomness, size)
        return _from_bytes(out, width)
    h_table = tables.public_tables(pub)[1]
    return [h_table.power(randomness[i * size : (i + 1) * size]) for i in range(count)]


def obfuscate_one(pub: PublicKey, c: Any, digits: bytes) -> Any:
    """``c · h^b mod n`` for the exponent of little-endian bytes ``digits``."""
    if extension.active() is not None:
        return obfuscate(pub, [int(c)], digits)[0]
    return c * tables.public_tables(pub)[1].power(digits) % pub._n


def obfuscate(pub: PublicKey, cts: Sequence[int], randomness: bytes) -> list[Any]:
    """:func:`obfuscate_one` of checked ciphertexts, ``obfuscation_exponent_bytes`` each."""
    size = pub.obfuscation_exponent_bytes
    c_kernels = extension.active()
    if c_kernels is not None:
        width = pub.ciphertext_bytes
        data = b"".join(int(c).to_bytes(width, "big") for c in cts)
        out = tables.public_c_encryptor(c_kernels, pub).rerandomize(data, width, randomness, size)
        return _from_bytes(out, width)
    return [
        obfuscate_one(pub, gmpy2.mpz(c), randomness[i * size : (i + 1) * size])
        for i, c in enumerate(cts)
    ]


def _from_bytes(data: bytes, width: int) -> list[int]:
    return [int.from_bytes(data[i : i + width], "big") for i in range(0, len(data), width)]


def decrypt(priv: PrivateKey, cts: Sequence[int]) -> list[Any]:
    """Residues modulo ``p`` of checked ciphertexts (GMP's powmod does the work)."""
    return [priv._decrypt(gmpy2.mpz(c)) for c in cts]


def group_sums_c(
    pub: PublicKey,
    cts: Sequence[int],
    matrix: npt.NDArray[Any],
    n_groups: int,
    *,
    workers: int | None = None,
) -> list[list[int]]:
    """:func:`group_sums` of checked ciphertexts in C, columns split over threads; 1 if empty."""
    c_kernels = extension.active()
    if c_kernels is None:
        raise OUError("the C kernels are not in use")
    width = pub.ciphertext_bytes
    n_rows, n_cols = matrix.shape
    adds = int((matrix >= 0).sum())
    threads = parallel.workers_for(workers, adds, parallel.THREAD_MIN_ADDS, max(n_cols, 1))
    data = b"".join(c.to_bytes(width, "big") for c in cts)
    groups = np.ascontiguousarray(matrix, dtype=np.int32)
    encryptor = tables.public_c_encryptor(c_kernels, pub)

    def run(columns: tuple[int, int]) -> bytes:
        a, b = columns
        part = np.ascontiguousarray(groups[:, a:b])
        return encryptor.group_sums(data, width, part.tobytes(), n_rows, b - a, n_groups)

    out: list[list[int]] = []
    for raw in parallel.in_threads(run, parallel.split(n_cols, threads)):
        values = [int.from_bytes(raw[i : i + width], "big") or 1 for i in range(0, len(raw), width)]
        out.extend(values[k : k + n_groups] for k in range(0, len(values), n_groups))
    return out if n_cols else []


def group_sums(
    n: Any, cts: Sequence[Any], matrix: npt.NDArray[Any], n_groups: int
) -> list[list[Any]]:
    """Per column, per group, the product modulo ``n`` of the rows' ciphertexts (None if empty)."""
    out: list[list[Any]] = []
    for j in range(matrix.shape[1]):
        acc: list[Any] = [None] * n_groups
        for c, g in zip(cts, matrix[:, j].tolist(), strict=True):
            if g >= 0:
                a = acc[g]
                acc[g] = c if a is None else a * c % n
        out.append(acc)
    return out
