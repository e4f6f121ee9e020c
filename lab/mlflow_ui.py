"""The command that opens MLflow's UI on a lab's tracking store (``lab mlflow ui``).

A job prints it and ``lab mlflow ui`` runs it, so what a user pastes and what the lab runs are
the same command line: ``mlflow ui`` on the job's store (``$LAB_HOME/mlflow.db`` unless a
config or ``MLFLOW_TRACKING_URI`` says otherwise), on ``127.0.0.1`` only, one worker, with
MLflow's job execution off (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``: without it the UI
starts a job runner that took 114 s to start on this machine and whose workers died), and
artifacts of any experiment created in the UI beside the store (``mlartifacts/``, where the lab
puts its own).

A store that is already a server (``http://``, ``https://``) needs no UI process: its address
is what to open.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

#: Where the UI listens: this machine only.
HOST = "127.0.0.1"
DEFAULT_PORT = 5000

#: What the UI process needs in its environment besides the caller's.
UI_ENV: dict[str, str] = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def is_server(uri: str) -> bool:
    """Whether ``uri`` is a tracking server's address (nothing to start)."""
    return uri.startswith(("http://", "https://"))


def ui_argv(uri: str, port: int = DEFAULT_PORT) -> list[str]:
    """``mlflow ui`` on the store at ``uri`` (not a server address), bound to 127.0.0.1.

    Artifacts of experiments created in the UI go beside a sqlite store (``mlartifacts/``, the
    lab's own artifact root); runs the lab recorded keep the absolute locations they have.
    """
    argv = [
        str(Path(sys.executable).with_name("mlflow")),
        "ui",
        "--backend-store-uri",
        uri,
    ]
    if uri.startswith("sqlite:///"):
        store = Path(uri.removeprefix("sqlite:///"))
        argv += ["--artifacts-destination", str(store.parent / "mlartifacts")]
    return [*argv, "--host", HOST, "--port", str(port), "--workers", "1"]


def ui_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The UI process's environment: ``base`` (default: this process's) plus :data:`UI_ENV`."""
    return {**(dict(os.environ) if base is None else base), **UI_ENV}


def browse_command(uri: str, port: int = DEFAULT_PORT) -> str:
    """One shell line that opens the UI on ``uri`` (or the server's address itself)."""
    if is_server(uri):
        return uri
    assignments = [f"{key}={value}" for key, value in UI_ENV.items()]
    return shlex.join([*assignments, *ui_argv(uri, port)])
