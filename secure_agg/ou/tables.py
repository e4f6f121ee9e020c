"""Fixed-base tables of OU encryption (``g^m``, ``h^r``), cached per process.

Both bases of ``Enc(m; r) = g^m · h^r mod n`` are fixed by the public key, so each power is
assembled from precomputed powers ``base^(d · 256^i) mod n`` (``d < 256``, one row per byte of
the exponent; :class:`secure_agg.paillier.tables.FixedBaseTable`): one multiplication modulo
``n`` per non-zero byte instead of a full exponentiation. HEU does the same (its ``BaseTable``
for ``G``, ``G^-1`` and ``H``). Sizes at 2048 bits: the ``g`` table has 86 rows (681-bit
plaintexts), the ``h`` table 28 rows for encryption (224-bit exponents) and 272 once
re-randomisation (``k + 128``-bit exponents) is used; 256 bytes per entry, so ~5.6 MB, ~1.8 MB
and ~18 MB per process and key. Rows are built on demand. They are public data; a process keeps
those of the last :data:`TABLE_CACHE_SIZE` keys.

With the C kernels (:mod:`secure_agg.paillier.extension`, the same switch as Paillier's), the
same tables live in a ``secure_agg._gmp_kernels.OuEncryptor``, built at once for plaintexts and
re-randomisation exponents (~23 MB at 2048 bits); they give exactly the same integers.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

from secure_agg.paillier.tables import FixedBaseTable

if TYPE_CHECKING:
    from secure_agg.ou.keys import PublicKey
    from secure_agg.paillier.extension import COuEncryptor, Kernels

#: Public keys whose tables a process keeps (least recently used ones are dropped).
TABLE_CACHE_SIZE = 4

_TABLES: OrderedDict[tuple[int, int, int], tuple[FixedBaseTable, FixedBaseTable]] = OrderedDict()
_C_TABLES: OrderedDict[tuple[int, int, int], COuEncryptor] = OrderedDict()
_LOCK = threading.Lock()


def public_tables(pub: PublicKey) -> tuple[FixedBaseTable, FixedBaseTable]:
    """This process's tables of ``g`` and ``h`` modulo ``n`` for ``pub`` (a few keys, LRU)."""
    key = (pub.n, pub.g, pub.h)
    with _LOCK:
        tables = _TABLES.get(key)
        if tables is None:
            tables = (FixedBaseTable(pub._g, pub._n), FixedBaseTable(pub._h, pub._n))
            _TABLES[key] = tables
            while len(_TABLES) > TABLE_CACHE_SIZE:
                _TABLES.popitem(last=False)
        else:
            _TABLES.move_to_end(key)
        return tables


def public_c_encryptor(kernels: Kernels, pub: PublicKey) -> COuEncryptor:
    """As :func:`public_tables`, for the C kernels: both tables, built at once (~0.1 s)."""
    key = (pub.n, pub.g, pub.h)
    with _LOCK:
        encryptor = _C_TABLES.get(key)
        if encryptor is None:
            width = pub.key_bytes
            encryptor = kernels.OuEncryptor(
                pub.n.to_bytes(width, "big"),
                pub.g.to_bytes(width, "big"),
                pub.h.to_bytes(width, "big"),
                pub.plaintext_bytes,
                pub.obfuscation_exponent_bytes,
            )
            _C_TABLES[key] = encryptor
            while len(_C_TABLES) > TABLE_CACHE_SIZE:
                _C_TABLES.popitem(last=False)
        else:
            _C_TABLES.move_to_end(key)
        return encryptor


def _after_fork_in_child() -> None:
    """Re-create the lock: a parent thread may have held it at the fork.

    Tables are immutable once built (the C ones included), so the child keeps them.
    """
    global _LOCK
    _LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
