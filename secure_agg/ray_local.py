"""A Ray cluster of a few nodes on this machine's loopback (tests, benchmarks, one-machine trials).

``ray start --head --block`` and ``ray start --address ... --block`` for each further node, every
node on ``127.0.0.1`` with ports of its own (so that two clusters, or this cluster and a Flower
simulation's, do not meet), no dashboard and no usage statistics, under one temporary folder.
Each ``ray start --block`` stays in the foreground and stops the processes it started when it is
terminated; :meth:`LocalRayCluster.stop` terminates them by process id (then their process
groups, which this object created), never by name.

Ray waits 30 s (a fixed limit) for a node's processes to register; on a loaded machine that can
fail. :meth:`LocalRayCluster.start` then stops what had started and tries again
(:data:`START_ATTEMPTS`), and at last raises :class:`~secure_agg.compute.ComputeBackendError`
with the end of the nodes' logs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from secure_agg.compute import ComputeBackendError, ComputeSettings
from secure_agg.ray_backend import RayGateway, gateway_env

#: Seconds :meth:`LocalRayCluster.start` waits for the head's port and for every node to join.
START_TIMEOUT = 120.0
#: Times :meth:`LocalRayCluster.start` tries before it gives up (Ray's node start timeout is
#: fixed at 30 s, which a loaded machine can miss).
START_ATTEMPTS = 2
#: Seconds :meth:`LocalRayCluster.stop` gives a node to stop after ``SIGTERM``.
STOP_TIMEOUT = 20.0
_HOST = "127.0.0.1"

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port of ``127.0.0.1`` that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def other_interfaces() -> list[str]:
    """This network namespace's interfaces besides loopback, by name.

    Ray 2.55's nodes listen on every interface, so a cluster started here is reachable on each
    of these (none in a namespace of its own with only loopback up).
    """
    return sorted(name for _, name in socket.if_nameindex() if name != "lo")


def beyond_loopback_refusal(script: str) -> str | None:
    """Why a benchmark ``script`` should not start a cluster here, with the fix; ``None`` if fine.

    The fix names the script's own ``--ray-on-all-interfaces`` option for a host behind its own
    firewall.
    """
    others = other_interfaces()
    if not others:
        return None
    return (
        f"Ray 2.55's nodes listen on every interface ({', '.join(others)} here besides "
        "loopback); run the benchmark in a network namespace of its own: unshare --net -- sh "
        f"-c 'ip link set lo up && exec .venv/bin/python {script} ...' (as root), or pass "
        "--ray-on-all-interfaces on a host behind its own firewall"
    )


def _ray_executable() -> str:
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.is_file() else shutil.which("ray")
    if found is None:
        raise ComputeBackendError("no 'ray' command beside this Python or on PATH; install ray")
    return found


class LocalRayCluster:
    """``nodes`` Ray nodes of ``cpus_per_node`` CPUs each on loopback (see the module docstring).

    Parameters
    ----------
    nodes : int
        The head and ``nodes - 1`` worker nodes.
    cpus_per_node : int
        ``--num-cpus`` of every node.
    object_store_mb : int
        ``--object-store-memory`` of every node, in MiB.
    """

    def __init__(self, nodes: int = 2, cpus_per_node: int = 1, *, object_store_mb: int = 256):
        if nodes < 1 or cpus_per_node < 1:
            raise ValueError(
                f"a cluster needs nodes >= 1 and cpus >= 1, got {nodes}, {cpus_per_node}"
            )
        self.nodes = nodes
        self.cpus_per_node = cpus_per_node
        self.object_store_bytes = object_store_mb * 1024 * 1024
        self.port = 0
        self._procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self._temp: Path | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>`` of the head (after :meth:`start`)."""
        return f"{_HOST}:{self.port}"

    @property
    def pids(self) -> list[int]:
        """Process ids of the ``ray start --block`` processes (one per node)."""
        return [p.pid for p in self._procs]

    def drivers(self) -> int:
        """Drivers (Ray jobs: a party's gateway each) that have connected so far.

        Counted from the nodes' session logs, one ``python-core-driver-*`` log per driver, so
        a caller that is not itself a driver (a test, a benchmark) sees whether a party's node
        really used this cluster.
        """
        if self._temp is None:
            return 0
        return len(list(self._temp.glob("session_*/logs/python-core-driver-*.log")))

    def settings(self, cpus: int | None = None) -> ComputeSettings:
        """A ``ray`` backend on this cluster."""
        return ComputeSettings(backend="ray", address=self.address, cpus=cpus)

    def start(self, timeout: float = START_TIMEOUT, attempts: int = START_ATTEMPTS) -> Self:
        """Start the nodes and wait until every one has joined, trying ``attempts`` times.

        Raises
        ------
        ComputeBackendError
            If a node does not come up in time on the last attempt (with the end of its log);
            everything started is stopped first.
        """
        for attempt in range(1, attempts + 1):
            try:
                return self._start(timeout)
            except ComputeBackendError as exc:
                if attempt == attempts:
                    raise
                logger.warning("local Ray cluster, attempt %d of %d: %s", attempt, attempts, exc)
        raise ComputeBackendError(f"attempts must be at least 1, got {attempts}")

    def _start(self, timeout: float) -> Self:
        # Unix socket paths are limited to ~107 bytes: a short folder of our own.
        self._temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        self.port = free_port()
        try:
            self._start_node(self._temp, head=True)
            self._wait_port(timeout)
            for _ in range(self.nodes - 1):
                self._start_node(self._temp, head=False)
            self._wait_nodes(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_node(self, temp: Path, *, head: bool) -> None:
        ports = {
            "--node-manager-port": free_port(),
            "--object-manager-port": free_port(),
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--metrics-export-port": free_port(),
            "--runtime-env-agent-port": free_port(),
        }
        base = free_port()
        args = [
            _ray_executable(),
            "start",
            "--block",
            "--node-ip-address",
            _HOST,
            "--num-cpus",
            str(self.cpus_per_node),
            "--object-store-memory",
            str(self.object_store_bytes),
            "--disable-usage-stats",
            *[item for key, port in ports.items() for item in (key, str(port))],
            "--min-worker-port",
            str(base),
            "--max-worker-port",
            str(base + 200),
        ]
        if head:
            args += [
                "--head",
                "--port",
                str(self.port),
                "--include-dashboard=false",
                "--ray-client-server-port",
                str(free_port()),
                "--temp-dir",
                str(temp),
            ]
        else:
            args += ["--address", self.address]
        log = open(temp / f"node-{len(self._procs)}.log", "wb")  # noqa: SIM115 - kept open
        self._logs.append(log)
        env = gateway_env()
        # A process group of its own (stopped as a whole below, and out of the terminal's
        # foreground group, so Ctrl-C reaches the caller only), but the caller's session:
        # Linux schedules each session as one group (autogroup), so a node in a session of its
        # own would get half the CPU against all of the caller's processes, and the parties'
        # lowest-priority threads (precomputed randomness) would compete with its tasks as
        # equals instead of only taking idle cores.
        self._procs.append(
            subprocess.Popen(  # noqa: S603 - ray's own command, our arguments, no shell
                args, stdout=log, stderr=subprocess.STDOUT, env=env, process_group=0
            )
        )

    def _failed(self, what: str) -> ComputeBackendError:
        tail = ""
        if self._temp is not None:
            for path in sorted(self._temp.glob("node-*.log")):
                text = path.read_text(errors="replace").strip().splitlines()[-8:]
                tail += f"\n--- {path.name}:\n" + "\n".join(text)
        return ComputeBackendError(
            f"the local Ray cluster at {self.address} {what}. Ray gives a node about 30 s to "
            "start; on a loaded machine retry when the load is lower." + tail
        )

    def _wait_port(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._procs[0].poll() is not None:
                raise self._failed(f"head exited with code {self._procs[0].returncode}")
            with contextlib.suppress(OSError):
                socket.create_connection((_HOST, self.port), timeout=1.0).close()
                return
            time.sleep(0.2)
        raise self._failed(f"head did not listen within {timeout:.0f} s")

    def _wait_nodes(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:  # the head's port opens before its raylet has registered
            try:
                gateway = RayGateway(self.settings())
                break
            except ComputeBackendError as exc:
                if time.monotonic() > deadline or self._procs[0].poll() is not None:
                    raise self._failed(
                        f"accepted no driver within {timeout:.0f} s ({exc})"
                    ) from exc
                time.sleep(1.0)
        try:
            while gateway.nodes < self.nodes:
                for index, proc in enumerate(self._procs):
                    if proc.poll() is not None:
                        raise self._failed(f"node {index} exited with code {proc.returncode}")
                if time.monotonic() > deadline:
                    raise self._failed(
                        f"has {gateway.nodes} of {self.nodes} nodes after {timeout:.0f} s"
                    )
                time.sleep(0.5)
                gateway.refresh()
        finally:
            gateway.close()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop every node (worker nodes first), by process id, then remove the temporary folder."""
        procs, self._procs = self._procs, []
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            # What the node started lives in the process group this object made for it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for log in self._logs:
            log.close()
        self._logs = []
        if self._temp is not None:
            shutil.rmtree(self._temp, ignore_errors=True)
            self._temp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
