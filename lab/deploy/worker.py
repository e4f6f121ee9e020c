"""``python -m lab.deploy.worker``: a long-running ClientApp executor for one party node.

By default a Flower 1.41 SuperNode hands every message to a SuperExec that starts a fresh
``flwr-clientapp`` process: a Python interpreter, Flower, numpy/pandas and the lab's code are
loaded again for each hop, and the party's table is read again. With the SuperNode started
in ``--isolation process`` mode, this worker takes that job instead: it polls the SuperNode's
Runtime API for ClientApp tasks (what a SuperExec does, :class:`~lab.deploy.polling.Backoff`
instead of a fixed 1 s) and runs each one in this already warm process, speaking the same
Runtime API calls as ``flwr-clientapp`` (pull the task input and message, push the reply and
the updated ``Context``). The party's state still lives in the SuperNode's ``Context``
between messages, exactly as with a process per message.

The worker only runs the lab's own ClientApp (:data:`federated.client_app.app`); a task whose
app names another component fails with an error reply, it never loads code from a FAB.

What it gives up: process isolation between consecutive messages of the node's own party (a
crash of one step ends the worker; ``lab up`` starts it again). It runs inside the party's
domain with the party's own data and never sees another party's.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from lab.deploy.polling import Backoff

logger = logging.getLogger(__name__)

#: The ClientApp this worker serves (``[tool.flwr.app.components] clientapp``).
CLIENTAPP_REF = "federated.client_app:app"


class Worker:
    """Poll one SuperNode's Runtime API and run its ClientApp tasks in this process.

    Parameters
    ----------
    address : str
        ``host:port`` of the SuperNode's Runtime API.
    root_certificates : bytes or None
        CA certificate of that API's TLS certificate; ``None`` for a plain HTTP API.
    backoff : Backoff
        Polling delays.
    """

    def __init__(self, address: str, root_certificates: bytes | None, backoff: Backoff) -> None:
        self.address = address
        self.root_certificates = root_certificates
        self.backoff = backoff
        self.stopping = threading.Event()
        self.tasks_run = 0

    def _client(self, token: str | None = None) -> Any:
        from flwr.supercore.interceptors import (
            RuntimeTokenHttpInterceptor,
            RuntimeVersionHttpInterceptor,
        )
        from flwr.supercore.retry import make_simple_http_retry_invoker
        from flwr.supercore.runtime import RuntimeHttpClient

        interceptors: list[Any] = [RuntimeVersionHttpInterceptor(component_name="flwr-clientapp")]
        if token is not None:
            interceptors.append(RuntimeTokenHttpInterceptor(token))
        return RuntimeHttpClient.from_server_address(
            server_address=self.address,
            insecure=self.root_certificates is None,
            root_certificates=self.root_certificates,
            interceptors=interceptors,
            retry_invoker=make_simple_http_retry_invoker(),
        )

    def run(self) -> None:
        """Serve tasks until SIGTERM/SIGINT."""
        from flwr.proto.runtime_pb2 import AcquireTaskRequest
        from flwr.supercore.constant import TaskType

        poller = self._client()
        try:
            while not self.stopping.is_set():
                response = poller.AcquireTask(
                    AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
                )
                if response.HasField("task") and response.token:
                    self.run_task(response.token)
                    self.backoff.active()
                    continue
                self.stopping.wait(self.backoff.idle())
        finally:
            poller.close()

    def run_task(self, token: str) -> None:
        """Run one ClientApp task (the body of ``flwr-clientapp``, without a new process)."""
        from flwr.app import Message
        from flwr.app.error import Error
        from flwr.common.config import get_fab_config
        from flwr.common.constant import ErrorCode, SubStatus
        from flwr.supercore.heartbeat import HeartbeatSender
        from flwr.supernode.runtime.run_clientapp import (
            pull_task_input,
            push_message,
            push_task_output,
        )

        from federated.client_app import app

        started = time.monotonic()
        client = self._client(token)
        heartbeat = HeartbeatSender(_heartbeat_fn(client))
        message = context = reply = None
        sub_status, details = SubStatus.FAILED, "ClientApp task failed"
        try:
            heartbeat.start()
            message, context, _run, fab = pull_task_input(client)
            components = get_fab_config(fab.content)["tool"]["flwr"]["app"]["components"]
            if components.get("clientapp") != CLIENTAPP_REF:
                raise RuntimeError(
                    f"this worker serves only '{CLIENTAPP_REF}', the run asks for "
                    f"'{components.get('clientapp')}'"
                )
            reply = app(message=message, context=context)
            sub_status, details = SubStatus.COMPLETED, ""
        except Exception as exc:  # reported to the coordinator as the node's error reply
            logger.exception("ClientApp task failed")
            details = f"{type(exc)}:<'{exc}'>"
            if message is not None:
                reply = Message(
                    Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details),
                    reply_to=message,
                )
        finally:
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
                push_task_output(client, context, sub_status, details)
            finally:
                if heartbeat.is_running:
                    heartbeat.stop()
                client.close()
                self.tasks_run += 1
                logger.info(
                    "task %d %s in %.3f s", self.tasks_run, sub_status, time.monotonic() - started
                )


def _heartbeat_fn(client: Any) -> Any:
    """Task heartbeats that report failure instead of signalling this process."""
    import httpx
    from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest

    def send() -> bool:
        try:
            return bool(client.SendTaskHeartbeat(SendTaskHeartbeatRequest()).success)
        except httpx.HTTPError:
            return False

    return send


def main(argv: list[str] | None = None) -> None:
    """Run a worker for the SuperNode whose Runtime API is ``--runtime-api-address``."""
    parser = argparse.ArgumentParser(prog="python -m lab.deploy.worker")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--root-certificates", type=Path, default=None)
    parser.add_argument("--poll-fastest", type=float, default=0.01)
    parser.add_argument("--poll-slowest", type=float, default=0.25)
    parser.add_argument("--parent-pid", type=int, default=None)
    options = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    worker = Worker(
        options.runtime_api_address,
        options.root_certificates.read_bytes() if options.root_certificates else None,
        Backoff(fastest=options.poll_fastest, slowest=options.poll_slowest),
    )

    def stop(_signum: int, _frame: FrameType | None) -> None:
        worker.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if options.parent_pid is not None:
        _watch_parent(options.parent_pid, worker.stopping)
    # Import the ClientApp's code once, before the first task.
    import federated.client_app  # noqa: F401

    logger.info("ClientApp worker for %s ready (pid %d)", options.runtime_api_address, os.getpid())
    worker.run()
    logger.info("ClientApp worker stopped after %d task(s)", worker.tasks_run)
    sys.exit(0)


def _watch_parent(pid: int, stopping: threading.Event) -> None:
    """Stop when the SuperNode this worker serves is gone."""
    from lab.deploy.processes import alive

    def watch() -> None:
        while not stopping.wait(1.0):
            if not alive(pid):
                logger.warning("SuperNode (pid %d) is gone; stopping", pid)
                stopping.set()

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


if __name__ == "__main__":
    main()
