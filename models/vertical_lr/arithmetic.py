"""The arithmetic both hetero LR roles run on binned rows, in the clear and under encryption.

A party's rows enter the model as the WOE of their coarse bin (:func:`coarse`,
:func:`woe_matrix`). A gradient's inner product ``Σ_i c_i · x_ij`` with WOE-encoded columns is
computed under encryption as one sum of ciphertexts per coarse bin, then one modular power per
bin with the bin's WOE in fixed point (:func:`weighted_sums`); a party that returns such sums
to their key holder masks and re-randomises them first with its own randomness (:func:`masked`),
so the key holder learns the sum plus a uniform mask and cannot tell which rows were summed, even
with a key it crafted.
"""

from __future__ import annotations

from collections.abc import Sequence

import gmpy2
import numpy as np
import numpy.typing as npt

from models.vertical_lr import fixedpoint as fp
from secure_agg import paillier


def coarse(fine: npt.NDArray[np.int32], mappings: Sequence[Sequence[int]]) -> npt.NDArray[np.int32]:
    """Coarse bin of every row and column from its fine bin (one fine -> coarse map a column)."""
    out = np.empty_like(fine, dtype=np.int32)
    for j, mapping in enumerate(mappings):
        out[:, j] = np.asarray(mapping, dtype=np.int32)[fine[:, j]]
    return out


def woe_matrix(
    bins: npt.NDArray[np.int32], woe: Sequence[Sequence[float]]
) -> npt.NDArray[np.float64]:
    """The WOE-encoded rows: each coarse bin replaced by its column's WOE value."""
    out = np.empty(bins.shape, dtype=np.float64)
    for j, values in enumerate(woe):
        out[:, j] = np.asarray(values, dtype=np.float64)[bins[:, j]]
    return out


def weighted_sums(
    pub: paillier.PublicKey,
    ciphertexts: Sequence[int],
    bins: npt.NDArray[np.int32],
    woe: Sequence[Sequence[float]],
) -> tuple[list[int], int]:
    """``[[Σ_i c_i · W_j(i)]]`` per column and ``[[Σ_i c_i]]``: bin sums, then one power per bin."""
    n_groups = max((len(w) for w in woe), default=1)
    groups = np.column_stack([bins, np.zeros(bins.shape[0], dtype=np.int32)])
    sums = paillier.sum_groups_many(pub, ciphertexts, groups, n_groups)
    n2 = gmpy2.mpz(pub.nsquare)
    out = []
    for j, values in enumerate(woe):
        acc = gmpy2.mpz(1)
        for b, weight in enumerate(fp.encode(np.asarray(values, dtype=np.float64))):
            if weight and sums[j][b] != 1:
                acc = acc * paillier.mul_const(pub, sums[j][b], weight) % n2
        out.append(int(acc))
    return out, sums[-1][0]


def scaled(
    pub: paillier.PublicKey, ciphertexts: Sequence[int], factors: Sequence[int]
) -> list[int]:
    """``[[c_i · f_i]]`` for integer (signed, fixed-point) factors: one modular power per row.

    A negative factor is a power of the inverse (``gmpy2.powmod`` with a negative exponent).
    """
    if len(ciphertexts) != len(factors):
        raise ValueError(f"{len(ciphertexts)} ciphertexts for {len(factors)} factors")
    n2 = gmpy2.mpz(pub.nsquare)
    return [
        int(gmpy2.powmod(gmpy2.mpz(c), int(f), n2))
        for c, f in zip(ciphertexts, factors, strict=True)
    ]


def masked(pub: paillier.PublicKey, ciphertexts: Sequence[int]) -> tuple[list[int], list[int]]:
    """Add fresh masks under encryption and re-randomise; return (ciphertexts, masks).

    ``pub`` is the *peer's* key and the result goes to the peer, who decrypts it: the platform's
    gradient to the bank, the bank's cross terms to the platform. The mask hides the value (the
    key holder learns the sum plus a uniform 208-bit integer); the re-randomisation hides how the
    ciphertext was formed. It uses the caller's own randomness
    (:func:`secure_agg.paillier.rerandomize_own`: ``c · y^n``, ``y`` uniform in ``Z*_n`` from
    :mod:`secrets`), not the key's base ``h_s``: the key holder chose ``h_s``, and one made
    trivial on a CRT component (``h_s ≡ 1 mod q²``) would leave there a tag it planted in each
    of its per-row ciphertexts, so the returned sum would name the batch rows in each of the
    caller's coarse bins. With ``y^n`` the result is uniform among the ciphertexts of its
    plaintext, assuming the key holder's modulus is well formed (``gcd(n, φ(n)) = 1``;
    ``tests/test_hetero_lr_rerandomization.py``). Cost: one ``n²``-modulus exponentiation per
    ciphertext, ``B + 1`` a batch.

    Raises
    ------
    PaillierError
        If a ciphertext is not a unit (a tag no re-randomisation removes).
    """
    mask = fp.masks(len(ciphertexts))
    n, n2 = gmpy2.mpz(pub.n), gmpy2.mpz(pub.nsquare)
    shifted = [int(gmpy2.mpz(c) * (1 + n * m) % n2) for c, m in zip(ciphertexts, mask, strict=True)]
    return paillier.rerandomize_own(pub, shifted), mask
