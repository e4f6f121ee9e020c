"""Reporting a horizontal job: per-round records, privacy, secure aggregation, registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pandas as pd

from features.safe_csv import write_csv
from federated.result import JobResult
from lab import registry, tracking
from lab.config import Experiment
from lab.reporting import Reporting
from models.horizontal.settings import HorizontalModelSettings
from models.privacy import PrivacyEvent, epsilon

POOLED_NOTE = (
    "pooled reference: one process read every bank's file and trained the same model on all "
    "their training rows; possible only in demos and benchmarks, never in a real deployment"
)


def privacy_summary(result: JobResult, experiment: Experiment) -> dict[str, Any]:
    """(ε, δ) of the job: each bank's DP-SGD events composed by Opacus; the job's is the max.

    ``epsilon`` is recomposed here from the events the banks reported (noise, sampling rate,
    steps) with the job's accountant, and checked against each bank's own cumulative figure.
    """
    model = cast(HorizontalModelSettings, experiment.config.model)
    details = result.joint.details
    raw = details.get("privacy_events_by_bank", {})
    if not raw:
        return {
            "epsilon": None,
            "delta": None,
            "accountant": None,
            "unit": None,
            "note": "no differential privacy: the global model is trained on exact updates",
        }
    by_bank: dict[str, dict[str, float]] = {}
    for bank, entries in raw.items():
        events = [PrivacyEvent.from_dict(e) for e in entries]
        by_bank[bank] = {
            "epsilon": epsilon(events, model.dp_delta, model.accountant),
            "reported_epsilon": float(details.get("epsilon_by_bank", {}).get(bank, 0.0)),
            "planned_epsilon": float(details.get("planned_epsilon_by_bank", {}).get(bank, 0.0)),
            "steps": sum(e.steps for e in events),
            "noise_multiplier": events[0].noise_multiplier,
            "sample_rate": events[0].sample_rate,
        }
    worst = max(v["epsilon"] for v in by_bank.values())
    return {
        "epsilon": worst,
        "delta": model.dp_delta,
        "accountant": model.accountant,
        "unit": "record",
        "unit_detail": "one loan record of one bank (record-level DP-SGD at every bank)",
        "target_epsilon": model.dp_epsilon,
        "mechanism": "dp-sgd (Opacus, Poisson sampling, per-sample clipping, Gaussian noise)",
        "by_bank": by_bank,
        "events": raw,
        "note": (
            "cumulative over every round (the accountant's history is kept at each bank across "
            "rounds); an enterprise with loans at several banks, or a whole bank, is not the "
            "protected unit"
        ),
    }


def secure_aggregation_summary(result: JobResult) -> dict[str, Any]:
    """Whether updates were masked, how many dropouts a round tolerates, what happened."""
    info = dict(result.joint.details.get("secure_aggregation", {}))
    info.setdefault("enabled", False)
    info.setdefault("dropouts_tolerated", 0)
    return info


def round_frame(result: JobResult) -> pd.DataFrame:
    """One row per round: seconds, dropouts, and per-bank ε and bank-side AUC."""
    rows = []
    for record in result.joint.details.get("rounds", []):
        row: dict[str, Any] = {
            "round": record["round"],
            "train_seconds": record["train_seconds"],
            "secagg_seconds": record["secagg_seconds"],
            "evaluate_seconds": record["evaluate_seconds"],
            "banks": len(record["banks"]),
            "dropped": ";".join(f"{b}: {r}" for b, r in record["dropped"].items()),
        }
        for bank, metrics in record["train"].items():
            for key in ("epsilon", "train_loss"):
                if key in metrics:
                    row[f"{bank}_{key}"] = metrics[key]
        for bank, metrics in record["evaluate"].items():
            if "auc" in metrics:
                row[f"{bank}_auc"] = metrics["auc"]
        rows.append(row)
    return pd.DataFrame(rows)


def timing_summary(result: JobResult) -> dict[str, Any]:
    """Mean seconds per round (training incl. secure aggregation, of which SecAgg; evaluation)."""
    frame = round_frame(result)
    if frame.empty:
        return {"rounds": 0}
    return {
        "rounds": len(frame),
        "train_seconds_per_round": float(frame["train_seconds"].mean()),
        "secagg_seconds_per_round": float(frame["secagg_seconds"].mean()),
        "evaluate_seconds_per_round": float(frame["evaluate_seconds"].mean()),
    }


def baselines(result: JobResult) -> dict[str, Any]:
    """Bank-alone references and the global model, each bank's test rows side by side."""
    details = result.joint.details
    bank_side = details.get("bank_side", {})
    out: dict[str, Any] = {}
    for bank, reports in details.get("bank_alone", {}).items():
        out[bank] = {
            "alone_own_test_auc": reports["own_test"]["auc"],
            "global_own_test_auc": bank_side.get(bank, {}).get("auc"),
            "alone_holdout_auc": reports.get("holdout", {}).get("auc"),
        }
    return out


def log_horizontal(
    run: tracking.RunWriter,
    target: tracking.TrackingTarget,
    folder: Path,
    result: JobResult,
    experiment: Experiment,
) -> dict[str, Any]:
    """Log per-round metrics and artifacts; register the global model; return registry info."""
    details = result.joint.details
    frame = round_frame(result)
    for column in frame.columns:
        if column in ("round", "dropped"):
            continue
        values = pd.to_numeric(frame[column], errors="coerce").dropna().tolist()
        run.log_metric_series(f"round_{column}", values)
    hz_dir = folder / "horizontal"
    hz_dir.mkdir()
    write_csv(frame, hz_dir / "rounds.csv")
    (hz_dir / "rounds.json").write_text(json.dumps(details.get("rounds", []), indent=1))
    (hz_dir / "bank_alone.json").write_text(json.dumps(details.get("bank_alone", {}), indent=1))
    run.log_artifacts(hz_dir, "horizontal")
    name = experiment.config.registry.model_name or experiment.config.name
    return registry.register_horizontal(
        target,
        run,
        Path(details["model_file"]),
        json.dumps(details["settings"], sort_keys=True),
        name,
        alias=experiment.config.registry.alias,
    )


#: The horizontal model types' reporting hooks (named by their descriptors).
REPORTING = Reporting(log=log_horizontal, timing=timing_summary)
