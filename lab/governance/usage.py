"""Feedback to data providers: which banks and jobs used a feature set, and what it was worth.

Built from the audit log (who ran which job on which published version) and the banks'
tracking runs (joint vs bank-only test AUC, and the joint model's split gain grouped by feature
group). Nothing about individual enterprises.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from lab import tracking
from lab.governance.audit import AuditLog
from lab.governance.report import jobs_from_audit
from lab.governance.vocabulary import parse_ref


def _runs_by_job(job_ids: set[str]) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking.default_tracking_uri())
    experiments = [e.experiment_id for e in client.search_experiments()]
    out: dict[str, Any] = {}
    if not experiments:
        return out
    for run in client.search_runs(experiments, max_results=5000):
        job_id = run.data.tags.get(tracking.TAG_JOB_ID)
        if job_id in job_ids:
            out[job_id] = run
    return out


def _importance_by_group(run: Any, party_roles: dict[str, str]) -> dict[str, float]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking.default_tracking_uri())
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run.info.run_id, "joint/feature_importance.csv", tmp)
        except Exception:  # no joint model in this run
            return {}
        frame = pd.read_csv(Path(path))
    platform = frame[frame["party"].map(lambda p: party_roles.get(p, "platform")) == "platform"]
    grouped = platform.groupby("group")["gain_share"].sum().sort_values(ascending=False)
    return {str(k): float(v) for k, v in grouped.items()}


def feature_set_usage(ref: str, log: AuditLog | None = None) -> dict[str, Any]:
    """Usage of ``name`` (all versions) or ``name@version`` (one version)."""
    name, version = parse_ref(ref) if "@" in ref else (ref, None)
    jobs = []
    for job in jobs_from_audit(log or AuditLog()):
        used = [
            fs
            for fs in job.get("feature_sets") or []
            if fs.split("@")[0] == name and (version is None or fs == f"{name}@{version}")
        ]
        if used:
            jobs.append({**job, "versions": used})
    runs = _runs_by_job({str(j["job_id"]) for j in jobs})
    rows = []
    for job in jobs:
        run = runs.get(str(job["job_id"]))
        metrics = run.data.metrics if run is not None else {}
        joint, alone = metrics.get("test_auc"), metrics.get("bank_only_auc")
        rows.append(
            {
                "job_id": job["job_id"],
                "started": job.get("started"),
                "status": job.get("status"),
                "versions": job["versions"],
                "banks": job.get("banks"),
                "purpose": job.get("purpose"),
                "model": job.get("model"),
                "joint_test_auc": joint,
                "bank_only_test_auc": alone,
                "auc_lift": (joint - alone) if joint is not None and alone is not None else None,
                "importance_by_group": _importance_by_group(
                    run, {b: "bank" for b in job.get("banks") or []}
                )
                if run is not None
                else {},
                "mlflow_run_id": run.info.run_id if run is not None else None,
            }
        )
    banks = sorted({b for j in jobs for b in (j.get("banks") or [])})
    return {"feature_set": ref, "banks": banks, "jobs": rows}
