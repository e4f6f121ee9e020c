r"""Fixed-point encoding of float vectors into the ring Z_{2^m}, and decoding of their sum.

Encoding
--------
With clipping range ``R > 0`` and ``q`` quantization bits, let ``Q = 2^(q-1) - 1`` (the largest
level) and the scale ``S = Q / R``. A coordinate ``x`` is clipped to ``[-R, R]`` and mapped to the
signed integer level ``v = round(S * clip(x))`` in ``[-Q, Q]``, stored as ``v mod 2^m``
(two's complement). Because levels are signed, the sum of any number of encodings decodes without
knowing how many were added: the sum of ``n`` levels lies in ``[-nQ, nQ]``, and as long as

    n * Q <= 2^(m-1) - 1                                  (no wrap-around)

it is recovered exactly from its residue mod ``2^m`` by reading the residue as a signed ``m``-bit
integer; dividing by ``S`` gives the float sum. :class:`~secure_agg.secagg.config.SecAggConfig`
refuses configurations that break this bound for its number of clients. We also require
``n * Q <= 2^53`` so that the integer sum converts to float64 exactly, and ``q <= 32``.

Error of the decoded sum
------------------------
Per coordinate, against the sum of the *clipped* inputs of the ``n`` summed vectors:

- round to nearest (the default): each level is off by at most ``1/2``, so

      |decoded - sum(clip(x_i))| <= n / (2S) = n * R / (2^q - 2);

- stochastic rounding (``stochastic=True``): each level is off by less than ``1``, so the worst
  case is ``n / S = 2 n R / (2^q - 2)``, but the error has mean zero and standard deviation at
  most ``sqrt(n) / (2S)`` (unbiased sums: useful when ``q`` is small).

float64 rounding adds at most ``2^-20 / S`` per client (``|S x| < 2^31`` has a relative error
of ``2^-53``); :func:`error_bound` includes it. Clipping is not an error of this encoding but a
choice: inputs outside ``[-R, R]`` are summed as ``±R``.

Defaults (``R = 8``, ``q = 24``, ``m = 32``): a step ``1/S = 8 / (2^23 - 1) ~ 9.5e-7``; a worst-case
error of ``~4.8e-7`` per client and coordinate (``2.4e-6`` for 5 clients); up to 256 clients
before ``m = 32`` could wrap.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from secure_agg.secagg import _entropy
from secure_agg.secagg.errors import InputError

#: Most quantization bits (keeps ``S x`` exact to 2^-22 of a step in float64).
MAX_QUANTIZATION_BITS = 32

#: Most ring bits (masked words are uint64 at most).
MAX_MODULUS_BITS = 64

#: Largest integer sum that float64 represents exactly.
MAX_EXACT_SUM = 2**53

#: float64 slack per client, in steps, included in :func:`error_bound`.
FLOAT_SLACK_STEPS = 2.0**-20

Floats = npt.NDArray[np.float64]
Words = npt.NDArray[np.uint64]


def max_level(quantization_bits: int) -> int:
    """``Q = 2^(q-1) - 1``: the largest level of one encoded coordinate."""
    return (1 << (quantization_bits - 1)) - 1


def scale(clipping_range: float, quantization_bits: int) -> float:
    """``S = Q / R``: levels per unit."""
    return max_level(quantization_bits) / clipping_range


def required_modulus_bits(n_summands: int, quantization_bits: int) -> int:
    """Smallest ``m`` with ``n * Q <= 2^(m-1) - 1``: the sum of ``n`` encodings cannot wrap."""
    return (n_summands * max_level(quantization_bits)).bit_length() + 1


def error_bound(
    n_summands: int,
    *,
    clipping_range: float,
    quantization_bits: int,
    stochastic: bool = False,
) -> float:
    """Worst-case absolute error per coordinate of the decoded sum of ``n_summands`` encodings.

    ``n R / (2^q - 2)`` with round-to-nearest, twice that with stochastic rounding, plus the
    float64 slack of ``2^-20`` steps per summand (see the module docstring).
    """
    per_summand = (1.0 if stochastic else 0.5) + FLOAT_SLACK_STEPS
    return n_summands * per_summand / scale(clipping_range, quantization_bits)


def encode(
    vector: npt.ArrayLike,
    *,
    clipping_range: float,
    quantization_bits: int,
    modulus_bits: int,
    stochastic: bool = False,
) -> Words:
    """Clip, quantize and map a float vector into ``Z_{2^m}`` (as uint64 words).

    Parameters
    ----------
    vector : array_like of float, shape (d,)
        The values; ``±inf`` clip to ``±R``; NaN is refused.
    clipping_range : float
        ``R``.
    quantization_bits : int
        ``q``.
    modulus_bits : int
        ``m``.
    stochastic : bool
        Round up with probability equal to the fractional part (unbiased; randomness from the
        OS CSPRNG) instead of to the nearest level.

    Returns
    -------
    numpy.ndarray of uint64, shape (d,)
        ``round(S * clip(x)) mod 2^m``.

    Raises
    ------
    InputError
        If the vector is not one-dimensional real numbers or holds a NaN.
    """
    values = np.asarray(vector)
    if values.ndim != 1 or not (
        np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)
    ):
        raise InputError(f"expected a 1-d real vector, got {values.dtype} of shape {values.shape}")
    values = values.astype(np.float64)
    if np.isnan(values).any():
        raise InputError(f"vector holds {int(np.isnan(values).sum())} NaN value(s)")
    top = max_level(quantization_bits)
    scaled = np.clip(values, -clipping_range, clipping_range) * scale(
        clipping_range, quantization_bits
    )
    if stochastic:
        floor = np.floor(scaled)
        raw = np.frombuffer(_entropy.random_bytes(8 * len(scaled)), dtype="<u8")
        uniform = (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53
        levels = floor + (uniform < scaled - floor)
    else:
        levels = np.rint(scaled)
    signed = np.clip(levels, -top, top).astype(np.int64)
    return to_ring(signed, modulus_bits)


def to_ring(levels: npt.NDArray[np.int64], modulus_bits: int) -> Words:
    """Signed integers to their residues mod ``2^m`` (two's complement), as uint64."""
    words = levels.astype(np.uint64)  # wraps mod 2^64, and 2^m divides 2^64
    if modulus_bits < MAX_MODULUS_BITS:
        words &= np.uint64((1 << modulus_bits) - 1)
    return words


def reduce(words: Words, modulus_bits: int) -> Words:
    """``words mod 2^m`` in place (uint64 arithmetic already wraps mod ``2^64``)."""
    if modulus_bits < MAX_MODULUS_BITS:
        words &= np.uint64((1 << modulus_bits) - 1)
    return words


def to_signed(words: Words, modulus_bits: int) -> npt.NDArray[np.int64]:
    """Residues mod ``2^m`` read as signed ``m``-bit integers."""
    if modulus_bits == MAX_MODULUS_BITS:
        return words.astype(np.int64)  # reinterprets two's complement
    signed = (words & np.uint64((1 << modulus_bits) - 1)).astype(np.int64)
    signed[signed >= 1 << (modulus_bits - 1)] -= 1 << modulus_bits
    return signed


def decode_sum(
    total: Words,
    *,
    clipping_range: float,
    quantization_bits: int,
    modulus_bits: int,
) -> Floats:
    """The float sum from the residue of the sum of encodings (no wrap-around assumed).

    Parameters
    ----------
    total : numpy.ndarray of uint64
        ``sum(encode(x_i)) mod 2^m``.

    Returns
    -------
    numpy.ndarray of float64
        ``signed(total) / S``, within :func:`error_bound` of ``sum(clip(x_i))``.
    """
    return to_signed(total, modulus_bits).astype(np.float64) / scale(
        clipping_range, quantization_bits
    )


def fits(n_summands: int, quantization_bits: int, modulus_bits: int) -> bool:
    """Whether ``n`` encodings sum without wrap-around and convert to float64 exactly."""
    largest = n_summands * max_level(quantization_bits)
    return largest <= (1 << (modulus_bits - 1)) - 1 and largest <= MAX_EXACT_SUM


def step(clipping_range: float, quantization_bits: int) -> float:
    """``1 / S``: the value of one level."""
    return 1.0 / scale(clipping_range, quantization_bits)
