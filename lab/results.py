"""Where a finished job's results are, for its summary and the lines printed after it.

After every job (``lab train``, ``lab align``, a horizontal job, ``lab demo``) a user needs to
know, without opening anything: the folder its artifacts are in, the model version it
registered and under which alias, which MLflow store recorded it, and a command that opens
MLflow's UI on that store (:mod:`lab.mlflow_ui`). :func:`locate` adds those to the summary
(and so to ``--summary-json``); :func:`describe` turns a summary into the lines the CLI prints.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from lab import tracking
from lab.mlflow_ui import browse_command


def start_ms(started: float) -> int:
    """Wall-clock start, ms since the epoch, of a job begun at ``perf_counter() == started``.

    What the job's MLflow run records as its start time (so its duration is the job's).
    """
    return int((time.time() - (time.perf_counter() - started)) * 1000)


def local_folder(uri: str) -> str | None:
    """The local folder of a ``file:`` artifact URI (``None`` for a remote store)."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        return None
    return str(Path(unquote(parsed.path)))


def locate(run: tracking.RunWriter, target: tracking.TrackingTarget) -> dict[str, Any]:
    """The summary's fields that say where a job's run, artifacts and store are.

    ``mlflow_run_id``, ``mlflow_experiment``, ``mlflow_tracking_uri``, ``mlflow_artifact_uri``
    (the run's artifact root), ``artifact_folder`` (that root on this machine, ``None`` when
    the store keeps artifacts elsewhere) and ``mlflow_ui`` (a shell line that opens the UI on
    the store, or the server's address).
    """
    artifact_uri = run.artifact_uri()
    return {
        "mlflow_run_id": run.run_id,
        "mlflow_experiment": target.experiment,
        "mlflow_tracking_uri": target.uri,
        "mlflow_artifact_uri": artifact_uri,
        "artifact_folder": local_folder(artifact_uri),
        "mlflow_ui": browse_command(target.uri),
    }


def _model_line(summary: dict[str, Any]) -> str:
    registered = summary.get("registered_model")
    if registered:
        name, version, alias = registered["name"], registered["version"], registered["alias"]
        promote = (
            f"; promote: lab models promote {name} --from challenger --to champion"
            if alias == "challenger"
            else ""
        )
        ref = f"models:/{name}@{alias}"
        return f"model:     {name} version {version}, alias {alias} ({ref}{promote})"
    if summary.get("task") == "align":
        return "model:     none (alignment only)"
    joint = summary.get("joint_model") or {}
    return f"model:     none registered (joint model {joint.get('status', 'not trained')})"


def describe(summary: dict[str, Any]) -> list[str]:
    """The lines that tell where a job's results are (printed after every job).

    ``summary`` is a job's summary after :func:`locate` (``lab.job.run_experiment``'s).
    """
    folder = summary.get("artifact_folder") or summary.get("mlflow_artifact_uri")
    return [
        f"artifacts: {folder}",
        _model_line(summary),
        f"MLflow:    run {summary['mlflow_run_id']} in experiment "
        f"{summary['mlflow_experiment']!r}, store {summary['mlflow_tracking_uri']}",
        f"browse:    {summary['mlflow_ui']}",
    ]
