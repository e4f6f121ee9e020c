"""SecureBoost's reporting: per-tree metrics, feature importance by group, registration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from features.safe_csv import write_csv
from federated.result import JobResult
from lab import registry, tracking
from lab.config import Experiment
from lab.reporting import (
    Reporting,
    log_and_register,
    log_validation,
    phase_metrics,
    privacy_summary,
    validation_section,
)
from lab.reports import UNKNOWN_GROUP, importance_by_group, importance_chart, plot_importance
from models.secureboost import timing as sb_timing

#: Columns of ``joint/feature_importance.csv``, one row per (party, column) that split.
IMPORTANCE_COLUMNS = (
    "party",
    "feature",
    "label",
    "group",
    "splits",
    "cover",
    "gain",
    "gain_share",
    "search_gain",
)


def importance_frame(result: JobResult, experiment: Experiment) -> pd.DataFrame:
    """Splits, cover and exact gain per (party, feature), its group, sorted by gain.

    ``gain`` is the exact gain the bank computed from its gradients at the chosen splits (see
    :class:`models.secureboost.protocol.SecureBoostOutcome`); ``search_gain`` what the split
    search saw (noisy for the platform's columns under DP). ``label`` is ``party:feature``, so
    same-named columns of different parties stay apart; ``group`` the published feature group
    (:meth:`lab.config.Experiment.feature_groups`) or :data:`UNKNOWN_GROUP`.
    """
    rows = result.joint.details.get("importance", [])
    measures = ["splits", "cover", "gain", "search_gain"]
    frame = pd.DataFrame(rows, columns=["party", "feature", *measures])
    groups = experiment.feature_groups()
    frame["label"] = [f"{p}:{f}" for p, f in zip(frame["party"], frame["feature"], strict=True)]
    frame["group"] = [
        groups.get((p, f), UNKNOWN_GROUP)
        for p, f in zip(frame["party"], frame["feature"], strict=True)
    ]
    total = frame["gain"].sum()
    frame["gain_share"] = frame["gain"] / total if total else 0.0
    frame = frame.sort_values(["gain", "label"], ascending=[False, True], kind="stable")
    return frame.loc[:, list(IMPORTANCE_COLUMNS)].reset_index(drop=True)


def timing(result: JobResult) -> dict[str, Any]:
    """Seconds and operation counts per party and phase, per-tree seconds and critical path.

    ``critical_path_per_tree``: mean seconds per federated tree of bank compute, platform
    compute, transport and runtime, each side's waiting, encryption and randomness made ahead
    (:func:`models.secureboost.timing.summarize`); ``per_tree_critical_path``: every tree's.
    """
    per_tree = result.joint.details.get("per_tree", [])
    seconds = [float(t["seconds"]) for t in per_tree]
    return {
        "trees": len(per_tree),
        "seconds_per_tree_mean": sum(seconds) / len(seconds) if seconds else None,
        "seconds_per_tree_max": max(seconds) if seconds else None,
        "phases": result.joint.details.get("clock", {}),
        "critical_path_per_tree": sb_timing.summarize(per_tree),
        "per_tree_critical_path": [
            {k: round(v, 4) if isinstance(v, float) else v for k, v in path.items()}
            for path in (t.get(sb_timing.CRITICAL_PATH) for t in per_tree)
            if path is not None
        ],
    }


def log(
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
        # ``test_auc`` only for the trees the model kept (early stopping truncates it).
        run.log_metric_series(f"tree_{key}", [float(t[key]) for t in per_tree if key in t])
    log_validation(run, validation(result), per_tree)
    run.log_metrics(phase_metrics(result))
    joint_dir = folder / "joint"
    joint_dir.mkdir()
    importance = importance_frame(result, experiment)
    write_csv(importance, joint_dir / "feature_importance.csv")
    write_csv(importance_by_group(importance), joint_dir / "importance_by_group.csv")
    if not importance.empty:
        dp = privacy_summary(result)["epsilon"] is not None
        plot_importance(importance_chart(importance, dp=dp), joint_dir / "feature_importance.png")
    write_csv(pd.json_normalize(per_tree), joint_dir / "per_tree.csv")  # critical_path.* columns
    return log_and_register(
        run, target, joint_dir, details, experiment, registry.register_secureboost
    )


def validation(result: JobResult) -> dict[str, Any] | None:
    """Validation rows, the best tree (0-based) and its metrics, trees trained and kept."""
    return validation_section(result, result.joint.details.get("per_tree", []))


REPORTING = Reporting(log=log, timing=timing, validation=validation)
