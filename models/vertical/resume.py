"""Checkpoint and resume steps both vertical protocols share (SecureBoost, hetero LR).

A boundary is the moment a tree or epoch is complete (``-1``: before the first). The bank
writes its boundary as it opens the next tree or epoch, a platform as the next one's first
message reaches it; both keep the newest two (:data:`models.checkpoint.KEEP`) in their own
folders. A resumed job: the bank asks every platform to resume (``init``), each platform answers
with the boundaries it holds, the bank continues after the newest boundary they all hold, and
each platform restores that boundary when the next tree or epoch reaches it. A party whose
aligned training rows (or, at the bank, labels) differ from its checkpoint's refuses: data,
authorizations or the evaluation split changed, and the job must start anew.

Each protocol names what it keeps (store documents and arrays, keys of its protocol state);
nothing it names may be key material or a ciphertext.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from models.alignment import job_rows
from models.checkpoint import Checkpoint, CheckpointError, digest_arrays
from models.protocol import PartyContext, ProtocolError


def rows_digest(ctx: PartyContext, train: npt.NDArray[np.bool_]) -> str:
    """Digest of the party's aligned ids in order and the training mask over them."""
    ids = ctx.table().ids[job_rows(ctx)]
    h = hashlib.sha256("\n".join(str(i) for i in ids).encode())
    h.update(np.packbits(train.astype(bool)).tobytes())
    return "sha256:" + h.hexdigest()


def save(
    ctx: PartyContext,
    protocol: str,
    boundary: int,
    state: Mapping[str, Any],
    state_keys: Sequence[str],
    *,
    train_key: str,
    docs: Sequence[str] = (),
    arrays: Sequence[str] = (),
    labels_key: str | None = None,
) -> None:
    """Keep the party's state at ``boundary`` (no-op for a job that keeps no checkpoints).

    ``state_keys`` of the protocol state, the store documents ``docs`` and arrays ``arrays``
    are kept, with digests of the training rows (``train_key``: the store array of the training
    mask) and, at the bank, of the labels (``labels_key``).
    """
    folder = ctx.checkpoints()
    if folder is None:
        return
    kept: dict[str, Any] = {k: ctx.store.get_json(k) for k in docs}
    kept["state"] = {k: state[k] for k in state_keys if k in state}
    kept["rows"] = rows_digest(ctx, ctx.store.get_array(train_key).astype(bool))
    if labels_key is not None:
        kept["labels"] = digest_arrays(ctx.store.get_array(labels_key))
    folder.save(Checkpoint(protocol, boundary, kept, _present_arrays(ctx, arrays)))


def bank_offer(ctx: PartyContext, protocol: str) -> list[int] | None:
    """Boundaries the bank can resume from (``None``: the job is not a resumed one)."""
    if ctx.resuming() is None:
        return None
    folder = ctx.checkpoints()
    return folder.boundaries(protocol) if folder is not None else []


def platform_offer(ctx: PartyContext, protocol: str, asked: bool) -> list[int] | None:
    """Boundaries a platform resumes from, when the bank asked to resume (its ``init``).

    Raises
    ------
    ProtocolError
        If the bank and this node disagree on whether the job is resumed.
    """
    resuming = ctx.resuming() is not None
    if asked != resuming:
        raise ProtocolError(
            f"{protocol}/init: the bank "
            + ("resumes the job but this node does not" if asked else "starts the job afresh")
            + (" (this node resumes it)" if resuming else "")
        )
    if not resuming:
        return None
    folder = ctx.checkpoints()
    return folder.boundaries(protocol) if folder is not None else []


def bank_restore(
    ctx: PartyContext,
    protocol: str,
    held: Sequence[int],
    theirs: Mapping[str, Sequence[int] | None],
    *,
    train_key: str,
    labels_key: str,
    docs: Sequence[str] = (),
    arrays: Sequence[str] = (),
) -> Checkpoint:
    """Restore the bank at the newest boundary it and every platform (``theirs``) hold.

    The kept store documents and arrays are put back; the caller applies ``docs["state"]``.

    Raises
    ------
    CheckpointError
        No common boundary, or the training rows or labels differ from the checkpoint's.
    """
    common = [b for b in held if all(b in (t or []) for t in theirs.values())]
    folder = ctx.checkpoints()
    if not common or folder is None:
        raise CheckpointError(
            f"job cannot resume: no boundary held by the bank ({list(held)}) and every "
            f"platform ({dict(theirs)}); start a new job"
        )
    checkpoint = folder.load(protocol, max(common))
    kept = checkpoint.docs
    train = ctx.store.get_array(train_key).astype(bool)
    if kept["rows"] != rows_digest(ctx, train) or kept["labels"] != digest_arrays(
        ctx.store.get_array(labels_key)
    ):
        raise CheckpointError(
            f"job cannot resume: the bank's aligned training rows or labels differ from its "
            f"checkpoint at boundary {checkpoint.boundary} (data, authorizations or the split "
            "changed); start a new job"
        )
    for key in docs:
        ctx.store.put_json(key, kept[key])
    for key in arrays:
        if key in checkpoint.arrays:  # optional state (e.g. validation scores) may be absent
            ctx.store.put_array(key, checkpoint.arrays[key])
    return checkpoint


def _present_arrays(ctx: PartyContext, keys: Sequence[str]) -> dict[str, npt.NDArray[Any]]:
    """The store arrays among ``keys`` that exist (a job without validation has no scores)."""
    present: dict[str, npt.NDArray[Any]] = {}
    for key in keys:
        try:
            present[key] = ctx.store.get_array(key)
        except KeyError:
            continue
    return present


def platform_restore(
    ctx: PartyContext, protocol: str, boundary: int, *, train_key: str
) -> Checkpoint:
    """This platform's checkpoint at ``boundary`` for a resumed job's next tree or epoch.

    Raises
    ------
    CheckpointError
        If this node holds no such boundary or its rows differ from the checkpoint's.
    """
    folder = ctx.checkpoints()
    if folder is None:
        raise CheckpointError(f"party '{ctx.name}' keeps no checkpoints")
    checkpoint = folder.load(protocol, boundary)
    train = ctx.store.get_array(train_key).astype(bool)
    if checkpoint.docs["rows"] != rows_digest(ctx, train):
        raise CheckpointError(
            f"party '{ctx.name}' refuses to resume: its aligned training rows differ from its "
            f"checkpoint at boundary {boundary} (data or authorizations changed)"
        )
    return checkpoint
