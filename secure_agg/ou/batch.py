"""Batches: encrypt, re-randomise and decrypt many values, in the calling process.

Randomness for a whole batch is drawn at once with :func:`secrets.token_bytes` and handed to the
kernels (:mod:`secure_agg.ou.kernels`). There is no parallel path yet (Paillier's
:mod:`secure_agg.paillier.parallel` spreads batches over threads or worker processes).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING

from secure_agg.ou import kernels

if TYPE_CHECKING:
    from secure_agg.ou.keys import PrivateKey, PublicKey


def encrypt_many(pub: PublicKey, plaintexts: Sequence[int]) -> list[int]:
    """Encrypt plaintexts in ``[0, 2^plaintext_bits)`` (see :meth:`PublicKey.encrypt_int`).

    Raises
    ------
    OUError
        Naming the index of the first plaintext outside the plaintext space.
    """
    values = kernels.check_plaintexts(pub, plaintexts)
    randomness = secrets.token_bytes(pub.randomness_bytes * len(values))
    return [int(c) for c in kernels.encrypt(pub, values, randomness)]


def obfuscate_many(pub: PublicKey, ciphertexts: Sequence[int]) -> list[int]:
    """Re-randomise ciphertexts (see :meth:`PublicKey.obfuscate`)."""
    cts = kernels.check_ciphertexts(pub, ciphertexts)
    randomness = secrets.token_bytes(pub.obfuscation_exponent_bytes * len(cts))
    return [int(c) for c in kernels.obfuscate(pub, cts, randomness)]


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
