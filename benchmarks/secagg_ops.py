"""Cost of secure aggregation (SecAgg, cryptographic PRG) against plain summing, on this machine.

Usage::

    .venv/bin/python benchmarks/secagg_ops.py --clients 5 --params 100000 \
        --summary-json out/secagg-ops.json

Each repeat runs one full round through the state machines in this process (no transport), with
every client's and the server's work timed per stage, twice: with no dropout, and with one
client dropping after it shared keys and before it sent its masked vector (so the server must
reconstruct that client's mask key and remove its pairwise masks from the others). Reported:
median seconds per stage, the masking time per client, the unmasking time at the server, the
plain float64 sum of the same vectors for comparison, and the payload bytes each client sends and
receives (:func:`secure_agg.secagg.encoded_size`: arrays, bytes and 8 bytes per int; a
transport's framing is extra). The decoded sum is checked against the plain sum every time.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from secure_agg.secagg import (  # noqa: E402
    SecAggClient,
    SecAggConfig,
    SecAggServer,
    encoded_size,
)

T = TypeVar("T")


def timed(store: list[float], function: Callable[[], T]) -> T:
    start = time.perf_counter()
    out = function()
    store.append(time.perf_counter() - start)
    return out


def one_round(
    config: SecAggConfig, vectors: dict[int, np.ndarray], drop_before_masking: set[int]
) -> dict[str, Any]:
    """Run one round; return per-stage timings (client times per client), bytes and the error."""
    t: dict[str, list[float]] = {
        key: []
        for key in (
            "client_setup",
            "client_share_keys",
            "client_mask",
            "client_unmask",
            "server_setup",
            "server_share_keys",
            "server_collect",
            "server_unmask_request",
            "server_finish",
        )
    }
    sent = dict.fromkeys(config.client_ids, 0)
    received = dict.fromkeys(config.client_ids, 0)
    server = SecAggServer(config)
    clients = {cid: SecAggClient(cid, config) for cid in config.client_ids}

    setup = timed(t["server_setup"], server.setup)
    keys = []
    for cid, client in clients.items():
        received[cid] += encoded_size(setup)
        keys.append(timed(t["client_setup"], lambda c=client: c.setup(setup)))
        sent[cid] += encoded_size(keys[-1])
    share_requests = timed(t["server_share_keys"], lambda: server.share_keys(keys))
    shares = []
    for cid, request in share_requests.items():
        received[cid] += encoded_size(request)
        shares.append(
            timed(t["client_share_keys"], lambda c=clients[cid], r=request: c.share_keys(r))
        )
        sent[cid] += encoded_size(shares[-1])
    mask_requests = timed(t["server_collect"], lambda: server.collect_masked_vectors(shares))
    masked = []
    for cid, request in mask_requests.items():
        received[cid] += encoded_size(request)
        if cid in drop_before_masking:
            continue
        masked.append(
            timed(
                t["client_mask"],
                lambda c=clients[cid], r=request: c.collect_masked_vectors(r, vectors[c.client_id]),
            )
        )
        sent[cid] += encoded_size(masked[-1])
    unmask_requests = timed(t["server_unmask_request"], lambda: server.unmask(masked))
    replies = []
    for cid, request in unmask_requests.items():
        received[cid] += encoded_size(request)
        replies.append(timed(t["client_unmask"], lambda c=clients[cid], r=request: c.unmask(r)))
        sent[cid] += encoded_size(replies[-1])
    result = timed(t["server_finish"], lambda: server.finish(replies))
    included = [c for c in config.client_ids if c not in drop_before_masking]
    plain = np.sum(
        [np.clip(vectors[c], -config.clipping_range, config.clipping_range) for c in included],
        axis=0,
    )
    error = float(np.abs(result - plain).max())
    if error > config.error_bound(len(included)):
        raise SystemExit(f"decoded sum off by {error} > bound {config.error_bound(len(included))}")
    survivor = next(c for c in config.client_ids if c not in drop_before_masking)
    return {
        "timings": t,
        "bytes_sent": sent[survivor],
        "bytes_received": received[survivor],
        "max_abs_error": error,
    }


def plain_sum_seconds(vectors: list[np.ndarray], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        total = np.zeros_like(vectors[0])
        for vector in vectors:
            total += vector
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = runs[0]["timings"].keys()
    median = {k: statistics.median(sum(r["timings"][k]) for r in runs) for k in keys}
    per_client = {
        k: statistics.median(statistics.mean(r["timings"][k]) for r in runs)
        for k in keys
        if k.startswith("client_")
    }
    client_total = sum(per_client.values())
    server_total = sum(v for k, v in median.items() if k.startswith("server_"))
    return {
        "stage_seconds_total_over_clients": median,
        "per_client_seconds": per_client,
        "masking_seconds_per_client": per_client["client_mask"],
        "unmasking_seconds_server": median["server_finish"],
        "client_seconds_whole_round": client_total,
        "server_seconds_whole_round": server_total,
        "bytes_sent_per_client": runs[0]["bytes_sent"],
        "bytes_received_per_client": runs[0]["bytes_received"],
        "max_abs_error": max(r["max_abs_error"] for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--params", type=int, default=100_000)
    parser.add_argument("--threshold", type=int, default=None, help="default: majority + 1")
    parser.add_argument("--neighbours", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--summary-json", type=Path, default=None)
    args = parser.parse_args()

    threshold = args.threshold or args.clients // 2 + 1
    config = SecAggConfig(
        round_id=1,
        client_ids=tuple(range(1, args.clients + 1)),
        threshold=threshold,
        vector_length=args.params,
        neighbours=args.neighbours,
    )
    rng = np.random.default_rng(0)
    vectors = {
        cid: rng.normal(scale=0.1, size=args.params).astype(np.float64) for cid in config.client_ids
    }
    one_round(config, vectors, set())  # warm-up
    plain = plain_sum_seconds(list(vectors.values()), max(args.repeats, 20))
    no_drop = summarise([one_round(config, vectors, set()) for _ in range(args.repeats)])
    dropped = {config.client_ids[0]}
    one_drop = summarise([one_round(config, vectors, dropped) for _ in range(args.repeats)])
    masked_bytes = args.params * np.dtype(config.word_dtype).itemsize
    summary = {
        "benchmark": "secagg_ops",
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "clients": args.clients,
        "params": args.params,
        "threshold": threshold,
        "neighbours": args.neighbours,
        "quantization_bits": config.quantization_bits,
        "modulus_bits": config.modulus_bits,
        "clipping_range": config.clipping_range,
        "error_bound": config.error_bound(),
        "repeats": args.repeats,
        "plain_sum_seconds": plain,
        "no_dropout": no_drop,
        "one_dropout_before_masking": one_drop,
        "unmasking_vs_plain_sum": no_drop["unmasking_seconds_server"] / plain,
        "masked_vector_bytes": masked_bytes,
        "float64_vector_bytes": args.params * 8,
        "float32_vector_bytes": args.params * 4,
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.summary_json is not None:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_text(text + "\n")


if __name__ == "__main__":
    main()
