"""Wire format: OU ciphertexts as fixed-width byte arrays with the key's fingerprint beside them.

Ciphertexts travel as ``uint8`` arrays of shape ``(n, key_bytes)`` (big-endian rows: residues
modulo ``n``, half the width of a Paillier ciphertext of the same modulus length), never
pickled. The receiver checks the shape, that every value lies in ``(0, n)``, and the fingerprint.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from secure_agg.ou import kernels
from secure_agg.ou.errors import KeyMismatchError, OUError

if TYPE_CHECKING:
    from secure_agg.ou.keys import PublicKey

#: Serialised ciphertexts: ``uint8`` of shape ``(n, pub.ciphertext_bytes)``.
Ciphertexts = npt.NDArray[np.uint8]


def ciphertexts_to_array(pub: PublicKey, ciphertexts: Sequence[int]) -> Ciphertexts:
    """Ciphertexts as a ``uint8`` array of shape ``(n, key_bytes)`` (big-endian rows).

    Safe to put in protocol messages (no pickle); send ``pub.fingerprint`` beside it.
    """
    width = pub.ciphertext_bytes
    data = b"".join(c.to_bytes(width, "big") for c in kernels.check_ciphertexts(pub, ciphertexts))
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, width).copy()


def ciphertexts_from_array(
    pub: PublicKey, array: npt.NDArray[Any], *, fingerprint: str | None = None
) -> list[int]:
    """Parse :func:`ciphertexts_to_array`, checking the shape, the range and the key's tag.

    Raises
    ------
    KeyMismatchError
        If ``fingerprint`` is given and is not ``pub.fingerprint``.
    OUError
        On a wrong dtype or width, or a value outside ``(0, n)``.
    """
    if fingerprint is not None:
        check_fingerprint(pub, fingerprint)
    data = np.asarray(array)
    width = pub.ciphertext_bytes
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != width:
        raise OUError(
            f"OU ciphertexts must be a uint8 array of shape (n, {width}), "
            f"got {data.dtype} {data.shape}"
        )
    raw = np.ascontiguousarray(data).tobytes()
    values = [int.from_bytes(raw[i : i + width], "big") for i in range(0, len(raw), width)]
    return kernels.check_ciphertexts(pub, values)


def check_fingerprint(pub: PublicKey, fingerprint: str) -> None:
    """Raise :class:`KeyMismatchError` unless ``fingerprint`` names ``pub``."""
    if not secrets.compare_digest(str(fingerprint), pub.fingerprint):
        raise KeyMismatchError(
            f"data was made under key {fingerprint!r}, not this OU key {pub.fingerprint!r}; "
            "use the public key of the job that produced it"
        )
