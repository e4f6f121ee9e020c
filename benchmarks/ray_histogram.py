"""The platform's histogram kernel through the Ray gateway against the local threads, alone.

Usage (as root; Ray's nodes bind every interface, so in a loopback-only network namespace)::

    unshare --net -- sh -c 'ip link set lo up && exec .venv/bin/python \\
        benchmarks/ray_histogram.py --rows 80000 --cols 300 --groups 264 \\
        --summary-json out/ray-histogram.json'

One SecureBoost histogram level without the rest of a job: ``--rows`` 2048-bit Paillier
ciphertexts and a ``rows x cols`` matrix of group ids in ``[0, groups)``, cut into one block of
columns per CPU exactly as :func:`secure_agg.paillier.sum_groups_many` cuts them (every part
carries every row's ciphertexts and its columns' group ids), and summed ``--repeats`` times by
each of: the local backend (the C kernels on this process's threads) and a Ray cluster of
``--nodes`` nodes of ``--cpus-per-node`` CPUs on loopback (:class:`LocalRayCluster`), through a
party's gateway (:mod:`secure_agg.ray_backend`), alternating. It also times an empty batch (the
gateway's fixed cost). The ratio ``ray / local`` is the gateway's and Ray's whole overhead for
a level (pipes, object store, transfer to the other node, replies); both must give the same sums.

That is the ``S`` request, every part carrying its rows' ciphertexts and group ids. SecureBoost
now sends a level as :func:`secure_agg.paillier.sum_binned_many` does (the tree's ciphertexts and
the job's bins kept in the cluster, a level sending its rows' node slots): ``levels`` times
that, with the same ciphertexts and ``uint8`` bins (``--groups`` split as ``--nodes-per-level``
nodes x bins) and new random slots per level, on both backends, alternating. The first Ray
level includes sending the kept blocks; ``ratio_binned_later_levels`` compares the others.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from secure_agg import _paillier_worker, compute, paillier, ray_backend  # noqa: E402
from secure_agg.paillier import parallel  # noqa: E402
from secure_agg.paillier.wire import ints_to_bytes  # noqa: E402
from secure_agg.ray_local import LocalRayCluster, beyond_loopback_refusal  # noqa: E402
from secure_agg.worker_pool import encode_request  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=80_000)
    parser.add_argument("--cols", type=int, default=300)
    parser.add_argument("--groups", type=int, default=264, help="nodes x bins of the level")
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--nodes-per-level", type=int, default=8, help="tree nodes of a level")
    parser.add_argument(
        "--ray-on-all-interfaces",
        action="store_true",
        help="start the cluster although this network namespace has other interfaces",
    )
    parser.add_argument("--summary-json", type=Path, required=True)
    args = parser.parse_args()
    refusal = beyond_loopback_refusal("benchmarks/ray_histogram.py")
    if refusal is not None and not args.ray_on_all_interfaces:
        parser.error(refusal)
    cpus = args.nodes * args.cpus_per_node
    pub, priv = paillier.generate_keypair(2048)
    # Distinct ciphertexts are not needed for timing: a few thousand, repeated.
    base = paillier.encrypt_many_private(priv, [secrets.randbits(1000) for _ in range(2000)])
    cts = [base[i % len(base)] for i in range(args.rows)]
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, args.groups, size=(args.rows, args.cols)).astype(np.int32)
    everything = ints_to_bytes(cts, pub.ciphertext_bytes)
    parts = []
    for start, stop in parallel.split(args.cols, cpus):
        block = np.ascontiguousarray(matrix[:, start:stop])
        header = parallel.public_header(pub) + parallel.sums_header(
            args.rows, stop - start, args.groups
        )
        parts.append((header, everything + block.tobytes()))

    def local() -> tuple[float, list[bytes]]:
        started = time.perf_counter()
        replies = parallel.in_threads(lambda p: _paillier_worker.handle(b"S", p[0], p[1]), parts)
        return time.perf_counter() - started, replies

    local_s: list[float] = []
    ray_s: list[float] = []
    empty_ms: list[float] = []
    with LocalRayCluster(args.nodes, args.cpus_per_node) as cluster:
        gateway = ray_backend.get_gateway(cluster.settings())
        requests = [encode_request(b"S", h, p) for h, p in parts]
        gateway.run_batch(b"P", requests, label="histogram")  # the workers' start and imports
        for _ in range(args.repeats):
            seconds, reference = local()
            local_s.append(seconds)
            started = time.perf_counter()
            remote = gateway.run_batch(b"P", requests, label="histogram")
            ray_s.append(time.perf_counter() - started)
            if remote != reference:
                raise SystemExit("the Ray backend's sums differ from the local ones")
            started = time.perf_counter()
            gateway.run_batch(b"P", [encode_request(b"F", b"", b"")] * cpus, label="empty")
            empty_ms.append((time.perf_counter() - started) * 1000)
        binned = _levels(args, cluster, pub, cts, rng)
        ray_backend.shutdown()
    result = {
        "rows": args.rows,
        "cols": args.cols,
        "groups": args.groups,
        "nodes": args.nodes,
        "cpus_per_node": args.cpus_per_node,
        "bytes_per_part": len(parts[0][1]),
        "local_seconds": [round(s, 3) for s in local_s],
        "ray_seconds": [round(s, 3) for s in ray_s],
        "empty_batch_ms": [round(s, 2) for s in empty_ms],
        "ratio_ray_to_local_median": round(
            statistics.median(ray_s) / statistics.median(local_s), 3
        ),
        **binned,
        "load_average_at_end": list(os.getloadavg()),
    }
    args.summary_json.parent.mkdir(parents=True, exist_ok=True)
    args.summary_json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def _levels(
    args: argparse.Namespace,
    cluster: LocalRayCluster,
    pub: paillier.PublicKey,
    cts: list[int],
    rng: np.random.Generator,
) -> dict[str, object]:
    """``--repeats`` levels of :func:`paillier.sum_binned_many` on each backend, alternating."""
    nodes = max(1, args.nodes_per_level)
    width = max(1, args.groups // nodes)
    bins = rng.integers(0, width, size=(args.rows, args.cols)).astype(np.uint8)
    cpus = args.nodes * args.cpus_per_node
    local_s: list[float] = []
    ray_s: list[float] = []
    gateway = ray_backend.get_gateway(cluster.settings())
    uploaded = int(gateway.counts()["uploaded_bytes"])  # type: ignore[call-overload]
    for _ in range(args.repeats):
        slots = rng.integers(-1, nodes, size=args.rows).astype(np.int32)
        results = []
        for settings, times in ((compute.ComputeSettings(), local_s), (cluster.settings(), ray_s)):
            with compute.using(settings):
                started = time.perf_counter()
                results.append(
                    paillier.sum_binned_many(
                        pub, cts, bins, slots, width, nodes * width, workers=cpus
                    )
                )
                times.append(time.perf_counter() - started)
        if results[0] != results[1]:
            raise SystemExit("the Ray backend's binned sums differ from the local ones")
    later = (
        statistics.median(ray_s[1:]) / statistics.median(local_s[1:]) if args.repeats > 1 else None
    )
    return {
        "binned_groups": nodes * width,
        "binned_local_seconds": [round(s, 3) for s in local_s],
        "binned_ray_seconds": [round(s, 3) for s in ray_s],
        "binned_uploaded_bytes": int(gateway.counts()["uploaded_bytes"]) - uploaded,  # type: ignore[call-overload]
        "ratio_binned_first_level": round(ray_s[0] / local_s[0], 3),
        "ratio_binned_later_levels": None if later is None else round(later, 3),
    }


if __name__ == "__main__":
    main()
