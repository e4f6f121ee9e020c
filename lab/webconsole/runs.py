"""The home's MLflow runs of jobs, by job id (metrics, the run's link, its audit-head tag).

Read through MLflow's client from the home's tracking store (``MLFLOW_TRACKING_URI`` or
``$LAB_HOME/mlflow.db``); a sqlite store that does not exist is not created. For a sqlite
store the result is cached until the file changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lab import tracking

#: Runs read per search (a home with more runs shows the newest).
MAX_RUNS = 50_000


@dataclass(frozen=True)
class JobRun:
    """What the console shows of a job's MLflow run."""

    run_id: str
    experiment_id: str
    status: str
    metrics: dict[str, float]
    audit_head: str | None

    def link(self, base_url: str) -> str:
        """The run's page in the MLflow UI at ``base_url``."""
        return f"{base_url.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"


def store_exists(uri: str) -> bool:
    """Whether there is anything to read (a missing sqlite file is not created)."""
    from pathlib import Path

    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).is_file()
    return True


def runs_by_job(uri: str | None = None) -> dict[str, JobRun]:
    """Every run tagged with a lab job id, newest run per job."""
    from mlflow.tracking import MlflowClient

    uri = uri or tracking.default_tracking_uri()
    if not store_exists(uri):
        return {}
    client = MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    out: dict[str, JobRun] = {}
    if not experiments:
        return out
    runs: list[Any] = client.search_runs(
        experiments,
        filter_string=f"tags.`{tracking.TAG_JOB_ID}` != ''",
        max_results=MAX_RUNS,
        order_by=["attributes.start_time ASC"],
    )
    for run in runs:
        job_id = run.data.tags.get(tracking.TAG_JOB_ID)
        if not job_id:
            continue
        out[job_id] = JobRun(
            run_id=run.info.run_id,
            experiment_id=run.info.experiment_id,
            status=run.info.status,
            metrics=dict(run.data.metrics),
            audit_head=run.data.tags.get(tracking.TAG_AUDIT_HEAD),
        )
    return out
