"""Benchmark horizontal jobs through the embedded Flower runtime: SecAgg cost, bytes, DP curve.

Usage::

    # everything (about 15 minutes on 2 cores)
    .venv/bin/python benchmarks/horizontal.py --summary-json out/horizontal.json \
        --plot out/horizontal-dp.png
    # only the secure-aggregation cost, or only the utility-privacy curve
    .venv/bin/python benchmarks/horizontal.py --only secagg
    .venv/bin/python benchmarks/horizontal.py --only dp --epsilons 3 inf

Two measurements, each through the same job pipeline a user runs (``run_embedded``: Flower's
simulation runtime, one simulated SuperNode per bank):

1. **Secure aggregation cost.** Five synthetic non-IID banks (``features.synth``: different
   industry mixes, sizes and default rates) train an MLP of at least 100,000 parameters for a
   few rounds, once with secure aggregation and once with plain FedAvg, alternating so that
   machine noise hits both. Reported: seconds per round (training incl. secure aggregation,
   and training + bank-side evaluation), their ratio, and bytes per bank per round up and
   down (payload bytes: model arrays, masked vectors, keys, shares, metrics).
2. **Utility-privacy curve.** FATE's horizontal default_credit split (three banks of 8,000
   rows, global evaluation on the 6,000-row test file) with the federated MLP(32, 16) at
   ε ∈ {1, 3, 8, ∞} (δ = 1e-5, RDP accountant, record-level DP-SGD at every bank, secure
   aggregation on): global test AUC and the accountant's cumulative ε, as a table and a PNG.
   The issue's references on the same data: pooled MLP 0.773, each bank alone 0.741-0.755.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features.synth import SMEConfig, generate, write  # noqa: E402
from federated.result import JobResult  # noqa: E402
from federated.simulation import run_embedded  # noqa: E402
from lab.config import Experiment, experiment_from_dict, load_experiment  # noqa: E402

EXPERIMENT = REPO / "experiments" / "default_credit_horizontal_dp.yaml"


def run_job(experiment: Experiment) -> tuple[JobResult, float]:
    """Run one job in a temporary result folder; return its result and wall seconds."""
    with tempfile.TemporaryDirectory(prefix="hz-bench-") as tmp:
        started = time.perf_counter()
        result = run_embedded(experiment.job_spec(), experiment.bindings(), Path(tmp))
        return result, time.perf_counter() - started


# ---------------------------------------------------------------- secure aggregation cost


def synthetic_banks(folder: Path, n_banks: int, seed: int) -> None:
    write(
        generate(SMEConfig(n_enterprises=30_000, n_banks=n_banks, bank_share=0.2, seed=seed)),
        folder,
        overwrite=True,
    )


def secagg_experiment(
    folder: Path, n_banks: int, hidden: list[int], rounds: int, secure: bool
) -> Experiment:
    raw = {
        "name": f"hz-bench-{'secagg' if secure else 'plain'}",
        "kind": "horizontal",
        "parties": [
            {
                "name": f"bank_{k}",
                "role": "bank",
                "data": f"bank_{k}.csv",
                "id_column": "enterprise_id",
                "label_column": "default_12m",
            }
            for k in range(1, n_banks + 1)
        ],
        "model": {"type": "mlp", "hidden": hidden, "rounds": rounds, "seed": 1},
        "secure_aggregation": {"enabled": secure},
        "evaluation": {"test_size": 0.2, "random_state": 42, "stratify": True},
    }
    return experiment_from_dict(raw, source=None, base_dir=folder)


def per_round(result: JobResult) -> dict[str, Any]:
    rounds = result.joint.details["rounds"]
    train = [r["train_seconds"] for r in rounds]
    full = [r["train_seconds"] + r["evaluate_seconds"] for r in rounds]
    secagg = [r["secagg_seconds"] for r in rounds]
    banks = sorted(rounds[0]["bytes_up"])
    up = {b: statistics.mean(r["bytes_up"].get(b, 0) for r in rounds) for b in banks}
    down = {b: statistics.mean(r["bytes_down"].get(b, 0) for r in rounds) for b in banks}
    return {
        "train_seconds": train,
        "round_seconds": full,
        "secagg_seconds": secagg,
        "bytes_up_per_bank": up,
        "bytes_down_per_bank": down,
        "dropouts": [r["dropped"] for r in rounds if r["dropped"]],
    }


def measure_secagg(n_banks: int, hidden: list[int], rounds: int, repeats: int) -> dict[str, Any]:
    from models.horizontal import build_model, n_parameters

    with tempfile.TemporaryDirectory(prefix="hz-banks-") as tmp:
        folder = Path(tmp)
        synthetic_banks(folder, n_banks, seed=5)
        runs: dict[str, list[dict[str, Any]]] = {"secagg": [], "plain": []}
        params = None
        for repeat in range(repeats):
            order = ("secagg", "plain") if repeat % 2 == 0 else ("plain", "secagg")
            for mode in order:
                experiment = secagg_experiment(folder, n_banks, hidden, rounds, mode == "secagg")
                result, wall = run_job(experiment)
                if params is None:
                    schema = result.joint.details["settings"]
                    from federated.horizontal_protocol import HorizontalSettings

                    settings = HorizontalSettings.from_json(json.dumps(schema))
                    n_inputs = settings.encoder().n_outputs
                    params = n_parameters(build_model("mlp", n_inputs, tuple(hidden)))
                info = per_round(result)
                info["wall_seconds"] = wall
                runs[mode].append(info)
                print(
                    f"  {mode:6s} repeat {repeat}: {statistics.median(info['round_seconds']):.3f} "
                    f"s/round (train {statistics.median(info['train_seconds']):.3f} s)",
                    flush=True,
                )

    def median(mode: str, key: str) -> float:
        # Round 1 includes the ClientApps' first imports (torch); it is excluded.
        values = [v for run in runs[mode] for v in run[key][1:]] or [
            v for run in runs[mode] for v in run[key]
        ]
        return statistics.median(values)

    out: dict[str, Any] = {
        "n_banks": n_banks,
        "hidden": hidden,
        "parameters": params,
        "rounds_per_run": rounds,
        "repeats": repeats,
    }
    for key in ("train_seconds", "round_seconds", "secagg_seconds"):
        out[f"secagg_{key}_median"] = median("secagg", key)
        out[f"plain_{key}_median"] = median("plain", key)
    out["ratio_train"] = out["secagg_train_seconds_median"] / out["plain_train_seconds_median"]
    out["ratio_round"] = out["secagg_round_seconds_median"] / out["plain_round_seconds_median"]
    for mode in ("secagg", "plain"):
        last = runs[mode][-1]
        out[f"{mode}_bytes_up_per_bank_per_round"] = last["bytes_up_per_bank"]
        out[f"{mode}_bytes_down_per_bank_per_round"] = last["bytes_down_per_bank"]
    out["runs"] = runs
    return out


# ---------------------------------------------------------------- utility-privacy curve


def measure_dp(epsilons: list[float], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for eps in epsilons:
        for repeat in range(repeats):
            overrides = [] if math.isinf(eps) else [f"model.dp_epsilon={eps}"]
            experiment = load_experiment(EXPERIMENT, overrides)
            if math.isinf(eps):
                raw = experiment.config.model_dump(mode="json")
                raw["model"]["dp_epsilon"] = None
                for party in raw["parties"]:
                    party["data"] = str(experiment.data_paths[party["name"]])
                raw["evaluation"]["holdout"]["data"] = str(experiment.holdout_path)
                experiment = experiment_from_dict(raw, source=None, base_dir=EXPERIMENT.parent)
            result, wall = run_job(experiment)
            report = result.joint.report
            assert report is not None
            eps_by_bank = result.joint.details.get("epsilon_by_bank", {})
            alone = result.joint.details["bank_alone"]
            row = {
                "target_epsilon": eps,
                "repeat": repeat,
                "test_auc": report.auc,
                "test_ks": report.ks,
                "epsilon_reported_max": max(eps_by_bank.values()) if eps_by_bank else None,
                "planned_epsilon": result.joint.details.get("planned_epsilon_by_bank", {}),
                "bank_1_alone_holdout_auc": alone.get("bank_1", {}).get("holdout", {}).get("auc"),
                "wall_seconds": wall,
            }
            rows.append(row)
            print(
                f"  ε={eps}: AUC {report.auc:.4f} (accountant ε {row['epsilon_reported_max']})",
                flush=True,
            )
    return rows


def plot_curve(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = sorted({r["target_epsilon"] for r in rows if not math.isinf(r["target_epsilon"])})
    means = [
        statistics.mean(r["test_auc"] for r in rows if r["target_epsilon"] == e) for e in finite
    ]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(finite, means, "o-", label="federated MLP + DP-SGD (secure aggregation)")
    no_dp = [r["test_auc"] for r in rows if math.isinf(r["target_epsilon"])]
    if no_dp:
        ax.axhline(statistics.mean(no_dp), color="tab:green", ls="--", label="federated, no DP")
    ax.axhline(0.773, color="grey", ls=":", label="pooled MLP (issue reference)")
    ax.axhspan(0.741, 0.755, color="tab:red", alpha=0.15, label="each bank alone (reference)")
    ax.set_xscale("log")
    ax.set_xlabel("ε (δ = 1e-5, per loan record, all rounds)")
    ax.set_ylabel("test AUC (6,000-row FATE test file)")
    ax.set_title("Utility vs privacy, FATE default_credit, 3 banks")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("secagg", "dp"), default=None)
    parser.add_argument("--banks", type=int, default=5)
    parser.add_argument("--hidden", type=int, nargs="+", default=[384, 256])
    parser.add_argument("--rounds", type=int, default=6, help="rounds per SecAgg-cost run")
    parser.add_argument("--repeats", type=int, default=2, help="runs per mode (alternating)")
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0, math.inf])
    parser.add_argument("--dp-repeats", type=int, default=1)
    parser.add_argument("--summary-json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=REPO / "out" / "horizontal-dp.png")
    args = parser.parse_args(argv)
    summary: dict[str, Any] = {}
    if args.only in (None, "secagg"):
        print(f"secure aggregation cost: {args.banks} banks, MLP {args.hidden}", flush=True)
        cost = measure_secagg(args.banks, args.hidden, args.rounds, args.repeats)
        summary["secagg_cost"] = cost
        print(
            f"  {cost['parameters']:,} parameters; per round: secagg "
            f"{cost['secagg_round_seconds_median']:.3f} s vs plain "
            f"{cost['plain_round_seconds_median']:.3f} s (ratio {cost['ratio_round']:.2f}); "
            f"training step only: ratio {cost['ratio_train']:.2f}"
        )
        print(
            f"  bytes up per bank per round (secagg): {cost['secagg_bytes_up_per_bank_per_round']}"
        )
        print(
            f"  bytes up per bank per round (plain):  {cost['plain_bytes_up_per_bank_per_round']}"
        )
    if args.only in (None, "dp"):
        print("utility-privacy curve on FATE default_credit (3 banks)", flush=True)
        rows = measure_dp(args.epsilons, args.dp_repeats)
        summary["dp_curve"] = rows
        plot_curve(rows, args.plot)
        summary["dp_plot"] = str(args.plot)
        print(f"\n{'ε':>6} {'AUC':>7} {'accountant ε':>13}")
        for row in rows:
            eps = row["epsilon_reported_max"]
            print(
                f"{row['target_epsilon']:>6} {row['test_auc']:>7.4f} "
                f"{'-' if eps is None else f'{eps:.4f}':>13}"
            )
        print(f"plot: {args.plot}")
    if args.summary_json is not None:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
