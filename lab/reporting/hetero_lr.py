"""Hetero LR's reporting: per-epoch history, IV table, coefficients, scorecard, registration.

The IV table, coefficients and scorecard come from the bank's own part (its domain), not from
the coordinator, which never sees per-bin statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from features.safe_csv import write_csv
from features.woe import iv_table
from federated.result import JobResult
from lab import registry_lr, tracking
from lab.config import Experiment
from lab.reporting import (
    Reporting,
    log_and_register,
    log_validation,
    phase_metrics,
    validation_section,
)
from models.scorecard import Scorecard
from models.vertical_lr.explain import group_importance
from models.vertical_lr.parts import BankLRPart


def timing(result: JobResult) -> dict[str, Any]:
    """Seconds per epoch, convergence, and seconds and operations per party and phase."""
    history = result.joint.details.get("history", [])
    epochs = [float(h["seconds"]) for h in history]
    return {
        "epochs": len(history),
        "seconds_per_epoch_mean": sum(epochs) / len(epochs) if epochs else None,
        "seconds_per_epoch_max": max(epochs) if epochs else None,
        "converged": bool(result.joint.details.get("converged")),
        "phases": result.joint.details.get("clock", {}),
    }


def log(
    run: tracking.RunWriter,
    target: tracking.TrackingTarget,
    folder: Path,
    result: JobResult,
    experiment: Experiment,
) -> dict[str, Any]:
    """Log the history, IV table, coefficients and scorecard; register the model."""
    details = result.joint.details
    part = BankLRPart.load(Path(details["bank_part"]["path"]))
    history = details.get("history", [])
    run.log_metric_series("epoch_change", [float(h["change"]) for h in history])
    run.log_metric_series("epoch_seconds", [float(h["seconds"]) for h in history])
    log_validation(run, validation(result), history)
    run.log_metrics(phase_metrics(result))
    run.log_metrics({"epochs": float(len(history)), "converged": float(bool(details["converged"]))})
    joint_dir = folder / "joint"
    joint_dir.mkdir()
    write_csv(iv_table(part.tables), joint_dir / "information_value.csv")
    write_csv(pd.DataFrame(history), joint_dir / "epochs.csv")
    coefficients = pd.DataFrame(
        [{"feature": k, "coefficient": v} for k, v in part.coefficients.items()]
    )
    write_csv(coefficients, joint_dir / "coefficients.csv")
    write_csv(group_importance(part), joint_dir / "importance_by_group.csv")
    card = Scorecard.from_dict(part.scorecard)
    card.to_csv(joint_dir / "scorecard.csv")
    card.to_html(joint_dir / "scorecard.html", title=f"Scorecard: {experiment.config.name}")
    return log_and_register(
        run, target, joint_dir, details, experiment, registry_lr.register_hetero_lr
    )


def validation(result: JobResult) -> dict[str, Any] | None:
    """Validation rows, the best epoch (0-based) and its metrics, epochs trained and kept."""
    return validation_section(result, result.joint.details.get("history", []))


REPORTING = Reporting(log=log, timing=timing, validation=validation)
