"""Id lists and byte rows as they travel in SecAgg messages (shared by client and server)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from secure_agg.secagg.errors import MessageError


def id_list(values: npt.NDArray[np.int64], what: str) -> list[int]:
    """Return a message's array of client ids as a list, refusing repeats.

    Raises
    ------
    MessageError
        If an id repeats (``what`` names the list in the message).
    """
    ids = [int(v) for v in values]
    if len(set(ids)) != len(ids):
        raise MessageError(f"{what} repeats a client id")
    return ids


def stack(rows: list[bytes], width: int) -> npt.NDArray[np.uint8]:
    """Stack equal-length byte strings into a ``(len(rows), width)`` uint8 array."""
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), width).copy()
