"""``lab console``: the read-only web console over this home (flask is imported on use)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from lab.home import ENV_VAR, lab_home
from lab.webconsole.config import DEFAULT_MLFLOW_URL, DEFAULT_PORT, DEFAULT_USERS_DIR

ADMIN_PASSWORD_ENV = "MLFLOW_AUTH_ADMIN_PASSWORD"  # noqa: S105 - a variable name


def console(
    home: Annotated[
        Path | None, typer.Option("--home", help="The lab home to show; default $LAB_HOME.")
    ] = None,
    users: Annotated[
        Path | None,
        typer.Option(
            "--users",
            help="The lab's MLflow server folder (`lab mlflow serve --dir`) whose users log in; "
            f"default HOME/{DEFAULT_USERS_DIR}.",
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = (
        DEFAULT_PORT
    ),
    mlflow_url: Annotated[
        str, typer.Option("--mlflow-url", help="MLflow UI that job pages link to.")
    ] = DEFAULT_MLFLOW_URL,
) -> None:
    """Serve this home's read-only web console on 127.0.0.1.

    Feature sets, budgets, jobs, authorizations and the audit trail. Users and roles are the
    lab MLflow server's; with no users yet and MLFLOW_AUTH_ADMIN_PASSWORD set, its admin is
    created first (as `mlflow server` does).
    """
    from lab.webconsole.config import ConsoleConfig
    from lab.webconsole.server import check_port, serve
    from lab.webconsole.users import ensure_admin

    check_port(port)
    root = (home or lab_home()).expanduser().resolve()
    os.environ[ENV_VAR] = str(root)  # every store of the lab reads this home
    users_dir = (users or root / DEFAULT_USERS_DIR).expanduser().resolve()
    if root.is_dir():
        ensure_admin(users_dir, os.environ.get(ADMIN_PASSWORD_ENV))
    serve(ConsoleConfig(root, users_dir, mlflow_url=mlflow_url), port)


def register(app: typer.Typer) -> None:
    """Attach ``lab console`` to the root app."""
    app.command("console")(console)
