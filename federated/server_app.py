"""The ServerApp: the coordinator of one job.

It reads the job spec from the run config (``job``), runs :func:`federated.driver.run_job`
(vertical) or :func:`federated.horizontal_server.run_horizontal` (horizontal) through a
:class:`~federated.flower_transport.FlowerTransport`, and writes ``result.json`` (or
``error.json``) into the run config's ``result-dir``. It never reads party data.
"""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from federated.capture import CAPTURE_FILE, CaptureWriter
from federated.driver import run_job
from federated.flower_transport import FlowerTransport
from federated.interrupt import JobInterruptedError
from federated.spec import JobSpec, SpecError
from federated.transport import PartyError, TransportError
from models.protocol import ProtocolError

logger = logging.getLogger(__name__)

ERROR_FILE = "error.json"

#: Error type of a job stopped on request.
INTERRUPTED = "JobInterrupted"

app = ServerApp()


def write_error(directory: Path, kind: str, message: str, party: str | None = None) -> None:
    """Record why a job failed, for the lab to report."""
    payload = {"error_type": kind, "message": message, "party": party}
    (directory / ERROR_FILE).write_text(json.dumps(payload), encoding="utf-8")


def parse_poll(raw: str) -> tuple[float, float] | None:
    """Run config ``poll`` (``"fastest,slowest"`` seconds, or empty for the grid's own)."""
    if not raw.strip():
        return None
    try:
        fastest, slowest = (float(x) for x in raw.split(","))
    except ValueError:
        raise SpecError(
            f"run config 'poll' must be 'fastest,slowest' seconds, got {raw!r}"
        ) from None
    if not 0 < fastest <= slowest:
        raise SpecError(f"run config 'poll' needs 0 < fastest <= slowest, got {raw!r}")
    return fastest, slowest


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the job described by the run config."""
    result_dir = Path(str(context.run_config["result-dir"]))
    capture = (
        CaptureWriter(result_dir / CAPTURE_FILE)
        if str(context.run_config.get("capture", "")).lower() == "true"
        else None
    )
    try:
        spec = JobSpec.from_json(str(context.run_config["job"]))
        transport = FlowerTransport(
            grid,
            expected_nodes=len(spec.parties),
            timeout=spec.runtime.message_timeout,
            tap=capture,
            poll=parse_poll(str(context.run_config.get("poll", ""))),
        )
        if spec.kind == "horizontal":
            from federated.horizontal_server import run_horizontal  # loads torch

            result = run_horizontal(spec, transport, grid, result_dir)
        else:
            resume = str(context.run_config.get("resume", "")).lower() == "true"
            result = run_job(spec, transport, resume=resume)
        result.write(result_dir)
    except PartyError as exc:
        write_error(result_dir, exc.error_type, str(exc), exc.party)
    except JobInterruptedError as exc:
        write_error(result_dir, INTERRUPTED, str(exc))
    except (TransportError, ProtocolError, SpecError) as exc:
        write_error(result_dir, type(exc).__name__, str(exc))
    except Exception as exc:  # the lab must learn why, whatever happened
        logger.error("job failed:\n%s", traceback.format_exc())
        write_error(result_dir, "InternalError", f"{type(exc).__name__}: {exc}")
    finally:
        if capture is not None:
            capture.close()
