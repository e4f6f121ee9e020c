"""The console's settings: which home it shows, whose users log in, where it listens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The console listens on loopback only; nothing else is ever bound.
HOST = "127.0.0.1"
#: Default port of ``lab console`` (``lab mlflow ui`` takes 5000, ``lab platform serve`` 8080).
DEFAULT_PORT = 8765
#: Default link target for a job's MLflow run (``lab mlflow ui``'s default address).
DEFAULT_MLFLOW_URL = "http://127.0.0.1:5000"
#: Rows per page of the long tables (jobs, audit entries, alerts).
PAGE_SIZE = 50
#: Shortest time between two background re-verifications of the audit chain (seconds).
VERIFY_INTERVAL_S = 30.0
#: Folder (under the home) of the users of the lab's MLflow server, when not given.
DEFAULT_USERS_DIR = "mlflow-server"


@dataclass(frozen=True)
class ConsoleConfig:
    """What one console process serves.

    Attributes
    ----------
    home : Path
        The party's lab home (``$LAB_HOME``): catalog, ``governance.db``, audit log, MLflow store.
    users_dir : Path
        The lab's MLflow server folder (``lab mlflow serve --dir``): ``basic_auth.db`` holds the
        users and their password hashes, ``auditors.txt`` the read-only ones.
    mlflow_url : str
        Base URL of the MLflow UI that job pages link to.
    verify_interval_s : float
        Shortest time between two background re-verifications of the audit chain.
    page_size : int
        Rows per page of long tables.
    """

    home: Path
    users_dir: Path
    mlflow_url: str = DEFAULT_MLFLOW_URL
    verify_interval_s: float = VERIFY_INTERVAL_S
    page_size: int = PAGE_SIZE

    @property
    def audit_log(self) -> Path:
        """The home's audit log."""
        return self.home / "audit" / "log.jsonl"

    @property
    def governance_db(self) -> Path:
        """The home's ledger and authorization registry."""
        return self.home / "governance.db"

    @property
    def tracking_db(self) -> Path:
        """The home's embedded MLflow store."""
        return self.home / "mlflow.db"
