"""Reporting a trained model: what the lab logs to MLflow, summarises and registers.

Each model type names its :class:`Reporting` hooks in its descriptor
(:attr:`models.model_type.ModelType.reporting`, ``module:attribute``); :func:`reporting_for`
loads them. The helpers here are shared by the vertical types: the privacy charged by the
platforms' nodes, phase metrics, and keeping and registering the model parts.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federated.result import JobResult
from lab import tracking
from lab.config import Experiment
from models.model_type import ModelType, load_attribute, model_type
from models.privacy import PrivacyEvent

LogHook = Callable[
    [tracking.RunWriter, tracking.TrackingTarget, Path, JobResult, Experiment],
    dict[str, Any] | None,
]


def _no_log(
    run: tracking.RunWriter,
    target: tracking.TrackingTarget,
    folder: Path,
    result: JobResult,
    experiment: Experiment,
) -> None:
    del run, target, folder, result, experiment


def _no_timing(result: JobResult) -> dict[str, Any]:
    return {"phases": result.joint.details.get("clock", {})}


def _no_validation(result: JobResult) -> dict[str, Any] | None:
    del result
    return None


@dataclass(frozen=True)
class Reporting:
    """A model type's reporting hooks.

    Attributes
    ----------
    log : callable
        Log the model's metrics and artifacts into the job's MLflow run and register it;
        return the registry information (``None``: nothing registered).
    timing : callable
        The job summary's ``timing`` section.
    validation : callable
        The job summary's ``validation`` section (``None``: no validation rows).
    """

    log: LogHook = _no_log
    timing: Callable[[JobResult], dict[str, Any]] = _no_timing
    validation: Callable[[JobResult], dict[str, Any] | None] = _no_validation


#: For model types that name no hooks: nothing logged beyond the job's run, nothing registered.
NO_REPORTING = Reporting()


def reporting_for(model: ModelType) -> Reporting:
    """The reporting hooks of ``model`` (:data:`NO_REPORTING` if it names none)."""
    if model.reporting is None:
        return NO_REPORTING
    hooks = load_attribute(model.reporting)
    if not isinstance(hooks, Reporting):
        raise TypeError(f"{model.reporting} is a {type(hooks).__name__}, not Reporting")
    return hooks


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
        sees = model_type(result.model_type).privacy.without_dp
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
        "note": "counted and charged by each platform's own node; "
        + model_type(result.model_type).privacy.with_dp,
    }


def phase_metrics(result: JobResult) -> dict[str, float]:
    """Flat metrics of the joint model's phases (seconds and operation counts per party)."""
    out: dict[str, float] = {}
    for party, clock in result.joint.details.get("clock", {}).items():
        for phase, value in clock.get("seconds", {}).items():
            out[f"joint_{party}_{phase}_seconds"] = float(value)
        for phase, value in clock.get("ops", {}).items():
            out[f"joint_{party}_{phase}_ops"] = float(value)
    return out


def log_and_register(
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


#: Validation metrics logged per iteration (``valid_<name>``, :mod:`models.early_stopping`).
VALIDATION_METRICS = ("auc", "ks", "logloss")


def validation_section(
    result: JobResult, per_iteration: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The summary's ``validation``: the protocol's own report and the best iteration's metrics.

    ``per_iteration`` is the model's list of iterations (trees, epochs), each with its
    ``valid_*`` metrics; ``best_iteration`` indexes it (0-based). ``None`` without validation.
    """
    reported = result.joint.details.get("validation")
    if not reported:
        return None
    out = dict(reported)
    best = reported.get("best_iteration")
    if best is not None and 0 <= int(best) < len(per_iteration):
        for name in VALIDATION_METRICS:
            value = per_iteration[int(best)].get(f"valid_{name}")
            out[f"best_valid_{name}"] = None if value is None else float(value)
    return out


def log_validation(
    run: tracking.RunWriter, section: dict[str, Any] | None, per_iteration: list[dict[str, Any]]
) -> None:
    """Log ``valid_auc``/``valid_ks``/``valid_logloss`` at step = iteration, and the best one."""
    if section is None:
        return
    for name in VALIDATION_METRICS:
        values = [float(entry[f"valid_{name}"]) for entry in per_iteration]
        run.log_metric_series(f"valid_{name}", values)
    flat = {
        "validation_rows": float(section["n_validation"]),
        "iterations_trained": float(section["iterations_trained"]),
        "iterations_kept": float(section["iterations_kept"]),
        "stopped_early": float(bool(section["stopped_early"])),
    }
    if section.get("best_iteration") is not None:
        flat["best_iteration"] = float(section["best_iteration"])
        for name in VALIDATION_METRICS:
            value = section.get(f"best_valid_{name}")
            if value is not None:
                flat[f"best_valid_{name}"] = float(value)
    run.log_metrics(flat)
