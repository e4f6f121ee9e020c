"""MLflow tracking: the only module that talks to MLflow.

One run per job, created only after the job finished (or failed after touching data), so a
config or data error leaves no run behind; the run is dated from the job's start (its MLflow
start time and duration are the job's, not the seconds spent recording it) and carries who
started it (``mlflow.user``: ``$LAB_ACTOR`` or the OS user, as in the audit log). The embedded
default store is sqlite under the lab's home folder (``$LAB_HOME/mlflow.db``, artifacts in
``$LAB_HOME/mlartifacts``); a config's ``tracking.uri`` or ``MLFLOW_TRACKING_URI`` overrides it.

Alignment-only jobs (``lab align``) are recorded in their own MLflow experiment, the training
experiment's name plus :data:`ALIGN_SUFFIX`: MLflow's UI shows and compares one experiment's
runs at a time, and an alignment has none of a training run's metrics (AUC, KS), so mixed in it
would add blank rows to every comparison and sort. Every run also carries its task
(:data:`TAG_TASK`: ``train`` or ``align``) for searches across experiments.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.governance._common import default_actor
from lab.home import ensure, lab_home
from lab.paths import inside

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")

logger = logging.getLogger(__name__)

#: Tag keys every job run carries.
TAG_CONFIG_HASH = "lab.config_hash"
TAG_JOB_ID = "lab.job_id"
TAG_KIND = "lab.kind"
TAG_TASK = "lab.task"
TAG_MODEL = "lab.model_type"
TAG_JOINT_STATUS = "lab.joint_model_status"
TAG_DATA_DIGEST = "lab.data_digest."
TAG_ERROR = "lab.error"
#: The head (``SEQ:HASH``) of the audit log of the lab home that ran the job, at run creation,
#: and its signing key's fingerprint: an anchor outside ``$LAB_HOME/audit``.
TAG_AUDIT_HEAD = "lab.audit_head"
TAG_AUDIT_KEY = "lab.audit_key"
#: MLflow's own tag of who ran a run (its UI's "User" column).
TAG_USER = "mlflow.user"

#: Suffix of the MLflow experiment of a training experiment's alignment-only runs.
ALIGN_SUFFIX = "-align"

_MAX_PARAM_LEN = 6000


@dataclass(frozen=True)
class TrackingTarget:
    """Where a job is recorded."""

    uri: str
    experiment: str
    artifact_root: Path | None


def default_tracking_uri() -> str:
    """The embedded store: ``MLFLOW_TRACKING_URI`` if set, else sqlite in the lab's home."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{lab_home() / 'mlflow.db'}"


def experiment_for(base: str, task: str) -> str:
    """The MLflow experiment of a job: ``base`` for training, ``base-align`` for alignment."""
    return f"{base}{ALIGN_SUFFIX}" if task == "align" else base


def target_for(uri: str | None, experiment: str) -> TrackingTarget:
    """Resolve the tracking target of a job (config URI, else the embedded default)."""
    resolved = uri or default_tracking_uri()
    artifacts = lab_home() / "mlartifacts" if resolved.startswith("sqlite:") else None
    return TrackingTarget(uri=resolved, experiment=experiment, artifact_root=artifacts)


def _client(target: TrackingTarget) -> Any:
    for name in ("alembic", "mlflow.store.db.utils", "mlflow.store.sql_alchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if target.uri.startswith("sqlite:///"):
        ensure(Path(target.uri.removeprefix("sqlite:///")).parent)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=target.uri)


def _experiment_id(client: Any, target: TrackingTarget) -> str:
    existing = client.get_experiment_by_name(target.experiment)
    if existing is not None:
        return str(existing.experiment_id)
    location = None
    if target.artifact_root is not None:
        folder = inside(target.artifact_root, target.experiment, what="MLflow experiment")
        location = ensure(folder).as_uri()
    return str(client.create_experiment(target.experiment, artifact_location=location))


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """Flatten nested settings into MLflow parameters (``model.max_depth`` -> ``3``)."""
    out: dict[str, str] = {}
    if isinstance(value, Mapping):
        for key, item in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), item))
    elif isinstance(value, list | tuple) and value and all(isinstance(v, Mapping) for v in value):
        for item in value:
            name = str(item.get("name", len(out)))
            out.update(flatten(f"{prefix}.{name}", item))
    else:
        out[prefix] = str(value)[:_MAX_PARAM_LEN]
    return out


def runs_tagged(uri: str, key: str, value: str) -> list[tuple[str, dict[str, str]]]:
    """``(run id, tags)`` of every run (any experiment, any state) whose tag ``key`` is ``value``.

    Used to collect the audit heads the lab exported into job runs.
    """
    from mlflow.entities import ViewType

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return []  # no store yet: nothing anchored there (and reading must not create one)
    client = _client(TrackingTarget(uri=uri, experiment="", artifact_root=None))
    experiment_ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    if not experiment_ids:
        return []
    quoted = value.replace("'", "")
    found: list[tuple[str, dict[str, str]]] = []
    token: str | None = None
    while True:
        page = client.search_runs(
            experiment_ids,
            filter_string=f"tags.`{key}` = '{quoted}'",
            run_view_type=ViewType.ALL,
            max_results=1000,
            page_token=token,
        )
        found.extend((str(run.info.run_id), dict(run.data.tags)) for run in page)
        token = page.token
        if not token:
            return found


class RunWriter:
    """An open MLflow run; use :func:`open_run` as a context manager."""

    def __init__(self, client: Any, run_id: str) -> None:
        self._client = client
        self.run_id = run_id
        #: Terminal status set when the ``open_run`` block ends without raising.
        self.status = "FINISHED"

    def log_params(self, params: Mapping[str, str]) -> None:
        """Log parameters (batched)."""
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in sorted(params.items())]
        for start in range(0, len(items), 100):
            self._client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log metrics at one step (batched)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in sorted(metrics.items())]
        for start in range(0, len(items), 100):
            self._client.log_batch(self.run_id, metrics=items[start : start + 100])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set tags."""
        from mlflow.entities import RunTag

        items = [RunTag(k, v) for k, v in sorted(tags.items())]
        if items:
            self._client.log_batch(self.run_id, tags=items)

    def log_artifact(self, local: Path, folder: str | None = None) -> None:
        """Upload one file into the run's artifacts (optionally under ``folder``)."""
        self._client.log_artifact(self.run_id, str(local), folder)

    def log_artifacts(self, local_dir: Path, folder: str | None = None) -> None:
        """Upload a directory's files into the run's artifacts (optionally under ``folder``)."""
        self._client.log_artifacts(self.run_id, str(local_dir), folder)

    def artifact_uri(self) -> str:
        """Root URI of the run's artifacts."""
        return str(self._client.get_run(self.run_id).info.artifact_uri)

    def log_metric_series(self, key: str, values: list[float]) -> None:
        """Log ``values[i]`` of metric ``key`` at step ``i`` (e.g. one per tree)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, float(v), now, step) for step, v in enumerate(values)]
        for start in range(0, len(items), 500):
            self._client.log_batch(self.run_id, metrics=items[start : start + 500])


@contextmanager
def open_run(
    target: TrackingTarget,
    run_name: str,
    tags: Mapping[str, str],
    *,
    start_ms: int | None = None,
) -> Iterator[RunWriter]:
    """Create a run; end it with ``writer.status``, or ``FAILED`` if the block raises.

    Parameters
    ----------
    target : TrackingTarget
        Store and experiment.
    run_name : str
        The run's name.
    tags : Mapping
        Tags; ``mlflow.user`` defaults to who acts (``$LAB_ACTOR`` or the OS user).
    start_ms : int, optional
        When the job started (ms since the epoch); default now.
    """
    with warnings.catch_warnings():
        # MLflow's sqlite store trips SQLAlchemy deprecation warnings that users cannot act on.
        warnings.filterwarnings("ignore", message=".*noload.*")
        client = _client(target)
        experiment_id = _experiment_id(client, target)
        run = client.create_run(
            experiment_id,
            start_time=start_ms,
            run_name=run_name,
            tags={"mlflow.source.type": "LOCAL", TAG_USER: default_actor(), **tags},
        )
        writer = RunWriter(client, str(run.info.run_id))
        try:
            yield writer
        except BaseException:
            client.set_terminated(writer.run_id, "FAILED")
            raise
        client.set_terminated(writer.run_id, writer.status)
    logger.info("recorded MLflow run %s in %s", writer.run_id, target.uri)
