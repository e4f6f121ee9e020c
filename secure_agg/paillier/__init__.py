"""Paillier encryption: keys, fast (DJN) encryption, CRT decryption, homomorphic kernels, batches.

The additively homomorphic scheme behind SecureBoost's encrypted gradients (Paillier, Eurocrypt
1999) with ``g = n + 1``: ``Enc(m; r) = (1 + m·n) · r^n mod n²`` for ``m`` in ``[0, n)``. The
product of two ciphertexts encrypts the sum of their plaintexts and ``c^k`` encrypts ``k·m``
(both mod ``n``). Ciphertexts are plain ``int`` values in ``(0, n²)``; they travel between
parties as fixed-width byte arrays (:func:`ciphertexts_to_array`), never pickled.

This module is the package's API; each concept lives in its own module:

- :mod:`~secure_agg.paillier.keys`: :class:`PublicKey`, :class:`PrivateKey`, the 2048-bit floor
  (:data:`DEFAULT_KEY_BITS`), serialisation; :mod:`~secure_agg.paillier.keygen`:
  :func:`generate_keypair` (admissible moduli, where the randomness comes from);
- :mod:`~secure_agg.paillier.tables`: the fixed-base tables of fast encryption and the key
  holder's CRT tables (key material), cached per process;
- :mod:`~secure_agg.paillier.extension`: the optional C kernels (``secure_agg._gmp_kernels``)
  and the switch between them and the Python ones; :mod:`~secure_agg.paillier.kernels`: every
  operation in C or in the Python reference loop, on one process;
- :mod:`~secure_agg.paillier.homomorphic`: :func:`add`, :func:`mul_const`, :func:`sum_groups`,
  :func:`sum_groups_many` (the histogram kernel; :func:`sum_binned_many` from bins and node
  slots), :func:`rerandomize_own` (re-randomisation with the sender's own randomness);
- :mod:`~secure_agg.paillier.batch`: :func:`encrypt_many`, :func:`encrypt_many_private`,
  :func:`obfuscate_many`, :func:`decrypt_many`, :func:`forget_private_tables`, spread by
  :mod:`~secure_agg.paillier.parallel` over threads (C kernels) or this party's worker
  processes (:mod:`secure_agg.paillier_pool`);
- :mod:`~secure_agg.paillier.wire`: :func:`ciphertexts_to_array`, :func:`ciphertexts_from_array`,
  :func:`check_fingerprint`;
- :mod:`~secure_agg.paillier.errors`: :class:`PaillierError`, :class:`InsecureKeyError`,
  :class:`KeyMismatchError`.

Keys are drawn as :mod:`~secure_agg.paillier.keygen` describes. 2048-bit moduli give about 112
bits of security (NIST SP 800-57 Part 1 Rev. 5, Table 2), the project's floor:
:func:`generate_keypair` and :meth:`PublicKey.from_bytes` refuse shorter keys unless the caller
passes ``allow_insecure_test_keys=True`` by name (tests do, for speed).

Fast encryption (the default) and why it is secure
--------------------------------------------------
Naive encryption is dominated by ``r^n mod n²``, a 2048-bit exponent modulo a 4096-bit number:
about 11 ms, 90 per second on one core here. Damgård, Jurik & Nielsen, "A generalization of
Paillier's public-key system with applications to electronic voting" (IJIS 9(6), 2010), propose
instead that the key holder publish ``h_s = h^n mod n²`` for ``h = -x² mod n`` with ``x`` uniform
in ``Z*_n``, and that encryption use

    ``Enc(m; a) = (1 + m·n) · h_s^a mod n²``,  ``a`` uniform in ``[0, 2^ℓ)``,  ``ℓ = ⌈k/2⌉``

(rounded up to whole bytes; 1024 bits for ``k = 2048``). Since ``h_s`` is fixed, ``h_s^a`` is
assembled from precomputed powers ``h_s^(d·256^i)`` (``d < 256``,
:mod:`secure_agg.paillier.tables`): ``ℓ/8 = 128`` multiplications mod ``n²`` instead of a full
exponentiation: ~1300 encryptions per second per core here (13x) with the Python kernels, ~1900
with the C kernels (:mod:`secure_agg.paillier.extension`).

Security argument. ``h_s^a = (h^a)^n`` is an n-th residue, so decryption is unchanged. Write
``J_n`` for the units with Jacobi symbol +1. The scheme is IND-CPA under

(i) the decisional composite residuosity assumption (DCR; Paillier's own). It implies that
    ``(1 + m·n) · r^n`` with ``r`` uniform in ``J_n`` hides ``m``: multiplying a DCR challenge by
    ``s^n`` for a known ``s`` of the right Jacobi symbol moves its randomiser into ``J_n``; and
(ii) the *short-exponent* ("small randomness") assumption: given ``n`` and ``h_s``, ``h_s^a`` for
     a uniform ``⌈k/2⌉``-bit ``a`` cannot be told from ``r^n`` for ``r`` uniform in ``J_n``.

For an admissible modulus ``J_n`` is cyclic of order ``φ(n)/2`` (``-1`` times the odd-order
cyclic group of squares), and ``h = -x²`` lies in ``J_n`` and generates it whenever ``x²``
generates the squares. Then (ii) only says that half-length exponents look like full-length
ones: Håstad, Schrift & Shamir ("The discrete logarithm modulo a composite hides O(n) bits",
JCSS 1993) show that the discrete logarithm modulo a composite hides its upper half when factoring
is hard, the basis of DJN's choice of ``⌈k/2⌉`` bits. (Should ``h`` generate a subgroup of small
index instead, (ii) also assumes that membership in it is hidden, a residuosity-type assumption.)

Generic attacks on the exponent (Pollard's kangaroo, van Oorschot-Wiener) cost about ``2^(ℓ/2) =
2^512`` group operations, so the 112-bit strength of factoring the modulus stays the weakest link.
Shorter exponents (``2 × 112`` bits would match generic attacks, ~4x faster) would rest on a
stronger, less studied assumption; we do not use them.

What is given up against naive encryption:

- security rests on (ii) in addition to DCR;
- randomisers lie in the subgroup ``<h_s>``, so ``c mod n`` always has Jacobi symbol +1 (naive
  ciphertexts: +1 or -1 at random). Fast and naive ciphertexts can be told apart, which says
  nothing about ``m``, but re-randomisation (below) hides combinations only within ``<h_s>``;
- ``h_s`` comes from the key holder and cannot be validated without the factorisation. A key
  holder who deviates from the protocol could publish an ``h_s`` of small order and so weaken the
  peers' re-randomisation with it; only the trivial checks are made (a unit, not ±1). So a peer
  that returns ciphertexts to the key holder re-randomises them with its own randomness instead
  (:func:`rerandomize_own`: ``c · y^n`` for a fresh uniform ``y`` in ``Z*_n``), which no choice
  of ``h_s`` affects; what a deliberately malformed *modulus* could still leave is stated there;
- memory and set-up: the tables take ~18 MB per process and key at 2048 bits (~39 MB once
  re-randomisation is used) and ~0.2 s (+0.2 s) to build, once per process and key (C kernels:
  17 MB, 35 MB, 0.3 s in all).

The naive path (:meth:`PublicKey.encrypt_int_naive`, ``method="naive"``) remains for tests and
comparison: textbook Paillier with ``r`` uniform in ``Z*_n``, secure under DCR alone.

Re-randomisation
----------------
:meth:`PublicKey.obfuscate` multiplies by ``h_s^b`` with ``b`` uniform in ``[0, 2^(k + 128))``.
As ``ord(h_s) < n < 2^k``, ``b mod ord(h_s)`` is within statistical distance ``2^-128`` of uniform,
so the output's randomiser is uniform in ``<h_s>`` and independent of the input's, even for the
key holder, who knows the factorisation and every randomiser it chose. That is what hides *how* a
ciphertext was formed (which rows were summed into a histogram bin) when it returns to the key
holder: re-randomise everything that leaves a party after homomorphic operations
(:meth:`secure_agg.packing.SumPacker.pack` does so by default, with ``h_s``). It requires the
inputs' randomisers to lie in ``<h_s>``: true of every ciphertext from the fast path and of
homomorphic results of such ciphertexts, not of naive-path ciphertexts (their Jacobi symbol
survives), nor of ciphertexts a deviating key holder tagged outside ``<h_s>``. Ciphertexts that
return to the key holder are therefore re-randomised with :func:`rerandomize_own` (``c · y^n``,
``y`` uniform in ``Z*_n`` and drawn by the sender), whose output's randomiser is uniform among
all ``n``-th residues whatever the input's was (for a well-formed modulus,
``gcd(n, φ(n)) = 1``).

Encryption by the key holder (CRT) and the C kernels are described in
:mod:`~secure_agg.paillier.tables` and :mod:`~secure_agg.paillier.extension`: both compute
exactly the ciphertexts described here, faster.

What leaks
----------
- A ciphertext, to anyone without the private key: nothing about its plaintext (under the
  assumptions above) beyond its existence; all ciphertexts have the same width.
- Results of :func:`add`, :func:`mul_const`, :func:`sum_groups`: their randomisers are functions
  of the inputs' randomisers, which the key holder knows; before :meth:`PublicKey.obfuscate` it
  may learn how they were formed. An empty group's sum is the integer 1, a transparent encryption
  of 0, which shows anyone that the group is empty until it is re-randomised.
- Decryption: the plaintext, to the key holder.
- Side channels: gmpy2 and GMP arithmetic and table look-ups (in Python or C) are not
  constant-time. A co-resident attacker measuring caches could learn exponents (and so
  plaintexts); run parties on hosts not shared with their peers.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

from secure_agg.paillier import extension
from secure_agg.paillier.batch import (
    EncryptMethod,
    decrypt_many,
    encrypt_many,
    encrypt_many_private,
    encrypt_with_factors,
    forget_private_tables,
    obfuscate_many,
    random_factors,
)
from secure_agg.paillier.errors import InsecureKeyError, KeyMismatchError, PaillierError
from secure_agg.paillier.extension import KERNELS_ENV
from secure_agg.paillier.homomorphic import (
    add,
    mul_const,
    own_factors,
    rerandomize_own,
    sum_binned_many,
    sum_groups,
    sum_groups_many,
)
from secure_agg.paillier.keygen import generate_keypair
from secure_agg.paillier.keys import (
    DEFAULT_KEY_BITS,
    MIN_TEST_KEY_BITS,
    STATISTICAL_BITS,
    PrivateKey,
    PublicKey,
)
from secure_agg.paillier.parallel import (
    PARALLEL_MIN_ADDS,
    PARALLEL_MIN_DECRYPT,
    PARALLEL_MIN_ENCRYPT,
    THREAD_MIN_ADDS,
    THREAD_MIN_ENCRYPT,
)
from secure_agg.paillier.tables import (
    C_CRT_WINDOW_BITS,
    CRT_CACHE_SIZE,
    CRT_WINDOW_BITS,
    TABLE_CACHE_SIZE,
    WINDOW_BITS,
)
from secure_agg.paillier.wire import (
    Ciphertexts,
    check_fingerprint,
    ciphertexts_from_array,
    ciphertexts_to_array,
)

if TYPE_CHECKING:
    from secure_agg.paillier.extension import Kernels

    #: The C kernels in use, or None for the Python ones (see :class:`_Package`).
    _C: Kernels | None

__all__ = [
    "CRT_CACHE_SIZE",
    "CRT_WINDOW_BITS",
    "C_CRT_WINDOW_BITS",
    "DEFAULT_KEY_BITS",
    "KERNELS_ENV",
    "MIN_TEST_KEY_BITS",
    "PARALLEL_MIN_ADDS",
    "PARALLEL_MIN_DECRYPT",
    "PARALLEL_MIN_ENCRYPT",
    "STATISTICAL_BITS",
    "TABLE_CACHE_SIZE",
    "THREAD_MIN_ADDS",
    "THREAD_MIN_ENCRYPT",
    "WINDOW_BITS",
    "Ciphertexts",
    "EncryptMethod",
    "InsecureKeyError",
    "KeyMismatchError",
    "PaillierError",
    "PrivateKey",
    "PublicKey",
    "add",
    "check_fingerprint",
    "ciphertexts_from_array",
    "ciphertexts_to_array",
    "decrypt_many",
    "encrypt_many",
    "encrypt_many_private",
    "encrypt_with_factors",
    "forget_private_tables",
    "generate_keypair",
    "mul_const",
    "obfuscate_many",
    "own_factors",
    "random_factors",
    "rerandomize_own",
    "sum_binned_many",
    "sum_groups",
    "sum_groups_many",
]

# Public classes keep the name they had before the package was split: pickled public keys and
# tracebacks say ``secure_agg.paillier.PublicKey``, whichever module defines it.
for _public in (PublicKey, PrivateKey, PaillierError, InsecureKeyError, KeyMismatchError):
    _public.__module__ = __name__
del _public


class _Package(types.ModuleType):
    """This package, with ``_C``: the kernel switch that tests and benchmarks read and set.

    ``paillier._C = None`` makes this process use the Python reference kernels and
    ``paillier._C = module`` the C ones, as before the package was split; both read and write
    :func:`secure_agg.paillier.extension.active` / :func:`~secure_agg.paillier.extension.use`,
    the one place every kernel looks.
    """

    @property
    def _C(self) -> Kernels | None:  # noqa: N802 - the switch's historical name
        return extension.active()

    @_C.setter
    def _C(self, kernels: Kernels | None) -> None:  # noqa: N802
        extension.use(kernels)


sys.modules[__name__].__class__ = _Package
