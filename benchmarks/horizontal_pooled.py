"""Horizontal references on FATE's default_credit split: pooled, each bank alone, FedAvg, FedAvg+DP.

Usage::

    .venv/bin/python benchmarks/horizontal_pooled.py --summary-json out/horizontal-pooled.json
    # fewer DP repeats / epsilons for a quick look
    .venv/bin/python benchmarks/horizontal_pooled.py --repeats 1 --epsilons 3

Everything trains with ``models.horizontal.train_local`` and the default
``LocalTrainingConfig`` (the settings a federated job uses), on FATE's three banks
(``data/default_credit/horizontal/bank_{1,2,3}.csv``, 8,000 rows each) and is scored on FATE's
``test.csv`` (6,000 rows). Features are FATE's z-scores, so the job schema only lists numeric
columns (``numeric_schema``); a second pooled MLP uses the schema the banks would publish
themselves (``schema_from_table`` + ``merge_schemas``) to show that path loses nothing.

- pooled: all 24,000 rows in one place, ``rounds x epochs`` epochs (as many passes over the
  data as the federated job makes), logistic regression and MLP(32, 16);
- each bank alone: the same on one bank's 8,000 rows;
- FedAvg: a plain in-process simulation, no Flower: each round every bank runs
  ``train_local`` from the global weights, and the new global weights are the average weighted
  by ``n_examples`` (McMahan et al. 2017);
- FedAvg + DP: the same with record-level DP-SGD at each bank, the noise planned by
  ``plan_noise`` for the whole job (all rounds) at δ = 1e-5; ε = inf is FedAvg without DP.
  Noise is seeded from ``secrets`` (as in production), so DP runs are repeated and averaged.

The issue's reference figures on the same data: pooled logistic regression AUC 0.730, pooled
MLP(32, 16) 0.773, each bank alone (MLP) 0.741-0.755.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from features.io import PartyTable, read_party_table  # noqa: E402
from models.horizontal import (  # noqa: E402
    DPConfig,
    DPState,
    FeatureEncoder,
    LocalTrainingConfig,
    arrays_to_parameters,
    build_model,
    evaluate_local,
    merge_schemas,
    numeric_schema,
    parameters_to_arrays,
    plan_noise,
    schema_from_table,
    train_local,
)
from models.horizontal.nets import ModelKind  # noqa: E402

DATA = REPO / "data" / "default_credit" / "horizontal"
DELTA = 1e-5
REFERENCE = {"pooled_logreg": 0.730, "pooled_mlp": 0.773, "bank_alone_mlp": [0.741, 0.755]}


def load() -> tuple[list[PartyTable], PartyTable]:
    banks = [
        read_party_table(DATA / f"bank_{i}.csv", id_column="id", label_column="y")
        for i in (1, 2, 3)
    ]
    test = read_party_table(DATA / "test.csv", id_column="id", label_column="y")
    return banks, test


def label(table: PartyTable) -> np.ndarray:
    assert table.label is not None
    return table.label


def auc_ks(model: Any, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    report = evaluate_local(model, x, y)
    return {"auc": round(report.auc, 4), "ks": round(report.ks, 4)}


def centralised(
    kind: ModelKind, x: np.ndarray, y: np.ndarray, epochs: int, test: tuple[np.ndarray, np.ndarray]
) -> dict[str, Any]:
    start = time.perf_counter()
    model = build_model(kind, x.shape[1], seed=0)
    config = LocalTrainingConfig(epochs=epochs, seed=0)
    train_local(model, x, y, config)
    return {**auc_ks(model, *test), "seconds": round(time.perf_counter() - start, 1)}


def fedavg(
    kind: ModelKind,
    data: Sequence[tuple[np.ndarray, np.ndarray]],
    rounds: int,
    test: tuple[np.ndarray, np.ndarray],
    dp: DPConfig | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    start = time.perf_counter()
    n_inputs = data[0][0].shape[1]
    global_model = build_model(kind, n_inputs, seed=0)
    arrays = parameters_to_arrays(global_model)
    banks = [build_model(kind, n_inputs) for _ in data]
    config = LocalTrainingConfig()
    states: list[DPState | None] = []
    plans = []
    for _, y in data:
        if dp is None:
            states.append(None)
            continue
        plan = plan_noise(
            dp,
            n_examples=len(y),
            batch_size=config.batch_size,
            epochs_per_round=config.epochs,
            rounds=rounds,
        )
        plans.append(plan)
        states.append(DPState.start(plan))
    curve = []
    for r in range(rounds):
        results = []
        for i, (x, y) in enumerate(data):
            local = LocalTrainingConfig(seed=seed * 100_003 + r * 101 + i)
            result = train_local(
                banks[i], x, y, local, global_arrays=arrays, dp=dp, dp_state=states[i]
            )
            states[i] = result.dp_state
            results.append(result)
        total = sum(res.n_examples for res in results)
        arrays = [
            sum(res.arrays[k] * (res.n_examples / total) for res in results)
            for k in range(len(arrays))
        ]
        if (r + 1) % 5 == 0 or r + 1 == rounds:
            arrays_to_parameters(global_model, arrays)
            curve.append({"round": r + 1, **auc_ks(global_model, *test)})
    out: dict[str, Any] = {**curve[-1], "curve": curve}
    if dp is not None:
        out["noise_multiplier"] = round(plans[0].noise_multiplier, 4)
        out["sample_rate"] = plans[0].sample_rate
        out["planned_epsilon"] = round(plans[0].planned_epsilon, 4)
        out["spent_epsilon"] = [
            round(s.epsilon(DELTA, dp.accountant), 4) for s in states if s is not None
        ]
    out["seconds"] = round(time.perf_counter() - start, 1)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--summary-json", type=Path)
    parser.add_argument("--rounds", type=int, default=20, help="federated rounds (1 epoch each)")
    parser.add_argument("--epsilons", default="1,3,8,inf", help="comma-separated ε values")
    parser.add_argument("--repeats", type=int, default=3, help="DP runs per ε (fresh noise)")
    args = parser.parse_args(argv)

    banks, test_table = load()
    names = banks[0].feature_names
    encoder = FeatureEncoder.from_schema(numeric_schema(names))
    data = [(encoder.transform(b.features), label(b)) for b in banks]
    test = (encoder.transform(test_table.features), label(test_table))
    x_pool = np.concatenate([x for x, _ in data])
    y_pool = np.concatenate([y for _, y in data])
    epochs = args.rounds * LocalTrainingConfig().epochs
    summary: dict[str, Any] = {
        "data": "FATE default_credit horizontal: 3 banks x 8,000 rows, test 6,000 rows",
        "config": LocalTrainingConfig().__dict__,
        "rounds": args.rounds,
        "pooled_epochs": epochs,
        "reference": REFERENCE,
    }

    def show(name: str, result: dict[str, Any]) -> None:
        extra = {k: v for k, v in result.items() if k not in ("curve", "auc", "ks")}
        print(f"{name:<34} AUC {result['auc']:.4f}  KS {result['ks']:.4f}  {extra}", flush=True)

    for kind in ("logreg", "mlp"):
        summary[f"pooled_{kind}"] = centralised(kind, x_pool, y_pool, epochs, test)
        show(f"pooled {kind}", summary[f"pooled_{kind}"])

    published = merge_schemas([schema_from_table(b.features) for b in banks])
    own = FeatureEncoder.from_schema(published)
    x_own = np.concatenate([own.transform(b.features) for b in banks])
    summary["pooled_mlp_published_schema"] = centralised(
        "mlp", x_own, y_pool, epochs, (own.transform(test_table.features), test[1])
    )
    show("pooled mlp (banks' own schemas)", summary["pooled_mlp_published_schema"])

    for kind in ("logreg", "mlp"):
        per_bank = []
        for i, (x, y) in enumerate(data, start=1):
            per_bank.append(centralised(kind, x, y, epochs, test))
            show(f"bank {i} alone {kind}", per_bank[-1])
        summary[f"bank_alone_{kind}"] = per_bank

    for kind in ("logreg", "mlp"):
        summary[f"fedavg_{kind}"] = fedavg(kind, data, args.rounds, test)
        show(f"FedAvg {kind}", summary[f"fedavg_{kind}"])

    dp_results: dict[str, Any] = {}
    for text in args.epsilons.split(","):
        eps = float(text)
        if math.isinf(eps):
            dp_results["inf"] = {**summary["fedavg_mlp"], "note": "FedAvg without DP"}
            continue
        runs = [
            fedavg("mlp", data, args.rounds, test, DPConfig(eps, DELTA), seed=rep)
            for rep in range(args.repeats)
        ]
        aucs = [run["auc"] for run in runs]
        dp_results[text] = {
            "auc_mean": round(float(np.mean(aucs)), 4),
            "auc_std": round(float(np.std(aucs)), 4),
            "auc_runs": aucs,
            "ks_mean": round(float(np.mean([run["ks"] for run in runs])), 4),
            "noise_multiplier": runs[0]["noise_multiplier"],
            "sample_rate": runs[0]["sample_rate"],
            "planned_epsilon": runs[0]["planned_epsilon"],
            "spent_epsilon": runs[0]["spent_epsilon"],
            "seconds_per_run": round(float(np.mean([run["seconds"] for run in runs])), 1),
        }
        r = dp_results[text]
        print(
            f"FedAvg+DP mlp ε={eps:<5g} δ={DELTA:g}     AUC {r['auc_mean']:.4f} ± "
            f"{r['auc_std']:.4f} over {args.repeats}  σ={r['noise_multiplier']} "
            f"planned ε={r['planned_epsilon']} spent ε={r['spent_epsilon']}",
            flush=True,
        )
    summary["fedavg_dp_mlp"] = dp_results

    if args.summary_json:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
