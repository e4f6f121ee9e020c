"""Who may log in: the users and roles of the lab's MLflow server (``lab mlflow serve``).

The server's folder holds MLflow's ``basic_auth.db`` (user names, Werkzeug password hashes,
the admin flag) and the lab's ``auditors.txt`` (read-only users, :mod:`lab.serving.mlflow_auth`).
The console reads both and writes neither while it serves: the users database is opened
read-only, so a login never migrates, creates or changes anything.

Roles, as on the MLflow server:

``admin``     MLflow's admin user (``is_admin``).
``auditor``   Listed in ``auditors.txt``: reads everything; every page view is audited.
``modeler``   Any other user: feature sets, budgets and jobs (not the registry of
              authorizations or the audit trail, which are the auditors' and the admin's).
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from werkzeug.security import check_password_hash, generate_password_hash

from lab.serving.mlflow_server import ADMIN, ROLES, ServerLayout, prepare
from lab.webconsole.errors import ConsoleSetupError

Role = Literal["admin", "modeler", "auditor"]

#: A hash checked when the user does not exist, so a wrong name costs what a wrong password does.
_DUMMY_HASH = generate_password_hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class User:
    """A logged-in user."""

    name: str
    role: Role


class UserStore:
    """Read-only view of one MLflow server folder's users.

    Parameters
    ----------
    server_dir : Path
        The folder given to ``lab mlflow serve --dir``.

    Raises
    ------
    ConsoleSetupError
        If the folder has no users database.
    """

    def __init__(self, server_dir: Path) -> None:
        self.layout = ServerLayout(server_dir.resolve())
        self.db = self.layout.root / "basic_auth.db"
        if not self.db.is_file():
            raise ConsoleSetupError(
                f"no users at {self.db}: point --users at the folder of `lab mlflow serve --dir`, "
                "or set MLFLOW_AUTH_ADMIN_PASSWORD to create its admin on first start"
            )

    def _row(self, name: str) -> tuple[str, bool] | None:
        uri = f"file:{self.db}?mode=ro"
        with sqlite3.connect(uri, uri=True, timeout=5) as conn:
            row = conn.execute(
                "SELECT password_hash, is_admin FROM users WHERE username = ?", (name,)
            ).fetchone()
        return None if row is None else (str(row[0]), bool(row[1]))

    def count(self) -> int:
        """Number of users."""
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM users").fetchone()[0])

    def role_of(self, name: str, is_admin: bool) -> Role:
        """The console role of a user (the auditors file is re-read every time)."""
        if is_admin:
            return "admin"
        auditors = self.layout.auditors
        names = set(auditors.read_text(encoding="utf-8").split()) if auditors.is_file() else set()
        return "auditor" if name in names else "modeler"

    def lookup(self, name: str) -> User | None:
        """The user ``name`` with their current role, or ``None`` if the account is gone."""
        row = self._row(name)
        return None if row is None else User(name, self.role_of(name, row[1]))

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if ``password`` is theirs, else ``None`` (same cost either way)."""
        row = self._row(name)
        if row is None:
            check_password_hash(_DUMMY_HASH, password)
            return None
        if not check_password_hash(row[0], password):
            return None
        return User(name, self.role_of(name, row[1]))


def add_user(server_dir: Path, name: str, password: str, role: str) -> User:
    """Create a user in ``server_dir``'s users database while its MLflow server is not running.

    Uses MLflow's own auth store (the server's code path: migrations, Werkzeug hashes); an
    auditor is listed in ``auditors.txt`` before the account exists, as
    :func:`lab.serving.mlflow_server.add_user` does on a running server.

    Raises
    ------
    ConsoleSetupError
        An unknown role, or MLflow's refusal (name taken, password too short).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    if role not in (*ROLES, "admin"):
        raise ConsoleSetupError(f"unknown role {role!r}; use one of admin, {', '.join(ROLES)}")
    layout = prepare(server_dir)
    if role == "auditor":
        names = set(layout.auditors.read_text(encoding="utf-8").split())
        if name not in names:
            with layout.auditors.open("a", encoding="utf-8") as fh:
                fh.write(name + "\n")
    store = SqlAlchemyStore()
    store.init_db(f"sqlite:///{layout.root / 'basic_auth.db'}")  # type: ignore[no-untyped-call]
    try:
        store.create_user(name, password, is_admin=role == "admin")
    except MlflowException as exc:
        raise ConsoleSetupError(f"creating user {name!r} in {layout.root}: {exc.message}") from exc
    finally:
        store.engine.dispose()
    return User(name, "admin" if role == "admin" else "auditor" if role == "auditor" else "modeler")


def ensure_admin(server_dir: Path, password: str | None) -> None:
    """Create the admin (``MLFLOW_AUTH_ADMIN_PASSWORD``) if the folder has no users yet.

    The MLflow server does the same on its first start; so does the console, so that one
    command opens it on a home that never ran a server.
    """
    db = server_dir / "basic_auth.db"
    if db.is_file():
        with sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True, timeout=5) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "users" in tables and conn.execute("SELECT COUNT(*) FROM users").fetchone()[0]:
                return
    if not password:
        return
    add_user(server_dir, ADMIN, password, "admin")
