"""A multi-user MLflow tracking server for a bank: basic auth, sqlite, loopback only.

``lab mlflow serve --dir DIR`` runs ``mlflow server --app-name basic-auth`` with

- the tracking and registry store in ``DIR/mlflow.db`` (sqlite) and artifacts served from
  ``DIR/artifacts`` (clients never need file access to the server's disk);
- users and permissions in ``DIR/basic_auth.db``; ``default_permission = READ``;
- the admin's password from ``MLFLOW_AUTH_ADMIN_PASSWORD`` (MLflow ships none) and the CSRF key
  from ``MLFLOW_FLASK_SERVER_SECRET_KEY`` (generated into ``DIR/flask_secret`` if unset);
- the lab's authorization function (:mod:`lab.serving.mlflow_auth`): auditors only read;
- ``127.0.0.1`` only, one worker, job execution and telemetry off.

Roles (``lab mlflow add-user NAME --role ...``, run by the admin):

``modeler``
    An ordinary user: creates experiments, runs and registered models (and manages what they
    created); reads everything else (``READ``); can be given ``EDIT`` on shared experiments.
``auditor``
    Reads every experiment, run, artifact and model version; any write is refused with 403.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lab.serving.errors import ServingSetupError
from lab.serving.mlflow_auth import AUDITORS_ENV

HOST = "127.0.0.1"
ADMIN = "admin"
ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"  # noqa: S105 - a variable name
SECRET_KEY_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"  # noqa: S105 - a variable name
Role = Literal["modeler", "auditor"]
ROLES: tuple[Role, ...] = ("modeler", "auditor")


@dataclass(frozen=True)
class ServerLayout:
    """Files of one server directory."""

    root: Path

    @property
    def backend_uri(self) -> str:
        """The sqlite tracking and registry store."""
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def auth_config(self) -> Path:
        """MLflow's basic-auth config file."""
        return self.root / "basic_auth.ini"

    @property
    def auditors(self) -> Path:
        """User names restricted to reads."""
        return self.root / "auditors.txt"

    @property
    def secret_key(self) -> Path:
        """The CSRF key, when not given in the environment."""
        return self.root / "flask_secret"


def prepare(root: Path) -> ServerLayout:
    """Create ``root`` and its auth config (idempotent)."""
    layout = ServerLayout(root.resolve())
    layout.root.mkdir(parents=True, exist_ok=True)
    (layout.root / "artifacts").mkdir(exist_ok=True)
    layout.auth_config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{layout.root / 'basic_auth.db'}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = lab.serving.mlflow_auth:authenticate_request\n",
        encoding="utf-8",
    )
    layout.auditors.touch()
    if not layout.secret_key.exists():
        fd = os.open(layout.secret_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return layout


def server_command(layout: ServerLayout, port: int) -> list[str]:
    """The ``mlflow server`` command line."""
    return [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--app-name",
        "basic-auth",
        "--backend-store-uri",
        layout.backend_uri,
        "--artifacts-destination",
        str(layout.root / "artifacts"),
        "--serve-artifacts",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


def server_env(layout: ServerLayout, base: dict[str, str] | None = None) -> dict[str, str]:
    """The server process's environment.

    Raises
    ------
    ServingSetupError
        If ``MLFLOW_AUTH_ADMIN_PASSWORD`` is unset (MLflow has no default admin password).
    """
    env = dict(os.environ if base is None else base)
    if not env.get(ADMIN_PASSWORD_ENV):
        raise ServingSetupError(
            f"set {ADMIN_PASSWORD_ENV} to the admin's password before the first start (MLflow "
            "creates the admin user with it; it is ignored once the user exists)"
        )
    env.setdefault(SECRET_KEY_ENV, layout.secret_key.read_text(encoding="utf-8").strip())
    env.update(
        {
            "MLFLOW_AUTH_CONFIG_PATH": str(layout.auth_config),
            AUDITORS_ENV: str(layout.auditors),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
        }
    )
    return env


def add_user(
    url: str,
    layout: ServerLayout,
    username: str,
    password: str,
    role: Role,
    *,
    admin_password: str,
    edit_experiments: Sequence[str] = (),
) -> dict[str, Any]:
    """Create ``username`` on the server at ``url`` with ``role`` (as the admin).

    Auditors are added to the auditors file before the user exists, so there is no moment at
    which the new account may write.
    """
    import httpx

    if role not in ROLES:
        raise ServingSetupError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    if role == "auditor":
        names = set(layout.auditors.read_text(encoding="utf-8").split())
        if username not in names:
            with layout.auditors.open("a", encoding="utf-8") as fh:
                fh.write(username + "\n")
    auth = (ADMIN, admin_password)
    with httpx.Client(base_url=url.rstrip("/"), auth=auth, timeout=30, trust_env=False) as http:
        response = http.post(
            "/api/2.0/mlflow/users/create", json={"username": username, "password": password}
        )
        if response.status_code != 200:
            raise ServingSetupError(
                f"creating user {username!r} failed ({response.status_code}): {response.text[:200]}"
            )
        for name in edit_experiments if role == "modeler" else ():
            found = http.get(
                "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name}
            )
            if found.status_code != 200:
                raise ServingSetupError(f"no experiment {name!r} on {url}; create it first")
            experiment_id = found.json()["experiment"]["experiment_id"]
            granted = http.post(
                "/api/3.0/mlflow/users/permissions/grant",
                json={
                    "username": username,
                    "resource_type": "experiment",
                    "resource_id": experiment_id,
                    "permission": "EDIT",
                },
            )
            if granted.status_code != 200:
                raise ServingSetupError(f"granting EDIT on {name!r} failed: {granted.text[:200]}")
    return {"username": username, "role": role, "edit_experiments": list(edit_experiments)}
