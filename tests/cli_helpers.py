"""Run the installed ``lab`` executable in a subprocess, as a user, cron job or CI gate would.

Every CLI test that cares about the exit status should go through :func:`run_lab`: Typer's
in-process test runner calls the command function directly and never sees what the console
script returns to the shell.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

#: The console script installed into the test interpreter's virtual environment.
LAB = Path(sys.executable).parent / "lab"

#: Phoning home is off in everything the tests start.
QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def run_lab(
    args: Sequence[str],
    *,
    home: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``lab ARGS`` with ``LAB_HOME=home`` and return the finished process (text output).

    Parameters
    ----------
    args : sequence of str
        Arguments after ``lab``.
    home : Path
        The test's lab home (the ``lab_home`` fixture); ``LAB_KEYS`` is inherited from the
        test's environment (the fixture sets one per test) unless ``env`` overrides it.
    env : Mapping, optional
        Extra variables (override the inherited ones).
    timeout : float
        Seconds before the process is killed and the test fails.
    cwd : Path, optional
        Working directory.
    """
    full = {**os.environ, **QUIET_ENV, "LAB_HOME": str(home), **(env or {})}
    full.pop("LAB_DEBUG", None)
    return subprocess.run(
        [str(LAB), *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )
