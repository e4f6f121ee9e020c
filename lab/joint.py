"""Reporting a trained joint model: per-tree metrics, timings, importance, privacy, registry."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from features.safe_csv import write_csv
from federated.result import JobResult
from lab import registry, tracking
from lab.config import Experiment
from lab.reports import plot_importance
from models.privacy import PrivacyEvent

UNKNOWN_GROUP = "ungrouped"


def importance_frame(result: JobResult, experiment: Experiment) -> pd.DataFrame:
    """Split counts and total gain per (party, feature), with the feature's group."""
    rows = result.joint.details.get("importance", [])
    frame = pd.DataFrame(rows, columns=["party", "feature", "splits", "gain"])
    groups = experiment.feature_groups()
    frame["group"] = [
        groups.get((p, f), UNKNOWN_GROUP)
        for p, f in zip(frame["party"], frame["feature"], strict=True)
    ]
    total = frame["gain"].sum()
    frame["gain_share"] = frame["gain"] / total if total else 0.0
    return frame.sort_values("gain", ascending=False).reset_index(drop=True)


def privacy_summary(result: JobResult) -> dict[str, Any]:
    """(ε, δ) each platform's node charged for its own releases (Opacus RDP composition).

    The figures are the nodes' own (:attr:`federated.result.JobResult.nodes`): each platform
    counted the releases it made and charged its own ledger; the job reports the largest ε
    (each platform's data is protected by its own charge).
    """
    charged = {
        party: report
        for party, report in result.nodes.items()
        if isinstance(report, dict) and report.get("events")
    }
    if not charged:
        sees = (
            "exact per-bin label counts of platform columns and its own gradients"
            if result.model_type == "hetero_lr"
            else "exact platform histogram sums"
        )
        return {
            "epsilon": None,
            "delta": None,
            "accountant": None,
            "unit": None,
            "note": f"no differential privacy: the bank sees {sees}",
        }
    party, worst = max(charged.items(), key=lambda item: float(item[1]["epsilon"]))
    events = [PrivacyEvent.from_dict(e) for e in worst["events"]]
    return {
        "epsilon": float(worst["epsilon"]),
        "delta": float(worst["delta"]),
        "accountant": str(worst.get("accountant", "rdp")),
        "unit": events[0].unit,
        "mechanism": events[0].mechanism,
        "events": worst["events"],
        "charged_by": party,
        "per_party": {
            p: {"epsilon": r["epsilon"], "releases": r["releases"], "ledger": r.get("ledger")}
            for p, r in charged.items()
        },
        "note": (
            "counted and charged by each platform's own node; covers the platform's histogram "
            "releases; the left/right directions of platform splits (the instance partition) "
            "are not protected"
        ),
    }


def timing_summary(result: JobResult) -> dict[str, Any]:
    """Seconds and operation counts per party and phase, and per-tree seconds."""
    history = result.joint.details.get("history")
    if history is not None:
        epochs = [float(h["seconds"]) for h in history]
        return {
            "epochs": len(history),
            "seconds_per_epoch_mean": sum(epochs) / len(epochs) if epochs else None,
            "seconds_per_epoch_max": max(epochs) if epochs else None,
            "converged": bool(result.joint.details.get("converged")),
            "phases": result.joint.details.get("clock", {}),
        }
    per_tree = result.joint.details.get("per_tree", [])
    seconds = [float(t["seconds"]) for t in per_tree]
    return {
        "trees": len(per_tree),
        "seconds_per_tree_mean": sum(seconds) / len(seconds) if seconds else None,
        "seconds_per_tree_max": max(seconds) if seconds else None,
        "phases": result.joint.details.get("clock", {}),
    }


def joint_metrics(result: JobResult) -> dict[str, float]:
    """Flat metrics of the joint model's phases (seconds and operation counts)."""
    out: dict[str, float] = {}
    for party, clock in result.joint.details.get("clock", {}).items():
        for phase, value in clock.get("seconds", {}).items():
            out[f"sb_{party}_{phase}_seconds"] = float(value)
        for phase, value in clock.get("ops", {}).items():
            out[f"sb_{party}_{phase}_ops"] = float(value)
    return out


def log_joint(
    run: tracking.RunWriter,
    target: tracking.TrackingTarget,
    folder: Path,
    result: JobResult,
    experiment: Experiment,
) -> dict[str, Any]:
    """Log per-tree metrics and joint artifacts; register the model; return registry info."""
    if result.model_type == "hetero_lr":
        return _log_hetero_lr(run, target, folder, result, experiment)
    details = result.joint.details
    per_tree = details.get("per_tree", [])
    for key in ("train_logloss", "test_auc", "seconds"):
        run.log_metric_series(f"tree_{key}", [float(t[key]) for t in per_tree])
    run.log_metrics(joint_metrics(result))
    joint_dir = folder / "joint"
    joint_dir.mkdir()
    importance = importance_frame(result, experiment)
    write_csv(importance, joint_dir / "feature_importance.csv")
    if not importance.empty:
        plot_importance(importance, joint_dir / "feature_importance.png")
    write_csv(pd.DataFrame(per_tree), joint_dir / "per_tree.csv")
    return _log_and_register(
        run, target, joint_dir, details, experiment, registry.register_secureboost
    )


def _log_hetero_lr(
    run: tracking.RunWriter,
    target: tracking.TrackingTarget,
    folder: Path,
    result: JobResult,
    experiment: Experiment,
) -> dict[str, Any]:
    """Hetero LR: per-epoch history, IV table, coefficients, scorecard; register the model.

    The IV table, coefficients and scorecard come from the bank's own part (its domain), not
    from the coordinator, which never sees per-bin statistics.
    """
    from features.woe import iv_table
    from lab import registry_lr
    from models.scorecard import Scorecard
    from models.vertical_lr.parts import BankLRPart

    details = result.joint.details
    part = BankLRPart.load(Path(details["bank_part"]["path"]))
    history = details.get("history", [])
    run.log_metric_series("epoch_change", [float(h["change"]) for h in history])
    run.log_metric_series("epoch_seconds", [float(h["seconds"]) for h in history])
    run.log_metrics(joint_metrics(result))
    run.log_metrics({"epochs": float(len(history)), "converged": float(bool(details["converged"]))})
    joint_dir = folder / "joint"
    joint_dir.mkdir()
    write_csv(iv_table(part.tables), joint_dir / "information_value.csv")
    write_csv(pd.DataFrame(history), joint_dir / "epochs.csv")
    coefficients = pd.DataFrame(
        [{"feature": k, "coefficient": v} for k, v in part.coefficients.items()]
    )
    write_csv(coefficients, joint_dir / "coefficients.csv")
    card = Scorecard.from_dict(part.scorecard)
    card.to_csv(joint_dir / "scorecard.csv")
    card.to_html(joint_dir / "scorecard.html", title=f"Scorecard: {experiment.config.name}")
    return _log_and_register(
        run, target, joint_dir, details, experiment, registry_lr.register_hetero_lr
    )


def _log_and_register(
    run: tracking.RunWriter,
    target: tracking.TrackingTarget,
    joint_dir: Path,
    details: dict[str, Any],
    experiment: Experiment,
    register: Callable[..., dict[str, Any]],
) -> dict[str, Any]:
    """Keep the parts beside the joint artifacts, log them, register the bank part."""
    bank_part = Path(details["bank_part"]["path"])
    shutil.copy(bank_part, joint_dir / "bank_part.json")
    (joint_dir / "platform_parts.json").write_text(
        json.dumps(details["platform_parts"], indent=1, sort_keys=True), encoding="utf-8"
    )
    run.log_artifacts(joint_dir, "joint")
    name = experiment.config.registry.model_name or experiment.config.name
    return register(
        target,
        run,
        bank_part,
        name,
        details["platform_parts"],
        alias=experiment.config.registry.alias,
    )
