"""Paillier encryption: keys, fast (DJN) encryption, CRT decryption, homomorphic kernels, batches.

The additively homomorphic scheme behind SecureBoost's encrypted gradients (Paillier, Eurocrypt
1999) with ``g = n + 1``: ``Enc(m; r) = (1 + m·n) · r^n mod n²`` for ``m`` in ``[0, n)``. The
product of two ciphertexts encrypts the sum of their plaintexts and ``c^k`` encrypts ``k·m``
(both mod ``n``). Ciphertexts are plain ``int`` values in ``(0, n²)``; they travel between
parties as fixed-width byte arrays (:func:`ciphertexts_to_array`), never pickled.

Keys
----
:func:`generate_keypair` draws key pairs with :func:`phe.paillier.generate_paillier_keypair` and
keeps the first whose modulus is *admissible* for fast encryption (below): ``p ≡ q ≡ 3 (mod 4)``
and ``gcd(p-1, q-1) = 2`` (Damgård, Jurik & Nielsen 2010; the same condition as SecretFlow HEU's
``paillier_zahlen`` and ABY's ``libdjn``), and ``|p - q| > 2^(k/2 - 100)`` (FIPS 186-4 B.3.1,
against Fermat factoring). About one pair in six qualifies; a 2048-bit key takes 0.2-0.5 s here.

Randomness. phe draws the starting point of each prime with ``random.SystemRandom`` (in
``phe.util.getprimeover``), which reads ``os.urandom``, the OS CSPRNG, and moves to the next
prime with ``gmpy2.next_prime``; we re-test each prime with ``gmpy2.is_prime(p, 50)`` (GMP 6.3:
trial division, Baillie-PSW, then 26 Miller-Rabin rounds). Everything else drawn here (the base
of fast encryption, encryption exponents, the naive path's ``r``) comes from :mod:`secrets`.

2048-bit moduli give about 112 bits of security (NIST SP 800-57 Part 1 Rev. 5, Table 2), the
project's floor: :func:`generate_keypair` and :meth:`PublicKey.from_bytes` refuse shorter keys
unless the caller passes ``allow_insecure=True`` by name (tests do, for speed).

Fast encryption (the default) and why it is secure
--------------------------------------------------
Naive encryption is dominated by ``r^n mod n²``, a 2048-bit exponent modulo a 4096-bit number:
about 11 ms, 90 per second on one core here. Damgård, Jurik & Nielsen, "A generalization of
Paillier's public-key system with applications to electronic voting" (IJIS 9(6), 2010), propose
instead that the key holder publish ``h_s = h^n mod n²`` for ``h = -x² mod n`` with ``x`` uniform
in ``Z*_n``, and that encryption use

    ``Enc(m; a) = (1 + m·n) · h_s^a mod n²``,  ``a`` uniform in ``[0, 2^ℓ)``,  ``ℓ = ⌈k/2⌉``

(rounded up to whole bytes; 1024 bits for ``k = 2048``). Since ``h_s`` is fixed, ``h_s^a`` is
assembled from precomputed powers ``h_s^(d·256^i)`` (``d < 256``): ``ℓ/8 = 128`` multiplications
mod ``n²`` instead of a full exponentiation: ~1300 encryptions per second per core here (13x) with
the Python kernels, ~1900 with the C kernels (see "C kernels").

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
  peers' re-randomisation; only the trivial checks are made (a unit, not ±1). This is within the
  lab's honest-but-curious threat model; a malicious key holder would need to prove ``h_s``
  well formed (not implemented);
- memory and set-up: the tables take ~18 MB per process and key at 2048 bits (~39 MB once
  re-randomisation is used) and ~0.2 s (+0.2 s) to build, once per process and key (C kernels:
  17 MB, 35 MB, 0.3 s in all).

The naive path (:meth:`PublicKey.encrypt_int_naive`, ``method="naive"``) remains for tests and
comparison: textbook Paillier with ``r`` uniform in ``Z*_n``, secure under DCR alone.

Encryption by the key holder (CRT)
----------------------------------
The key holder (the bank, which encrypts its own gradients) computes the same ``h_s^a`` modulo
``p²`` and ``q²`` and recombines by the Chinese remainder theorem
(:func:`encrypt_many_private`): same exponent distribution, same ciphertexts, so nothing about
security changes, but each multiplication is on half-size numbers and the tables use
:data:`CRT_WINDOW_BITS`-bit windows: ~2100 encryptions per second per core here, 1.7x the public
path (C kernels: ~4100 per second with :data:`C_CRT_WINDOW_BITS`-bit windows). The tables are
derived from the factorisation (a table entry minus the matching power of ``h_s`` is a multiple
of ``p²``), so they are key material: they live in the key holder's own process and (Python
kernels only) its own worker processes, until :func:`forget_private_tables`.

Re-randomisation
----------------
:meth:`PublicKey.obfuscate` multiplies by ``h_s^b`` with ``b`` uniform in ``[0, 2^(k + 128))``.
As ``ord(h_s) < n < 2^k``, ``b mod ord(h_s)`` is within statistical distance ``2^-128`` of uniform,
so the output's randomiser is uniform in ``<h_s>`` and independent of the input's, even for the
key holder, who knows the factorisation and every randomiser it chose. That is what hides *how* a
ciphertext was formed (which rows were summed into a histogram bin) when it returns to the key
holder: re-randomise everything that leaves a party after homomorphic operations
(:meth:`secure_agg.packing.SumPacker.pack` does so by default). It requires the inputs'
randomisers to lie in ``<h_s>``: true of every ciphertext from the fast path and of homomorphic
results of such ciphertexts, not of naive-path ciphertexts (their Jacobi symbol survives).

C kernels
---------
When the optional extension :mod:`secure_agg._gmp_kernels` is built (``pip install -e .``
compiles it where gcc and ``gmp.h`` exist; without them the install still succeeds), the batch
kernels run in C on GMP's mpn layer with the GIL released: the key holder's CRT encryption, DJN
encryption and re-randomisation (fixed-base tables), the histogram kernel of
:func:`sum_groups_many` and the Horner packing of :class:`secure_agg.packing.SumPacker`. They
return exactly the integers of the Python kernels kept in this module as the reference (the
tests compare them on the same randomness), so the ciphertexts, their distribution and
everything argued above are unchanged. What changes:

- arithmetic: residues modulo ``n²`` (and ``p²``, ``q²``) are multiplied as two base-``n``
  digits (three half-size products, two half-size divisions), and histograms with many columns
  use per-row tables of ``c·2^(64j) mod n²`` so that each addition needs no reduction;
  Montgomery multiplication measured slower here and is not used (figures in the C file);
- the key holder's CRT tables live in memory allocated by the extension, with
  :data:`C_CRT_WINDOW_BITS`-bit windows (94 MB per process at 2048 bits), never visible to
  Python; they are overwritten when the encryptor is freed (:func:`forget_private_tables`, or
  another key), and the encryptor refuses pickling and copying;
- parallel batches run on threads of the calling process (the kernels release the GIL) rather
  than on worker processes: one set of tables, nothing to start (so from
  :data:`THREAD_MIN_ENCRYPT` / :data:`THREAD_MIN_ADDS` items on), and the primes never leave
  the process; decryption and naive encryption keep the worker processes;
- randomness is drawn here with :mod:`secrets` exactly as before and passed in; the C code draws
  none and logs nothing.

Rates at 2048 bits on one core of this project's 2-core AMD EPYC (GMP 6.2.1), C vs Python:
CRT encryption 4090 vs 2200/s (1.9x), DJN encryption 1910 vs 1390/s (1.4x), re-randomisation
900 vs 650/s (1.4x), histogram multiplications 373k vs 187k/s with 32 columns (2.0x) but 206k vs
182k/s with 4 (1.1x; 1-3 columns gain nothing: conversions cost as much as they save), packing
of 150-bit values 2170 vs 1580 inputs/s (1.4x). ``benchmarks/paillier_ops.py`` measures them.
Setting the environment variable :data:`KERNELS_ENV` (``SECURE_AGG_KERNELS``) to ``python`` before
this module is imported makes the process (and the worker processes it starts, which inherit
the variable) use the Python kernels.

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

import functools
import hashlib
import importlib
import logging
import math
import operator
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Protocol, TypeVar, cast

import gmpy2
import numpy as np
import numpy.typing as npt
from phe import paillier as phe_paillier

from secure_agg import paillier_pool
from secure_agg.paillier_pool import default_workers

logger = logging.getLogger(__name__)

#: Default modulus length: 2048-bit factoring is rated at 112 bits of security (NIST SP 800-57
#: Part 1 Rev. 5, Table 2), acceptable to 2030. phe's own default is 3072 (128 bits).
DEFAULT_KEY_BITS = 2048

#: Shortest modulus accepted even with ``allow_insecure=True`` (test keys only).
MIN_TEST_KEY_BITS = 256

#: Statistical distance of a re-randomiser from uniform in ``<h_s>``: at most 2^-STATISTICAL_BITS.
STATISTICAL_BITS = 128

#: Window of the fixed-base tables: one byte of the exponent per multiplication (256 entries
#: per row; 8 bits balance ~128 multiplications against ~18 MB per 2048-bit key).
WINDOW_BITS = 8

#: Public keys whose tables a process keeps (least recently used ones are dropped).
TABLE_CACHE_SIZE = 4

#: Window of the key holder's CRT tables: 10-bit digits, 103 multiplications per prime for a
#: 1024-bit exponent (vs 128 with bytes), ~27 MB per prime at 2048 bits, built in ~0.2 s each.
CRT_WINDOW_BITS = 10

#: Window of the C kernels' CRT tables (same ciphertexts, other layout): 94 multiplications per
#: prime; 47 MB per prime at 2048 bits, built in 0.26 s. Measured here: 10% faster than 10 bits
#: (26 MB per prime), 4% slower than 12 bits (86 MB per prime, 0.5 s).
C_CRT_WINDOW_BITS = 11

#: Environment variable: ``python`` makes this process (and worker pools it starts afterwards)
#: use the pure-Python kernels even when the C extension is built.
KERNELS_ENV = "SECURE_AGG_KERNELS"

#: With ``workers=None``, batches smaller than these run in the calling process (starting the
#: pool costs ~0.2 s; each worker builds its tables once per key, ~0.3 s at 2048 bits).
PARALLEL_MIN_ENCRYPT = 512
PARALLEL_MIN_DECRYPT = 64
PARALLEL_MIN_ADDS = 200_000

#: The same thresholds for the C kernels, which run on threads of the calling process: nothing
#: to start and one set of tables, so a few milliseconds of work (at 2048 bits) suffice.
THREAD_MIN_ENCRYPT = 32
THREAD_MIN_ADDS = 8_192

# Costs (microseconds at 2048 bits, measured here) that choose how sum_groups_many splits work
# over threads: a block of columns repeats the C kernel's per-row set-up (a table of the row's
# ciphertext times 2^(64j)) in every thread; a block of rows leaves partial sums to combine.
_ROW_SETUP_US = 7.0
_COMBINE_US = 5.5

_PUBLIC_TAG = b"lab/paillier/pk/v1"
_SECRET_TAG = b"lab/paillier/sk/v1"
_ONE = gmpy2.mpz(1)

Ciphertexts = npt.NDArray[np.uint8]
EncryptMethod = Literal["djn", "naive"]
_Part = TypeVar("_Part")


class PaillierError(ValueError):
    """Malformed input to a Paillier primitive: out-of-range values, bad key bytes, bad shapes."""


class InsecureKeyError(PaillierError):
    """A key shorter than :data:`DEFAULT_KEY_BITS` without an explicit ``allow_insecure=True``."""


class KeyMismatchError(PaillierError):
    """Data tagged with (or belonging to) another key than the one at hand."""


# ---------------------------------------------------------------- C kernels


class _CCrtEncryptor(Protocol):
    """:class:`secure_agg._gmp_kernels.CrtEncryptor` (see its docstring)."""

    def encrypt(
        self,
        n: bytes,
        plaintexts: bytes,
        plaintext_width: int,
        randomness: bytes,
        randomness_width: int,
    ) -> bytes: ...


class _CFixedBase(Protocol):
    """:class:`secure_agg._gmp_kernels.FixedBase` (see its docstring)."""

    def encrypt(
        self, plaintexts: bytes, plaintext_width: int, randomness: bytes, randomness_width: int
    ) -> bytes: ...

    def rerandomize(
        self, ciphertexts: bytes, ciphertext_width: int, randomness: bytes, randomness_width: int
    ) -> bytes: ...

    def power(self, digits: bytes) -> bytes: ...


class _Kernels(Protocol):
    """The extension module :mod:`secure_agg._gmp_kernels` (built from ``_gmp_kernels.c``)."""

    GMP_VERSION: str
    TABLE_MIN_COLS: int
    CrtEncryptor: Callable[[bytes, bytes, bytes, int, int], _CCrtEncryptor]
    FixedBase: Callable[[bytes, bytes, int], _CFixedBase]

    def group_sums(
        self,
        n2: bytes,
        ciphertexts: bytes,
        width: int,
        groups: bytes,
        n_rows: int,
        n_cols: int,
        n_groups: int,
    ) -> bytes: ...

    def pack(
        self, n2: bytes, ciphertexts: bytes, width: int, bits: int, capacity: int
    ) -> bytes: ...


def _load_kernels() -> _Kernels | None:
    """The C kernels, or None (not built, or :data:`KERNELS_ENV` is ``python``)."""
    if os.environ.get(KERNELS_ENV, "").strip().lower() == "python":
        logger.debug("%s=python: using the Python Paillier kernels", KERNELS_ENV)
        return None
    try:
        module = importlib.import_module("secure_agg._gmp_kernels")
    except ImportError as exc:  # built without a compiler or gmp.h: the Python kernels serve
        logger.debug("C Paillier kernels unavailable (%s): using the Python kernels", exc)
        return None
    return cast(_Kernels, module)


#: The C kernels in use, or None for the Python ones (tests set it to None to compare).
_C: _Kernels | None = _load_kernels()


# ---------------------------------------------------------------- fixed-base tables


class _FixedBaseTable:
    """Powers ``base^(d · 256^i) mod modulus`` for ``d < 256``, rows added on demand.

    ``power(digits)`` computes ``base^e`` for the exponent whose little-endian base-256 digits
    are ``digits``, with one multiplication per non-zero digit.
    """

    __slots__ = ("_lock", "_modulus", "_next", "_rows")

    def __init__(self, base: Any, modulus: Any) -> None:
        self._modulus = modulus
        self._next = base
        self._rows: list[list[Any]] = []
        self._lock = threading.Lock()

    def _extend(self, n_rows: int) -> None:
        with self._lock:
            modulus = self._modulus
            while len(self._rows) < n_rows:
                step = self._next
                row = [_ONE, step]
                value = step
                for _ in range(2, 1 << WINDOW_BITS):
                    value = value * step % modulus
                    row.append(value)
                self._rows.append(row)
                self._next = value * step % modulus

    def power(self, digits: bytes) -> Any:
        if len(self._rows) < len(digits):
            self._extend(len(digits))
        modulus = self._modulus
        acc = None
        for row, digit in zip(self._rows, digits, strict=False):
            if digit:
                acc = row[digit] if acc is None else acc * row[digit] % modulus
        return _ONE if acc is None else acc


_TABLES: OrderedDict[tuple[int, int], _FixedBaseTable] = OrderedDict()
_TABLES_LOCK = threading.Lock()


def _table(pub: PublicKey) -> _FixedBaseTable:
    key = (pub.n, pub.h_s)
    with _TABLES_LOCK:
        table = _TABLES.get(key)
        if table is None:
            table = _FixedBaseTable(pub._hs, pub._n2)
            _TABLES[key] = table
            while len(_TABLES) > TABLE_CACHE_SIZE:
                _TABLES.popitem(last=False)
        else:
            _TABLES.move_to_end(key)
        return table


class _WindowTable:
    """Powers ``base^(d · 2^(w·i)) mod modulus`` for ``d < 2^w``: fixed-base exponentiation."""

    __slots__ = ("_bits", "_modulus", "_rows")

    def __init__(self, base: Any, modulus: Any, exponent_bits: int, window: int) -> None:
        self._bits = window
        self._modulus = modulus
        rows = []
        step = base
        for _ in range(-(-exponent_bits // window)):
            row = [_ONE, step]
            value = step
            for _ in range(2, 1 << window):
                value = value * step % modulus
                row.append(value)
            rows.append(row)
            step = value * step % modulus
        self._rows = rows

    def power(self, exponent: int) -> Any:
        modulus, mask, bits = self._modulus, (1 << self._bits) - 1, self._bits
        acc = None
        for row in self._rows:
            digit = exponent & mask
            exponent >>= bits
            if digit:
                acc = row[digit] if acc is None else acc * row[digit] % modulus
        return _ONE if acc is None else acc


class _CrtEncryptor:
    """The key holder's fast path: ``(1 + m·n) · h_s^a`` computed modulo ``p²`` and ``q²``."""

    __slots__ = ("_n", "_p2", "_p2_inv", "_q2", "_tp", "_tq", "exponent_bits")

    def __init__(self, priv: PrivateKey) -> None:
        pub = priv.public_key
        self.exponent_bits = 8 * pub.encryption_exponent_bytes
        self._n = pub._n
        self._p2, self._q2 = priv._p2, priv._q2
        self._p2_inv = gmpy2.invert(self._p2, self._q2)
        self._tp = _WindowTable(pub._hs % self._p2, self._p2, self.exponent_bits, CRT_WINDOW_BITS)
        self._tq = _WindowTable(pub._hs % self._q2, self._q2, self.exponent_bits, CRT_WINDOW_BITS)

    def encrypt(self, m: int, a: int) -> Any:
        base = 1 + m * self._n
        p2, q2 = self._p2, self._q2
        xp = base % p2 * self._tp.power(a) % p2
        xq = base % q2 * self._tq.power(a) % q2
        return xp + p2 * ((xq - xp) * self._p2_inv % q2)


_CRT: OrderedDict[str, tuple[bytes, _CrtEncryptor]] = OrderedDict()
_CRT_C: OrderedDict[str, tuple[bytes, _CCrtEncryptor]] = OrderedDict()
_CRT_LOCK = threading.Lock()
#: Key holders whose CRT tables a process keeps at once (an embedded job runs the bank and its
#: platforms, each with its own key pair, in one process; a deployed party holds one key).
CRT_CACHE_SIZE = 4


def _crt(priv: PrivateKey) -> _CrtEncryptor:
    """This process's CRT tables for ``priv`` (a few keys, LRU; see forget_private_tables)."""
    tag = hashlib.sha256(priv.to_secret_bytes()).digest()
    fingerprint = priv.public_key.fingerprint
    with _CRT_LOCK:
        cached = _CRT.get(fingerprint)
        if cached is None or not secrets.compare_digest(cached[0], tag):
            _CRT[fingerprint] = (tag, _CrtEncryptor(priv))
        _CRT.move_to_end(fingerprint)
        while len(_CRT) > CRT_CACHE_SIZE:
            _CRT.popitem(last=False)
        return _CRT[fingerprint][1]


def _crt_c(kernels: _Kernels, priv: PrivateKey) -> _CCrtEncryptor:
    """As :func:`_crt`, for the C encryptor (tables in C memory, wiped when it is freed)."""
    tag = hashlib.sha256(priv.to_secret_bytes()).digest()
    pub = priv.public_key
    with _CRT_LOCK:
        cached = _CRT_C.get(pub.fingerprint)
        if cached is None or not secrets.compare_digest(cached[0], tag):
            width = pub.ciphertext_bytes
            encryptor = kernels.CrtEncryptor(
                int(priv._p2).to_bytes(width, "big"),
                int(priv._q2).to_bytes(width, "big"),
                pub.h_s.to_bytes(width, "big"),
                8 * pub.encryption_exponent_bytes,
                C_CRT_WINDOW_BITS,
            )
            _CRT_C[pub.fingerprint] = (tag, encryptor)
        _CRT_C.move_to_end(pub.fingerprint)
        while len(_CRT_C) > CRT_CACHE_SIZE:
            _CRT_C.popitem(last=False)
        return _CRT_C[pub.fingerprint][1]


def _forget_crt() -> None:
    with _CRT_LOCK:
        _CRT.clear()
        _CRT_C.clear()


_C_TABLES: OrderedDict[tuple[int, int], _CFixedBase] = OrderedDict()


def _c_table(kernels: _Kernels, pub: PublicKey) -> _CFixedBase:
    """As :func:`_table`, for the C kernels (rows up to the re-randomisation exponent)."""
    key = (pub.n, pub.h_s)
    with _TABLES_LOCK:
        table = _C_TABLES.get(key)
        if table is None:
            table = kernels.FixedBase(
                pub.n.to_bytes(pub.key_bytes, "big"),
                pub.h_s.to_bytes(pub.ciphertext_bytes, "big"),
                pub.obfuscation_exponent_bytes,
            )
            _C_TABLES[key] = table
            while len(_C_TABLES) > TABLE_CACHE_SIZE:
                _C_TABLES.popitem(last=False)
        else:
            _C_TABLES.move_to_end(key)
        return table


# ---------------------------------------------------------------- keys


class PublicKey:
    """A Paillier public key ``n`` with the DJN base ``h_s`` of fast encryption.

    Parameters
    ----------
    n : int
        The modulus (odd, not a square, at least :data:`MIN_TEST_KEY_BITS` bits).
    h_s : int
        ``h^n mod n²`` for the key holder's ``h = -x² mod n``: a unit modulo ``n``, not ±1.

    Attributes
    ----------
    n, nsquare, h_s : int
    key_bits : int
        Bit length of ``n``.
    key_bytes : int
        Bytes of a plaintext; a ciphertext takes ``2 * key_bytes``.
    fingerprint : str
        First 16 hex digits of SHA-256 of ``n`` (big-endian, ``key_bytes`` long): a tag for
        messages, equal for any two keys that decrypt each other's ciphertexts.

    Notes
    -----
    Construction checks only what the public values allow; it does not impose the 2048-bit floor
    (:meth:`from_bytes` and :func:`generate_keypair` do). Public keys pickle (as ``n`` and
    ``h_s``) but protocol messages should carry :meth:`to_bytes`.
    """

    __slots__ = (
        "_hs",
        "_n",
        "_n2",
        "fingerprint",
        "h_s",
        "key_bits",
        "key_bytes",
        "n",
        "nsquare",
    )

    def __init__(self, n: int, h_s: int) -> None:
        n = operator.index(n)
        h_s = operator.index(h_s)
        if n < 0 or n.bit_length() < MIN_TEST_KEY_BITS or n % 2 == 0 or gmpy2.is_square(n):
            raise PaillierError(
                f"not a Paillier modulus ({n.bit_length()} bits): it must be odd, not a square "
                f"and at least {MIN_TEST_KEY_BITS} bits"
            )
        nsquare = n * n
        if not 1 < h_s < nsquare - 1 or math.gcd(h_s, n) != 1:
            raise PaillierError("h_s must be a unit modulo n other than 1 and -1")
        self.n = n
        self.nsquare = nsquare
        self.h_s = h_s
        self.key_bits = n.bit_length()
        self.key_bytes = (self.key_bits + 7) // 8
        self.fingerprint = hashlib.sha256(n.to_bytes(self.key_bytes, "big")).hexdigest()[:16]
        self._n = gmpy2.mpz(n)
        self._n2 = gmpy2.mpz(nsquare)
        self._hs = gmpy2.mpz(h_s)

    # ------------------------------------------------------------ exponent lengths

    @property
    def encryption_exponent_bytes(self) -> int:
        """Bytes of the DJN exponent ``a``: ``⌈k/2⌉`` bits rounded up to bytes."""
        return (self.key_bits + 15) // 16

    @property
    def obfuscation_exponent_bytes(self) -> int:
        """Bytes of a re-randomising exponent: ``k + STATISTICAL_BITS`` bits, rounded up."""
        return (self.key_bits + STATISTICAL_BITS + 7) // 8

    @property
    def ciphertext_bytes(self) -> int:
        """Width of a serialised ciphertext."""
        return 2 * self.key_bytes

    # ------------------------------------------------------------ encryption

    def encrypt_int(self, m: int) -> int:
        """Encrypt ``m`` in ``[0, n)`` with DJN fast encryption (the safe default).

        See the module docstring for the assumptions (DCR and short exponents).

        Raises
        ------
        PaillierError
            If ``m`` is outside ``[0, n)``.
        """
        m = self._check_plaintext(m)
        return int(self._encrypt_djn(m, secrets.token_bytes(self.encryption_exponent_bytes)))

    def encrypt_int_naive(self, m: int) -> int:
        """Textbook Paillier, ``(1 + m·n) · r^n mod n²`` with ``r`` uniform in ``Z*_n``.

        About 11x slower than :meth:`encrypt_int`; kept for tests and comparison. Secure under DCR
        alone.
        """
        m = self._check_plaintext(m)
        return int(self._encrypt_naive(m))

    def obfuscate(self, c: int) -> int:
        """Re-randomise a ciphertext: same plaintext, randomiser uniform in ``<h_s>``.

        Do this to every ciphertext produced by homomorphic operations before it leaves the
        party (see "Re-randomisation" in the module docstring for what it hides and when).
        """
        c = self._check_ciphertext(c)
        return int(self._obfuscate(gmpy2.mpz(c)))

    def _encrypt_djn(self, m: int, digits: bytes) -> Any:
        kernels = _C
        if kernels is not None:
            out = _c_table(kernels, self).encrypt(
                m.to_bytes(self.key_bytes, "big"), self.key_bytes, digits, len(digits)
            )
            return int.from_bytes(out, "big")
        return (1 + m * self._n) * _table(self).power(digits) % self._n2

    def _encrypt_naive(self, m: int) -> Any:
        n = self.n
        while True:
            r = secrets.randbelow(n - 1) + 1
            if math.gcd(r, n) == 1:
                break
        return (1 + m * self._n) * gmpy2.powmod(r, self._n, self._n2) % self._n2

    def _obfuscate(self, c: Any) -> Any:
        digits = secrets.token_bytes(self.obfuscation_exponent_bytes)
        kernels = _C
        if kernels is not None:
            width = self.ciphertext_bytes
            out = _c_table(kernels, self).rerandomize(
                int(c).to_bytes(width, "big"), width, digits, len(digits)
            )
            return int.from_bytes(out, "big")
        return c * _table(self).power(digits) % self._n2

    # ------------------------------------------------------------ checks

    def _check_plaintext(self, m: int) -> int:
        m = operator.index(m)
        if not 0 <= m < self.n:
            raise PaillierError(
                f"plaintext of {m.bit_length()} bits (sign {'-' if m < 0 else '+'}) is outside "
                f"[0, n) for this {self.key_bits}-bit key"
            )
        return m

    def _check_ciphertext(self, c: int) -> int:
        c = operator.index(c)
        if not 0 < c < self.nsquare:
            raise PaillierError(f"ciphertext outside (0, n²) for the key {self.fingerprint}")
        return c

    # ------------------------------------------------------------ serialisation

    def to_bytes(self) -> bytes:
        """``tag || len(n) || n || len(h_s) || h_s`` (lengths 4 bytes, integers big-endian)."""
        n_raw = self.n.to_bytes(self.key_bytes, "big")
        hs_raw = self.h_s.to_bytes(self.ciphertext_bytes, "big")
        return (
            _PUBLIC_TAG
            + len(n_raw).to_bytes(4, "big")
            + n_raw
            + len(hs_raw).to_bytes(4, "big")
            + hs_raw
        )

    @classmethod
    def from_bytes(cls, raw: bytes, *, allow_insecure: bool = False) -> PublicKey:
        """Parse :meth:`to_bytes`, checking the structure and the 2048-bit floor.

        Raises
        ------
        PaillierError
            On malformed bytes or an invalid key.
        InsecureKeyError
            For a key shorter than :data:`DEFAULT_KEY_BITS` without ``allow_insecure=True``.
        """
        raw = bytes(raw)
        if not raw.startswith(_PUBLIC_TAG):
            raise PaillierError("not a serialised Paillier public key (bad tag)")
        offset = len(_PUBLIC_TAG)
        try:
            n, offset = _read_int(raw, offset)
            h_s, offset = _read_int(raw, offset)
        except IndexError as exc:
            raise PaillierError("truncated Paillier public key") from exc
        if offset != len(raw):
            raise PaillierError("trailing bytes after a Paillier public key")
        key = cls(n, h_s)
        _check_key_bits(key.key_bits, allow_insecure)
        return key

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return self.n == other.n and self.h_s == other.h_s

    def __hash__(self) -> int:
        return hash((self.n, self.h_s))

    def __repr__(self) -> str:
        return f"PublicKey(bits={self.key_bits}, fingerprint={self.fingerprint})"

    def __reduce__(self) -> tuple[type[PublicKey], tuple[int, int]]:
        return (PublicKey, (self.n, self.h_s))


class PrivateKey:
    """The factorisation of a :class:`PublicKey`'s modulus, with CRT decryption.

    It cannot be pickled (``__reduce__`` raises ``TypeError``, so ``copy`` refuses too) and its
    ``repr`` shows only the public fingerprint: key material must not end up in models, logs or
    registries. :meth:`to_secret_bytes` / :meth:`from_secret_bytes` exist only so that the key
    holder can keep the key in its own node-local state between protocol messages.

    Parameters
    ----------
    public_key : PublicKey
    p, q : int
        Distinct primes with ``p * q == public_key.n``.
    """

    __slots__ = ("_hp", "_hq", "_p", "_p2", "_p_inv", "_q", "_q2", "public_key")

    def __init__(self, public_key: PublicKey, p: int, q: int) -> None:
        p, q = operator.index(p), operator.index(q)
        if p == q or p * q != public_key.n or min(p, q) < 3:
            raise KeyMismatchError("p and q are not the two distinct factors of this key's n")
        if q < p:
            p, q = q, p
        self.public_key = public_key
        g = public_key._n + 1
        self._p, self._q = gmpy2.mpz(p), gmpy2.mpz(q)
        self._p2, self._q2 = self._p * self._p, self._q * self._q
        self._p_inv = gmpy2.invert(self._p, self._q)
        # h_p = L_p(g^(p-1) mod p²)^-1 mod p, as in Paillier's §7 and phe's h_function.
        self._hp = gmpy2.invert((gmpy2.powmod(g, self._p - 1, self._p2) - 1) // self._p, self._p)
        self._hq = gmpy2.invert((gmpy2.powmod(g, self._q - 1, self._q2) - 1) // self._q, self._q)

    def decrypt_int(self, c: int) -> int:
        """The plaintext in ``[0, n)`` of ciphertext ``c`` (CRT, two half-size exponentiations).

        A ciphertext made under another key decrypts to an unrelated value without error; detect
        that with a redundant encoding (:mod:`secure_agg.packing`) or fingerprints.
        """
        c = self.public_key._check_ciphertext(c)
        return int(self._decrypt(gmpy2.mpz(c)))

    def _decrypt(self, c: Any) -> Any:
        p, q, p2, q2 = self._p, self._q, self._p2, self._q2
        mp = (gmpy2.powmod(c % p2, p - 1, p2) - 1) // p * self._hp % p
        mq = (gmpy2.powmod(c % q2, q - 1, q2) - 1) // q * self._hq % q
        return mp + (mq - mp) * self._p_inv % q * p

    def to_secret_bytes(self) -> bytes:
        """The primes, for the key holder's own node-local state only. Never log or send them."""
        width = (int(self._q).bit_length() + 7) // 8
        return (
            _SECRET_TAG
            + width.to_bytes(4, "big")
            + int(self._p).to_bytes(width, "big")
            + width.to_bytes(4, "big")
            + int(self._q).to_bytes(width, "big")
        )

    @classmethod
    def from_secret_bytes(cls, public_key: PublicKey, raw: bytes) -> PrivateKey:
        """Restore a key kept by :meth:`to_secret_bytes` in the key holder's own state.

        Raises
        ------
        PaillierError
            On malformed bytes (the message never quotes them).
        KeyMismatchError
            If the primes do not factor ``public_key.n``.
        """
        raw = bytes(raw)
        if not raw.startswith(_SECRET_TAG):
            raise PaillierError("not a serialised Paillier private key (bad tag)")
        try:
            p, offset = _read_int(raw, len(_SECRET_TAG))
            q, offset = _read_int(raw, offset)
        except IndexError as exc:
            raise PaillierError("truncated Paillier private key") from exc
        if offset != len(raw):
            raise PaillierError("trailing bytes after a Paillier private key")
        return cls(public_key, p, q)

    def __repr__(self) -> str:
        return f"PrivateKey(<secret>, fingerprint={self.public_key.fingerprint})"

    def __reduce__(self) -> Any:
        raise TypeError("a Paillier PrivateKey must not be pickled; keep to_secret_bytes() local")


def _read_int(raw: bytes, offset: int) -> tuple[int, int]:
    size = int.from_bytes(raw[offset : offset + 4], "big")
    end = offset + 4 + size
    if len(raw) < offset + 4 or end > len(raw):
        raise IndexError("truncated")
    return int.from_bytes(raw[offset + 4 : end], "big"), end


def _check_key_bits(key_bits: int, allow_insecure: bool) -> None:
    if key_bits < DEFAULT_KEY_BITS and not allow_insecure:
        raise InsecureKeyError(
            f"a {key_bits}-bit Paillier key is below the {DEFAULT_KEY_BITS}-bit floor "
            "(112-bit security); use 2048+ bits, or pass allow_insecure=True in tests"
        )


def _admissible(p: int, q: int, key_bits: int) -> bool:
    """DJN's modulus conditions plus the FIPS 186-4 distance of the primes."""
    return (
        p % 4 == 3
        and q % 4 == 3
        and math.gcd(p - 1, q - 1) == 2
        and abs(p - q).bit_length() > key_bits // 2 - 100
        and bool(gmpy2.is_prime(p, 50))
        and bool(gmpy2.is_prime(q, 50))
    )


def generate_keypair(
    key_bits: int = DEFAULT_KEY_BITS, *, allow_insecure: bool = False
) -> tuple[PublicKey, PrivateKey]:
    """A fresh Paillier key pair with an admissible modulus and a DJN base.

    Parameters
    ----------
    key_bits : int
        Bit length of ``n`` (even). At least 2048 unless ``allow_insecure=True``.
    allow_insecure : bool
        Allow keys down to :data:`MIN_TEST_KEY_BITS` bits. For tests only.

    Returns
    -------
    (PublicKey, PrivateKey)

    Raises
    ------
    InsecureKeyError
        If ``key_bits`` is below 2048 without ``allow_insecure=True``.
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
    _check_key_bits(key_bits, allow_insecure)
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


# ---------------------------------------------------------------- homomorphic operations


def add(pub: PublicKey, c1: int, c2: int) -> int:
    """A ciphertext of ``m1 + m2 mod n`` (not re-randomised)."""
    return int(gmpy2.mpz(pub._check_ciphertext(c1)) * pub._check_ciphertext(c2) % pub._n2)


def mul_const(pub: PublicKey, c: int, k: int) -> int:
    """A ciphertext of ``k · m mod n`` for any integer ``k`` (negative via the modular inverse).

    ``k = 0`` gives 1, a transparent encryption of 0. Not re-randomised: the result's randomiser
    is the input's to the power ``k``, so re-randomise before sending it to the key holder if
    ``k`` must stay secret.

    Raises
    ------
    PaillierError
        If ``c`` is out of range or (for negative ``k``) not invertible modulo ``n²``.
    """
    c = pub._check_ciphertext(c)
    k = operator.index(k)
    base = gmpy2.mpz(c)
    if k < 0 and -k < pub.n:
        try:
            base = gmpy2.invert(base, pub._n2)
        except ZeroDivisionError as exc:
            raise PaillierError("ciphertext is not invertible modulo n² (not a unit)") from exc
        k = -k
    elif not 0 <= k < pub.n:
        k %= pub.n
    return int(gmpy2.powmod(base, k, pub._n2))


def sum_groups(
    pub: PublicKey, ciphertexts: Sequence[int], group_ids: npt.NDArray[Any], n_groups: int
) -> list[int]:
    """Homomorphic sum of the ciphertexts per group id (in this process).

    Parameters
    ----------
    pub : PublicKey
    ciphertexts : sequence of int
        One per row.
    group_ids : numpy.ndarray of int, shape (n_rows,)
        Group of each row in ``[0, n_groups)``; rows with -1 are skipped.
    n_groups : int

    Returns
    -------
    list of int
        ``n_groups`` ciphertexts. An empty group's sum is 1, a transparent encryption of 0 (fine
        for further sums; re-randomise before it leaves the party). Not re-randomised.
    """
    ids = np.asarray(group_ids)
    if ids.ndim != 1:
        raise PaillierError(f"group_ids must be one-dimensional, got shape {ids.shape}")
    return sum_groups_many(pub, ciphertexts, ids.reshape(-1, 1), n_groups, workers=1)[0]


def sum_groups_many(
    pub: PublicKey,
    ciphertexts: Sequence[int],
    group_matrix: npt.NDArray[Any],
    n_groups: int,
    *,
    workers: int | None = None,
) -> list[list[int]]:
    """Per feature column, the homomorphic sum of the ciphertexts per group: histogram kernel.

    One modular multiplication per (row, column) with a group id other than -1: in C when the
    extension is built (base-``n`` digits, or per-row tables from
    ``_gmp_kernels.TABLE_MIN_COLS`` columns on), else in place on gmpy2 integers. In parallel,
    each thread (C kernels) or worker process (Python kernels) takes a block of columns over all
    rows when every block keeps at least that many columns (no partial sums to combine);
    otherwise each takes a block of rows, and their partial sums are multiplied together here.

    Parameters
    ----------
    pub : PublicKey
    ciphertexts : sequence of int
        One per row (e.g. encrypted packed gradients).
    group_matrix : numpy.ndarray of int, shape (n_rows, n_features)
        Group (bin, or node x bin) of each row for each feature in ``[0, n_groups)``; -1 skips
        the row for that feature.
    n_groups : int
    workers : int, optional
        ``None`` uses all usable CPUs for large inputs (:data:`THREAD_MIN_ADDS` multiplications
        or more with the C kernels, :data:`PARALLEL_MIN_ADDS` without), 1 runs in the calling
        thread, ``k > 1`` uses ``k`` threads (C kernels, which release the GIL) or worker
        processes (Python kernels).

    Returns
    -------
    list of list of int
        ``out[j][g]``: the sum over rows ``i`` with ``group_matrix[i, j] == g``; 1 for an empty
        group. Not re-randomised (see :meth:`PublicKey.obfuscate`).

    Raises
    ------
    PaillierError
        On shape mismatches, non-integer or out-of-range group ids, or bad ciphertexts.
    """
    n_groups = operator.index(n_groups)
    if n_groups < 0:
        raise PaillierError(f"n_groups must be non-negative, got {n_groups}")
    matrix = _check_groups(group_matrix, len(ciphertexts), n_groups)
    kernels = _C
    cts: list[Any] = [pub._check_ciphertext(c) for c in ciphertexts]
    if kernels is None:
        cts = [gmpy2.mpz(c) for c in cts]
    n_rows, n_cols = matrix.shape
    adds = int(np.count_nonzero(matrix >= 0))
    threshold = PARALLEL_MIN_ADDS if kernels is None else THREAD_MIN_ADDS
    n_workers = _workers_for(workers, adds, threshold, n_rows)
    if n_workers <= 1:
        partial = _sum_groups_kernel(pub._n2, cts, matrix, n_groups)
        return [[1 if a is None else int(a) for a in column] for column in partial]
    width = pub.ciphertext_bytes
    columns = _split(n_cols, n_workers)
    if _split_by_columns(kernels, columns, n_rows, n_groups, n_workers):
        # Columns split: every part gets all rows, no partial sums to combine.
        blocks = [np.ascontiguousarray(matrix[:, a:b], dtype=np.int32) for a, b in columns]
        everything = _ints_to_bytes(cts, width)
        if kernels is not None:
            run = functools.partial(_sum_groups_c, kernels, pub, everything, n_rows, n_groups)
            values = _gather(_in_threads(run, blocks), width)
        else:
            header = _pack_header(pub)
            parts = [
                (
                    header + _sums_header(n_rows, block.shape[1], n_groups),
                    everything + block.tobytes(),
                )
                for block in blocks
            ]
            values = _gather(_run(b"S", parts), width)
        return [[v or 1 for v in values[j * n_groups : (j + 1) * n_groups]] for j in range(n_cols)]
    rows = _split(n_rows, n_workers)
    if kernels is not None:
        run_rows = functools.partial(_sum_rows_c, kernels, pub, cts, matrix, n_groups)
        replies = _in_threads(run_rows, rows)
    else:
        parts = []
        for start, stop in rows:
            chunk = np.ascontiguousarray(matrix[start:stop], dtype=np.int32)
            header = _pack_header(pub) + _sums_header(stop - start, n_cols, n_groups)
            parts.append((header, _ints_to_bytes(cts[start:stop], width) + chunk.tobytes()))
        replies = _run(b"S", parts)
    n2 = pub._n2
    total: list[Any] = [None] * (n_cols * n_groups)
    for reply in replies:
        for index, value in enumerate(_ints_from_bytes(reply, width)):
            if value:
                current = total[index]
                total[index] = gmpy2.mpz(value) if current is None else current * value % n2
    return [
        [1 if a is None else int(a) for a in total[j * n_groups : (j + 1) * n_groups]]
        for j in range(n_cols)
    ]


def _check_groups(group_matrix: npt.NDArray[Any], n_rows: int, n_groups: int) -> npt.NDArray[Any]:
    matrix = np.asarray(group_matrix)
    if matrix.ndim != 2 or matrix.shape[0] != n_rows:
        raise PaillierError(
            f"group_matrix must have shape ({n_rows}, n_features), got {matrix.shape}"
        )
    if not np.issubdtype(matrix.dtype, np.integer):
        raise PaillierError(f"group ids must be integers, got dtype {matrix.dtype}")
    if matrix.size:
        low, high = int(matrix.min()), int(matrix.max())
        if low < -1 or high >= n_groups:
            bad = low if low < -1 else high
            row, col = np.argwhere(matrix == bad)[0]
            raise PaillierError(
                f"group id {bad} at row {row}, column {col} is outside [-1, {n_groups})"
            )
    if n_groups >= 2**31:
        raise PaillierError(f"n_groups {n_groups} is too large")
    return matrix


def _split_by_columns(
    kernels: _Kernels | None,
    columns: list[tuple[int, int]],
    n_rows: int,
    n_groups: int,
    n_workers: int,
) -> bool:
    """Whether :func:`sum_groups_many` gives each thread or worker a block of columns.

    Python kernels have no per-row set-up, so blocks of columns (nothing to combine) win. The
    C kernels do: split by columns only if every block keeps the per-row tables
    (``TABLE_MIN_COLS`` columns) and repeating their set-up costs less than combining
    ``(n_workers - 1) * n_cols * n_groups`` partial sums here.
    """
    if not columns:
        return False
    if kernels is None:
        return True
    if min(stop - start for start, stop in columns) < kernels.TABLE_MIN_COLS:
        return False
    n_cols = columns[-1][1]
    repeated = n_rows * (1 - 1 / n_workers) * _ROW_SETUP_US
    return repeated < (n_workers - 1) * n_cols * n_groups * _COMBINE_US


def _sums_header(n_rows: int, n_cols: int, n_groups: int) -> bytes:
    return n_rows.to_bytes(8, "big") + n_cols.to_bytes(4, "big") + n_groups.to_bytes(4, "big")


def _sum_groups_c(
    kernels: _Kernels,
    pub: PublicKey,
    ciphertexts: bytes,
    n_rows: int,
    n_groups: int,
    block: npt.NDArray[np.int32],
) -> bytes:
    """Group sums of a C-contiguous int32 block of columns over all rows (C kernel)."""
    width = pub.ciphertext_bytes
    return kernels.group_sums(
        pub.nsquare.to_bytes(width, "big"),
        ciphertexts,
        width,
        block.tobytes(),
        n_rows,
        block.shape[1],
        n_groups,
    )


def _sum_rows_c(
    kernels: _Kernels,
    pub: PublicKey,
    cts: Sequence[Any],
    matrix: npt.NDArray[Any],
    n_groups: int,
    rows: tuple[int, int],
) -> bytes:
    """Partial group sums of rows ``[start, stop)`` over all columns (C kernel)."""
    start, stop = rows
    block = np.ascontiguousarray(matrix[start:stop], dtype=np.int32)
    data = _ints_to_bytes(cts[start:stop], pub.ciphertext_bytes)
    return _sum_groups_c(kernels, pub, data, stop - start, n_groups, block)


def _sum_groups_kernel(
    n2: Any, cts: list[Any], matrix: npt.NDArray[Any], n_groups: int
) -> list[list[Any]]:
    """Per column, per group, the product of the rows' ciphertexts (None for an empty group).

    In C when the extension is built (same products); the loop below is the reference.
    """
    kernels = _C
    if kernels is not None:
        width = (int(n2).bit_length() + 7) // 8
        n_rows, n_cols = matrix.shape
        groups = np.ascontiguousarray(matrix, dtype=np.int32).tobytes()
        reply = kernels.group_sums(
            int(n2).to_bytes(width, "big"),
            _ints_to_bytes(cts, width),
            width,
            groups,
            n_rows,
            n_cols,
            n_groups,
        )
        values = _ints_from_bytes(reply, width)
        return [
            [v or None for v in values[j * n_groups : (j + 1) * n_groups]] for j in range(n_cols)
        ]
    out: list[list[Any]] = []
    for j in range(matrix.shape[1]):
        acc: list[Any] = [None] * n_groups
        for c, g in zip(cts, matrix[:, j].tolist(), strict=True):
            if g >= 0:
                a = acc[g]
                acc[g] = c if a is None else a * c % n2
        out.append(acc)
    return out


def _sum_groups_payload(
    pub: PublicKey, payload: bytes, n_rows: int, n_cols: int, n_groups: int
) -> bytes:
    """Worker form of :func:`_sum_groups_kernel` (see the ``S`` request of the worker)."""
    width = pub.ciphertext_bytes
    split = n_rows * width
    if len(payload) != split + 4 * n_rows * n_cols:
        raise PaillierError(f"group-sum request of {len(payload)} bytes has the wrong length")
    kernels = _C
    if kernels is not None:
        return kernels.group_sums(
            pub.nsquare.to_bytes(width, "big"),
            payload[:split],
            width,
            payload[split:],
            n_rows,
            n_cols,
            n_groups,
        )
    cts = [gmpy2.mpz(c) for c in _ints_from_bytes(payload[:split], width)]
    matrix = np.frombuffer(payload[split:], dtype=np.int32).reshape(n_rows, n_cols)
    sums = _sum_groups_kernel(pub._n2, cts, matrix, n_groups)
    return b"".join(
        bytes(width) if a is None else int(a).to_bytes(width, "big")
        for column in sums
        for a in column
    )


# ---------------------------------------------------------------- batches


def encrypt_many(
    pub: PublicKey,
    plaintexts: Sequence[int],
    *,
    workers: int | None = None,
    method: EncryptMethod = "djn",
) -> list[int]:
    """Encrypt many plaintexts, in parallel over worker processes for large batches.

    Parameters
    ----------
    pub : PublicKey
    plaintexts : sequence of int
        Each in ``[0, n)``.
    workers : int, optional
        ``None`` uses all usable CPUs from :data:`PARALLEL_MIN_ENCRYPT` plaintexts on
        (:data:`THREAD_MIN_ENCRYPT` for DJN with the C kernels), 1 runs here, ``k > 1`` uses
        ``k`` threads (DJN with the C kernels, which release the GIL) or worker processes.
    method : {"djn", "naive"}
        ``"djn"`` (default): fast encryption; ``"naive"``: textbook Paillier (tests, comparison).

    Raises
    ------
    PaillierError
        Naming the index of the first plaintext outside ``[0, n)`` (not its value).
    """
    if method not in ("djn", "naive"):
        raise PaillierError(f"unknown encryption method {method!r}; use 'djn' or 'naive'")
    values = _check_plaintexts(pub, plaintexts)
    threaded = method == "djn" and _C is not None
    threshold = THREAD_MIN_ENCRYPT if threaded else PARALLEL_MIN_ENCRYPT
    n_workers = _workers_for(workers, len(values), threshold, len(values))
    if n_workers <= 1:
        return [int(c) for c in _encrypt_kernel(pub, values, method)]
    kernels = _C
    if method == "djn" and kernels is not None:
        chunks = _byte_parts(_ints_to_bytes(values, pub.key_bytes), pub.key_bytes, n_workers)
        run = functools.partial(_encrypt_djn_c, kernels, pub)
        return _gather(_in_threads(run, chunks), pub.ciphertext_bytes)
    op = b"E" if method == "djn" else b"N"
    parts = [
        (_pack_header(pub), _ints_to_bytes(values[start:stop], pub.key_bytes))
        for start, stop in _split(len(values), n_workers)
    ]
    return _gather(_run(op, parts), pub.ciphertext_bytes)


def encrypt_many_private(
    priv: PrivateKey, plaintexts: Sequence[int], *, workers: int | None = None
) -> list[int]:
    """Encrypt as the key holder: DJN ciphertexts computed by CRT, ~1.7x (C kernels: ~2.1x) faster.

    The ciphertexts have exactly the distribution of :func:`encrypt_many`'s (same base, same
    exponent length). With the C kernels, ``workers`` threads of this process share one set of
    CRT tables (key material, in C memory). Otherwise the worker processes receive the primes
    with each request, as for decryption, and keep the CRT tables built from them. Either way
    the tables stay until :func:`forget_private_tables`.

    Raises
    ------
    PaillierError
        Naming the index of the first plaintext outside ``[0, n)``.
    """
    pub = priv.public_key
    values = _check_plaintexts(pub, plaintexts)
    threshold = PARALLEL_MIN_ENCRYPT if _C is None else THREAD_MIN_ENCRYPT
    n_workers = _workers_for(workers, len(values), threshold, len(values))
    if n_workers <= 1:
        return [int(c) for c in _encrypt_private_kernel(priv, values)]
    kernels = _C
    if kernels is not None:
        chunks = _byte_parts(_ints_to_bytes(values, pub.key_bytes), pub.key_bytes, n_workers)
        run = functools.partial(_encrypt_private_c, kernels, priv)
        return _gather(_in_threads(run, chunks), pub.ciphertext_bytes)
    header = _decrypt_header(priv)
    parts = [
        (header, _ints_to_bytes(values[start:stop], pub.key_bytes))
        for start, stop in _split(len(values), n_workers)
    ]
    return _gather(_run(b"C", parts), pub.ciphertext_bytes)


def forget_private_tables() -> None:
    """Drop the key holder's CRT tables here and in every worker process (after a job)."""
    _forget_crt()
    paillier_pool.broadcast(b"F")


def obfuscate_many(
    pub: PublicKey, ciphertexts: Sequence[int], *, workers: int | None = None
) -> list[int]:
    """:meth:`PublicKey.obfuscate` over a batch, in parallel for large batches (as encryption)."""
    cts = [pub._check_ciphertext(c) for c in ciphertexts]
    threshold = (PARALLEL_MIN_ENCRYPT if _C is None else THREAD_MIN_ENCRYPT) // 2
    n_workers = _workers_for(workers, len(cts), threshold, len(cts))
    if n_workers <= 1:
        return [int(c) for c in _obfuscate_kernel(pub, cts)]
    kernels = _C
    if kernels is not None:
        width = pub.ciphertext_bytes
        chunks = _byte_parts(_ints_to_bytes(cts, width), width, n_workers)
        return _gather(_in_threads(functools.partial(_obfuscate_c, kernels, pub), chunks), width)
    parts = [
        (_pack_header(pub), _ints_to_bytes(cts[start:stop], pub.ciphertext_bytes))
        for start, stop in _split(len(cts), n_workers)
    ]
    return _gather(_run(b"O", parts), pub.ciphertext_bytes)


def decrypt_many(
    priv: PrivateKey, ciphertexts: Sequence[int], *, workers: int | None = None
) -> list[int]:
    """Decrypt many ciphertexts, in parallel over this party's worker processes.

    The workers receive the primes with each request through their local pipe and drop them
    when the request is answered; nothing is written to disk.

    Parameters
    ----------
    priv : PrivateKey
    ciphertexts : sequence of int
    workers : int, optional
        ``None`` uses all usable CPUs from :data:`PARALLEL_MIN_DECRYPT` ciphertexts on, 1 runs
        here, ``k > 1`` uses ``k`` processes.
    """
    pub = priv.public_key
    cts = [pub._check_ciphertext(c) for c in ciphertexts]
    n_workers = _workers_for(workers, len(cts), PARALLEL_MIN_DECRYPT, len(cts))
    if n_workers <= 1:
        return [int(m) for m in _decrypt_kernel(priv, cts)]
    header = _decrypt_header(priv)
    parts = [
        (header, _ints_to_bytes(cts[start:stop], pub.ciphertext_bytes))
        for start, stop in _split(len(cts), n_workers)
    ]
    return _gather(_run(b"D", parts), pub.key_bytes)


def _check_plaintexts(pub: PublicKey, plaintexts: Sequence[int]) -> list[int]:
    values = [operator.index(m) for m in plaintexts]
    n = pub.n
    for index, m in enumerate(values):
        if not 0 <= m < n:
            raise PaillierError(f"plaintext {index} is outside [0, n) for this key")
    return values


# Each kernel draws its randomness here with secrets.token_bytes, then runs in C when the
# extension is built (the C code draws none) or in the Python loop, the reference. The
# ``*_payload`` forms take and return fixed-width bytes for the worker processes.


def _encrypt_kernel(pub: PublicKey, values: list[int], method: str) -> list[Any]:
    if method == "naive":
        return [pub._encrypt_naive(m) for m in values]
    kernels = _C
    if kernels is not None:
        data = _ints_to_bytes(values, pub.key_bytes)
        return _ints_from_bytes(_encrypt_djn_c(kernels, pub, data), pub.ciphertext_bytes)
    size = pub.encryption_exponent_bytes
    randomness = secrets.token_bytes(size * len(values))
    return [
        pub._encrypt_djn(m, randomness[i * size : (i + 1) * size]) for i, m in enumerate(values)
    ]


def _encrypt_djn_c(kernels: _Kernels, pub: PublicKey, plaintexts: bytes) -> bytes:
    size, width = pub.encryption_exponent_bytes, pub.key_bytes
    randomness = secrets.token_bytes(size * (len(plaintexts) // width))
    return _c_table(kernels, pub).encrypt(plaintexts, width, randomness, size)


def _encrypt_payload(pub: PublicKey, payload: bytes, method: str) -> bytes:
    kernels = _C
    if method == "djn" and kernels is not None:
        _check_payload(payload, pub.key_bytes)
        return _encrypt_djn_c(kernels, pub, payload)
    values = _check_plaintexts(pub, _ints_from_bytes(payload, pub.key_bytes))
    return _ints_to_bytes(_encrypt_kernel(pub, values, method), pub.ciphertext_bytes)


def _encrypt_private_kernel(priv: PrivateKey, values: list[int]) -> list[Any]:
    kernels = _C
    if kernels is not None:
        pub = priv.public_key
        data = _encrypt_private_c(kernels, priv, _ints_to_bytes(values, pub.key_bytes))
        return _ints_from_bytes(data, pub.ciphertext_bytes)
    crt = _crt(priv)
    size = priv.public_key.encryption_exponent_bytes
    randomness = secrets.token_bytes(size * len(values))
    return [
        crt.encrypt(m, int.from_bytes(randomness[i * size : (i + 1) * size], "little"))
        for i, m in enumerate(values)
    ]


def _encrypt_private_c(kernels: _Kernels, priv: PrivateKey, plaintexts: bytes) -> bytes:
    pub = priv.public_key
    size, width = pub.encryption_exponent_bytes, pub.key_bytes
    randomness = secrets.token_bytes(size * (len(plaintexts) // width))
    n = pub.n.to_bytes(width, "big")
    return _crt_c(kernels, priv).encrypt(n, plaintexts, width, randomness, size)


def _encrypt_private_payload(priv: PrivateKey, payload: bytes) -> bytes:
    pub = priv.public_key
    kernels = _C
    if kernels is not None:
        _check_payload(payload, pub.key_bytes)
        return _encrypt_private_c(kernels, priv, payload)
    values = _check_plaintexts(pub, _ints_from_bytes(payload, pub.key_bytes))
    return _ints_to_bytes(_encrypt_private_kernel(priv, values), pub.ciphertext_bytes)


def _obfuscate_kernel(pub: PublicKey, cts: Sequence[int]) -> list[Any]:
    kernels = _C
    if kernels is not None:
        data = _obfuscate_c(kernels, pub, _ints_to_bytes(cts, pub.ciphertext_bytes))
        return _ints_from_bytes(data, pub.ciphertext_bytes)
    size = pub.obfuscation_exponent_bytes
    randomness = secrets.token_bytes(size * len(cts))
    table, n2 = _table(pub), pub._n2
    return [
        gmpy2.mpz(c) * table.power(randomness[i * size : (i + 1) * size]) % n2
        for i, c in enumerate(cts)
    ]


def _obfuscate_c(kernels: _Kernels, pub: PublicKey, ciphertexts: bytes) -> bytes:
    size, width = pub.obfuscation_exponent_bytes, pub.ciphertext_bytes
    randomness = secrets.token_bytes(size * (len(ciphertexts) // width))
    return _c_table(kernels, pub).rerandomize(ciphertexts, width, randomness, size)


def _obfuscate_payload(pub: PublicKey, payload: bytes) -> bytes:
    kernels = _C
    if kernels is not None:
        _check_payload(payload, pub.ciphertext_bytes)
        return _obfuscate_c(kernels, pub, payload)
    cts = _ints_from_bytes(payload, pub.ciphertext_bytes)
    return _ints_to_bytes(_obfuscate_kernel(pub, cts), pub.ciphertext_bytes)


def _check_payload(data: bytes, width: int) -> None:
    if len(data) % width:
        raise PaillierError(f"{len(data)} bytes are not a whole number of {width}-byte values")


def _decrypt_kernel(priv: PrivateKey, cts: Sequence[int]) -> list[Any]:
    return [priv._decrypt(gmpy2.mpz(c)) for c in cts]


# ---------------------------------------------------------------- serialisation


def ciphertexts_to_array(pub: PublicKey, ciphertexts: Sequence[int]) -> Ciphertexts:
    """Ciphertexts as a ``uint8`` array of shape ``(n, 2 * key_bytes)`` (big-endian rows).

    Safe to put in protocol messages (no pickle); send ``pub.fingerprint`` beside it.
    """
    width = pub.ciphertext_bytes
    data = _ints_to_bytes([pub._check_ciphertext(c) for c in ciphertexts], width)
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, width).copy()


def ciphertexts_from_array(
    pub: PublicKey, array: npt.NDArray[Any], *, fingerprint: str | None = None
) -> list[int]:
    """Parse :func:`ciphertexts_to_array`, checking the shape, the range and the key's tag.

    Raises
    ------
    KeyMismatchError
        If ``fingerprint`` is given and is not ``pub.fingerprint``.
    PaillierError
        On a wrong dtype or width, or a value outside ``(0, n²)``.
    """
    if fingerprint is not None:
        check_fingerprint(pub, fingerprint)
    data = np.asarray(array)
    width = pub.ciphertext_bytes
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != width:
        raise PaillierError(
            f"ciphertexts must be a uint8 array of shape (n, {width}), "
            f"got {data.dtype} {data.shape}"
        )
    values = _ints_from_bytes(np.ascontiguousarray(data).tobytes(), width)
    n2 = pub.nsquare
    for index, c in enumerate(values):
        if not 0 < c < n2:
            raise PaillierError(f"ciphertext {index} is outside (0, n²) for key {pub.fingerprint}")
    return values


def check_fingerprint(pub: PublicKey, fingerprint: str) -> None:
    """Raise :class:`KeyMismatchError` unless ``fingerprint`` names ``pub``."""
    if not secrets.compare_digest(str(fingerprint), pub.fingerprint):
        raise KeyMismatchError(
            f"data was made under key {fingerprint!r}, not this key {pub.fingerprint!r}; "
            "use the public key of the job that produced it"
        )


def _ints_to_bytes(values: Sequence[Any], width: int) -> bytes:
    return b"".join(int(v).to_bytes(width, "big") for v in values)


def _ints_from_bytes(data: bytes, width: int) -> list[int]:
    if len(data) % width:
        raise PaillierError(f"{len(data)} bytes are not a whole number of {width}-byte values")
    return [int.from_bytes(data[i : i + width], "big") for i in range(0, len(data), width)]


# ---------------------------------------------------------------- parallel plumbing


def _workers_for(workers: int | None, work: int, threshold: int, items: int) -> int:
    """Processes to use: explicit counts are obeyed (capped by items), ``None`` by threshold."""
    if workers is None:
        if work < threshold:
            return 1
        workers = default_workers()
    workers = operator.index(workers)
    if workers < 1:
        raise PaillierError(f"workers must be at least 1, got {workers}")
    return max(1, min(workers, items))


def _split(n_items: int, parts: int) -> list[tuple[int, int]]:
    if n_items <= 0:
        return []
    per = math.ceil(n_items / parts)
    return [(start, min(start + per, n_items)) for start in range(0, n_items, per)]


def _pack_header(pub: PublicKey) -> bytes:
    raw = pub.to_bytes()
    return len(raw).to_bytes(4, "big") + raw


def _decrypt_header(priv: PrivateKey) -> bytes:
    return _pack_header(priv.public_key) + priv.to_secret_bytes()


def _unpack_header(header: bytes) -> tuple[PublicKey, bytes]:
    """The public key at the start of a worker request's header, and the rest of the header."""
    size = int.from_bytes(header[:4], "big")
    pub = PublicKey.from_bytes(header[4 : 4 + size], allow_insecure=True)
    return pub, header[4 + size :]


_THREADS: tuple[int, ThreadPoolExecutor] | None = None
_THREADS_LOCK = threading.Lock()


def _in_threads(fn: Callable[[_Part], bytes], parts: Sequence[_Part]) -> list[bytes]:
    """``[fn(part) for part in parts]`` on this process's threads (C kernels release the GIL).

    The C kernels' tables are shared by the threads, so a batch split over threads builds them
    once, and key material never leaves the process (unlike :func:`_run`).
    """
    global _THREADS
    if len(parts) <= 1:
        return [fn(part) for part in parts]
    with _THREADS_LOCK:
        if _THREADS is None or _THREADS[0] < len(parts):
            if _THREADS is not None:
                _THREADS[1].shutdown(wait=False)
            _THREADS = (len(parts), ThreadPoolExecutor(len(parts), "paillier-kernel"))
        pool = _THREADS[1]
    return list(pool.map(fn, parts))


def _after_fork_in_child() -> None:
    """A forked child has none of its parent's threads, so nothing may wait for them.

    Start a new thread pool on demand, re-create the module's locks (a parent thread may have
    held one at the fork) and drop the C tables (a parent thread may have held a table's lock;
    the CRT tables, key material, are overwritten as they are freed and rebuilt if needed).
    """
    global _THREADS, _THREADS_LOCK, _TABLES_LOCK, _CRT_LOCK
    _THREADS = None
    _THREADS_LOCK = threading.Lock()
    _TABLES_LOCK = threading.Lock()
    _CRT_LOCK = threading.Lock()
    _C_TABLES.clear()
    _CRT_C.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _byte_parts(data: bytes, width: int, parts: int) -> list[bytes]:
    """``data`` (values of ``width`` bytes) cut into ``parts`` runs of whole values."""
    return [data[start * width : stop * width] for start, stop in _split(len(data) // width, parts)]


def _run(op: bytes, parts: list[tuple[bytes, bytes]]) -> list[bytes]:
    try:
        return paillier_pool.run_parallel(op, parts)
    except paillier_pool.RefusedRequestError as exc:
        raise PaillierError(str(exc)) from exc


def _gather(replies: list[bytes], width: int) -> list[int]:
    out: list[int] = []
    for reply in replies:
        out.extend(_ints_from_bytes(reply, width))
    return out
