"""The embedded runtime: run a job's Flower apps on this machine with Flower's simulation engine.

The coordinator (ServerApp) runs in a thread of the calling process; every party's ClientApp
runs in Ray worker processes, one simulated SuperNode per party. The apps are exactly those a
deployment runs; only where a node learns its party differs (run config ``sim-parties``
instead of a SuperNode's ``node_config``).

Ray's processes (GCS, raylet, workers, agents) hold every party's table and keys during a
job, and by default Ray binds their gRPC servers to all interfaces, unauthenticated. The
embedded runtime keeps Ray on loopback only (:func:`loopback_only`) and its dashboard off:
nothing it starts can be reached from another host.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Any

import psutil  # type: ignore[import-untyped]

from federated import interrupt
from federated.result import RESULT_FILE, JobResult
from federated.server_app import ERROR_FILE
from federated.spec import JobSpec, PartyBinding

logger = logging.getLogger(__name__)

#: Ray's switch between "cluster" and single-host mode. With clusters off, Ray takes the
#: loopback address as the node's address and binds every server of the node to it; with them
#: on (the default on Linux), it replaces 127.0.0.1 by the host's outward address and binds
#: its gRPC servers to all interfaces.
RAY_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK = "127.0.0.1"


def loopback_only() -> None:
    """Make every Ray process this process starts listen on 127.0.0.1 only.

    Sets the environment Ray's child processes inherit, and Ray's already-read constant if Ray
    was imported earlier in this process.
    """
    os.environ[RAY_CLUSTER_ENV] = "0"
    import sys

    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False  # type: ignore[attr-defined]


#: Seconds after a first Ctrl-C before the runtime's processes are killed if the job has not
#: wound down by itself (a party may be in the middle of a long step).
STOP_GRACE_SECONDS = 8.0


def _ray_processes() -> list[psutil.Process]:
    """Ray's processes started by this process (GCS, raylet, workers, agents) and their children.

    Found by name among this process's descendants, so servers a caller started itself (tests,
    notebooks) are never touched.
    """
    found: dict[int, psutil.Process] = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            name = proc.name()
            command = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if name in ("gcs_server", "raylet") or name.startswith("ray::") or "/ray/" in command:
            found[proc.pid] = proc
            try:
                found.update({c.pid: c for c in proc.children(recursive=True)})
            except psutil.Error:
                continue
    return list(found.values())


def stop_ray_processes(grace: float = 2.0) -> list[int]:
    """Terminate (then kill) every Ray process of this process; return their pids."""
    procs = _ray_processes()
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace)
    return [p.pid for p in procs]


@contextmanager
def _interruptible() -> Iterator[None]:
    """Ctrl-C stops the job in order, a second Ctrl-C at once.

    The first asks the coordinator to stop: nodes close their part (``job/end``), the runtime
    winds down, and after :data:`STOP_GRACE_SECONDS` Ray's processes are killed if it has not.
    The second kills Ray's processes and raises ``KeyboardInterrupt``.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupt.reset()
    previous = signal.getsignal(signal.SIGINT)
    watchdog: threading.Timer | None = None

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal watchdog
        del signum, frame
        if interrupt.stop_requested():
            stop_ray_processes(grace=0.5)
            raise KeyboardInterrupt
        logger.warning("interrupted: stopping the job (press Ctrl-C again to stop at once)")
        interrupt.request_stop()
        watchdog = threading.Timer(STOP_GRACE_SECONDS, stop_ray_processes)
        watchdog.daemon = True
        watchdog.start()

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if watchdog is not None:
            watchdog.cancel()
        if interrupt.stop_requested():
            stop_ray_processes()  # whatever did not wind down with the runtime


class JobFailedError(RuntimeError):
    """The job started but did not finish.

    Attributes
    ----------
    error_type : str
        The failing party's or coordinator's error class (``DataError``, ``TransportError`` ...).
    party : str or None
        The party that reported the failure, if any.
    """

    def __init__(self, error_type: str, message: str, party: str | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.party = party


@dataclass(frozen=True)
class EmbeddedOptions:
    """Knobs of the embedded runtime.

    Attributes
    ----------
    cpus_per_party : float
        Ray CPUs reserved per ClientApp execution (with 2 cores and 1.0, two parties compute
        at once).
    capture : bool
        Record every envelope that passes the coordinator into ``capture.jsonl``.
    verbose : bool
        Let Flower and Ray log at their usual levels.
    resume : bool
        Continue the job from every node's own checkpoint (:mod:`models.checkpoint`).
    """

    cpus_per_party: float = 1.0
    capture: bool = False
    verbose: bool = False
    resume: bool = False


#: Attempts at starting Ray's node. Ray gives its raylet a fixed 30 s to register (not
#: configurable); on a loaded machine that can pass, and a second attempt usually succeeds.
RAY_START_ATTEMPTS = 2

#: What Ray says when its node missed that window (the only failure a new attempt helps).
_RAY_START_TIMEOUT = "timed out during startup"


def start_ray(init_args: dict[str, Any], attempts: int = RAY_START_ATTEMPTS) -> None:
    """Start Ray's node in this thread (as Flower would), again if it timed out on its way up.

    Flower's simulation engine starts Ray itself unless it is running; starting it here lets
    the runtime try again when the raylet missed Ray's 30 s registration window (a busy
    machine), after stopping what the failed attempt left. Ray's processes stop when the
    thread that started them ends, so call this from the thread that runs the job.

    Raises
    ------
    RuntimeError
        If Ray did not start: the last attempt's error, with the number of attempts.
    """
    import ray

    pythonpath = os.pathsep.join(sys.path)
    if os.environ.get("PYTHONPATH"):
        pythonpath = f"{pythonpath}{os.pathsep}{os.environ['PYTHONPATH']}"
    os.environ["PYTHONPATH"] = pythonpath  # Flower does the same for Ray's workers
    for attempt in range(1, attempts + 1):
        try:
            ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **init_args)
            return
        except Exception as exc:  # Ray raises a bare Exception for the start-up timeout
            with contextlib.suppress(Exception):
                ray.shutdown()
            stop_ray_processes(grace=1.0)
            if _RAY_START_TIMEOUT not in str(exc) or attempt == attempts:
                raise RuntimeError(f"Ray did not start ({attempt} attempts): {exc}") from exc
            logger.warning("Ray's node timed out during start-up; starting it again")


def app_dir() -> Path:
    """Directory of the lab's Flower app (its ``pyproject.toml``)."""
    return Path(str(resources.files("federated") / "flwr_app"))


#: ``(fastest, slowest)`` seconds between the coordinator's pulls for replies in the embedded
#: runtime (run config ``poll``). The in-memory grid's own fixed interval (0.1 s) added ~50 ms
#: to every hop on average: ~0.4 s per SecureBoost tree of 8 hops. Pulling the in-memory state
#: costs microseconds, so pulls start at 1 ms and back off to 10 ms while a hop computes.
EMBEDDED_POLL = "0.001,0.01"


#: Seconds between the simulation engine's checks for messages to hand to the parties. Flower
#: 1.x's engine (``vce_api.add_messages_to_queue``) checks every 0.1 s, ~50 ms per hop on
#: average; the in-memory state answers in microseconds, so the embedded runtime checks every
#: 5 ms (:func:`_prompt_dispatch`).
DISPATCH_WAIT = 0.005


@contextmanager
def _prompt_dispatch() -> Iterator[None]:
    """Run Flower's simulation engine with :data:`DISPATCH_WAIT` between its message checks.

    Replaces ``flwr.server.superlink.fleet.vce.vce_api.add_messages_to_queue`` (same loop, same
    signature, shorter wait) for the duration of the run; if this Flower has no such function
    (another version), nothing is replaced and the engine keeps its own interval.
    """
    from flwr.server.superlink.fleet.vce import vce_api

    original = getattr(vce_api, "add_messages_to_queue", None)
    if original is None:
        logger.debug("Flower's engine has no add_messages_to_queue: keeping its dispatch loop")
        yield
        return

    def add_messages_to_queue(
        state: Any, queue: Any, nodes_mapping: Any, f_stop: threading.Event
    ) -> None:
        while not f_stop.is_set():
            for node_id in nodes_mapping:
                for msg in state.get_message_ins(node_id=node_id, limit=1):
                    queue.put(msg)
            f_stop.wait(DISPATCH_WAIT)

    vce_api.add_messages_to_queue = add_messages_to_queue
    try:
        yield
    finally:
        vce_api.add_messages_to_queue = original


def run_config(
    spec: JobSpec,
    bindings: Sequence[PartyBinding],
    result_dir: Path,
    *,
    capture: bool,
    resume: bool = False,
) -> dict[str, str]:
    """The run config of one embedded job (``resume``: continue it from the checkpoints)."""
    parties = [{**b.to_dict(), "disclose": True} for b in bindings]
    return {
        "job": spec.to_json(),
        "result-dir": str(result_dir),
        "sim-parties": json.dumps(parties),
        "capture": "true" if capture else "false",
        "poll": EMBEDDED_POLL,
        "resume": "true" if resume else "false",
    }


def run_embedded(
    spec: JobSpec,
    bindings: Sequence[PartyBinding],
    result_dir: Path,
    options: EmbeddedOptions | None = None,
) -> JobResult:
    """Run ``spec`` in Flower's simulation runtime and return its result.

    Parameters
    ----------
    spec : JobSpec
        The job.
    bindings : sequence of PartyBinding
        Where each party's data is, in the order of ``spec.parties``.
    result_dir : Path
        Existing directory for ``result.json`` (and ``capture.jsonl``).
    options : EmbeddedOptions, optional
        Runtime knobs.

    Raises
    ------
    JobFailedError
        If a party or the coordinator reported a failure.
    """
    from flwr.app import Context, RecordDict
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.simulation.run_simulation import _run_simulation
    from flwr.supercore.constant import NOOP_FEDERATION_ID
    from flwr.supercore.run import Run
    from flwr.supercore.task_identity import TaskIdentity
    from flwr.supercore.telemetry import EventType

    from federated.client_app import app as client_app
    from federated.server_app import app as server_app

    options = options or EmbeddedOptions()
    if [b.name for b in bindings] != [p.name for p in spec.parties]:
        raise ValueError("bindings must list the job's parties in order")
    config = run_config(spec, bindings, result_dir, capture=options.capture, resume=options.resume)
    run_id = secrets.randbits(63)
    run = Run.create_empty(run_id=run_id)
    run.override_config = dict(config)
    run.primary_task_id = secrets.randbits(63)
    run.federation_id = NOOP_FEDERATION_ID
    # The coordinator runs in this process: give it the task identity Flower's own
    # simulation entry point gives it (messages are stamped with it).
    TaskIdentity.task_id = run.primary_task_id
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    context = Context(
        run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config=dict(config)
    )
    flwr_logger = logging.getLogger("flwr")
    previous_level = flwr_logger.level
    if not options.verbose:
        flwr_logger.setLevel(logging.WARNING)
    loopback_only()
    init_args: dict[str, Any] = {
        "_node_ip_address": LOOPBACK,
        "include_dashboard": False,
        "num_cpus": os.cpu_count() or 1,
        "logging_level": "info" if options.verbose else "error",
        "log_to_driver": options.verbose,
    }
    backend_config = {
        "client_resources": {"num_cpus": options.cpus_per_party, "num_gpus": 0.0},
        "init_args": init_args,
    }
    try:
        with _interruptible(), _prompt_dispatch():
            start_ray(init_args)
            _run_simulation(
                num_supernodes=len(bindings),
                exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
                client_app=client_app,
                server_app=server_app,
                backend_config=backend_config,
                app_dir=str(app_dir()),
                is_app=True,
                run=run,
                server_app_context=context,
                verbose_logging=options.verbose,
            )
    except RuntimeError as exc:
        # Flower's runtime itself failed (e.g. Ray did not start in time): its coordinator
        # thread would wait for nodes until the message timeout and keep the process alive.
        interrupt.request_stop()
        cause = exc.__cause__ or exc
        raise JobFailedError(
            "RuntimeError",
            f"the embedded runtime failed before the job ran ({type(cause).__name__}: "
            f"{cause}); nothing was registered; run the job again (a loaded machine can make "
            "Ray's start time out)",
        ) from exc
    finally:
        flwr_logger.setLevel(previous_level)
        _shutdown_ray()  # Flower's engine shuts it down when it ran; not when it failed first
    return read_result(result_dir)


def _shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def read_result(result_dir: Path) -> JobResult:
    """Load the result the ServerApp wrote, or raise the failure it recorded."""
    error = result_dir / ERROR_FILE
    if error.exists():
        raw = json.loads(error.read_text(encoding="utf-8"))
        raise JobFailedError(raw["error_type"], raw["message"], raw.get("party"))
    result = result_dir / RESULT_FILE
    if not result.exists():
        raise JobFailedError("RuntimeError", "the coordinator ended without writing a result")
    loaded = JobResult.from_json(result.read_text(encoding="utf-8"))
    model_file = loaded.joint.details.get("model_file")
    if model_file:
        # The model file travels with the result (from another host, on a deployment): it is
        # read from this folder by name, never from the coordinator's path.
        loaded.joint.details["model_file"] = str(result_dir / Path(str(model_file)).name)
    return loaded
