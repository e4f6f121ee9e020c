"""SecureBoost's checkpoints: each party's state at a tree boundary, and DP releases replayed.

A boundary is the moment a tree is complete (``-1``: before the first). The bank writes its
boundary as it opens the next tree, a platform as the next tree's gradients reach it (its state
after the previous tree); both keep the newest two (:data:`models.checkpoint.KEEP`) in their
own folders, and a resumed job continues after the newest boundary the bank and every platform
hold (the bank picks it from what each platform reports in ``ready``).

What a boundary holds
---------------------
========  ======================================================================================
bank      the trees so far, their per-tree metrics, the raw scores of the training rows after
          them (and of the validation rows, with the early-stopping state), the split counts
          and gains (importance), a digest of its training rows
platform  the split rules it applied so far (its own part of the model), a digest of its rows
========  ======================================================================================

No key and no ciphertext: the state at a tree boundary holds none (each tree's encrypted
gradients belong to that tree), so a resumed job runs a fresh key setup (a new key pair at the
bank, fresh re-randomisation at the platform) and no secret key is ever written to disk. The
names kept are listed in :data:`BANK_DOCS`, :data:`BANK_ARRAYS`, :data:`BANK_STATE` and
:data:`PLATFORM_STATE`; a feature that adds state to the training loop (early stopping: the
best iteration, validation scores) adds its names there and is checkpointed with the rest.

DP releases are never made twice
--------------------------------
A platform's noisy histogram of ``(tree, level)`` is a release charged to its own ledger. The
platform records every release it makes in its own checkpoint record (which slot, a digest of
the request, its count of releases) as the reply leaves its handler. When a resumed job asks
for a slot again (the tree the interruption cut is replayed), the platform answers
``replayed`` without any sum and counts nothing: fresh noise on the same statistic is never
drawn, so a bank that "resumes" over and over learns nothing new and the ledger charges each
release once. The request must be the very one it answered (same nodes, same row positions,
hence the same splits), or the platform refuses: a replay cannot probe other splits. The bank
keeps every DP release it received since its last boundary in its own folder (decrypted sums:
its own knowledge, never a key) and rebuilds the replayed levels from them, choosing the same
splits, so the resumed model equals the uninterrupted one. Exact (non-DP) histograms are simply
computed again: nothing is counted and the same request gets the same sums.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from models.checkpoint import CheckpointError, digest_arrays
from models.guard import PolicyRefusalError
from models.protocol import PartyContext
from models.secureboost.state import PROTOCOL
from models.vertical import resume

#: Store documents the bank keeps at a boundary.
BANK_DOCS: tuple[str, ...] = ("sb.trees", "sb.metrics")
#: Store arrays the bank keeps at a boundary.
BANK_ARRAYS: tuple[str, ...] = ("sb.raw", "sb.raw_valid", "sb.raw_best")
#: Keys of the bank's protocol state kept at a boundary.
BANK_STATE: tuple[str, ...] = ("tree", "importance", "validation")
#: Keys of a platform's protocol state kept at a boundary.
PLATFORM_STATE: tuple[str, ...] = ("tree", "splits")

#: Payload flag of a platform's answer to a histogram it released already.
REPLAYED = "replayed"


# ------------------------------------------------------------------------------------ bank


def save_bank(ctx: PartyContext, state: dict[str, Any]) -> None:
    """Keep the bank's state after tree ``state["tree"]`` (called as it opens the next one)."""
    resume.save(
        ctx,
        PROTOCOL,
        int(state["tree"]),
        state,
        BANK_STATE,
        train_key="sb.train",
        labels_key="sb.y",
        docs=BANK_DOCS,
        arrays=BANK_ARRAYS,
    )
    folder = ctx.checkpoints()
    if folder is not None:
        # DP releases of trees up to the oldest boundary held are never replayed again.
        folder.drop_logs(PROTOCOL, f"t{folder.boundaries(PROTOCOL)[0]}-")


def resume_offer(ctx: PartyContext, state: dict[str, Any]) -> list[int] | None:
    """Boundaries the bank can resume from (``None``: not a resumed job); remembered in state."""
    held = resume.bank_offer(ctx, PROTOCOL)
    if held is not None:
        state["resume"] = held
    return held


def restore_bank(ctx: PartyContext, state: dict[str, Any]) -> int | None:
    """Continue a resumed job at the newest boundary the bank and every platform hold.

    Called once every platform answered ``ready`` (each with the boundaries it holds).

    Raises
    ------
    CheckpointError
        No common boundary, or the training rows or labels differ from the checkpoint's.
    """
    held: list[int] | None = state.pop("resume", None)
    if held is None:
        return None
    theirs = {p: info.get("boundaries") for p, info in state["platforms"].items()}
    checkpoint = resume.bank_restore(
        ctx,
        PROTOCOL,
        held,
        theirs,
        train_key="sb.train",
        labels_key="sb.y",
        docs=BANK_DOCS,
        arrays=BANK_ARRAYS,
    )
    state.update(checkpoint.docs["state"])
    state["resumed_from"] = checkpoint.boundary
    return checkpoint.boundary


def _log_name(tree: int, level: int, party: str) -> str:
    return f"t{tree}-l{level}-{party}"


def keep_release(
    ctx: PartyContext, state: dict[str, Any], party: str, nodes: list[int], sums: Any
) -> None:
    """Keep a platform's decrypted DP release until the bank's next boundary."""
    folder = ctx.checkpoints()
    if folder is None or not state["platforms"][party].get("noise"):
        return
    name = _log_name(int(state["tree"]), int(state["level"]), party)
    folder.put_log(PROTOCOL, name, {"nodes": nodes}, {"sums": np.asarray(sums, np.int64)})


def kept_release(
    ctx: PartyContext, state: dict[str, Any], party: str, nodes: list[int]
) -> npt.NDArray[np.int64]:
    """The decrypted release a platform answered ``replayed`` for, from the bank's own log.

    Raises
    ------
    CheckpointError
        If the bank kept no copy (it stopped between the platform's reply and its own log):
        the platform never releases it twice, so the job cannot resume past it.
    """
    folder = ctx.checkpoints()
    tree, level = int(state["tree"]), int(state["level"])
    entry = folder.get_log(PROTOCOL, _log_name(tree, level, party)) if folder else None
    if entry is None or entry[0].get("nodes") != nodes:
        raise CheckpointError(
            f"job cannot resume: platform '{party}' released tree {tree} level {level} before "
            "the interruption and never releases it twice, and the bank kept no copy of it; "
            "start a new job"
        )
    sums: npt.NDArray[np.int64] = entry[1]["sums"]
    return sums


# -------------------------------------------------------------------------------- platform


def save_platform(ctx: PartyContext, state: dict[str, Any]) -> None:
    """Keep the platform's state after tree ``state["tree"]`` (as the next tree arrives)."""
    resume.save(ctx, PROTOCOL, int(state["tree"]), state, PLATFORM_STATE, train_key="sb.train")


def platform_offer(ctx: PartyContext, state: dict[str, Any], asked: bool) -> list[int] | None:
    """Boundaries this platform resumes from, when the bank asked to resume (``init``)."""
    held = resume.platform_offer(ctx, PROTOCOL, asked)
    if held is not None:
        state["resume"] = True
    return held


def restore_platform(ctx: PartyContext, state: dict[str, Any], tree: int) -> dict[str, Any]:
    """The platform's state for a resumed job's first tree ``tree`` (its boundary ``tree-1``)."""
    if not state.get("resume"):
        return state
    checkpoint = resume.platform_restore(ctx, PROTOCOL, tree - 1, train_key="sb.train")
    restored = {k: v for k, v in state.items() if k != "resume"}
    restored.update(checkpoint.docs["state"])
    return restored


def _request_digest(state: dict[str, Any], nodes: list[int], position: Any) -> str:
    return digest_arrays(
        np.array([int(state["tree"]), int(state["level"]), *nodes], np.int64),
        np.asarray(position, np.int64),
    )


def released_before(
    ctx: PartyContext, state: dict[str, Any], nodes: list[int], position: Any
) -> bool:
    """Whether this platform already released the DP histogram this request asks for.

    Raises
    ------
    PolicyRefusalError
        If it did, for another request (other nodes or row positions: other splits).
    """
    folder = ctx.checkpoints()
    if folder is None or state.get("noise") is None:
        return False
    record = folder.record() or {}
    slot = f"{state['tree']}:{state['level']}"
    made = record.get("released", {}).get(slot)
    if made is None:
        return False
    if made != _request_digest(state, nodes, position):
        raise PolicyRefusalError(
            f"secureboost: tree {state['tree']} level {state['level']} was released before "
            "this job was resumed, for another request; a resumed job replays the exchange it "
            "made, it cannot ask for other splits"
        )
    return True


def record_release(
    ctx: PartyContext,
    state: dict[str, Any],
    nodes: list[int],
    position: Any,
    mechanism: str,
    count: int,
) -> None:
    """Record in this node's own checkpoint record that a DP histogram left it."""
    folder = ctx.checkpoints()
    if folder is None:
        return
    record = folder.record() or {}
    released = dict(record.get("released", {}))
    released[f"{state['tree']}:{state['level']}"] = _request_digest(state, nodes, position)
    releases = {**record.get("releases", {}), mechanism: count}
    folder.write_record(released=released, releases=releases)
