"""The governance database (``$LAB_HOME/governance.db``) as seen by one registry."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Self

from lab.governance._common import connect, utc_now, write_transaction
from lab.governance.audit import AuditLog
from lab.home import lab_home


class GovernanceStore:
    """A lazily opened connection to the governance database, creating ``SCHEMA`` on first use.

    Subclasses (the authorization registry, the budget ledger) set ``SCHEMA`` to their tables'
    ``CREATE ... IF NOT EXISTS`` statements, separated by ``;``.
    """

    SCHEMA: ClassVar[str] = ""

    def __init__(
        self,
        path: Path | None = None,
        *,
        audit: AuditLog | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.path = path if path is not None else lab_home() / "governance.db"
        self.audit = audit if audit is not None else AuditLog()
        self._clock = clock or utc_now
        self._conn: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def close(self) -> None:
        """Close the database connection (reopened on next use)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def conn(self) -> sqlite3.Connection:
        """The open connection, creating the schema on first use."""
        if self._conn is None:
            conn = connect(self.path)
            with write_transaction(conn):
                for statement in self.SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            self._conn = conn
        return self._conn
