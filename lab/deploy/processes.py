"""Detached service processes: start with a log file, find free ports, stop for sure.

Every process of a deployment is started in its own session (so a terminal's Ctrl-C does not
reach it and ``lab down`` can signal its whole process group: a SuperLink's SuperExec and
ServerApp, a SuperNode's SuperExec and ClientApps) and is stopped with SIGTERM, then SIGKILL
after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil  # type: ignore[import-untyped]

#: Seconds a process gets to exit after SIGTERM before it is killed.
GRACE_SECONDS = 10.0

#: Phoning home and runtime dependency installation are off in everything a deployment starts.
QUIET_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PYTHONUNBUFFERED": "1",
}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def service_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a service: this one, quiet, with this venv's scripts on PATH."""
    env = dict(os.environ) | QUIET_ENV
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = scripts + os.pathsep + env.get("PATH", "")
    return env | dict(extra or {})


def spawn(command: Sequence[str], log: Path, env: Mapping[str, str], cwd: Path) -> int:
    """Start ``command`` detached (own session), output appended to ``log``; return its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(  # noqa: S603 (commands are built here, never from input)
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    return process.pid


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (zombies count as gone)."""
    try:
        status: str = psutil.Process(pid).status()
    except psutil.Error:
        return False
    return bool(status != psutil.STATUS_ZOMBIE)


def _reap(pid: int) -> None:
    # Our own children must be waited for, or they linger as zombies.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def family(pid: int) -> list[psutil.Process]:
    """``pid`` and all its descendants that still run."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def stop(pids: Sequence[int], grace: float = GRACE_SECONDS) -> list[int]:
    """Stop processes and their descendants: SIGTERM, wait ``grace`` s, then SIGKILL.

    Returns the pids that were signalled. Processes that are already gone are skipped.
    """
    targets: dict[int, psutil.Process] = {}
    for pid in pids:
        for proc in family(pid):
            targets[proc.pid] = proc
    for proc in targets.values():
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        for pid in targets:
            _reap(pid)
        if not any(alive(pid) for pid in targets):
            break
        time.sleep(0.1)
    for pid, proc in targets.items():
        if alive(pid):
            with contextlib.suppress(psutil.Error):
                proc.kill()
    for pid in targets:
        _reap(pid)
    end = time.monotonic() + 5.0
    while time.monotonic() < end and any(alive(pid) for pid in targets):
        for pid in targets:
            _reap(pid)
        time.sleep(0.05)
    return sorted(targets)
