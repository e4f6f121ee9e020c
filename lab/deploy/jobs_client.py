"""A bank's side of the coordinator's job endpoint: submit, wait, fetch the outcome.

Used by ``lab train EXP --deployment BANK_HOME`` when ``BANK_HOME`` is a bank's node home
(``lab node init --role bank``): the job goes to the coordinator named in the home, signed with
the bank's SuperNode key, verified against the CA the bank's operator installed
(``trust/ca.crt``); the outcome files come back into the lab's job folder, where
:func:`federated.simulation.read_result` reads them as for any other runtime.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from federated.server_app import INTERRUPTED
from federated.simulation import JobFailedError
from federated.spec import JobSpec
from lab.deploy.errors import DeploymentError
from lab.deploy.jobs_endpoint import OUTCOME_FILES, UNAVAILABLE
from lab.deploy.node_home import NodeHome
from lab.deploy.request_auth import sign_request

logger = logging.getLogger(__name__)

#: Seconds between status requests.
STATUS_INTERVAL = 0.5
#: Seconds the coordinator may stay unreachable during a job before the job is failed.
UNREACHABLE_SECONDS = 120.0
#: Seconds a request may take.
REQUEST_TIMEOUT = 30.0


class CoordinatorUnavailableError(OSError):
    """The coordinator's job endpoint answered that its SuperLink is not reachable."""


class JobsClient:
    """Signed requests of one party to its coordinator's job endpoint."""

    def __init__(self, home: NodeHome) -> None:
        if home.identity.role != "bank":
            raise DeploymentError(
                f"{home.path} is the home of {home.identity.role} '{home.identity.name}'; only "
                "a bank submits jobs"
            )
        if not home.trusted_ca.is_file():
            raise DeploymentError(
                f"{home.trusted_ca} is missing; copy the coordinator's exchange/ca.crt and run "
                f"'lab node trust --home {home.path} CA_FILE'"
            )
        self.home = home
        self.url = f"https://{home.identity.jobs_address}/v1/jobs"
        self._context = ssl.create_default_context(cafile=str(home.trusted_ca))

    def request(self, action: str, args: Mapping[str, Any]) -> dict[str, Any]:
        """Send one signed request; return the JSON answer.

        Raises
        ------
        DeploymentError
            The coordinator refused the request (naming why).
        OSError
            The coordinator could not be reached.
        """
        body = sign_request(self.home.key.private_key, self.home.identity.name, action, args)
        req = urllib.request.Request(  # noqa: S310 (https URL built from the node home)
            self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(  # noqa: S310
                req, timeout=REQUEST_TIMEOUT, context=self._context
            ) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as exc:
            try:
                reason = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                reason = exc.reason
            if exc.code == UNAVAILABLE:
                raise CoordinatorUnavailableError(reason) from None
            raise DeploymentError(
                f"the coordinator at {self.home.identity.jobs_address} refused '{action}': {reason}"
            ) from None


def run_on_coordinator(
    spec: JobSpec,
    home: NodeHome,
    result_dir: Path,
    *,
    capture: bool = False,
    poll: str = "",
    deadline: float | None = None,
) -> None:
    """Submit ``spec`` from the bank of ``home`` and write its outcome files into ``result_dir``.

    Raises
    ------
    JobFailedError
        The run ended without an outcome, overran ``deadline`` (it is stopped), the
        coordinator stayed unreachable for :data:`UNREACHABLE_SECONDS`, or Ctrl-C.
    """
    client = JobsClient(home)
    try:
        started = client.request(
            "submit", {"job": spec.to_json(), "capture": capture, "poll": poll}
        )
    except OSError as exc:
        raise DeploymentError(
            f"the coordinator's job endpoint https://{home.identity.jobs_address} is not "
            f"reachable ({exc}); check that 'lab node start' runs there and the address in "
            f"{home.path / 'node.json'}"
        ) from None
    token = str(started["run"])
    logger.info("run %s (%s) submitted to %s", started["run_id"], token, client.url)
    began = time.monotonic()
    last_contact = began
    try:
        while True:
            try:
                status = client.request("status", {"run": token})
                last_contact = time.monotonic()
            except DeploymentError as exc:  # e.g. the coordinator lost the run
                raise JobFailedError("CoordinatorError", str(exc)) from None
            except OSError as exc:
                if time.monotonic() - last_contact > UNREACHABLE_SECONDS:
                    raise JobFailedError(
                        "CoordinatorUnreachable",
                        f"the coordinator at {home.identity.jobs_address} was unreachable for "
                        f"{UNREACHABLE_SECONDS:.0f} s during run {token} ({exc})",
                    ) from None
                time.sleep(STATUS_INTERVAL)
                continue
            if _write_outcome(status.get("files", {}), result_dir):
                return
            if status["status"] == "finished":
                raise JobFailedError(
                    "RuntimeError",
                    f"the coordinator's run {status['run_id']} ended "
                    f"{status['status']}:{status['sub_status']} without a result "
                    f"({status['details'] or 'no details'}): the coordinator restarted or its "
                    "ServerApp stopped mid-job; nothing was registered, run the job again",
                )
            if deadline is not None and time.monotonic() - began > deadline:
                client.request("stop", {"run": token})
                raise JobFailedError(
                    "TimeoutError", f"run {token} did not finish within {deadline:.0f} s"
                )
            time.sleep(STATUS_INTERVAL)
    except KeyboardInterrupt:
        client.request("stop", {"run": token})
        raise JobFailedError(
            INTERRUPTED, f"the job was interrupted (Ctrl-C); run {token} was stopped"
        ) from None


def _write_outcome(files: Mapping[str, str], result_dir: Path) -> bool:
    if not any(name in files for name in OUTCOME_FILES):
        return False
    for name in files:
        if Path(name).name != name or name.startswith("."):
            raise DeploymentError(f"the coordinator sent a file with a bad name: {name!r}")
    for name, data in files.items():
        (result_dir / name).write_bytes(base64.b64decode(data))
    return True
