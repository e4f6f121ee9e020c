"""The plaintext core of alignment: what the private protocol must compute, in the clear.

Tests compare the protocol's result with :func:`plaintext_intersection`; both parties order the
aligned ids with :func:`aligned_rows` so that rows line up without exchanging an order.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from models.evaluation import canonical_order


def plaintext_intersection(*id_sets: Iterable[str]) -> npt.NDArray[np.str_]:
    """Ids common to every set, in canonical order (length, then text)."""
    sets = [set(ids) for ids in id_sets]
    common = set.intersection(*sets) if sets else set()
    ids = np.array(sorted(common), dtype=np.str_)
    return ids[canonical_order(ids)] if ids.size else ids


def aligned_rows(
    own_ids: npt.NDArray[np.str_], member: npt.NDArray[np.bool_]
) -> npt.NDArray[np.intp]:
    """Row positions of the aligned ids in this party's table, in the agreed (canonical) order.

    Parameters
    ----------
    own_ids : numpy.ndarray of str
        This party's ids, in table order.
    member : numpy.ndarray of bool
        Which rows are in the intersection.
    """
    rows = np.flatnonzero(member)
    return rows[canonical_order(own_ids[rows])]


def alignment_digest(key: bytes, ordered_ids: npt.NDArray[np.str_]) -> str:
    """HMAC-SHA256 of the aligned ids in order, under a key only the two parties share.

    Both parties send it to the coordinator, which compares them: equal digests prove both hold
    the same ids in the same order, and without the key the coordinator cannot test guesses.
    """
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for value in ordered_ids.tolist():
        raw = value.encode("utf-8")
        mac.update(len(raw).to_bytes(4, "big") + raw)
    return mac.hexdigest()
