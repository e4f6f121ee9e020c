"""Run one job through a deployment: ``lab up``'s folder, or a bank's own node home.

With a node home (``lab node init --role bank``) the job goes to the bank's coordinator through
its job endpoint (:mod:`lab.deploy.jobs_client`), and the outcome comes back into the lab's job
folder; everything below about results holds the same.

The lab submits the same Flower app as the embedded runtime (``federated/flwr_app``) to the
SuperLink's Control API with the job in the run config, waits for the run to finish, and
reads the result the ServerApp wrote (:func:`federated.simulation.read_result`), so tracking,
registration and governance are identical to an embedded job. Parties' data paths are not
sent: each SuperNode already knows its own party from its node config.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from federated.result import RESULT_FILE, JobResult
from federated.server_app import ERROR_FILE, INTERRUPTED
from federated.simulation import JobFailedError, app_dir, read_result
from federated.spec import JobSpec
from lab.config import Experiment
from lab.deploy import processes
from lab.deploy.control import ControlClient, RunStatus
from lab.deploy.errors import DeploymentError
from lab.deploy.node_home import NODE_FILE, NodeHome
from lab.deploy.node_runtime import running
from lab.deploy.state import DeploymentState

logger = logging.getLogger(__name__)

#: The ServerApp's reply polling in the tuned profile (fastest, slowest seconds).
TUNED_POLL = "0.005,0.2"
#: Seconds between checks of the run's status.
STATUS_INTERVAL = 0.25
#: Seconds the run may take to end after its ServerApp wrote its result or error.
WIND_DOWN_SECONDS = 60.0


def check_deployment(state: DeploymentState, experiment: Experiment) -> None:
    """Refuse to run ``experiment`` on a deployment started for other parties or data.

    Raises
    ------
    DeploymentError
        Naming the party whose node is missing, has another role or serves another file,
        or a stopped process.
    """
    folder = state.folder
    for party in experiment.config.parties:
        node = state.node(party.name)
        data = str(experiment.data_paths[party.name].resolve())
        if node.role != party.role or node.data != data:
            raise DeploymentError(
                f"the node of party '{party.name}' in {folder} serves {node.role} data "
                f"{node.data}, the experiment asks for {party.role} data {data}; restart with "
                f"'lab down --dir {folder}' and 'lab up --dir {folder} --experiment ...'"
            )
    gone = [
        name
        for name, pid in [("coordinator (SuperLink)", state.superlink.pid)]
        + [(f"party '{n.party}'", n.supernode.pid) for n in state.nodes]
        if not processes.alive(pid)
    ]
    if gone:
        raise DeploymentError(
            f"the deployment in {folder} is not running ({', '.join(gone)} stopped); restart it "
            f"with 'lab down --dir {folder}' and 'lab up --dir {folder} --experiment ...'"
        )


def run_deployed(
    spec: JobSpec,
    experiment: Experiment,
    folder: Path,
    result_dir: Path,
    *,
    capture: bool = False,
    deadline: float | None = None,
    resume: bool = False,
) -> JobResult:
    """Run ``spec`` on the deployment in ``folder`` and return its result.

    Parameters
    ----------
    spec : JobSpec
        The job.
    experiment : Experiment
        The job's experiment (its parties must be the deployment's).
    folder : Path
        The deployment folder.
    result_dir : Path
        Existing directory the ServerApp writes ``result.json`` (or ``error.json``) into.
    capture : bool
        Record every envelope passing the coordinator.
    deadline : float, optional
        Seconds after which the run is stopped (default: no limit beyond the job's
        per-hop ``runtime.message_timeout``).
    resume : bool
        Continue the job from every node's own checkpoint.

    Raises
    ------
    DeploymentError
        The folder holds no running deployment for these parties.
    JobFailedError
        A party or the coordinator reported a failure, or the run ended without a result.
    """
    folder = folder.expanduser().resolve()
    if (folder / NODE_FILE).is_file():
        home = NodeHome.read(folder)
        return _run_from_node(spec, experiment, home, result_dir, capture, deadline)
    state = DeploymentState.read(folder)
    check_deployment(state, experiment)
    config: dict[str, str | int | float] = {
        "job": spec.to_json(),
        "result-dir": str(result_dir),
        "sim-parties": "",
        "capture": "true" if capture else "false",
        "poll": TUNED_POLL if state.profile == "tuned" else "",
        "resume": "true" if resume else "false",
    }
    run_app(state, app_dir(), config, result_dir, deadline=deadline)
    return read_result(result_dir)


def _run_from_node(
    spec: JobSpec,
    experiment: Experiment,
    home: NodeHome,
    result_dir: Path,
    capture: bool,
    deadline: float | None,
) -> JobResult:
    """Submit from a bank's own node home to its coordinator (parties on their own hosts)."""
    from lab.deploy.jobs_client import run_on_coordinator

    ident = home.identity
    party = next((p for p in experiment.config.parties if p.name == ident.name), None)
    if party is None or party.role != ident.role:
        raise DeploymentError(
            f"{home.path} is the node of {ident.role} '{ident.name}', which experiment "
            f"'{experiment.name}' does not name as a {ident.role}; submit from the home of "
            "one of its banks"
        )
    if not running(home):
        raise DeploymentError(
            f"the node in {home.path} is not running; start it with "
            f"'lab node start --home {home.path} --data FILE'"
        )
    run_on_coordinator(spec, home, result_dir, capture=capture, poll=TUNED_POLL, deadline=deadline)
    return read_result(result_dir)


def run_app(
    state: DeploymentState,
    app: Path,
    config: dict[str, str | int | float],
    result_dir: Path,
    *,
    deadline: float | None = None,
    outcome_files: tuple[str, ...] = (RESULT_FILE, ERROR_FILE),
) -> RunStatus:
    """Start the Flower app in ``app`` on the deployment and wait until its run ends.

    The wait ends when the SuperLink reports the run finished, or shortly after the
    ServerApp wrote one of ``outcome_files`` into ``result_dir``.

    Raises
    ------
    JobFailedError
        The run overran ``deadline`` (it is stopped), or it ended without an outcome.
    """
    with ControlClient(state.address, Path(state.ca_cert)) as control:
        run_id = control.start_run(app, config)
        logger.info("started run %d on %s", run_id, state.address)
        started = time.monotonic()
        try:
            status = _wait(control, run_id, result_dir, outcome_files, started, deadline)
        except KeyboardInterrupt:
            # Stop the coordinator's run; each node keeps its open reservation until its
            # operator settles it from the node's journal (lab budget settle).
            control.stop_run(run_id)
            raise JobFailedError(
                INTERRUPTED, f"the job was interrupted (Ctrl-C); run {run_id} was stopped"
            ) from None
    if not _has_outcome(result_dir, outcome_files):
        raise JobFailedError(
            "RuntimeError",
            f"the coordinator's run {run_id} ended {status.status}:{status.sub_status} "
            f"without a result ({status.details or 'no details'}); see {state.superlink.log}",
        )
    return status


def _wait(
    control: ControlClient,
    run_id: int,
    result_dir: Path,
    outcome_files: tuple[str, ...],
    started: float,
    deadline: float | None,
) -> RunStatus:
    """Poll the run until it finished, or its outcome is written and it overran the wind-down."""
    wrote_at: float | None = None
    while True:
        status = control.run_status(run_id)
        if status.finished:
            return status
        now = time.monotonic()
        if wrote_at is None and _has_outcome(result_dir, outcome_files):
            wrote_at = now
        if wrote_at is not None and now - wrote_at > WIND_DOWN_SECONDS:
            return status  # the outcome is written; the run's bookkeeping is late
        if deadline is not None and now - started > deadline:
            control.stop_run(run_id)
            raise JobFailedError(
                "TimeoutError",
                f"run {run_id} did not finish within {deadline:.0f} s; it was stopped",
            )
        time.sleep(STATUS_INTERVAL)


def _has_outcome(result_dir: Path, names: tuple[str, ...]) -> bool:
    return any((result_dir / name).exists() for name in names)
