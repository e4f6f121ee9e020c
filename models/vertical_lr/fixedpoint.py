"""Fixed-point encoding of the hetero LR protocol's plaintexts, and additive masks.

Residuals and partial logits are encoded with :data:`SCALE_BITS` fractional bits, WOE values with
the same, so a gradient sum ``Σ_i d_i · woe_i`` arrives as an integer with ``2 · SCALE_BITS``
fractional bits. Signed integers live in ``Z_n`` as ``v mod n`` and decode as the representative
in ``(-n/2, n/2]``; every sum the protocol forms stays below :data:`VALUE_BITS` bits in absolute
value, far from ``n/2`` for any admissible key.

A value ``v`` that must reach the key holder hidden is sent as ``v + m`` with ``m`` uniform in
``[0, 2^(VALUE_BITS + STATISTICAL_BITS))``: the sum's distribution differs from the mask's by at
most ``2^-STATISTICAL_BITS`` in statistical distance.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from models.protocol import ProtocolError

#: Fractional bits of residuals, partial logits and WOE values.
SCALE_BITS = 32
#: Bound (in bits) on the absolute value of every sum the protocol decrypts.
VALUE_BITS = 128
#: Statistical hiding of masks.
STATISTICAL_BITS = 80


def encode(values: npt.NDArray[np.float64], bits: int = SCALE_BITS) -> list[int]:
    """Round ``values * 2^bits`` to Python integers (signed)."""
    scaled = np.rint(np.asarray(values, dtype=np.float64) * float(1 << bits))
    if not np.all(np.isfinite(scaled)) or np.any(np.abs(scaled) >= 2.0**100):
        raise ProtocolError("a fixed-point value is not finite or too large to encode")
    return [int(v) for v in scaled]


def to_residue(values: Iterable[int], n: int) -> list[int]:
    """Signed integers as residues modulo ``n``."""
    return [v % n for v in values]


def from_residue(values: Iterable[int], n: int) -> list[int]:
    """Residues modulo ``n`` back to signed integers in ``(-n/2, n/2]``."""
    half = n // 2
    return [v - n if v > half else v for v in values]


def masks(count: int) -> list[int]:
    """Fresh additive masks from the OS CSPRNG."""
    return [secrets.randbits(VALUE_BITS + STATISTICAL_BITS) for _ in range(count)]


def unmask(masked: Sequence[int], mask: Sequence[int]) -> list[int]:
    """Remove masks and check that every value is within :data:`VALUE_BITS`.

    Raises
    ------
    ProtocolError
        If the counts differ or a value is out of range (wrong key, tampering or overflow).
    """
    if len(masked) != len(mask):
        raise ProtocolError(f"expected {len(mask)} masked values, got {len(masked)}")
    out = [int(v) - m for v, m in zip(masked, mask, strict=True)]
    if any(abs(v) >= 1 << VALUE_BITS for v in out):
        raise ProtocolError(
            "an unmasked sum is out of range: the key holder decrypted with the wrong key or a "
            "message was altered"
        )
    return out


def check_key(n: int) -> None:
    """Refuse moduli too small for masked sums to decrypt without wrapping."""
    if n.bit_length() < VALUE_BITS + STATISTICAL_BITS + 8:
        raise ProtocolError(f"a {n.bit_length()}-bit modulus is too small for masked sums")
