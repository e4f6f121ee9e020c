"""Wire format: ciphertexts as fixed-width byte arrays, key fingerprints, integer codecs.

Ciphertexts travel between parties as ``uint8`` arrays of shape ``(n, 2 * key_bytes)``
(big-endian rows), never pickled, with the key's fingerprint beside them so that the receiver
can check they were made under the key it holds. The same fixed-width big-endian encoding
carries plaintexts and ciphertexts to the worker processes and the C kernels.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from secure_agg.paillier.errors import KeyMismatchError, PaillierError

if TYPE_CHECKING:
    from secure_agg.paillier.keys import PublicKey

#: Serialised ciphertexts: ``uint8`` of shape ``(n, pub.ciphertext_bytes)``.
Ciphertexts = npt.NDArray[np.uint8]


def ciphertexts_to_array(pub: PublicKey, ciphertexts: Sequence[int]) -> Ciphertexts:
    """Ciphertexts as a ``uint8`` array of shape ``(n, 2 * key_bytes)`` (big-endian rows).

    Safe to put in protocol messages (no pickle); send ``pub.fingerprint`` beside it.
    """
    width = pub.ciphertext_bytes
    data = ints_to_bytes([pub._check_ciphertext(c) for c in ciphertexts], width)
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
    values = ints_from_bytes(np.ascontiguousarray(data).tobytes(), width)
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


def ints_to_bytes(values: Sequence[Any], width: int) -> bytes:
    """Non-negative integers as ``width``-byte big-endian values, concatenated."""
    return b"".join(int(v).to_bytes(width, "big") for v in values)


def check_width(data: bytes, width: int) -> None:
    """Raise :class:`PaillierError` unless ``data`` holds whole ``width``-byte values."""
    if len(data) % width:
        raise PaillierError(f"{len(data)} bytes are not a whole number of {width}-byte values")


def ints_from_bytes(data: bytes, width: int) -> list[int]:
    """The integers of :func:`ints_to_bytes` (checked with :func:`check_width`)."""
    check_width(data, width)
    return [int.from_bytes(data[i : i + width], "big") for i in range(0, len(data), width)]
