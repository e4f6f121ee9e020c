"""Per-tree critical path of SecureBoost: who computes, who waits, and for how long.

Training is a chain of hops: the bank computes, the platforms compute, the bank computes again.
The bank measures each federated tree from the moment it starts it (encrypting the gradients)
to the moment it has finished it (leaf weights), and splits that wall time into

- ``bank_compute``: the wall seconds of the bank's own handlers spent on the tree;
- ``platform_compute``: per hop, the longest platform handler (platforms answer in parallel),
  from the ``compute_seconds`` every platform reply carries;
- ``transport_and_runtime``: the rest: encoding, the runtime moving messages between parties
  (Flower, Ray), and each handler's set-up outside the roles (loading its context). The three
  sum to ``wall`` by construction.

When the bank streams a tree's gradients (:mod:`models.secureboost.stream`) a platform sums a
piece in the same hop as the bank encrypts the next one. Per such hop the shorter of the two
runs beside the longer, off the critical path: ``overlap`` counts those platform seconds, and
``platform_compute`` counts only the platform seconds on the critical path (every platform
second when nothing is streamed). ``bank_idle`` (``wall - bank_compute``) and ``platform_idle``
(``wall - platform_compute - overlap``) are what each side waits. ``precomputed_rows`` counts
the rows encrypted with randomness the bank made ahead while it waited
(:mod:`secure_agg.precompute`) and ``precompute_seconds`` the background seconds that made
them: overlapped with waiting, so not on the critical path.
``encrypt_seconds`` is the bank's encryption of the tree's gradients (part of ``bank_compute``).
``platform_precomputed_packs`` and ``platform_fresh_packs`` count the packed histogram
ciphertexts the platforms (all of them, every hop of the tree) re-randomised with factors they
made ahead while waiting, and with factors made during the hop (on the critical path); each
platform reports its counts in its ``hist`` replies.
Bank-only trees (no message) are all ``bank_compute``.

The accounting lives in the bank's state (``state["timing"]``) between messages; durations are
measured with :func:`time.perf_counter` by the party that spends them, so no clocks are compared
across parties (the tree's start and end are both the bank's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models.protocol import Envelope, ProtocolError
from models.secureboost.stream import STREAM_SECONDS

#: Payload key of a platform reply's handler seconds.
COMPUTE_SECONDS = "compute_seconds"
#: Payload keys of a platform's ``hist`` reply: packed ciphertexts re-randomised with factors
#: it made ahead, and with factors made during the reply.
PRECOMPUTED_PACKS = "precomputed_packs"
FRESH_PACKS = "fresh_packs"
#: Key of the critical path in a tree's metrics entry.
CRITICAL_PATH = "critical_path"
#: The parts of a tree's wall time (they sum to ``wall``).
PARTS = ("bank_compute", "platform_compute", "transport_and_runtime")


def open_tree(state: dict[str, Any], tree: int, now: float) -> None:
    """Start accounting for ``tree`` at ``now`` (inside a bank handler)."""
    state["timing"] = {
        "tree": tree,
        "started": now,
        "mark": now,
        "bank": 0.0,
        "platform": 0.0,
        "hop_platform": 0.0,
        "encrypt": 0.0,
        "precomputed_rows": 0,
        "precompute_seconds": 0.0,
        "platform_precomputed_packs": 0,
        "platform_fresh_packs": 0,
        "overlap": 0.0,
        "bank_stream": [],
        "hop_stream": [],
    }


def handler_started(state: dict[str, Any], now: float) -> None:
    """A bank handler began at ``now``: the bank computes from here."""
    timing = state.get("timing")
    if timing is not None:
        timing["mark"] = now


def handler_ended(state: dict[str, Any], now: float) -> None:
    """A bank handler ends at ``now``: add its time since the last mark to the open tree."""
    timing = state.get("timing")
    if timing is not None:
        timing["bank"] += now - timing["mark"]
        timing["mark"] = now


def streamed(state: dict[str, Any], seconds: float) -> None:
    """A bank handler sent the next piece of a streamed tree in ``seconds``.

    It ran beside the platforms' summing of the previous piece (the same hop).
    """
    timing = state.get("timing")
    if timing is not None:
        timing.setdefault("bank_stream", []).append(seconds)


def platform_replied(state: dict[str, Any], env: Envelope) -> None:
    """Note a platform reply's handler seconds (the hop's platform time is the longest).

    A reply to a streamed tree also carries the seconds of its earlier pieces
    (:data:`~models.secureboost.stream.STREAM_SECONDS`), part of the hop's platform time. Its
    packed-ciphertext counts (:data:`PRECOMPUTED_PACKS`, :data:`FRESH_PACKS`) add up over
    platforms and hops.
    """
    timing = state.get("timing")
    if timing is None:
        return
    for key, total in (
        (PRECOMPUTED_PACKS, "platform_precomputed_packs"),
        (FRESH_PACKS, "platform_fresh_packs"),
    ):
        if key in env.payload:
            count = env.payload[key]
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ProtocolError(f"'{env.sender}': {key} must be a nonnegative integer")
            timing[total] = int(timing.get(total, 0)) + count
    earlier: list[float] = []
    if STREAM_SECONDS in env.payload:
        earlier = _seconds_list(env)
        hop = list(timing.get("hop_stream", []))
        n = max(len(hop), len(earlier))
        hop += [0.0] * (n - len(hop))
        padded = earlier + [0.0] * (n - len(earlier))
        timing["hop_stream"] = [max(a, b) for a, b in zip(hop, padded, strict=True)]
    if COMPUTE_SECONDS not in env.payload:
        return
    seconds = env.payload[COMPUTE_SECONDS]
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise ProtocolError(f"'{env.sender}': {COMPUTE_SECONDS} must be a nonnegative number")
    spent = float(seconds) + sum(earlier)
    timing["hop_platform"] = max(float(timing["hop_platform"]), spent)


def _is_seconds(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and value >= 0


def _seconds_list(env: Envelope) -> list[float]:
    """A reply's :data:`~models.secureboost.stream.STREAM_SECONDS`, checked."""
    try:
        values = env.json(STREAM_SECONDS)
    except (ProtocolError, ValueError) as exc:
        raise ProtocolError(f"'{env.sender}': {STREAM_SECONDS} is not a JSON list") from exc
    if not isinstance(values, list) or not all(_is_seconds(v) for v in values):
        raise ProtocolError(
            f"'{env.sender}': {STREAM_SECONDS} must be a list of nonnegative numbers"
        )
    return [float(v) for v in values]


def hop_complete(state: dict[str, Any]) -> None:
    """Every awaited platform answered: the hop's platform time joins the tree's."""
    timing = state.get("timing")
    if timing is not None:
        # A streamed hop: the bank's handler for piece j + 1 ran beside the platforms' piece j.
        bank = timing.get("bank_stream", [])
        beside = sum(min(b, p) for b, p in zip(bank, timing.get("hop_stream", []), strict=False))
        timing["overlap"] = float(timing.get("overlap", 0.0)) + beside
        timing["platform"] += timing["hop_platform"] - beside
        timing["hop_platform"] = 0.0
        timing["bank_stream"] = []
        timing["hop_stream"] = []


def encrypted(state: dict[str, Any], seconds: float, precomputed: int, made_in: float) -> None:
    """The tree's gradients were encrypted in ``seconds``, ``precomputed`` rows from the pool."""
    timing = state.get("timing")
    if timing is not None:
        timing["encrypt"] += seconds
        timing["precomputed_rows"] += precomputed
        timing["precompute_seconds"] += made_in


def close_tree(state: dict[str, Any], now: float) -> dict[str, Any] | None:
    """End the open tree's accounting at ``now``; its critical path (None if none was open)."""
    timing = state.pop("timing", None)
    if timing is None:
        return None
    bank = float(timing["bank"]) + now - float(timing["mark"])
    platform = float(timing["platform"])
    wall = now - float(timing["started"])
    return {
        "tree": int(timing["tree"]),
        "wall": wall,
        "bank_compute": bank,
        "platform_compute": platform,
        "transport_and_runtime": wall - bank - platform,
        "overlap": float(timing.get("overlap", 0.0)),
        "bank_idle": wall - bank,
        "platform_idle": wall - platform - float(timing.get("overlap", 0.0)),
        "encrypt_seconds": float(timing["encrypt"]),
        "precomputed_rows": int(timing["precomputed_rows"]),
        "precompute_seconds": float(timing["precompute_seconds"]),
        "platform_precomputed_packs": int(timing.get("platform_precomputed_packs", 0)),
        "platform_fresh_packs": int(timing.get("platform_fresh_packs", 0)),
    }


def summarize(per_tree: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean seconds per tree of each part, over the trees that exchanged messages."""
    paths = [
        t[CRITICAL_PATH]
        for t in per_tree
        if t.get(CRITICAL_PATH) is not None and not t.get("bank_only")
    ]
    if not paths:
        return {}
    keys = (
        "wall",
        *PARTS,
        "overlap",
        "bank_idle",
        "platform_idle",
        "encrypt_seconds",
        "precompute_seconds",
        "precomputed_rows",
        "platform_precomputed_packs",
        "platform_fresh_packs",
    )
    out: dict[str, Any] = {"trees": len(paths)}
    for key in keys:
        out[f"{key}_mean"] = sum(float(p.get(key, 0.0)) for p in paths) / len(paths)
    out["critical_side"] = (
        "bank" if out["bank_compute_mean"] >= max(out["platform_compute_mean"], 0.0) else "platform"
    )
    return out
