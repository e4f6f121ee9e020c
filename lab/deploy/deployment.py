"""``lab up`` / ``lab down``: a SuperLink and one SuperNode per party, on loopback.

What runs where (``DIR`` is the deployment folder)::

    coordinator  flower-superlink  TLS (DIR/tls), --enable-supernode-auth, in-memory state;
                                   its SuperExec starts a ServerApp process per job
    party P      SuperNode         TLS to the SuperLink, signs with DIR/keys/P (registered on
                                   the SuperLink before it starts), node config
                                   DIR/nodes/P/node-config.toml: party, role, data (P's own
                                   file only), store and governance home under DIR/nodes/P
                 ClientApp         stock: a flwr-clientapp process per message (SuperExec);
                                   tuned: one warm worker process (lab.deploy.worker)

Profiles: ``stock`` runs Flower 1.41 as shipped (``flower-supernode``, subprocess isolation,
fixed 3 s idle poll). ``tuned`` (the default) runs the SuperNode through
:mod:`lab.deploy.supernode` (adaptive polling), in ``--isolation process`` with a warm
:mod:`lab.deploy.worker`, and the ServerApp polls for replies adaptively. TLS and node
authentication are the same in both.

Every process gets its own ``FLWR_HOME`` under ``DIR``, telemetry and update checks off and
runtime dependency installation off.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from lab.config import Experiment
from lab.config.schema import RECENT_KEY
from lab.deploy import processes
from lab.deploy.control import ControlClient
from lab.deploy.errors import DeploymentError, StartupError
from lab.deploy.node_keys import NodeKey, generate_node_key
from lab.deploy.node_runtime import (
    log_tail,
    node_config,
    superlink_command,
    supernode_command,
    worker_command,
)
from lab.deploy.state import PROFILES, STATE_FILE, DeploymentState, NodeInfo, ProcessInfo
from lab.deploy.tls import TlsFiles, generate_tls

__all__ = ["STARTUP_TIMEOUT", "down", "running_pids", "supernode_command", "up"]

logger = logging.getLogger(__name__)

#: Seconds ``lab up`` waits for the SuperLink to listen and for every node to connect.
STARTUP_TIMEOUT = 120.0


def running_pids(folder: Path) -> list[int]:
    """Pids recorded in ``folder``'s state file that still run (none if no state)."""
    try:
        state = DeploymentState.read(folder)
    except DeploymentError:
        return []
    return [pid for pid in state.pids() if processes.alive(pid)]


class _Starter:
    """Starts the processes of one deployment and records them as it goes."""

    def __init__(self, folder: Path, experiment: Experiment, profile: str) -> None:
        self.folder = folder
        self.experiment = experiment
        self.profile = profile
        self.pids: list[int] = []
        self.state: DeploymentState | None = None

    def spawn(self, command: Sequence[str], log: Path, home: Path) -> int:
        home.mkdir(parents=True, exist_ok=True)
        env = processes.service_env({"FLWR_HOME": str(home)})
        pid = processes.spawn(command, log, env, cwd=self.folder)
        self.pids.append(pid)
        if self.state is not None:
            self.state = replace(self.state, pending_pids=tuple(self.pids))
            self.state.write(self.folder)
        return pid

    def wait(
        self, what: str, pid: int, log: Path, ready: Callable[[], bool], timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not processes.alive(pid):
                raise StartupError(f"{what} exited while starting: {log_tail(log)}")
            if ready():
                return
            time.sleep(0.25)
        raise StartupError(f"{what} did not become ready within {timeout:.0f} s: {log_tail(log)}")


def up(
    folder: Path,
    experiment: Experiment,
    *,
    profile: str = "tuned",
    governance_home: Path | None = None,
    timeout: float = STARTUP_TIMEOUT,
) -> DeploymentState:
    """Start the deployment of ``experiment``'s parties in ``folder`` (see the module docstring).

    Parameters
    ----------
    folder : Path
        Deployment folder (created; must not hold a running deployment).
    experiment : Experiment
        Names the parties, their roles and their data files.
    profile : {"tuned", "stock"}
        Deployment engine profile.
    governance_home : Path, optional
        One governance home (catalog, authorizations, audit log) for every node instead of
        a fresh one per node under ``DIR/nodes/<party>/governance``.
    timeout : float
        Seconds to wait for the SuperLink and for every node to connect.

    Raises
    ------
    DeploymentError
        ``folder`` already runs a deployment, or the profile is unknown.
    StartupError
        A process failed to start or connect; everything started has been stopped.
    """
    if profile not in PROFILES:
        raise DeploymentError(f"unknown profile '{profile}'; use one of {list(PROFILES)}")
    folder = folder.expanduser().resolve()
    if running_pids(folder):
        raise DeploymentError(
            f"{folder} already runs a deployment; stop it with 'lab down --dir {folder}'"
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATE_FILE).unlink(missing_ok=True)
    starter = _Starter(folder, experiment, profile)
    try:
        return _start(starter, governance_home, timeout)
    except BaseException:
        stopped = processes.stop(starter.pids)
        logger.info("startup failed; stopped %s", stopped)
        (folder / STATE_FILE).unlink(missing_ok=True)
        raise


def _start(starter: _Starter, governance_home: Path | None, timeout: float) -> DeploymentState:
    folder, experiment, profile = starter.folder, starter.experiment, starter.profile
    tls = generate_tls(folder / "tls")
    keys: dict[str, NodeKey] = {
        p.name: generate_node_key(folder / "keys", p.name) for p in experiment.config.parties
    }

    port = processes.free_port()
    link_dir = folder / "superlink"
    link_log = link_dir / "superlink.log"
    database = link_dir / "state.db"
    database.unlink(missing_ok=True)  # a new deployment: new keys, no earlier runs
    link_pid = starter.spawn(
        superlink_command(tls, "127.0.0.1", port, database),
        link_log,
        link_dir / "flwr-home",
    )
    starter.state = DeploymentState(
        folder=str(folder),
        experiment=str(experiment.path or ""),
        experiment_name=experiment.name,
        profile=profile,
        superlink_port=port,
        superlink=ProcessInfo(link_pid, str(link_log)),
        ca_cert=str(tls.ca_cert),
        pending_pids=tuple(starter.pids),
    )
    starter.state.write(folder)
    starter.wait("the SuperLink", link_pid, link_log, lambda: processes.port_open(port), timeout)

    with ControlClient(starter.state.address, tls.ca_cert) as control:
        node_ids = _register(control, keys, link_pid, link_log, timeout)
        nodes = [
            _start_node(
                starter, tls, keys[p.name], node_ids[p.name], p.name, p.role, governance_home
            )
            for p in experiment.config.parties
        ]
        deadline = time.monotonic() + timeout
        while not set(node_ids.values()) <= control.online_nodes():
            for node in nodes:
                for proc in (node.supernode, node.worker):
                    if proc is not None and not processes.alive(proc.pid):
                        raise StartupError(
                            f"the node of party '{node.party}' exited while connecting: "
                            f"{log_tail(Path(proc.log))}"
                        )
            if time.monotonic() > deadline:
                missing = [n.party for n in nodes if n.node_id not in control.online_nodes()]
                raise StartupError(
                    f"the nodes of {missing} did not connect to the SuperLink within "
                    f"{timeout:.0f} s; see their logs under {folder / 'nodes'}"
                )
            time.sleep(0.25)
    state = replace(starter.state, nodes=tuple(nodes), pending_pids=())
    state.write(folder)
    return state


def _register(
    control: ControlClient, keys: dict[str, NodeKey], pid: int, log: Path, timeout: float
) -> dict[str, int]:
    """Register every party's public key (retrying while the Control API comes up)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return {
                party: control.register_node(k.public_bytes(), party) for party, k in keys.items()
            }
        except DeploymentError:
            raise
        except Exception as exc:  # the API may not serve yet
            if not processes.alive(pid) or time.monotonic() > deadline:
                raise StartupError(
                    f"could not register the party nodes' keys on the SuperLink ({exc}): "
                    f"{log_tail(log)}"
                ) from exc
            time.sleep(0.5)


def _start_node(
    starter: _Starter,
    tls: TlsFiles,
    key: NodeKey,
    node_id: int,
    party: str,
    role: str,
    governance_home: Path | None,
) -> NodeInfo:
    node_dir = starter.folder / "nodes" / party
    node_dir.mkdir(parents=True, exist_ok=True)
    data = starter.experiment.data_paths[party].resolve()
    home = (governance_home or node_dir / "governance").resolve()
    store = node_dir / "store"
    config = node_dir / "node-config.toml"
    recent = starter.experiment.data_paths.get(RECENT_KEY + party)
    config.write_text(
        # the party's recent window for screening, if any, is kept at its node
        node_config(
            party, role, data, store, home, recent=None if recent is None else recent.resolve()
        ),
        encoding="utf-8",
    )
    runtime_port = processes.free_port()
    log = node_dir / "supernode.log"
    if starter.state is None:
        raise StartupError("the SuperLink must be started before the party nodes")
    command = supernode_command(
        starter.state.address, tls, key.private_key, config, runtime_port, starter.profile
    )
    pid = starter.spawn(command, log, node_dir / "flwr-home")
    worker = None
    if starter.profile == "tuned":
        worker_log = node_dir / "worker.log"
        worker_pid = starter.spawn(
            worker_command(runtime_port, tls.ca_cert, pid),
            worker_log,
            node_dir / "flwr-home",
        )
        worker = ProcessInfo(worker_pid, str(worker_log))
    return NodeInfo(
        party=party,
        role=role,
        data=str(data),
        node_id=node_id,
        runtime_port=runtime_port,
        supernode=ProcessInfo(pid, str(log)),
        worker=worker,
        private_key=str(key.private_key),
        public_key=str(key.public_key),
        governance_home=str(home),
        store=str(store),
    )


def down(folder: Path, grace: float = processes.GRACE_SECONDS) -> list[int]:
    """Stop every process of the deployment in ``folder``; return the pids signalled.

    Idempotent: a folder with nothing running (or no deployment at all) is fine.
    """
    folder = folder.expanduser().resolve()
    try:
        state = DeploymentState.read(folder)
    except DeploymentError:
        return []
    # Nodes first (they would otherwise retry connecting), then the coordinator.
    stopped = processes.stop([pid for pid in state.pids() if pid != state.superlink.pid], grace)
    stopped += processes.stop([state.superlink.pid], grace)
    return stopped
