"""The optional C kernels (:mod:`secure_agg._gmp_kernels`): their interface, loading, the switch.

When the extension is built (``pip install -e .`` compiles ``secure_agg/_gmp_kernels.c`` where
gcc and ``gmp.h`` exist; without them the install still succeeds), the batch kernels run in C on
GMP's mpn layer with the GIL released: the key holder's CRT encryption, DJN encryption and
re-randomisation (fixed-base tables), the histogram kernels of
:func:`secure_agg.paillier.sum_groups_many` and :func:`secure_agg.paillier.sum_binned_many`
(group ids made from bins and node slots as they are read) and the Horner packing of
:class:`secure_agg.packing.SumPacker`. They return exactly the integers of the Python kernels
kept in :mod:`secure_agg.paillier.kernels` as the reference (the tests compare them on the same
randomness), so the ciphertexts, their distribution and everything argued in
:mod:`secure_agg.paillier` are unchanged. What changes:

- arithmetic: residues modulo ``n²`` (and ``p²``, ``q²``) are multiplied as two base-``n``
  digits (three half-size products, two half-size divisions), and histograms with many columns
  use per-row tables of ``c·2^(64j) mod n²`` so that each addition needs no reduction;
  Montgomery multiplication measured slower here and is not used (figures in the C file);
- the key holder's CRT tables live in memory allocated by the extension, with
  :data:`~secure_agg.paillier.tables.C_CRT_WINDOW_BITS`-bit windows (94 MB per process at 2048
  bits), never visible to Python; they are overwritten when the encryptor is freed
  (:func:`secure_agg.paillier.forget_private_tables`, or another key), and the encryptor refuses
  pickling and copying;
- parallel batches run on threads of the calling process (the kernels release the GIL) rather
  than on worker processes: one set of tables, nothing to start (so from
  :data:`~secure_agg.paillier.parallel.THREAD_MIN_ENCRYPT` /
  :data:`~secure_agg.paillier.parallel.THREAD_MIN_ADDS` items on), and the primes never leave
  the process; decryption and naive encryption keep the worker processes;
- randomness is drawn in Python with :mod:`secrets` exactly as for the Python kernels and passed
  in; the C code draws none and logs nothing.

Rates at 2048 bits on one core of this project's 2-core AMD EPYC (GMP 6.2.1), C vs Python:
CRT encryption 4090 vs 2200/s (1.9x), DJN encryption 1910 vs 1390/s (1.4x), re-randomisation
900 vs 650/s (1.4x), histogram multiplications 373k vs 187k/s with 32 columns (2.0x) but 206k vs
182k/s with 4 (1.1x; 1-3 columns gain nothing: conversions cost as much as they save), packing
of 150-bit values 2170 vs 1580 inputs/s (1.4x). ``benchmarks/paillier_ops.py`` measures them.
The same switch serves the OU kernels of :mod:`secure_agg.ou` (``OuEncryptor``: encryption and
re-randomisation modulo OU's ``n = p²q``; ``benchmarks/he_schemes.py`` measures them).

The switch: setting the environment variable :data:`KERNELS_ENV` (``SECURE_AGG_KERNELS``) to
``python`` before this module is imported makes the process (and the worker processes it
starts, which inherit the variable) use the Python kernels. Within a process, :func:`use`
switches (tests and benchmarks compare the two; ``secure_agg.paillier._C`` is the same switch).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from typing import Protocol, cast

logger = logging.getLogger(__name__)

#: Environment variable: ``python`` makes this process (and worker pools it starts afterwards)
#: use the pure-Python kernels even when the C extension is built.
KERNELS_ENV = "SECURE_AGG_KERNELS"


class CCrtEncryptor(Protocol):
    """:class:`secure_agg._gmp_kernels.CrtEncryptor` (see its docstring)."""

    def encrypt(
        self,
        n: bytes,
        plaintexts: bytes,
        plaintext_width: int,
        randomness: bytes,
        randomness_width: int,
    ) -> bytes:
        """Encrypt fixed-width plaintexts with the exponents of ``randomness`` (CRT)."""


class CFixedBase(Protocol):
    """:class:`secure_agg._gmp_kernels.FixedBase` (see its docstring)."""

    def encrypt(
        self, plaintexts: bytes, plaintext_width: int, randomness: bytes, randomness_width: int
    ) -> bytes:
        """DJN-encrypt fixed-width plaintexts with the exponents of ``randomness``."""

    def rerandomize(
        self, ciphertexts: bytes, ciphertext_width: int, randomness: bytes, randomness_width: int
    ) -> bytes:
        """Multiply fixed-width ciphertexts by ``h_s`` to the exponents of ``randomness``."""

    def power(self, digits: bytes) -> bytes:
        """``h_s`` to the exponent of little-endian base-256 ``digits``."""


class COuEncryptor(Protocol):
    """:class:`secure_agg._gmp_kernels.OuEncryptor` (see its docstring; :mod:`secure_agg.ou`)."""

    def encrypt(
        self, plaintexts: bytes, plaintext_width: int, randomness: bytes, randomness_width: int
    ) -> bytes:
        """OU-encrypt fixed-width plaintexts with the exponents of ``randomness``."""

    def rerandomize(
        self, ciphertexts: bytes, ciphertext_width: int, randomness: bytes, randomness_width: int
    ) -> bytes:
        """Multiply fixed-width ciphertexts by ``h`` to the exponents of ``randomness``."""

    def group_sums(
        self,
        ciphertexts: bytes,
        width: int,
        groups: bytes,
        n_rows: int,
        n_cols: int,
        n_groups: int,
    ) -> bytes:
        """Per column and group, the product mod ``n`` of the rows' ciphertexts (zero if empty)."""


class Kernels(Protocol):
    """The extension module :mod:`secure_agg._gmp_kernels` (built from ``_gmp_kernels.c``)."""

    GMP_VERSION: str
    TABLE_MIN_COLS: int
    CrtEncryptor: Callable[[bytes, bytes, bytes, int, int], CCrtEncryptor]
    FixedBase: Callable[[bytes, bytes, int], CFixedBase]
    OuEncryptor: Callable[[bytes, bytes, bytes, int, int], COuEncryptor]

    def group_sums(
        self,
        n2: bytes,
        ciphertexts: bytes,
        width: int,
        groups: bytes,
        n_rows: int,
        n_cols: int,
        n_groups: int,
    ) -> bytes:
        """Per column and group, the product of the rows' ciphertexts (zero bytes if empty)."""

    def binned_sums(
        self,
        n2: bytes,
        ciphertexts: bytes | memoryview,
        width: int,
        bins: bytes | memoryview,
        itemsize: int,
        n_rows: int,
        n_bin_cols: int,
        col_start: int,
        col_stop: int,
        slots: bytes | memoryview,
        bin_width: int,
        n_groups: int,
    ) -> bytes:
        """:meth:`group_sums` of groups ``slot * bin_width + bin`` made as they are read."""

    def pack(self, n2: bytes, ciphertexts: bytes, width: int, bits: int, capacity: int) -> bytes:
        """Horner-pack ciphertexts ``capacity`` at a time, ``bits`` per value."""


def load() -> Kernels | None:
    """The C kernels, or None (not built, or :data:`KERNELS_ENV` is ``python``)."""
    if os.environ.get(KERNELS_ENV, "").strip().lower() == "python":
        logger.debug("%s=python: using the Python Paillier kernels", KERNELS_ENV)
        return None
    try:
        module = importlib.import_module("secure_agg._gmp_kernels")
    except ImportError as exc:  # built without a compiler or gmp.h: the Python kernels serve
        logger.debug("C Paillier kernels unavailable (%s): using the Python kernels", exc)
        return None
    return cast(Kernels, module)


_active: Kernels | None = load()


def active() -> Kernels | None:
    """The C kernels in use, or None when the Python reference kernels are."""
    return _active


def use(kernels: Kernels | None) -> None:
    """Make this process use ``kernels`` (the extension module), or the Python ones (None).

    Worker processes started later follow :data:`KERNELS_ENV`, not this switch.
    """
    global _active
    _active = kernels
