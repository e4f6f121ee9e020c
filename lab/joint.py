"""Reporting a trained joint model: per-tree metrics, timings, importance, privacy, registry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from federated.result import JobResult
from lab import registry, tracking
from lab.config import Experiment
from lab.reports import plot_importance
from models.privacy import PrivacyEvent, epsilon

UNKNOWN_GROUP = "ungrouped"


def feature_groups(experiment: Experiment) -> dict[tuple[str, str], str]:
    """Feature group of each (party, column) where the party publishes column metadata.

    Reads ``columns.json`` beside a party's data file (the synthetic generator writes one; a
    published feature-set spec carries the same information). Column metadata is public; no
    data is read.
    """
    groups: dict[tuple[str, str], str] = {}
    for party in experiment.config.parties:
        meta = experiment.data_paths[party.name].parent / "columns.json"
        if not meta.is_file():
            continue
        raw = json.loads(meta.read_text(encoding="utf-8"))
        columns = raw.get("columns", raw) if isinstance(raw, dict) else {}
        if isinstance(columns, dict):
            for name, info in columns.items():
                if isinstance(info, dict) and "group" in info:
                    groups[(party.name, str(name))] = str(info["group"])
    return groups


def importance_frame(result: JobResult, experiment: Experiment) -> pd.DataFrame:
    """Split counts and total gain per (party, feature), with the feature's group."""
    rows = result.joint.details.get("importance", [])
    frame = pd.DataFrame(rows, columns=["party", "feature", "splits", "gain"])
    groups = feature_groups(experiment)
    frame["group"] = [
        groups.get((p, f), UNKNOWN_GROUP)
        for p, f in zip(frame["party"], frame["feature"], strict=True)
    ]
    total = frame["gain"].sum()
    frame["gain_share"] = frame["gain"] / total if total else 0.0
    return frame.sort_values("gain", ascending=False).reset_index(drop=True)


def privacy_summary(result: JobResult, experiment: Experiment) -> dict[str, Any]:
    """(ε, δ) of the job's privacy events, composed by Opacus's RDP accountant."""
    raw = result.joint.details.get("privacy_events", [])
    model = experiment.config.model
    if not raw:
        return {
            "epsilon": None,
            "delta": None,
            "accountant": None,
            "unit": None,
            "note": "no differential privacy: the bank sees exact platform histogram sums",
        }
    events = [PrivacyEvent.from_dict(e) for e in raw]
    return {
        "epsilon": epsilon(events, model.dp_delta, "rdp"),
        "delta": model.dp_delta,
        "accountant": "rdp",
        "unit": events[0].unit,
        "mechanism": events[0].mechanism,
        "events": raw,
        "note": (
            "covers the platform's histogram releases; the left/right directions of platform "
            "splits (the instance partition) are not protected"
        ),
    }


def timing_summary(result: JobResult) -> dict[str, Any]:
    """Seconds and operation counts per party and phase, and per-tree seconds."""
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
    details = result.joint.details
    per_tree = details.get("per_tree", [])
    for key in ("train_logloss", "test_auc", "seconds"):
        run.log_metric_series(f"tree_{key}", [float(t[key]) for t in per_tree])
    run.log_metrics(joint_metrics(result))
    joint_dir = folder / "joint"
    joint_dir.mkdir()
    importance = importance_frame(result, experiment)
    importance.to_csv(joint_dir / "feature_importance.csv", index=False)
    if not importance.empty:
        plot_importance(importance, joint_dir / "feature_importance.png")
    pd.DataFrame(per_tree).to_csv(joint_dir / "per_tree.csv", index=False)
    bank_part = Path(details["bank_part"]["path"])
    shutil.copy(bank_part, joint_dir / "bank_part.json")
    (joint_dir / "platform_parts.json").write_text(
        json.dumps(details["platform_parts"], indent=1, sort_keys=True), encoding="utf-8"
    )
    run.log_artifacts(joint_dir, "joint")
    name = experiment.config.registry.model_name or experiment.config.name
    return registry.register_secureboost(
        target,
        run,
        bank_part,
        name,
        details["platform_parts"],
        alias=experiment.config.registry.alias,
    )
