"""Helpers of the serving tests: free ports, background servers, process cleanup."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def uvicorn_thread(app: Any, port: int) -> Iterator[str]:
    """Serve ``app`` over real HTTP on 127.0.0.1 from a background thread."""
    from lab.serving.platform_endpoint import make_server

    server = make_server(app, port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("endpoint did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_http(
    url: str, proc: subprocess.Popen[bytes], timeout: float, log: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}: {log()[-3000:]}")
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not up after {timeout} s: {log()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process started with ``start_new_session=True`` and all its children."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    # Children that outlived their parent (uvicorn workers) share the process group.
    deadline = time.monotonic() + 15
    while group_alive(proc.pid) and time.monotonic() < deadline:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.1)


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in process group ``pgid``."""
    import psutil

    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


# -- a served vertical model, end to end ------------------------------------------------------

SERVED_REF = "sme_served@1"
SERVED_MODEL = "sme-served"
SERVED_BANK = "bank"


def train_served_model(
    folder: Path,
    *,
    n_enterprises: int = 600,
    bank_size: int = 300,
    deployment: Path | None = None,
    model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """In the current ``LAB_HOME``: synthetic data published as a feature set, a SecureBoost job
    (512-bit test keys) registered as ``challenger``, authorizations for every platform id but
    the bank's last customer ... returns paths and the job summary.

    The platform's node (this home's policy) allows test keys, hetero LR batches of 128+ rows
    (the job's 225 training rows are one batch) and, on this unbudgeted set, exact statistics
    (``dp.require=false``); its enterprises authorised the bank to model
    credit risk, and, after training, to have loans approved with their data.

    With ``deployment``, the job runs on a deployment started there (``lab up``, TLS and node
    auth on loopback, every node sharing ``LAB_HOME`` as governance home); the caller stops it.
    """
    import json

    import pandas as pd
    import yaml

    from lab.cli import run
    from lab.demo import publish_feature_set, synthesize
    from lab.governance.authorizations import AuthorizationRegistry
    from lab.home import lab_home
    from tests.conftest import allow_test_keys, sme_parties

    synthesize(
        folder,
        n_enterprises=n_enterprises,
        n_banks=1,
        bank_size=bank_size,
        unmatched_rate=0.0,
        seed=21,
    )
    publish_feature_set(folder, SERVED_REF)
    allow_test_keys(lab_home(), "dp.require=false", "hetero_lr.min_batch_size=128")
    groups = sorted(
        {
            str(v["group"])
            for v in json.loads((folder / "columns.json").read_text()).values()
            if v.get("party") == "platform"
        }
    )
    today = datetime.now(UTC).date()
    platform = pd.read_csv(folder / "platform.csv", dtype={"enterprise_id": str})

    def authorize(ids: list[str], purpose: str, name: str) -> None:
        frame = pd.DataFrame(
            {
                "enterprise_id": ids,
                "bank": SERVED_BANK,
                "purpose": purpose,
                "valid_from": (today - timedelta(days=1)).isoformat(),
                "valid_to": (today + timedelta(days=30)).isoformat(),
                "groups": ";".join(groups),
                "personal_consent": "true",
            }
        )
        frame.to_csv(folder / name, index=False)
        with AuthorizationRegistry() as registry:
            registry.import_csv(folder / name)

    authorize(platform["enterprise_id"].tolist(), "credit_risk_modeling", "auth-training.csv")
    config = {
        "name": "served",
        "kind": "vertical",
        "parties": sme_parties(bank=SERVED_BANK),
        "model": model or {"type": "secureboost", "n_estimators": 3, "max_depth": 2, "max_bin": 8},
        "crypto": {"key_bits": 512, "insecure_test_keys": True},
        "evaluation": {"test_size": 0.25, "random_state": 1},
        "alignment": {"id_scheme": "uscc", "min_intersection": 20},
        "registry": {"model_name": SERVED_MODEL},
    }
    (folder / "served.yaml").write_text(yaml.safe_dump(config))
    summary_path = folder / "summary.json"
    train = ["train", str(folder / "served.yaml"), "--summary-json", str(summary_path)]
    if deployment is not None:
        up = ["up", "--dir", str(deployment), "--experiment", str(folder / "served.yaml")]
        if run([*up, "--governance-home", str(lab_home())]) != 0:
            raise RuntimeError("lab up failed")
        train += ["--deployment", str(deployment)]
    code = run(train)
    if code != 0:
        raise RuntimeError(f"training failed with exit code {code}")
    summary = json.loads(summary_path.read_text())
    bank = pd.read_csv(folder / "bank_1.csv", dtype={"enterprise_id": str})
    refused = str(bank["enterprise_id"].iloc[-1])
    authorize([i for i in platform["enterprise_id"] if i != refused], "loan_approval", "auth.csv")
    return {"folder": folder, "summary": summary, "bank": bank, "refused": refused}


@contextmanager
def served(
    home: Path, folder: Path, token: str, logs: Path, platform_dir: Path | None = None
) -> Iterator[dict[str, Any]]:
    """``lab platform serve`` and ``mlflow models serve`` of ``SERVED_MODEL@champion``, both on
    127.0.0.1 as their own process groups; stopped (with every child) on exit. ``platform_dir``:
    the platform's store (default ``$LAB_HOME/parties/platform``)."""
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ)
    # mlflow models serve runs `uvicorn` from PATH.
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        {
            "LAB_HOME": str(home),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
    )
    platform_port, bank_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    logs.mkdir(parents=True, exist_ok=True)
    try:
        platform_log = logs / "platform.log"
        procs.append(
            subprocess.Popen(
                [
                    str(bin_dir / "lab"),
                    "platform",
                    "serve",
                    "--data",
                    str(folder / "platform.csv"),
                    "--feature-set",
                    SERVED_REF,
                    "--port",
                    str(platform_port),
                    "--rate",
                    "1000",
                    "--burst",
                    "1000",
                    *([] if platform_dir is None else ["--dir", str(platform_dir)]),
                ],
                env=env,
                stdout=platform_log.open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        platform_url = f"http://127.0.0.1:{platform_port}"
        bank_env = dict(env)
        uri = f"sqlite:///{home / 'mlflow.db'}"
        bank_env.update(
            {
                "MLFLOW_TRACKING_URI": uri,
                "MLFLOW_REGISTRY_URI": uri,
                "LAB_PLATFORM_URL": platform_url,
                "LAB_PLATFORM_TOKEN": token,
            }
        )
        bank_log = logs / "bank.log"
        procs.append(
            subprocess.Popen(
                [
                    str(bin_dir / "mlflow"),
                    "models",
                    "serve",
                    "-m",
                    f"models:/{SERVED_MODEL}@champion",
                    "--env-manager",
                    "local",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(bank_port),
                    "-w",
                    "1",
                ],
                env=bank_env,
                stdout=bank_log.open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        wait_http(f"{platform_url}/healthz", procs[0], 120, platform_log.read_text)
        wait_http(f"http://127.0.0.1:{bank_port}/ping", procs[1], 180, bank_log.read_text)
        yield {
            "platform_url": platform_url,
            "bank_url": f"http://127.0.0.1:{bank_port}",
            "procs": procs,
        }
    finally:
        for proc in procs:
            stop(proc)


def invocation_body(frame: Any, purpose: str = "loan_approval") -> dict[str, Any]:
    """POST /invocations body: bank columns + ``enterprise_id`` (NaN as null)."""
    import json

    records = json.loads(frame.to_json(orient="records"))
    return {"dataframe_records": records, "params": {"purpose": purpose}}
