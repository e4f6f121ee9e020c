"""Homomorphic operations: addition, multiplication by a constant, group sums (histograms).

The product of two ciphertexts modulo ``n`` encrypts the sum of their plaintexts and ``c^k``
encrypts ``k·m``, both modulo the secret prime ``p``: a result that outgrows the plaintext
space wraps silently, and the key holder's decryption refuses it
(:class:`~secure_agg.ou.errors.PlaintextOverflowError`) only when it lands at or above the bound,
so keep sums below ``2^plaintext_bits`` by construction (:mod:`secure_agg.packing`'s bounds with
:func:`secure_agg.ou.packing_key_bits`). None of these results is re-randomised: their
randomisers are functions of the inputs' randomisers, which the key holder can relate, so
re-randomise before a result leaves the party: with the sender's own randomness
(:func:`rerandomize_own`) when it goes to the key holder, who must not be able to switch the
re-randomisation off; :meth:`~secure_agg.ou.PublicKey.obfuscate` uses the key holder's base ``h``
and hides nothing from a key holder who chose ``h`` to. An empty group's sum is the integer 1, a
transparent encryption of 0.
"""

from __future__ import annotations

import operator
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import gmpy2
import numpy as np
import numpy.typing as npt

from secure_agg import own_randomness
from secure_agg.ou import kernels
from secure_agg.ou.errors import OUError
from secure_agg.paillier import extension

if TYPE_CHECKING:
    from secure_agg.ou.keys import PublicKey


def add(pub: PublicKey, c1: int, c2: int) -> int:
    """A ciphertext of ``m1 + m2 mod p`` (not re-randomised)."""
    return int(gmpy2.mpz(pub._check_ciphertext(c1)) * pub._check_ciphertext(c2) % pub._n)


def mul_const(pub: PublicKey, c: int, k: int) -> int:
    """A ciphertext of ``k · m mod p`` for any integer ``k`` (negative via the inverse mod ``n``).

    ``k = 0`` gives 1, a transparent encryption of 0. A negative result decrypts with
    :meth:`~secure_agg.ou.PrivateKey.decrypt_signed_int`. The cost grows with ``|k|``'s length
    (``p`` is secret, so ``k`` cannot be reduced). Not re-randomised: re-randomise before
    sending the result to the key holder if ``k`` must stay secret.

    Raises
    ------
    OUError
        If ``c`` is out of range or (for negative ``k``) not invertible modulo ``n``.
    """
    c = pub._check_ciphertext(c)
    k = operator.index(k)
    base = gmpy2.mpz(c)
    if k < 0:
        try:
            base = gmpy2.invert(base, pub._n)
        except ZeroDivisionError as exc:
            raise OUError("ciphertext is not invertible modulo n (not a unit)") from exc
        k = -k
    return int(gmpy2.powmod(base, k, pub._n))


def sum_groups(
    pub: PublicKey, ciphertexts: Sequence[int], group_ids: npt.NDArray[Any], n_groups: int
) -> list[int]:
    """Homomorphic sum of the ciphertexts per group id; rows with id -1 are skipped.

    Returns ``n_groups`` ciphertexts (1 for an empty group); not re-randomised.
    """
    ids = np.asarray(group_ids)
    if ids.ndim != 1:
        raise OUError(f"group_ids must be one-dimensional, got shape {ids.shape}")
    return sum_groups_many(pub, ciphertexts, ids.reshape(-1, 1), n_groups)[0]


def sum_groups_many(
    pub: PublicKey,
    ciphertexts: Sequence[int],
    group_matrix: npt.NDArray[Any],
    n_groups: int,
    *,
    workers: int | None = None,
) -> list[list[int]]:
    """Per feature column, the homomorphic sum of the ciphertexts per group: histogram kernel.

    One multiplication modulo ``n`` per (row, column) with a group id other than -1. With the C
    kernels (``OuEncryptor.group_sums``, GIL released) the columns are split over ``workers``
    threads of this process (``None``: every usable CPU from
    :data:`~secure_agg.paillier.parallel.THREAD_MIN_ADDS` additions on); the sums are the same.

    Parameters
    ----------
    pub : PublicKey
    ciphertexts : sequence of int
        One per row.
    group_matrix : numpy.ndarray of int, shape (n_rows, n_features)
        Group of each row for each feature in ``[0, n_groups)``; -1 skips the row.
    n_groups : int

    Returns
    -------
    list of list of int
        ``out[j][g]``: the sum over rows ``i`` with ``group_matrix[i, j] == g``; 1 for an empty
        group. Not re-randomised.

    Raises
    ------
    OUError
        On shape mismatches, non-integer or out-of-range group ids, or bad ciphertexts.
    """
    n_groups = operator.index(n_groups)
    if n_groups < 0:
        raise OUError(f"n_groups must be non-negative, got {n_groups}")
    matrix = _check_groups(group_matrix, len(ciphertexts), n_groups)
    checked = kernels.check_ciphertexts(pub, ciphertexts)
    if extension.active() is not None:
        return kernels.group_sums_c(pub, checked, matrix, n_groups, workers=workers)
    cts = [gmpy2.mpz(c) for c in checked]
    sums = kernels.group_sums(pub._n, cts, matrix, n_groups)
    return [[1 if a is None else int(a) for a in column] for column in sums]


def pack_sums(
    pub: PublicKey,
    ciphertexts: Sequence[int],
    bits_per_value: int,
    capacity: int,
    *,
    rerandomize: bool = True,
) -> list[int]:
    """Pack ciphertexts ``capacity`` at a time: ``Σ_j m_j · 2^(bits·j)`` in one ciphertext.

    Horner's rule on ciphertexts, ``acc ← acc^(2^bits) · c mod n`` from the last value of a
    group to the first, as :meth:`secure_agg.packing.SumPacker.pack` does for Paillier; take
    ``capacity`` from ``SumPacker(bits_per_value, packing_key_bits(pub))`` so that every honest
    pack stays below the plaintext bound, and unpack the decryptions with its
    :meth:`~secure_agg.packing.SumPacker.unpack`. Each packed ciphertext is re-randomised
    unless ``rerandomize=False`` (the key holder then learns how it was formed).

    Raises
    ------
    OUError
        On bad ciphertexts, or ``bits_per_value`` or ``capacity`` below 1.
    """
    bits, capacity = operator.index(bits_per_value), operator.index(capacity)
    if bits < 1 or capacity < 1:
        raise OUError(f"bits_per_value and capacity must be positive, got {bits} and {capacity}")
    cts = [gmpy2.mpz(c) for c in kernels.check_ciphertexts(pub, ciphertexts)]
    n, shift = pub._n, gmpy2.mpz(1) << bits
    packed: list[int] = []
    for start in range(0, len(cts), capacity):
        group = cts[start : start + capacity]
        acc = group[-1]
        for c in reversed(group[:-1]):
            acc = gmpy2.powmod(acc, shift, n) * c % n
        packed.append(int(acc))
    if rerandomize:
        randomness = secrets.token_bytes(pub.obfuscation_exponent_bytes * len(packed))
        packed = [int(c) for c in kernels.obfuscate(pub, packed, randomness)]
    return packed


def rerandomize_own(
    pub: PublicKey,
    ciphertexts: Sequence[int],
    *,
    factors: Sequence[int] = (),
    workers: int | None = None,
) -> list[int]:
    """Re-randomise with the sender's own randomness: ``c · y^n mod n``, fresh ``y`` per ``c``.

    ``y`` is drawn with :mod:`secrets` uniformly from ``Z*_n``; nothing comes from the key holder
    but ``n`` (:mod:`secure_agg.own_randomness`). Use it for every ciphertext that returns to the
    key holder after homomorphic operations; :meth:`~secure_agg.ou.PublicKey.obfuscate` (base
    ``h``, the key holder's choice) stays for the key holder's own ciphertexts.

    ``factors``: ``y^n mod n`` made ahead by the sender itself (:func:`own_factors`), one
    for each of the first ciphertexts, each used once; the rest get factors made here. Either way
    ``y`` is fresh, uniform and the sender's, so the argument below is unchanged.

    Why the output hides how ``c`` was formed. Write ``n = p²q`` and
    ``Z*_n ≅ Z*_{p²} × Z*_q`` with ``Z*_{p²} = P × Γ``, ``P`` of order ``p`` (the residues
    ``≡ 1 mod p``) and ``Γ`` of order ``p - 1``. Decryption (``L(c^(p-1) mod p²)``) reads only
    the ``P`` component, so wherever it is correct (``g`` generates ``Z*_n`` modulo
    ``Z_0 = Γ × Z*_q``), the units that decrypt to ``m`` are exactly the coset ``g^m · Z_0``:
    any tag the key holder hides in a ciphertext without changing its plaintext is an element
    of ``Z_0``. The map ``y ↦ y^n`` kills ``P`` (``p | n``) and permutes ``Γ`` and ``Z*_q`` when
    ``gcd(q, p - 1) = 1`` and ``p ∤ q - 1``; then ``y^n`` is uniform in ``Z_0`` and
    ``c · y^n`` is uniform in ``g^m · Z_0`` whatever ``c`` was: its distribution depends on the
    plaintext alone, so the tags of the summed rows are destroyed (exactly, not statistically).

    What remains. The two conditions hold for every key of :func:`secure_agg.ou.generate_keypair`
    (it checks them when it draws ``q``) but cannot be checked without the factors: a key holder who
    deliberately builds ``n`` with ``p | q - 1`` (or ``q | p - 1``) keeps a subgroup of ``Z_0``
    (index ``p``, resp. ``q``) that ``y^n`` never reaches, a channel for tags. Closing it needs a
    proof from the key holder that its key is well formed (not implemented); the protocols assume
    it. A tag in the plaintext itself (values outside the agreed encoding) is untouched by any
    re-randomisation.

    Raises
    ------
    OUError
        If a ciphertext is outside ``(0, n)`` or not a unit modulo ``n`` (a non-unit would carry
        a factor of ``n`` through the product: a tag that no unit can remove).
    """
    cts = kernels.check_ciphertexts(pub, ciphertexts)
    n = pub._n
    # The message names no index: which of the sums is not a unit would tell the key holder
    # where a row it tagged ended up.
    if any(gmpy2.gcd(c, n) != 1 for c in cts):
        raise OUError(f"a ciphertext is not a unit modulo n for OU key {pub.fingerprint}")
    return own_randomness.nth_power_rerandomize(cts, pub.n, pub.n, factors=factors, workers=workers)


def own_factors(pub: PublicKey, count: int, *, workers: int | None = None) -> list[int]:
    """``count`` factors ``y^n mod n`` for :func:`rerandomize_own`, a fresh ``y`` each.

    The sender's own randomness made ahead (``y`` uniform in ``Z*_n`` from :mod:`secrets`;
    nothing but ``n`` comes from the key holder). Secret to the sender and used once each: two
    ciphertexts sharing a factor would reveal their quotient's plaintext part.
    """
    return own_randomness.nth_power_factors(pub.n, pub.n, count, workers=workers)


def _check_groups(group_matrix: npt.NDArray[Any], n_rows: int, n_groups: int) -> npt.NDArray[Any]:
    matrix = np.asarray(group_matrix)
    if matrix.ndim != 2 or matrix.shape[0] != n_rows:
        raise OUError(f"group_matrix must have shape ({n_rows}, n_features), got {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.integer):
        raise OUError(f"group ids must be integers, got dtype {matrix.dtype}")
    if matrix.size:
        low, high = int(matrix.min()), int(matrix.max())
        if low < -1 or high >= n_groups:
            bad = low if low < -1 else high
            row, col = np.argwhere(matrix == bad)[0]
            raise OUError(f"group id {bad} at row {row}, column {col} is outside [-1, {n_groups})")
    return matrix
