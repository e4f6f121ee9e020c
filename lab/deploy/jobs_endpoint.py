"""``python -m lab.deploy.jobs_endpoint``: the coordinator's job endpoint for banks on other hosts.

The SuperLink's Control API answers the coordinator's own host only
(:mod:`lab.deploy.superlink`), so a bank on another host submits its job here, over HTTPS
with the coordinator's certificate, in a request signed with its SuperNode key
(:mod:`lab.deploy.request_auth`). The endpoint:

- accepts a job only from a bank the job names as a bank (the label holder of a vertical
  job, one of the banks of a horizontal one), and only if every party of the job was admitted
  on this coordinator with the role the job gives it;
- starts the lab's Flower app through the local Control API with the job in the run config
  and the outcome folder ``runs/<token>`` of the coordinator's home; no party data path is
  ever in the run config (each node knows its own file);
- answers status requests of that run to the bank that submitted it only, with the outcome
  files the ServerApp wrote (``result.json`` or ``error.json``, a horizontal job's global
  model): what the coordinator computed anyway, never a party's data or model part;
- stops a run on the submitter's request.

The nonces of the signed requests it accepted are kept in ``superlink/nonces.db`` of the
coordinator's home for as long as a request stays valid, so a request captured before a
restart cannot be replayed after it.

It listens on the coordinator's listen address (loopback unless the deployment says
otherwise) and logs requests without their bodies.
"""

from __future__ import annotations

import argparse
import base64
import http.server
import json
import logging
import secrets
import ssl
import sys
import threading
from pathlib import Path
from typing import Any

import httpx

from federated.result import RESULT_FILE
from federated.server_app import ERROR_FILE
from federated.simulation import app_dir
from federated.spec import JobSpec, SpecError
from lab.deploy.control import ControlClient
from lab.deploy.errors import DeploymentError
from lab.deploy.node_home import NodeHome
from lab.deploy.request_auth import ReplayGuard, RequestRefusedError, verify_request

logger = logging.getLogger(__name__)

#: Largest request body accepted (a job spec is a few kB).
MAX_BODY = 4 * 1024 * 1024
#: Largest outcome file returned (a horizontal model of a few MB at most).
MAX_FILE = 64 * 1024 * 1024
SUBMISSION_FILE = "submission.json"
#: HTTP status of a request the SuperLink could not serve right now (a client retries).
UNAVAILABLE = 503
OUTCOME_FILES = (RESULT_FILE, ERROR_FILE)


class JobEndpoint:
    """The endpoint's decisions, independent of HTTP (see the module docstring)."""

    def __init__(self, home: NodeHome) -> None:
        if home.identity.role != "coordinator":
            raise DeploymentError(f"{home.path} is not a coordinator's home")
        self.home = home
        self.guard = ReplayGuard(home.nonces)
        self._lock = threading.Lock()

    def _control(self) -> ControlClient:
        return ControlClient(self.home.identity.superlink_address, self.home.tls.ca_cert)

    def handle(self, raw: bytes) -> tuple[int, dict[str, Any]]:
        """Answer one request: ``(HTTP status, JSON body)``."""
        keys = {name: self.home.parties / f"{name}.pub" for name in self.home.admitted()}
        try:
            party, action, args = verify_request(raw, keys, self.guard)
        except RequestRefusedError as exc:
            return 403, {"error": str(exc)}
        try:
            if action == "submit":
                return 200, self.submit(party, args)
            if action == "status":
                return 200, self.status(party, args)
            if action == "stop":
                return 200, self.stop(party, args)
        except RequestRefusedError as exc:
            return 403, {"error": str(exc)}
        except (DeploymentError, SpecError) as exc:
            return 400, {"error": str(exc)}
        except (OSError, httpx.HTTPError) as exc:  # the SuperLink is down or restarting
            return UNAVAILABLE, {"error": f"the SuperLink is not reachable ({type(exc).__name__})"}
        return 400, {"error": f"unknown action '{action}'; use submit, status or stop"}

    def submit(self, party: str, args: dict[str, Any]) -> dict[str, Any]:
        """Start a bank's job; return the run's token."""
        spec = JobSpec.from_json(str(args.get("job", "")))
        admitted = self.home.admitted()
        banks = [p.name for p in spec.by_role("bank")]
        submitter_ok = (
            party in banks if spec.kind == "horizontal" else party == spec.label_holder().name
        )
        if admitted.get(party) != "bank" or not submitter_ok:
            raise RequestRefusedError(
                f"party '{party}' may not submit job '{spec.name}': only a bank the job names "
                "as its bank (the label holder of a vertical job) submits it"
            )
        for p in spec.parties:
            if admitted.get(p.name) != p.role:
                raise RequestRefusedError(
                    f"job '{spec.name}' names {p.role} '{p.name}', which this coordinator has "
                    f"{'admitted as ' + admitted[p.name] if p.name in admitted else 'not admitted'}"
                )
        token = secrets.token_hex(12)
        folder = self.home.runs / token
        folder.mkdir(parents=True)
        config: dict[str, str | int | float] = {
            "job": spec.to_json(),
            "result-dir": str(folder),
            "sim-parties": "",
            "capture": "true" if args.get("capture") else "false",
            "poll": str(args.get("poll", "")),
        }
        with self._control() as control:
            run_id = control.start_run(app_dir(), config)
        (folder / SUBMISSION_FILE).write_text(
            json.dumps({"party": party, "run_id": run_id, "job_id": spec.job_id}), "utf-8"
        )
        logger.info("run %d (%s) of job %s submitted by %s", run_id, token, spec.job_id, party)
        return {"run": token, "run_id": run_id}

    def _submission(self, party: str, args: dict[str, Any]) -> tuple[Path, int]:
        token = str(args.get("run", ""))
        folder = self.home.runs / token
        meta = folder / SUBMISSION_FILE
        if not token.isalnum() or not meta.is_file():
            raise RequestRefusedError(f"no run '{token}' on this coordinator")
        raw = json.loads(meta.read_text(encoding="utf-8"))
        if raw["party"] != party:
            raise RequestRefusedError(f"run '{token}' was not submitted by '{party}'")
        return folder, int(raw["run_id"])

    def status(self, party: str, args: dict[str, Any]) -> dict[str, Any]:
        """The run's status and, once written, its outcome files."""
        folder, run_id = self._submission(party, args)
        with self._control() as control:
            status = control.run_status(run_id)
        files: dict[str, str] = {}
        if any((folder / name).is_file() for name in OUTCOME_FILES):
            for path in sorted(folder.iterdir()):
                if path.name == SUBMISSION_FILE or not path.is_file():
                    continue
                if path.stat().st_size > MAX_FILE:
                    raise DeploymentError(f"outcome file {path.name} is larger than {MAX_FILE} B")
                files[path.name] = base64.b64encode(path.read_bytes()).decode()
        return {
            "run_id": run_id,
            "status": status.status,
            "sub_status": status.sub_status,
            "details": status.details,
            "files": files,
        }

    def stop(self, party: str, args: dict[str, Any]) -> dict[str, Any]:
        """Stop the submitter's run."""
        _, run_id = self._submission(party, args)
        with self._control() as control:
            control.stop_run(run_id)
        return {"run_id": run_id, "stopped": True}


class _Handler(http.server.BaseHTTPRequestHandler):
    endpoint: JobEndpoint
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if self.path != "/v1/jobs" or not 0 < length <= MAX_BODY:
            self._reply(404 if self.path != "/v1/jobs" else 413, {"error": "bad request"})
            return
        try:
            code, body = self.endpoint.handle(self.rfile.read(length))
        except Exception as exc:  # the client learns the kind, the log has the rest
            logger.exception("request failed")
            code, body = 500, {"error": f"internal error ({type(exc).__name__})"}
        self._reply(code, body)

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)


def serve(home: NodeHome) -> http.server.ThreadingHTTPServer:
    """An HTTPS server for ``home``'s endpoint on its listen address (not yet serving)."""
    handler = type("Handler", (_Handler,), {"endpoint": JobEndpoint(home)})
    server = http.server.ThreadingHTTPServer(
        (home.identity.listen, home.identity.jobs_port), handler
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(home.tls.server_cert, home.tls.server_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return server


def main(argv: list[str] | None = None) -> None:
    """Serve the job endpoint of the coordinator home ``--home`` until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m lab.deploy.jobs_endpoint")
    parser.add_argument("--home", type=Path, required=True)
    options = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    server = serve(NodeHome.read(options.home))
    logger.info("job endpoint listening on %s:%d", *server.server_address[:2])
    import signal

    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    finally:
        server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
