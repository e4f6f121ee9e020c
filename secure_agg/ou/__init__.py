"""Okamoto–Uchiyama (OU) encryption: an additively homomorphic scheme beside Paillier.

Okamoto & Uchiyama, "A new public-key cryptosystem as secure as factoring" (Eurocrypt 1998),
the default scheme of SecretFlow's HEU. ``n = p²q`` with primes ``p``, ``q`` of about ``k/3``
bits each; ``g`` a unit modulo ``n`` whose ``g^(p-1) mod p²`` has order ``p``; ``h = g^n mod n``.

    ``Enc(m; r) = g^m · h^r mod n``,
    ``Dec(c) = L(c^(p-1) mod p²) · L(g^(p-1) mod p²)^-1 mod p``,  ``L(x) = (x - 1) / p``.

``h^r`` vanishes under ``c ↦ c^(p-1) mod p²`` (its ``p``-part is killed by the exponent ``n``),
and ``L`` is the discrete logarithm in the subgroup of order ``p`` of ``Z*_{p²}``. The product of
two ciphertexts encrypts the sum of their plaintexts and ``c^k`` encrypts ``k·m`` (mod ``p``).
Ciphertexts are plain ``int`` values in ``(0, n)``: half the width of a Paillier ciphertext of
the same modulus length. They travel between parties as fixed-width byte arrays
(:func:`ciphertexts_to_array`), never pickled.

This module is the package's API; each concept lives in its own module:

- :mod:`~secure_agg.ou.keys`: :class:`PublicKey`, :class:`PrivateKey` (decryption), the
  2048-bit floor (:data:`DEFAULT_KEY_BITS`), serialisation; :mod:`~secure_agg.ou.keygen`:
  :func:`generate_keypair` (where the primes and bases come from);
- :mod:`~secure_agg.ou.tables`: the fixed-base tables of ``g`` and ``h``;
  :mod:`~secure_agg.ou.kernels`: every operation on one process, encryption and
  re-randomisation in C when the extension is built (the Python loops are the reference);
- :mod:`~secure_agg.ou.homomorphic`: :func:`add`, :func:`mul_const`, :func:`sum_groups`,
  :func:`sum_groups_many` (the histogram kernel), :func:`pack_sums` (many sums per ciphertext),
  :func:`rerandomize_own` (re-randomisation with the sender's own randomness);
- :mod:`~secure_agg.ou.batch`: :func:`encrypt_many`, :func:`obfuscate_many`,
  :func:`decrypt_many`, :func:`random_factors` and :func:`encrypt_with_factors` (encryption
  split into a randomness half made ahead and a plaintext half);
- :mod:`~secure_agg.ou.wire`: :func:`ciphertexts_to_array`, :func:`ciphertexts_from_array`,
  :func:`check_fingerprint`;
- :mod:`~secure_agg.ou.errors`: :class:`OUError`, :class:`InsecureKeyError`,
  :class:`KeyMismatchError`, :class:`PlaintextOverflowError`.

Security argument
-----------------
OU is one-way if factoring ``n = p²q`` is hard, and IND-CPA under the *p-subgroup assumption*
(Okamoto & Uchiyama 1998, §4): given ``(n, g, h)``, elements ``h^r`` of the subgroup
``H = <h>`` cannot be told from uniform elements of ``<g, h>``. Multiplying by ``g^m`` then
hides ``m``.

Encryption here draws ``r`` *short*: uniform in ``[0, 2^ℓ)`` with ``ℓ`` twice the key's security
level (:attr:`PublicKey.randomness_bits`: 224 bits at 2048, 256 at 3072; 160 for test keys),
so that ``h^r`` costs ``ℓ/8 = 28`` multiplications modulo ``n`` from a fixed-base table
(:mod:`~secure_agg.ou.tables`) instead of a full exponentiation. This adds the *short-exponent*
assumption: ``h^r`` for a uniform ``ℓ``-bit ``r`` cannot be told from ``h^r`` for ``r`` uniform
modulo ``ord(h)`` (the decisional form of the "discrete logarithm with short exponents"
assumption: van Oorschot & Wiener, "On Diffie-Hellman key agreement with short exponents",
Eurocrypt 1996; Gennaro, "An improved pseudo-random generator based on discrete log", CRYPTO
2000; Koshiba & Kurosawa, "Short exponent Diffie-Hellman problems", PKC 2004). Generic attacks
on an ``ℓ``-bit exponent (Pollard's kangaroo, van Oorschot-Wiener parallel collision search)
cost about ``2^(ℓ/2)`` multiplications, so ``ℓ = 2 × 112`` matches the 112-bit strength of the
modulus. The faster attacks of van Oorschot & Wiener combine Pohlig-Hellman with the kangaroo
and need the factorisation of the group order, here unknown without factoring ``n``.

HEU's choice is shorter: 110-bit ``r`` at 2048 bits (80 at 1024, 128 at 3072;
``kRandomBits2048`` in ``heu/library/algorithms/ou/public_key.h``, in the variant of Coron,
Naccache & Paillier, "Accelerating Okamoto-Uchiyama's public-key cryptosystem", Electronics
Letters 35(4), 1999). With 110 bits, a kangaroo walk tests whether ``c · g^(-m0)`` is ``h^r``
for a guessed ``m0`` in about ``2^55`` multiplications, far below the key's strength, so this
package doubles it; the cost is 14 more multiplications per encryption. The Paillier package's
DJN exponents are longer still (``k/2`` bits, resting on Håstad-Schrift-Shamir): OU's shorter
exponent is a stronger assumption, the price of its speed.

Re-randomisation (:meth:`PublicKey.obfuscate`) multiplies by ``h^b`` with ``b`` uniform in
``[0, 2^(k + 128))``: as ``ord(h) < n < 2^k``, the result's randomiser is within ``2^-128`` of
uniform in ``<h>`` and independent of the input's, even for the key holder, *if* ``h`` is
what it should be. ``h`` is the key holder's choice, so this hides nothing from a key holder who
chooses ``h`` badly (e.g. ``g ≡ 1 mod q``, so that ``h ≡ 1 mod q`` and the residue modulo ``q`` of
every ciphertext survives). A ciphertext that goes back to the key holder after homomorphic
operations is therefore re-randomised with the sender's own randomness,
:func:`rerandomize_own` (``c · y^n`` for a fresh uniform ``y`` in ``Z*_n``; its docstring argues
why that hides how ``c`` was formed for any well-formed modulus and states what a deliberately
malformed one could still leave).

Plaintext space and overflow
----------------------------
``p`` has exactly ``⌊k/3⌋`` bits (:mod:`~secure_agg.ou.keygen`), so plaintexts are the integers
in ``[0, 2^(⌊k/3⌋ - 1))`` (:attr:`PublicKey.plaintext_bits`: 681 bits at 2048, 340 at 1024), all
below ``p``; signed decryption (:meth:`PrivateKey.decrypt_signed_int`) covers half of that on
each side. Homomorphic results are reduced modulo the *secret* ``p``, so nobody but the key
holder can see a sum wrap; decryption refuses every result at or above the bound
(:class:`PlaintextOverflowError`), and encodings must keep honest sums below it by construction.

Packed slots. :mod:`secure_agg.packing`'s packers take a key length and keep
:data:`~secure_agg.packing.HEADROOM_BITS` (64) of it spare; give them
:func:`packing_key_bits` (``plaintext_bits``) for an OU key: at 2048 bits, ``681 - 64 = 617``
bits hold 4 SecureBoost sums of 150 bits (a 2048-bit Paillier key holds 13). Per packed sum a
2048-bit OU ciphertext is 256/4 = 64 bytes against Paillier's 512/13 = 39.

Key sizes
---------
A 2048-bit ``n = p²q`` (``p``, ``q`` ~683 bits) is HEU's default and this package's floor
(:data:`DEFAULT_KEY_BITS`); shorter keys need ``allow_insecure_test_keys=True`` by name. The
best known attacks on ``p²q`` at this size are those on any 2048-bit composite: the number field
sieve, rated at 112 bits of security (NIST SP 800-57 Part 1 Rev. 5, Table 2; 3072 bits: 128). The
special form helps less than it seems: ECM's cost is set by the size of ``p`` (683 bits; ECM's
records are below 300 bits) and Peralta & Okamoto ("Faster factoring of integers of a special
form", 1996) speed ECM on ``p²q`` by a small factor only; the lattice method of Boneh, Durfee &
Howgrave-Graham ("Factoring N = p^r q for large r", CRYPTO 1999) runs in polynomial time only
when ``r`` is about ``log p``, and for ``r = 2`` is slower than the sieve. These estimates are
for factoring; the p-subgroup and short-exponent assumptions are not known to be easier, but have
been studied less.

What is NOT provided
--------------------
- No CCA security: ciphertexts are malleable (anyone can add to or scale a plaintext), as with
  Paillier. Worse, OU falls completely to a *decryption oracle*: the decryption of ``g^m`` for a
  known ``m ≥ p`` is ``m mod p``, and ``gcd(m - (m mod p), n)`` reveals ``p``. Decryption here
  refuses results at or above the plaintext bound, which stops the direct attack when the key
  holder reveals only in-range values, but a key holder must never return exact decryptions of
  ciphertexts a peer formed; the lab's honest-but-curious model (and SecureBoost, which reveals
  only split choices) is what keeps this safe.
- No integrity: use :mod:`secure_agg.packing`'s redundant encodings and fingerprints to catch the
  wrong key or corruption, not tampering.
- No validation of ``g``, ``h`` by the receiver of a public key (only that they are units):
  a key holder who deviates could publish bases that weaken its peers' re-randomisation.
- No constant-time arithmetic (gmpy2/GMP, table look-ups): run parties on hosts not shared with
  their peers.
- No parallel decryption (gmpy2, one thread); C kernels for encryption, re-randomisation and
  the histogram kernel's group sums (``secure_agg._gmp_kernels.OuEncryptor``, see
  :mod:`~secure_agg.ou.kernels`), which release the GIL and are spread over threads of the
  calling process for large batches (:mod:`~secure_agg.ou.batch`,
  :func:`~secure_agg.ou.sum_groups_many`).
  ``benchmarks/he_schemes.py`` measures the costs against Paillier.

What leaks
----------
- A ciphertext, to anyone without the private key: nothing about its plaintext (under the
  assumptions above); all ciphertexts have the same width.
- Results of :func:`add`, :func:`mul_const`, :func:`sum_groups`: their randomisers are functions
  of the inputs'; re-randomise before they reach the key holder. An empty group's sum is 1, a
  transparent encryption of 0.
- Decryption: the plaintext, to the key holder.
"""

from __future__ import annotations

from secure_agg.ou.batch import (
    decrypt_many,
    encrypt_many,
    encrypt_with_factors,
    obfuscate_many,
    random_factors,
)
from secure_agg.ou.errors import InsecureKeyError, KeyMismatchError, OUError, PlaintextOverflowError
from secure_agg.ou.homomorphic import (
    add,
    mul_const,
    own_factors,
    pack_sums,
    rerandomize_own,
    sum_groups,
    sum_groups_many,
)
from secure_agg.ou.keygen import generate_keypair
from secure_agg.ou.keys import (
    DEFAULT_KEY_BITS,
    MIN_TEST_KEY_BITS,
    STATISTICAL_BITS,
    PrivateKey,
    PublicKey,
    check_key_bits,
    security_bits,
)
from secure_agg.ou.wire import (
    Ciphertexts,
    check_fingerprint,
    ciphertexts_from_array,
    ciphertexts_to_array,
)


def packing_key_bits(pub: PublicKey) -> int:
    """The ``key_bits`` to give :mod:`secure_agg.packing`'s packers for this OU key.

    The packers keep encodings below ``2^(key_bits - HEADROOM_BITS)`` and assume the plaintext
    space reaches ``2^(key_bits - 1)``; for OU that space is ``[0, 2^plaintext_bits)``, so
    ``plaintext_bits`` keeps every honest packed sum below OU's bound.
    """
    return pub.plaintext_bits


__all__ = [
    "DEFAULT_KEY_BITS",
    "MIN_TEST_KEY_BITS",
    "STATISTICAL_BITS",
    "Ciphertexts",
    "InsecureKeyError",
    "KeyMismatchError",
    "OUError",
    "PlaintextOverflowError",
    "PrivateKey",
    "PublicKey",
    "add",
    "check_fingerprint",
    "check_key_bits",
    "ciphertexts_from_array",
    "ciphertexts_to_array",
    "decrypt_many",
    "encrypt_many",
    "encrypt_with_factors",
    "generate_keypair",
    "mul_const",
    "obfuscate_many",
    "own_factors",
    "pack_sums",
    "packing_key_bits",
    "random_factors",
    "rerandomize_own",
    "security_bits",
    "sum_groups",
    "sum_groups_many",
]
