"""Page load times of ``lab console`` on a big home (1,000 jobs, 100,000 audit entries) and a
demo-style home.

The big home is written through the lab's own stores: the catalog publishes a synthetic
feature set, the registry imports its authorizations, the ledger reserves and commits every
job's privacy events (its audit entries included), ``lab.governance.events`` records each job's
start, alignment, end and registration, MLflow's client logs each job's run (metrics and the
audit-head tag), a few jobs are refused and a few alignments raise ``psi_probe_suspected``, and
``scoring_call`` entries (as the platform's endpoint writes them) fill the log to the size
asked. The demo-style home is ``tests/console_helpers.py``'s (the demo's steps, one DP job and
one refused job). Appends ``fsync``, so the home goes to ``/dev/shm`` by default.

Per page: the first load (cold caches) and p50/p95 of ``--requests`` loads, both server-side
(Flask's test client in this process: routing, reading, rendering, the auditor's audit append)
and as a full HTTP fetch from a real ``lab console`` process, as an auditor (the costliest
role: every view is appended to the audit log).

    python benchmarks/console.py --summary-json out/console-bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAGES = [
    "/",
    "/features",
    "/features/sme_platform@1",
    "/authorizations",
    "/budgets",
    "/jobs",
    "/jobs?page=10",
    "/jobs/{job}",
    "/audit",
    "/audit?page=1000",
]
AUDITOR = ("ada", "ada-password-1")


def build_big_home(home: Path, data: Path, n_jobs: int, n_entries: int) -> None:
    """Write the big home through the lab's stores (see the module docstring)."""
    from mlflow.tracking import MlflowClient

    from lab import tracking
    from lab.demo import import_authorizations, publish_feature_set, synthesize
    from lab.governance import events
    from lab.governance.audit import AuditLog
    from lab.governance.ledger import BudgetLedger
    from models.privacy import PrivacyEvent

    ref, bank, purpose = "sme_platform@1", "bank", "credit_risk_modeling"
    synthesize(data, n_enterprises=3000, n_banks=1, bank_size=None, unmatched_rate=0.1, seed=5)
    publish_feature_set(data, ref)
    import_authorizations(data, bank, purpose, 5)
    log = AuditLog()
    client = MlflowClient(tracking_uri=tracking.default_tracking_uri())
    experiment = client.create_experiment("bench-secureboost")
    event = PrivacyEvent(4.0, 1.0, 10, "enterprise", "secureboost-histogram-noise")
    rng = __import__("random").Random(5)
    with BudgetLedger() as ledger:
        ledger.set_cap(ref, bank, epsilon=1e6, delta=1e-5, actor="bench-platform")
        for k in range(n_jobs):
            job = f"bench-{k:04d}"
            if k % 50 == 49:
                events.job_refused_before_start(
                    log,
                    job_id=job,
                    party="platform",
                    bank=bank,
                    purpose=purpose,
                    reason="budget: bench refusal",
                    feature_sets=[ref],
                )
                continue
            events.job_started(
                log,
                job_id=job,
                config_hash="sha256:" + "0" * 64,
                kind="vertical",
                model="secureboost",
                feature_sets=[ref],
                banks=[bank],
                purpose=purpose,
                privacy={
                    "key_bits": 2048,
                    "dp_epsilon": 8.0,
                    "dp_delta": 1e-5,
                    "psi_reveal": "both",
                },
            )
            ledger.reserve(ref, bank, f"{job}/{ref}", [event], 1e-5, actor="bench-platform")
            events.alignment(
                log,
                job_id=job,
                n_platform=3000,
                n_authorized=2790,
                n_bank=1200,
                n_aligned=1050,
                reveal="both",
            )
            if k % 100 == 7:
                log.record("psi_probe_suspected", {"job_id": job, "bank": bank, "ratio": 9.5})
            ledger.commit(f"{job}/{ref}", [event], actor="bench-platform")
            alone = 0.70 + rng.random() * 0.05
            joint = alone + rng.random() * 0.06
            events.job_finished(log, job_id=job, metrics={"test_auc": joint})
            run = client.create_run(
                experiment,
                tags={tracking.TAG_JOB_ID: job, tracking.TAG_AUDIT_HEAD: str(log.head())},
            )
            for key, value in (
                ("test_auc", joint),
                ("bank_only_auc", alone),
                ("pooled_auc", joint + 0.01),
            ):
                client.log_metric(run.info.run_id, key, value)
            client.set_terminated(run.info.run_id)
    head = log.head()
    for _ in range(n_entries - (head.seq if head else 0)):
        events.scoring_call(
            log, model="bench-secureboost", caller=bank, purpose=purpose, n_scored=1, n_splits=4
        )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(home: Path, keys: Path, requests: int) -> dict[str, Any]:
    """Server-side (test client) and HTTP (real process) timings of every page."""
    import httpx

    from lab.webconsole import ConsoleConfig, UserStore, add_user
    from lab.webconsole.app import create_app
    from lab.webconsole.sources import Sources

    users = home / "mlflow-server"
    if not (users / "basic_auth.db").exists():
        add_user(users, *AUDITOR, "auditor")
    os.environ["LAB_HOME"], os.environ["LAB_KEYS"] = str(home), str(keys)
    config = ConsoleConfig(home, users)
    sources = Sources(config)
    started = time.perf_counter()
    sources.index.refresh()
    index_s = time.perf_counter() - started
    sources.verifier.start()
    verify_state = sources.verifier.wait()
    app = create_app(config, UserStore(users), sources)
    first_job = sources.index.jobs.jobs()[0]["job_id"]
    pages = [p.replace("{job}", first_job) for p in PAGES]
    results: dict[str, Any] = {
        "audit_entries": sources.index.n_entries,
        "jobs": len(sources.index.jobs.jobs()),
        "index_build_s": index_s,
        "full_verify_s": verify_state.full_seconds,
        "verify_status": verify_state.status,
        "pages": {},
    }
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert token
    client.post(
        "/login",
        data={"csrf_token": token.group(1), "username": AUDITOR[0], "password": AUDITOR[1]},
    )
    for page in pages:
        times = []
        for _ in range(requests + 1):
            t = time.perf_counter()
            response = client.get(page)
            times.append(time.perf_counter() - t)
            assert response.status_code == 200, (page, response.status_code)
        results["pages"][page] = {"server_cold_s": times[0], "server": times[1:]}
    env = {**os.environ, "LAB_HOME": str(home), "LAB_KEYS": str(keys)}
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("lab")), "console", "--port", "0"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = re.search(r"http://[0-9.:]+", proc.stderr.readline())
        assert url
        with httpx.Client(base_url=url.group(0), trust_env=False, timeout=120) as http:
            token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/login").text)
            assert token
            http.post(
                "/login",
                data={"csrf_token": token.group(1), "username": AUDITOR[0], "password": AUDITOR[1]},
            )
            # Steady state: the served process's first full verification runs in a thread.
            waited = time.perf_counter()
            while 'data-status="verifying"' in http.get("/audit").text:
                if time.perf_counter() - waited > 600:
                    raise RuntimeError("the console's first full verification took over 600 s")
                time.sleep(2)
            results["http_first_verify_wait_s"] = time.perf_counter() - waited
            for page in pages:
                times = []
                for _ in range(requests + 1):
                    t = time.perf_counter()
                    response = http.get(page)
                    times.append(time.perf_counter() - t)
                    assert response.status_code == 200, (page, response.status_code)
                results["pages"][page].update(http_cold_s=times[0], http=times[1:])
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    for row in results["pages"].values():
        for kind in ("server", "http"):
            values = row.pop(kind)
            row[f"{kind}_p50_s"] = statistics.median(values)
            row[f"{kind}_p95_s"] = percentile(values, 0.95)
    return results


def table(name: str, results: dict[str, Any]) -> str:
    lines = [
        f"{name}: {results['jobs']} jobs, {results['audit_entries']} audit entries; index built "
        f"in {results['index_build_s']:.2f} s, full verification {results['full_verify_s']:.1f} s",
        "| page | server cold | server p50 | server p95 | HTTP cold | HTTP p50 | HTTP p95 |",
        "|---|---|---|---|---|---|---|",
    ]
    for page, r in results["pages"].items():
        lines.append(
            f"| {page} | {r['server_cold_s']:.3f} | {r['server_p50_s']:.3f} | "
            f"{r['server_p95_s']:.3f} | {r['http_cold_s']:.3f} | {r['http_p50_s']:.3f} | "
            f"{r['http_p95_s']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--dir", type=Path, default=None, help="Where the homes go.")
    parser.add_argument("--summary-json", type=Path, default=None)
    args = parser.parse_args()
    shm = Path("/dev/shm")
    root = args.dir or Path(
        tempfile.mkdtemp(prefix="lab-console-bench-", dir=shm if shm.is_dir() else None)
    )
    out: dict[str, Any] = {"root": str(root)}
    for name in ("demo", "big"):
        home, keys = root / name / "home", root / name / "keys"
        os.environ.update(LAB_HOME=str(home), LAB_KEYS=str(keys), LAB_ACTOR="bench")
        if not home.exists():
            t = time.perf_counter()
            if name == "big":
                build_big_home(home, root / name / "data", args.jobs, args.entries)
            else:
                from tests.console_helpers import build_governed_home

                build_governed_home(home, root / name / "data")
            out[f"{name}_build_s"] = time.perf_counter() - t
            print(f"{name} home built in {out[f'{name}_build_s']:.0f} s", file=sys.stderr)
        out[name] = measure(home, keys, args.requests)
        print(table(name, out[name]), flush=True)
    out["load_average"] = os.getloadavg()
    if args.summary_json:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
