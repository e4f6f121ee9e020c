"""Project SecureBoost's time per tree to more rows and cores from a measured scale run.

Usage::

    # one measured tree of the scale case (80,000 training rows x 300 platform features)
    .venv/bin/python benchmarks/secureboost.py --scale --summary-json out/sb-scale.json
    # per-tree time at 1M and 10M rows x 300 features on 16/64/256 cores, as a markdown table
    .venv/bin/python benchmarks/scale_projection.py out/sb-scale.json \\
        --rows 1000000 10000000 --features 300 --cores 16 64 256 --markdown out/projection.md
    # with the scale-out efficiency a Ray run of the same case measured (local / Ray per tree)
    .venv/bin/python benchmarks/scale_projection.py out/sb-scale.json --ray out/sb-ray2.json

The model (one tree, the measured depth and bins; every term from the run's own figures):

- **Per-operation cost on one core**, per phase: the phase's measured seconds per tree times the
  cores the run had, over the phase's operations per tree (encryptions, histogram additions,
  bin sums packed, ciphertexts decrypted). These are end-to-end costs of the real code (batching,
  copies, pool scheduling included), not the kernels' micro-benchmark costs.
- **Operations at the target size**: the bank encrypts one ciphertext per training row (x rows);
  the platform adds one ciphertext per row per feature at every level (x rows x features); bin
  sums packed and ciphertexts decrypted depend on features, bins and tree nodes, not rows
  (x features). The other measured phases (split search, leaf weights, applying splits, key
  generation) scale as their own work does (split search x features, key generation not at
  all, the rest x rows).
- **Cores**: the parallel phases divide by the target cores times a scale-out efficiency
  (``--efficiency``, or from ``--ray``: this machine's local seconds per tree over the Ray run's
  at equal cores, capped at 1); the other phases stay on one core (they are serial in the
  code).
- **Runtime and transport**: the tree's transport and runtime on the bank's critical path
  (Flower, Ray, serialising and relaying ciphertexts through the coordinator), scaled x rows
  and kept on one core (the coordinator relays every message through one process), plus the
  ciphertexts that cross domains (one per row to each platform, the packed histograms back)
  over a link of ``--link-gbit`` Gbit/s, which a run on one machine cannot measure.
  Once-per-job work (binning, keys, scoring the test rows) is not per tree and not in it.
- **Memory**: the gradient ciphertexts a platform holds per tree (one per row), and, as an
  upper estimate, the largest process's whole measured peak scaled x rows (its fixed part,
  the imported libraries, does not grow), to show where one process stops fitting.

What it leaves out: stragglers and data skew across nodes, the object store spilling to disk,
and the bank's background randomness pool (it only helps).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Parallel phases and how their operation counts grow: "rows", "rows*features" or "features".
PARALLEL_PHASES = {
    "bank.encrypt": "rows",
    "platform.histogram": "rows*features",
    "platform.pack": "features",
    "bank.decrypt": "features",
}
#: The other measured phases (plain numpy on one core of the party's process, whatever its
#: compute backend) and how their work grows.
SERIAL_PHASES = {
    "bank.split_search": "features",
    "bank.leaves": "rows",
    "bank.keygen": "none",
    "platform.apply_splits": "rows",
}


@dataclass(frozen=True)
class Measured:
    """What one scale run measured, per tree.

    Attributes
    ----------
    rows : int
        Training rows.
    features : int
        Platform features.
    cores : int
        Cores the run had.
    key_bits : int
        Modulus size (ciphertexts are ``key_bits / 4`` bytes).
    phase_seconds : dict of str to float
        Seconds per tree by ``party.phase``.
    ops : dict of str to float
        Operations per tree by ``party.phase``.
    runtime_seconds : float
        Seconds per tree besides the parties' phases: the critical path's transport and
        runtime when the summary has it, else the joint stage's leftover.
    largest_process_gib : float
        Peak resident memory of the largest process.
    """

    rows: int
    features: int
    cores: int
    key_bits: int
    phase_seconds: dict[str, float]
    ops: dict[str, float]
    runtime_seconds: float
    largest_process_gib: float

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any], features: int) -> Measured:
        """Read a ``benchmarks/secureboost.py --scale`` summary (``--summary-json``)."""
        trees = max(int(summary["trees"]), 1)
        by_phase = dict(summary["seconds_per_tree_by_phase"])
        leftover = float(by_phase.pop("communication_and_runtime", 0.0))
        # The tree's own transport and runtime (the bank's critical path); the joint stage's
        # leftover also holds once-per-job work (binning, key generation, scoring).
        path = summary.get("critical_path_per_tree") or {}
        runtime = float(path.get("transport_and_runtime_mean", leftover))
        ops: dict[str, float] = {}
        for party, counts in summary["operations"].items():
            role = "bank" if party == "bank" else "platform"
            for phase, count in counts.items():
                key = f"{role}.{phase}"
                ops[key] = ops.get(key, 0.0) + float(count) / trees
        phases: dict[str, float] = {}
        for key, seconds in by_phase.items():
            party, _, phase = key.partition(".")
            role = "bank" if party == "bank" else "platform"
            phases[f"{role}.{phase}"] = phases.get(f"{role}.{phase}", 0.0) + float(seconds)
        return cls(
            rows=int(summary["rows_train"]),
            features=features,
            cores=int(summary["cores"]),
            key_bits=int(summary["key_bits"]),
            phase_seconds=phases,
            ops=ops,
            runtime_seconds=runtime,
            largest_process_gib=float(summary["peak_rss_gib"]["largest_process"]),
        )

    def core_seconds_per_op(self, phase: str) -> float:
        """One core's seconds per operation of a parallel phase, as this run measured it."""
        ops = self.ops.get(phase, 0.0)
        if ops <= 0:
            raise ValueError(f"the run counted no operations for {phase}")
        return self.phase_seconds.get(phase, 0.0) * self.cores / ops


def _growth(kind: str, rows: float, features: float) -> float:
    return {
        "rows": rows,
        "features": features,
        "rows*features": rows * features,
        "none": 1.0,
    }[kind]


def project(
    measured: Measured,
    rows: int,
    features: int,
    cores: int,
    *,
    efficiency: float = 1.0,
    link_gbit: float = 10.0,
) -> dict[str, float]:
    """Seconds per tree at ``rows`` x ``features`` on ``cores`` cores, by term.

    Parameters
    ----------
    measured : Measured
        The run the costs come from.
    rows, features, cores : int
        The target size.
    efficiency : float
        Scale-out efficiency of the parallel phases (1 = perfect).
    link_gbit : float
        Bandwidth between the bank's and the platform's domains.

    Returns
    -------
    dict of str to float
        Seconds per tree of each parallel phase, ``serial`` (split search, leaves),
        ``runtime``, ``transfer`` and ``total``; ``gradient_gib`` (the gradient ciphertexts
        one platform holds) and ``largest_process_gib`` (projected).
    """
    if not 0 < efficiency <= 1:
        raise ValueError(f"efficiency must be in (0, 1], got {efficiency}")
    r = rows / measured.rows
    f = features / measured.features
    out: dict[str, float] = {}
    for phase, kind in PARALLEL_PHASES.items():
        ops = measured.ops.get(phase, 0.0) * _growth(kind, r, f)
        out[phase] = ops * measured.core_seconds_per_op(phase) / (cores * efficiency)
    out["serial"] = sum(
        measured.phase_seconds.get(phase, 0.0) * _growth(kind, r, f)
        for phase, kind in SERIAL_PHASES.items()
    )
    out["runtime"] = measured.runtime_seconds * r
    ciphertext = measured.key_bits // 4
    crossing = (
        measured.ops.get("bank.encrypt", 0.0) * r + measured.ops.get("bank.decrypt", 0.0) * f
    ) * ciphertext
    out["transfer"] = crossing * 8 / (link_gbit * 1e9)
    out["total"] = sum(out.values())
    out["gradient_gib"] = measured.ops.get("bank.encrypt", 0.0) * r * ciphertext / 2**30
    out["largest_process_gib"] = measured.largest_process_gib * r
    return out


def efficiency_from(local: Mapping[str, Any], ray: Mapping[str, Any]) -> float:
    """Local seconds per tree over the Ray run's at equal cores, at most 1."""
    return min(1.0, float(local["seconds_per_tree"]) / float(ray["seconds_per_tree"]))


def table(
    measured: Measured,
    rows: Sequence[int],
    features: int,
    cores: Sequence[int],
    *,
    efficiency: float,
    link_gbit: float,
) -> str:
    """The projection as a markdown table, one line per (rows, cores)."""
    lines = [
        "| rows | cores | encrypt | histogram | pack | decrypt | serial | runtime | "
        f"transfer ({link_gbit:g} Gbit/s) | **per tree** | gradients held (GiB) | "
        "largest process (GiB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in rows:
        for c in cores:
            p = project(measured, n, features, c, efficiency=efficiency, link_gbit=link_gbit)
            lines.append(
                f"| {n:,} | {c} | {p['bank.encrypt']:.1f} | {p['platform.histogram']:.1f} | "
                f"{p['platform.pack']:.1f} | {p['bank.decrypt']:.1f} | {p['serial']:.1f} | "
                f"{p['runtime']:.1f} | {p['transfer']:.1f} | **{p['total']:.0f} s** | "
                f"{p['gradient_gib']:.1f} | {p['largest_process_gib']:.1f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("summary", type=Path, help="a benchmarks/secureboost.py --scale summary")
    parser.add_argument(
        "--measured-features",
        type=int,
        default=300,
        help="platform features of the measured run (the scale case's --features)",
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--features", type=int, default=300)
    parser.add_argument("--cores", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--efficiency", type=float, default=None)
    parser.add_argument(
        "--ray", type=Path, default=None, help="a Ray run of the same case: its efficiency"
    )
    parser.add_argument("--link-gbit", type=float, default=10.0)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    summary = json.loads(args.summary.read_text(encoding="utf-8"))
    measured = Measured.from_summary(summary, args.measured_features)
    if args.efficiency is not None:
        efficiency = args.efficiency
    elif args.ray is not None:
        efficiency = efficiency_from(summary, json.loads(args.ray.read_text(encoding="utf-8")))
    else:
        efficiency = 1.0
    out = table(
        measured,
        args.rows,
        args.features,
        args.cores,
        efficiency=efficiency,
        link_gbit=args.link_gbit,
    )
    costs = {
        phase: round(measured.core_seconds_per_op(phase) * 1e6, 3) for phase in PARALLEL_PHASES
    }
    header = (
        f"measured: {measured.rows:,} rows x {measured.features} features on "
        f"{measured.cores} cores; one core's microseconds per operation {costs}; "
        f"scale-out efficiency {efficiency:.2f}"
    )
    print(header)
    print(out)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(header + "\n\n" + out + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
