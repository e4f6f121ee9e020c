"""Benchmark vertical SecureBoost through the embedded runtime, against its operation-count bound.

Usage::

    # FATE's setting on FATE's default_credit split, 2048-bit keys (30 trees)
    .venv/bin/python benchmarks/secureboost.py --summary-json out/sb-default-credit.json
    # the same with Okamoto-Uchiyama (allowed in the benchmark's temporary lab home)
    .venv/bin/python benchmarks/secureboost.py --set crypto.scheme=ou --summary-json out/sb-ou.json
    # against a SecretFlow run of your own (JSON with wall_seconds, auc, optional
    # seconds_per_tree, scheme, source)
    .venv/bin/python benchmarks/secureboost.py --compare-secretflow sf.json --summary-json o.json
    # scale case: 100,000 rows x 300 platform features, depth 5 (one tree by default)
    .venv/bin/python benchmarks/secureboost.py --scale --summary-json out/sb-scale.json
    # the same parties computing on a Ray cluster of their own: 2 nodes of 1 CPU, in a network
    # namespace whose only interface is loopback (Ray's nodes bind every interface; as root)
    unshare --net -- sh -c 'ip link set lo up && exec .venv/bin/python benchmarks/secureboost.py \
        --scale --backend ray --ray-nodes 2 --ray-cpus-per-node 1 --summary-json out/sb-ray2.json'

Each run trains through ``lab``'s job pipeline (Flower simulation runtime, real 2048-bit
Paillier) in a temporary lab home and reports: time per tree and per phase (encrypt,
histogram, pack, decrypt, split search, communication = what the parties' own phases leave
over), operation counts, and the lower bound those counts imply at per-operation costs measured
in the same run on this machine (``ops x cost / cores``): a perfect implementation could not
be faster than that bound. Peak memory is sampled over the whole process tree (the sum of RSS,
and of PSS, which counts a page shared by several processes once) and per process (the
largest few, by name).

``--backend ray`` starts a Ray cluster of ``--ray-nodes`` nodes of ``--ray-cpus-per-node`` CPUs
on loopback (:class:`secure_agg.ray_local.LocalRayCluster`, stopped at the end), names it in
the temporary home's node policy (``compute.backend=ray``, ``compute.address``), so both
parties' batches run as its tasks through their gateways (:mod:`secure_agg.ray_backend`), and
reports the gateway's round trip for a batch of empty requests (its fixed cost per batch).

It also reports the per-tree critical path the bank measures (bank compute, platform compute,
transport and runtime, what each side waits, rows encrypted with randomness made ahead:
:mod:`models.secureboost.timing`) and compares job wall time, time per tree and test AUC with
the reference runs of issue 19 on the same data and setting (:data:`REFERENCES`): ratios are
``lab / reference`` (below 1: the lab is faster). ``--compare-secretflow`` replaces the
SecretFlow figure of the run's scheme with a result of your own.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from lab.config import experiment_from_dict, load_experiment  # noqa: E402
from lab.governance.policy import set_policy  # noqa: E402
from lab.job import RunOptions, run_experiment  # noqa: E402
from secure_agg import packing, paillier, ray_backend  # noqa: E402
from secure_agg.compute import ComputeSettings  # noqa: E402
from secure_agg.ray_local import LocalRayCluster, beyond_loopback_refusal  # noqa: E402
from secure_agg.worker_pool import encode_request  # noqa: E402


class PeakMemory:
    """Samples the resident memory of this process and all its descendants.

    Two sums over the process tree: resident set sizes (RSS, which counts a page shared by
    several processes once in each: Ray's object store, forked children) and proportional set
    sizes (PSS, a shared page divided among the processes that map it: what the tree really
    holds). Per process, the peak RSS, and the peak of its own (anonymous) memory: RSS less
    the pages it shares with files or other processes (memory-mapped table columns, which
    the page cache reclaims; Ray's object store).
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.peak_total = 0.0
        self.peak_total_pss = 0.0
        self.peak_single = 0.0
        self.peak_single_anonymous = 0.0
        #: Peak resident GiB of each process seen, by process id (with its last name).
        self.peak_by_process: dict[int, tuple[str, float]] = {}
        #: Peak anonymous GiB of each process seen, by process id (with its last name).
        self.peak_anonymous_by_process: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            sizes = []
            proportional = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    full = proc.memory_full_info()  # reads smaps: rss and pss
                    rss = full.rss
                    anonymous = max(0, rss - full.shared)
                    name = proc.name()
                except psutil.Error:
                    continue
                sizes.append(rss)
                proportional += getattr(full, "pss", rss)
                peak = self.peak_by_process.get(proc.pid, (name, 0.0))[1]
                self.peak_by_process[proc.pid] = (name, max(peak, rss / 2**30))
                own = self.peak_anonymous_by_process.get(proc.pid, (name, 0.0))[1]
                self.peak_anonymous_by_process[proc.pid] = (name, max(own, anonymous / 2**30))
                self.peak_single_anonymous = max(self.peak_single_anonymous, anonymous / 2**30)
            self.peak_total = max(self.peak_total, sum(sizes) / 2**30)
            self.peak_total_pss = max(self.peak_total_pss, proportional / 2**30)
            self.peak_single = max(self.peak_single, max(sizes, default=0) / 2**30)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def largest(self, count: int = 8, *, anonymous: bool = False) -> dict[str, float]:
        """The ``count`` processes of the largest peak resident (or anonymous) memory (GiB)."""
        peaks = self.peak_anonymous_by_process if anonymous else self.peak_by_process
        ranked = sorted(peaks.items(), key=lambda item: -item[1][1])[:count]
        return {f"{name}[{pid}]": round(gib, 3) for pid, (name, gib) in ranked}


def gateway_round_trip(settings: ComputeSettings, batches: int = 20) -> dict[str, float]:
    """Milliseconds of a batch of empty requests (one per CPU) through a gateway to the cluster.

    What the Ray backend adds to every batch whatever its size: pipes to the gateway, task
    submission, scheduling on the nodes, and the replies' way back.
    """
    gateway = ray_backend.get_gateway(settings)
    cpus = settings.cpus or gateway.cluster_cpus
    requests = [encode_request(b"F", b"", b"")] * cpus
    gateway.run_batch(b"P", requests, label="Paillier")  # the workers' imports, once
    started = time.perf_counter()
    for _ in range(batches):
        gateway.run_batch(b"P", requests, label="Paillier")
    per_batch = (time.perf_counter() - started) / batches
    ray_backend.shutdown()
    return {"requests_per_batch": cpus, "ms_per_batch": round(per_batch * 1000, 2)}


def operation_costs(key_bits: int, n: int = 600) -> dict[str, float]:
    """Seconds per operation on one core, measured now: the unit costs of the lower bound."""
    pub, priv = paillier.generate_keypair(key_bits)
    plain = [secrets.randbits(key_bits - 64) for _ in range(n)]
    paillier.encrypt_many_private(priv, plain[:8], workers=1)  # build the CRT tables first
    started = time.perf_counter()
    cts = paillier.encrypt_many_private(priv, plain, workers=1)
    encrypt = (time.perf_counter() - started) / n
    groups = np.zeros((n, 4), dtype=np.int64)
    started = time.perf_counter()
    paillier.sum_groups_many(pub, cts, groups, 1, workers=1)
    add = (time.perf_counter() - started) / (4 * n)
    packer = packing.SumPacker(160, key_bits)
    started = time.perf_counter()
    packer.pack(pub, cts[: packer.capacity * 8], workers=1)
    pack = (time.perf_counter() - started) / (packer.capacity * 8)
    started = time.perf_counter()
    paillier.decrypt_many(priv, cts[:100], workers=1)
    decrypt = (time.perf_counter() - started) / 100
    return {"encrypt": encrypt, "add": add, "pack": pack, "decrypt": decrypt}


#: Reference runs on FATE's default_credit split, FATE's setting (30 trees, depth 3), 2048-bit
#: keys, as reported in issue 19 (their machines, not this one).
REFERENCES: tuple[dict[str, Any], ...] = (
    {
        "system": "FATE 2.2 SecureBoost",
        "scheme": "paillier",
        "wall_seconds": 5610.0,
        "seconds_per_tree": 187.0,
        "auc": 0.7755,
        "source": "issue 19",
    },
    {
        "system": "SecretFlow 1.13 SGB (HEU)",
        "scheme": "paillier",
        "wall_seconds": 750.0,
        "seconds_per_tree": 25.6,
        "auc": 0.7798,
        "source": "issue 19",
    },
    {
        "system": "SecretFlow 1.13 SGB (HEU)",
        "scheme": "ou",
        "wall_seconds": 149.0,
        "seconds_per_tree": 4.8,
        "auc": 0.7798,
        "source": "issue 19",
    },
)


def secretflow_override(path: Path, scheme: str, trees: int) -> dict[str, Any]:
    """A SecretFlow reference from a result JSON (``wall_seconds``, ``auc`` required).

    ``scheme`` defaults to the run's; ``seconds_per_tree`` to ``wall_seconds / trees``.
    """
    raw = json.loads(path.read_text(encoding="utf-8"))
    missing = [k for k in ("wall_seconds", "auc") if k not in raw]
    if missing:
        raise SystemExit(f"{path}: missing {missing} (needs wall_seconds and auc)")
    wall = float(raw["wall_seconds"])
    return {
        "system": str(raw.get("system", "SecretFlow")),
        "scheme": str(raw.get("scheme", scheme)),
        "wall_seconds": wall,
        "seconds_per_tree": float(raw.get("seconds_per_tree", wall / max(trees, 1))),
        "auc": float(raw["auc"]),
        "source": str(raw.get("source", path)),
    }


def compare(
    lab: dict[str, Any], references: list[dict[str, Any]], override: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The lab's wall, time per tree and AUC against each reference (``lab / reference``).

    ``override`` replaces the SecretFlow reference of its scheme (or is added if none).
    """
    refs = list(references)
    if override is not None:
        refs = [
            r
            for r in refs
            if not (r["system"].startswith("SecretFlow") and r["scheme"] == override["scheme"])
        ]
        refs.append(override)
    out = []
    for ref in refs:
        out.append(
            {
                **ref,
                "same_scheme": ref["scheme"] == lab["scheme"],
                "wall_ratio": round(lab["wall_seconds"] / ref["wall_seconds"], 4),
                "per_tree_ratio": round(lab["seconds_per_tree"] / ref["seconds_per_tree"], 4),
                "auc_difference": round(lab["auc"] - ref["auc"], 4),
            }
        )
    return out


def lower_bound(ops: dict[str, dict[str, int]], costs: dict[str, float], cores: int) -> float:
    """Seconds a perfect implementation needs for these operation counts on ``cores`` cores."""
    bank, platform = ops.get("bank", {}), {}
    for party, counts in ops.items():
        if party != "bank":
            for k, v in counts.items():
                platform[k] = platform.get(k, 0) + v
    work = (
        bank.get("encrypt", 0) * costs["encrypt"]
        + bank.get("decrypt", 0) * costs["decrypt"]
        + platform.get("histogram", 0) * costs["add"]
        + platform.get("pack", 0) * costs["pack"]
    )
    return work / cores


def scale_experiment(folder: Path, rows: int, features: int, depth: int, trees: int) -> Any:
    """Synthetic vertical data: a bank with 6 columns and labels, a platform with many columns."""
    rng = np.random.default_rng(0)
    ids = np.char.add("E", np.arange(rows).astype(str))
    latent = rng.normal(size=rows)
    bank = pd.DataFrame({f"b{i}": latent * 0.3 + rng.normal(size=rows) for i in range(6)})
    platform = pd.DataFrame(
        {f"p{i}": latent * rng.uniform(0, 0.4) + rng.normal(size=rows) for i in range(features)}
    ).astype(np.float32)
    y = (rng.uniform(size=rows) < 1 / (1 + np.exp(-(latent * 1.5 - 3)))).astype(int)
    bank.insert(0, "y", y)
    bank.insert(0, "id", ids)
    platform.insert(0, "id", ids)
    bank.to_parquet(folder / "bank.parquet")
    platform.to_parquet(folder / "platform.parquet")
    return experiment_from_dict(
        {
            "name": "secureboost-scale",
            "kind": "vertical",
            "parties": [
                {"name": "bank", "role": "bank", "data": "bank.parquet", "label_column": "y"},
                {"name": "platform", "role": "platform", "data": "platform.parquet"},
            ],
            "model": {
                "type": "secureboost",
                "n_estimators": trees,
                "max_depth": depth,
                "max_bin": 32,
                "learning_rate": 0.3,
            },
            "crypto": {"key_bits": 2048},
            "evaluation": {"test_size": 0.2, "random_state": 42},
            "alignment": {"min_intersection": 100},
        },
        source=None,
        base_dir=folder,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--experiment", type=Path, default=REPO / "experiments" / "default_credit_secureboost.yaml"
    )
    parser.add_argument("--trees", type=int, default=None, help="override n_estimators")
    parser.add_argument("--scale", action="store_true", help="run the scale case instead")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=300)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. crypto.scheme=ou (repeatable)",
    )
    parser.add_argument(
        "--compare-secretflow",
        type=Path,
        default=None,
        metavar="RESULT_JSON",
        help="a SecretFlow result (wall_seconds, auc) replacing the reference of its scheme",
    )
    parser.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="where the parties' batches run (their node policy's compute.backend)",
    )
    parser.add_argument("--ray-nodes", type=int, default=2, help="nodes of the Ray cluster")
    parser.add_argument(
        "--ray-cpus-per-node", type=int, default=1, help="--num-cpus of each Ray node"
    )
    parser.add_argument(
        "--ray-on-all-interfaces",
        action="store_true",
        help="start the Ray cluster although this network namespace has other interfaces "
        "than loopback (Ray 2.55 binds every interface)",
    )
    parser.add_argument("--summary-json", type=Path, required=True)
    args = parser.parse_args()
    refusal = beyond_loopback_refusal("benchmarks/secureboost.py")
    if args.backend == "ray" and refusal is not None and not args.ray_on_all_interfaces:
        parser.error(f"--backend ray: {refusal}")

    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )
    with tempfile.TemporaryDirectory(prefix="sb-bench-") as tmp:
        os.environ["LAB_HOME"] = str(Path(tmp) / "home")
        os.environ["LAB_KEYS"] = str(Path(tmp) / "keys")  # the temporary home's audit key
        # This benchmark's own nodes may run OU when asked (the default policy allows Paillier).
        set_policy(["crypto.allowed_schemes=[paillier, ou]"], Path(tmp) / "home")
        cluster = None
        round_trip: dict[str, float] = {}
        if args.backend == "ray":
            cluster = LocalRayCluster(args.ray_nodes, args.ray_cpus_per_node).start()
            round_trip = gateway_round_trip(cluster.settings())
            set_policy(
                ["compute.backend=ray", f"compute.address={cluster.address}"],
                Path(tmp) / "home",
            )
        if args.scale:
            (Path(tmp) / "data").mkdir()
            experiment = scale_experiment(
                Path(tmp) / "data", args.rows, args.features, args.depth, args.trees or 1
            )
        else:
            overrides = [f"model.n_estimators={args.trees}"] if args.trees else []
            experiment = load_experiment(
                args.experiment,
                [*overrides, *args.overrides, "evaluation.pooled_reference=false"],
            )
        key_bits = experiment.config.crypto.key_bits
        costs = operation_costs(key_bits)
        try:
            with PeakMemory() as memory:
                started = time.perf_counter()
                summary = run_experiment(experiment, RunOptions())
                wall = time.perf_counter() - started
        finally:
            if cluster is not None:
                cluster.stop()
    timing = summary["timing"]
    trees = int(timing["trees"])
    joint_seconds = float(summary["stage_seconds"]["joint"])
    phases: dict[str, float] = {}
    ops: dict[str, dict[str, int]] = {}
    for party, clock in timing["phases"].items():
        ops[party] = {k: int(v) for k, v in clock.get("ops", {}).items()}
        for phase, seconds in clock.get("seconds", {}).items():
            phases[f"{party}.{phase}"] = float(seconds)
    # Platform phases that ran beside the bank's (streamed gradients) are not on the wall twice.
    path = timing.get("critical_path_per_tree", {})
    overlapped = float(path.get("overlap_mean", 0.0)) * int(path.get("trees", 0))
    communication = max(0.0, joint_seconds - (sum(phases.values()) - overlapped))
    bound = lower_bound(ops, costs, cores)
    scheme = str(experiment.config.crypto.scheme)
    lab = {
        "scheme": scheme,
        "wall_seconds": wall,
        "seconds_per_tree": joint_seconds / max(trees, 1),
        "auc": float(summary["metrics"]["test_auc"]),
    }
    override = (
        secretflow_override(args.compare_secretflow, scheme, trees)
        if args.compare_secretflow
        else None
    )
    result = {
        "experiment": summary["name"],
        "rows_train": summary["n_train"],
        "trees": trees,
        "key_bits": key_bits,
        "scheme": scheme,
        "test_auc": summary["metrics"]["test_auc"],
        "test_ks": summary["metrics"]["test_ks"],
        "wall_seconds_job": round(wall, 2),
        "seconds_training": round(joint_seconds, 2),
        "seconds_per_tree": round(joint_seconds / max(trees, 1), 2),
        "seconds_per_tree_by_phase": {
            **{k: round(v / max(trees, 1), 3) for k, v in sorted(phases.items())},
            "communication_and_runtime": round(communication / max(trees, 1), 3),
        },
        "operations": ops,
        "operation_costs_one_core_seconds": costs,
        "cores": cores,
        "lower_bound_seconds": round(bound, 2),
        "ratio_to_lower_bound": round(joint_seconds / bound, 2) if bound else None,
        "hops": summary["traffic"]["hops"],
        "bytes_sent": summary["traffic"]["bytes_sent"],
        "peak_rss_gib": {
            "process_tree": round(memory.peak_total, 2),
            "process_tree_pss": round(memory.peak_total_pss, 2),
            "largest_process": round(memory.peak_single, 2),
            "largest_process_anonymous": round(memory.peak_single_anonymous, 2),
            "by_process": memory.largest(),
            "by_process_anonymous": memory.largest(anonymous=True),
        },
        "compute": {
            "backend": args.backend,
            **(
                {
                    "ray_nodes": args.ray_nodes,
                    "ray_cpus_per_node": args.ray_cpus_per_node,
                    "gateway_round_trip": round_trip,
                }
                if args.backend == "ray"
                else {}
            ),
        },
        "load_average_at_end": list(os.getloadavg()),
        "stage_seconds": summary["stage_seconds"],
        "wall_seconds_summary": summary["wall_seconds"],
        "critical_path_per_tree": timing.get("critical_path_per_tree", {}),
        "per_tree_critical_path": timing.get("per_tree_critical_path", []),
        "references": compare(lab, list(REFERENCES), override),
    }
    args.summary_json.parent.mkdir(parents=True, exist_ok=True)
    args.summary_json.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print_comparison(lab, result["references"], result["critical_path_per_tree"])


def print_comparison(
    lab: dict[str, Any], references: list[dict[str, Any]], path: dict[str, Any]
) -> None:
    """A short table: the lab against each reference, and the per-tree critical path."""
    print(
        f"\nlab ({lab['scheme']}): wall {lab['wall_seconds']:.1f} s, "
        f"{lab['seconds_per_tree']:.2f} s/tree, AUC {lab['auc']:.4f}"
    )
    for ref in references:
        mark = "" if ref["same_scheme"] else " (other scheme)"
        print(
            f"  vs {ref['system']} {ref['scheme']}{mark}: wall {ref['wall_seconds']:.0f} s "
            f"(lab/ref {ref['wall_ratio']:.3f}), {ref['seconds_per_tree']:.1f} s/tree "
            f"(lab/ref {ref['per_tree_ratio']:.3f}), AUC {ref['auc']:.4f} "
            f"(lab - ref {ref['auc_difference']:+.4f}) [{ref['source']}]"
        )
    if path:
        print(
            "  critical path per tree: "
            + ", ".join(
                f"{k.removesuffix('_mean')} {v:.3f}" for k, v in path.items() if k.endswith("_mean")
            )
            + f"; critical side: {path['critical_side']}"
        )


if __name__ == "__main__":
    main()
