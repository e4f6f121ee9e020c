"""``lab node start`` / ``lab node stop``: run one installation's processes on its own host.

Coordinator (``lab node start --home C``)::

    python -m lab.deploy.superlink   SuperLink on LISTEN:SUPERLINK_PORT, TLS (tls/server.*),
                                     --enable-supernode-auth, state in superlink/state.db;
                                     peers reach its Fleet API only
    python -m lab.deploy.jobs_endpoint  HTTPS LISTEN:JOBS_PORT, signed job requests of banks

then every admitted party's key (``parties/N.pub``) is registered on the SuperLink (a key
already registered is kept; a party whose key was replaced has the old one unregistered).

Party (``lab node start --home P --data FILE``): first, the budget reservations the node left
open when it last stopped are settled from its own journal (:func:`settle_left_open`); then
its SuperNode (tuned profile: adaptive polling, ``--isolation process``, the run watch of its
reservations, :mod:`lab.deploy.run_watch`) against the coordinator named in ``node.json``,
verifying it with ``trust/ca.crt``, signing with ``keys/node``; its Runtime API on 127.0.0.1
with the party's own ``local-tls`` certificate; one warm ClientApp worker. The node config
names the party, its role, its data file, its store (``node/store``) and its governance home
(``P``).

Pids and logs are in ``run.json`` of the home (no key material).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lab.config import NODE_POLICY
from lab.deploy import processes
from lab.deploy.control import ControlClient
from lab.deploy.errors import DeploymentError, StartupError
from lab.deploy.node_home import NodeHome
from lab.deploy.node_keys import NodeKey
from lab.deploy.tls import TlsFiles

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
#: Seconds ``lab node start`` waits for its processes to listen or connect.
START_TIMEOUT = 120.0
#: A SuperNode that runs this long after start without failing to activate has joined.
SETTLE_SECONDS = 4.0
#: Tuned profile: (fastest, slowest) poll seconds of a SuperNode and of its worker.
SUPERNODE_POLL = (0.02, 0.25)
WORKER_POLL = (0.01, 0.25)


def bin_path(name: str) -> str:
    """A console script of this environment (``flower-superlink`` ...)."""
    return str(Path(sys.executable).parent / name)


def log_tail(path: Path, lines: int = 8) -> str:
    """The last lines of a log, on one line."""
    if not path.is_file():
        return "(no log)"
    text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return " | ".join(line.strip() for line in text[-lines:]) or "(empty log)"


def toml_lines(values: dict[str, str]) -> str:
    """A flat TOML table (JSON strings are valid TOML basic strings)."""
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())


def superlink_command(
    tls: TlsFiles, host: str, port: int, database: Path | None = None
) -> list[str]:
    """The SuperLink's command line: TLS, node auth, peers limited to the Fleet API."""
    command = [
        sys.executable,
        "-m",
        "lab.deploy.superlink",
        "--",
        "--ssl-ca-certfile",
        str(tls.ca_cert),
        "--ssl-certfile",
        str(tls.server_cert),
        "--ssl-keyfile",
        str(tls.server_key),
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
        "--host",
        host,
        "--port",
        str(port),
    ]
    if database is not None:
        command += ["--database", str(database)]
    return command


def supernode_command(
    superlink: str,
    tls: TlsFiles,
    key: Path,
    node_config: Path,
    runtime_port: int,
    profile: str,
    *,
    root_ca: Path | None = None,
    watch_home: Path | None = None,
) -> list[str]:
    """One party's SuperNode command line.

    ``tls`` serves the node's loopback Runtime API; ``root_ca`` (default ``tls.ca_cert``)
    verifies the SuperLink. ``watch_home`` (tuned profile) runs the node's run watch over the
    budget reservations journaled in that governance home (:mod:`lab.deploy.run_watch`).
    """
    flower_args = [
        "--superlink",
        superlink,
        "--root-certificates",
        str(root_ca or tls.ca_cert),
        "--auth-supernode-private-key",
        str(key),
        "--node-config",
        str(node_config),
        "--host",
        "127.0.0.1",
        "--port",
        str(runtime_port),
        "--ssl-certfile",
        str(tls.server_cert),
        "--ssl-keyfile",
        str(tls.server_key),
        "--ssl-ca-certfile",
        str(tls.ca_cert),
        "--isolation",
        "process" if profile == "tuned" else "subprocess",
    ]
    if profile == "tuned":
        fastest, slowest = SUPERNODE_POLL
        return [
            sys.executable,
            "-m",
            "lab.deploy.supernode",
            "--poll-fastest",
            str(fastest),
            "--poll-slowest",
            str(slowest),
            *(["--watch-home", str(watch_home)] if watch_home is not None else []),
            "--",
            *flower_args,
        ]
    return [bin_path("flower-supernode"), *flower_args]


def worker_command(runtime_port: int, ca_cert: Path, parent_pid: int) -> list[str]:
    """The warm ClientApp worker of one SuperNode (tuned profile)."""
    return [
        sys.executable,
        "-m",
        "lab.deploy.worker",
        "--runtime-api-address",
        f"127.0.0.1:{runtime_port}",
        "--root-certificates",
        str(ca_cert),
        "--parent-pid",
        str(parent_pid),
        "--poll-fastest",
        str(WORKER_POLL[0]),
        "--poll-slowest",
        str(WORKER_POLL[1]),
    ]


def node_config(
    party: str,
    role: str,
    data: Path,
    store: Path,
    governance_home: Path,
    holdout: Path | None = None,
    recent: Path | None = None,
) -> str:
    """The node config of one party's SuperNode (its own files only).

    ``holdout`` and ``recent`` (the party's recent window that screening compares with its
    training window) are the party's own files, named only in its node config.
    """
    values = {
        "party": party,
        "role": role,
        "data": str(data),
        "store": str(store),
        "policy": NODE_POLICY,
        "governance-home": str(governance_home),
    }
    if holdout is not None:
        values["holdout"] = str(holdout)
    if recent is not None:
        values["recent"] = str(recent)
    return toml_lines(values)


# --- one installation's processes ----------------------------------------------------------------


def read_run(home: NodeHome) -> dict[str, Any]:
    """``run.json`` of ``home`` (empty when nothing was started)."""
    path = home.path / RUN_FILE
    if not path.is_file():
        return {}
    raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return raw


def _write_run(home: NodeHome, run: dict[str, Any]) -> None:
    path = home.path / RUN_FILE
    tmp = path.with_name(RUN_FILE + ".tmp")
    tmp.write_text(json.dumps(run, indent=1), encoding="utf-8")
    tmp.replace(path)


def running(home: NodeHome) -> dict[str, int]:
    """``{process: pid}`` of ``home``'s processes that still run."""
    return {
        name: int(info["pid"])
        for name, info in read_run(home).get("processes", {}).items()
        if processes.alive(int(info["pid"]))
    }


class _Launcher:
    """Starts one home's processes, recording each as soon as it runs."""

    def __init__(self, home: NodeHome) -> None:
        self.home = home
        self.run: dict[str, Any] = {"processes": {}}

    def spawn(self, name: str, command: Sequence[str], log: Path) -> int:
        env = processes.service_env(
            {"FLWR_HOME": str(self.home.path / "flwr-home" / name), "LAB_HOME": str(self.home.path)}
        )
        (self.home.path / "flwr-home" / name).mkdir(parents=True, exist_ok=True)
        pid = processes.spawn(command, log, env, cwd=self.home.path)
        self.run["processes"][name] = {"pid": pid, "log": str(log)}
        _write_run(self.home, self.run)
        return pid

    def wait(self, name: str, ready: Any, timeout: float) -> None:
        info = self.run["processes"][name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not processes.alive(info["pid"]):
                raise StartupError(f"{name} exited while starting: {log_tail(Path(info['log']))}")
            if ready():
                return
            time.sleep(0.25)
        raise StartupError(
            f"{name} did not become ready within {timeout:.0f} s: {log_tail(Path(info['log']))}"
        )

    def pids(self) -> list[int]:
        return [int(p["pid"]) for p in self.run["processes"].values()]


def start(
    home: NodeHome,
    *,
    data: Path | None = None,
    holdout: Path | None = None,
    profile: str = "tuned",
    timeout: float = START_TIMEOUT,
) -> dict[str, Any]:
    """Start ``home``'s processes (see the module docstring); return ``run.json``'s content.

    Raises
    ------
    DeploymentError
        Already running, missing files (the coordinator's CA, the party's data).
    StartupError
        A process failed; everything this call started has been stopped.
    """
    if running(home):
        raise DeploymentError(
            f"{home.path} already runs {sorted(running(home))}; stop it with "
            f"'lab node stop --home {home.path}'"
        )
    launcher = _Launcher(home)
    try:
        if home.identity.role == "coordinator":
            _start_coordinator(launcher, timeout)
        else:
            if data is None:
                raise DeploymentError(f"--data is required to start {home.identity.role} node")
            _start_party(launcher, data, holdout, profile, timeout)
    except BaseException:
        processes.stop(launcher.pids(), grace=5.0)
        (home.path / RUN_FILE).unlink(missing_ok=True)
        raise
    return launcher.run


def stop(home: NodeHome, grace: float = processes.GRACE_SECONDS) -> list[int]:
    """Stop ``home``'s processes (idempotent); return the pids signalled."""
    procs = read_run(home).get("processes", {})
    # The job endpoint and the nodes' workers first, then the SuperLink or SuperNode.
    order = sorted(procs, key=lambda n: n in ("superlink", "supernode"))
    stopped: list[int] = []
    for name in order:
        stopped += processes.stop([int(procs[name]["pid"])], grace)
    return stopped


def _start_coordinator(launcher: _Launcher, timeout: float) -> None:
    home = launcher.home
    ident = home.identity
    logs = home.path / "superlink"
    launcher.spawn(
        "superlink",
        superlink_command(home.tls, ident.listen, ident.superlink_port, home.database),
        logs / "superlink.log",
    )
    launcher.wait(
        "superlink", lambda: processes.port_open(ident.superlink_port, ident.listen), timeout
    )
    launcher.run["registered"] = sync_registrations(home, timeout)
    _write_run(home, launcher.run)
    launcher.spawn(
        "jobs",
        [sys.executable, "-m", "lab.deploy.jobs_endpoint", "--home", str(home.path)],
        logs / "jobs.log",
    )
    launcher.wait("jobs", lambda: processes.port_open(ident.jobs_port, ident.listen), timeout)


def sync_registrations(home: NodeHome, timeout: float = START_TIMEOUT) -> dict[str, int]:
    """Register every admitted party's key on the running SuperLink; return ``{party: id}``.

    A key already registered keeps its node id (the SuperLink's state survives restarts);
    a registration of an admitted party under another key (a rotated key) is removed.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with ControlClient(home.identity.superlink_address, home.tls.ca_cert) as control:
                return _sync(home, control)
        except DeploymentError:
            raise
        except Exception as exc:  # the API may not serve yet
            if time.monotonic() > deadline:
                raise StartupError(
                    f"could not register the parties' keys on the SuperLink ({exc})"
                ) from exc
            time.sleep(0.5)


def _sync(home: NodeHome, control: ControlClient) -> dict[str, int]:
    admitted = home.admitted()
    wanted = {
        party: NodeKey(home.parties / f"{party}.pub", home.parties / f"{party}.pub").public_bytes()
        for party in admitted
    }
    ids: dict[str, int] = {}
    for entry in control.nodes():
        if entry.status == "unregistered":
            continue
        if entry.name in wanted and entry.public_key == wanted[entry.name]:
            ids[entry.name] = entry.node_id
        elif entry.name in wanted:
            control.unregister_node(entry.node_id)  # a rotated key: the old one is refused
    for party, key in wanted.items():
        if party not in ids:
            ids[party] = control.register_node(key, party)
    return ids


def settle_left_open(home: NodeHome) -> dict[str, str]:
    """Settle the budget reservations this node left open when it last stopped.

    The job state of a node lives in its SuperNode process: once that process is gone no job
    it served can go on at this node, so every reservation still open in its own ledger is
    settled from its own journal (:func:`lab.governance.node.settle`) before the node starts
    again. Returns each reservation's outcome.
    """
    from lab.governance.node import open_journals, settle_open

    if home.identity.role != "platform" and not open_journals(home.path):
        return {}
    settled = settle_open(
        home.path, reason="the node started again: the jobs its previous process served ended"
    )
    for reservation, outcome in settled.items():
        logger.warning("settled reservation %s left open by the node (%s)", reservation, outcome)
    return settled


def _start_party(
    launcher: _Launcher, data: Path, holdout: Path | None, profile: str, timeout: float
) -> None:
    home = launcher.home
    ident = home.identity
    if not home.trusted_ca.is_file():
        raise DeploymentError(
            f"{home.trusted_ca} is missing; copy the coordinator's exchange/ca.crt and run "
            f"'lab node trust --home {home.path} CA_FILE'"
        )
    data = data.expanduser().resolve()
    if not data.exists():
        raise DeploymentError(f"--data {data}: no such file; give this party's own data file")
    settle_left_open(home)
    node_dir = home.node_dir
    node_dir.mkdir(exist_ok=True)
    config = node_dir / "node-config.toml"
    config.write_text(
        node_config(
            ident.name,
            ident.role,
            data,
            node_dir / "store",
            home.path,
            holdout.expanduser().resolve() if holdout else None,
        ),
        encoding="utf-8",
    )
    runtime_port = processes.free_port()
    launcher.run["runtime_port"] = runtime_port
    launcher.run["data"] = str(data)
    pid = launcher.spawn(
        "supernode",
        supernode_command(
            ident.superlink_address,
            home.local_tls,
            home.key.private_key,
            config,
            runtime_port,
            profile,
            root_ca=home.trusted_ca,
            watch_home=home.path,
        ),
        node_dir / "supernode.log",
    )
    if profile == "tuned":
        launcher.spawn(
            "worker",
            worker_command(runtime_port, home.local_tls.ca_cert, pid),
            node_dir / "worker.log",
        )
    # A SuperNode whose key the coordinator does not know exits at activation; one that
    # runs a few seconds has joined (its coordinator's Control API is not ours to ask).
    settle = time.monotonic() + min(SETTLE_SECONDS, timeout)
    launcher.wait("supernode", lambda: time.monotonic() > settle, timeout)
