"""Scoring latency of a served vertical SecureBoost model, end to end over HTTP on 127.0.0.1.

Usage::

    .venv/bin/python benchmarks/scoring.py --requests 200 --summary-json out/scoring.json

In a temporary ``LAB_HOME`` it trains a small SecureBoost job (synthetic SME data, 512-bit test
keys: key size does not enter scoring), promotes it to ``champion``, issues the bank a token,
starts ``lab platform serve`` and ``mlflow models serve -m models:/sme-served@champion`` as
separate processes, then times single-enterprise requests:

- **end to end**: ``POST /invocations`` to the bank's MLflow scoring server, which validates the
  input against the signature, asks the platform endpoint for its split bits over HTTP
  (bearer token, authorization check, audit entry with fsync) and walks the trees;
- **platform hop** (reference, same run): ``POST /v1/decisions`` straight to the platform
  endpoint with the same token: the part of the above spent at the platform.

Requests are sequential (one in flight), after ``--warmup`` untimed ones. Reports p50/p95/max
in milliseconds.

Then the abuse figures, ``--abusive`` calls of each kind fired back to back, counting the audit
entries they added to the platform's log (read after the endpoint stopped, so whatever it
buffers is flushed): calls without a token; calls with the bank's token about an enterprise that
did not authorize it (a probe: audited call by call, on purpose); and calls naming 1,000
enterprises each, past the bank's decision budget (enterprises x splits). Everything is stopped
at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _percentiles(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1000
    return {
        "n": len(samples),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "max_ms": round(float(ms.max()), 2),
        "mean_ms": round(float(statistics.fmean(ms)), 2),
    }


def _time(fn: Any, n: int, warmup: int) -> list[float]:
    for i in range(warmup):
        fn(i)
    out = []
    for i in range(n):
        started = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - started)
    return out


def _lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--abusive", type=int, default=1000, help="calls per abuse kind")
    parser.add_argument("--summary-json", type=Path, default=Path("out/scoring.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="lab-scoring-") as tmp:
        home = Path(tmp) / "home"
        os.environ["LAB_HOME"] = str(home)
        os.environ["LAB_KEYS"] = str(Path(tmp) / "keys")  # the temporary home's audit key
        from lab.cli import run
        from tests.serving_helpers import (
            SERVED_BANK,
            SERVED_MODEL,
            invocation_body,
            served,
            train_served_model,
        )

        started = time.perf_counter()
        trained = train_served_model(Path(tmp) / "sme")
        train_s = time.perf_counter() - started
        if run(["models", "promote", SERVED_MODEL, "--from", "challenger", "--to", "champion"]):
            raise SystemExit("promotion failed")
        from lab.serving.tokens import TokenStore

        token = TokenStore.in_dir(home / "parties" / "platform").issue(SERVED_BANK)
        bank = trained["bank"]
        sample = bank[bank["enterprise_id"] != trained["refused"]].drop(columns=["default_12m"])
        ref = trained["summary"]["registered_model"]["platform_parts"]["platform"]
        part_file = home / "parties" / "platform" / "models" / f"{ref['model_id']}.json"
        n_splits = len(json.loads(part_file.read_text())["splits"])
        with served(home, trained["folder"], token, Path(tmp) / "logs") as live:
            client = httpx.Client(trust_env=False, timeout=60)
            bank_url = f"{live['bank_url']}/invocations"
            platform_url = f"{live['platform_url']}/v1/decisions"
            headers = {"Authorization": f"Bearer {token}"}

            def end_to_end(i: int) -> None:
                row = sample.iloc[[i % len(sample)]]
                response = client.post(bank_url, json=invocation_body(row))
                response.raise_for_status()

            def platform_hop(i: int) -> None:
                eid = str(sample["enterprise_id"].iloc[i % len(sample)])
                body = {
                    "model_id": ref["model_id"],
                    "purpose": "loan_approval",
                    "enterprise_ids": [eid],
                }
                response = client.post(platform_url, json=body, headers=headers)
                response.raise_for_status()

            e2e = _time(end_to_end, args.requests, args.warmup)
            hop = _time(platform_hop, args.requests, args.warmup)
            log_path = home / "audit" / "log.jsonl"
            try:
                from lab.serving import refusals

                window = refusals.DEFAULT_WINDOW_S
            except ImportError:  # an endpoint that audits every call on its own
                window = 0.0
            abuse: dict[str, Any] = {}
            probe = {
                "model_id": ref["model_id"],
                "purpose": "loan_approval",
                "enterprise_ids": ["x"],
            }
            heavy = {**probe, "enterprise_ids": [f"x{i}" for i in range(1000)]}
            kinds = (
                ("no_token", {}, probe),
                ("probing_unauthorized_ids", headers, probe),
                ("over_decision_budget", headers, heavy),
            )
            for kind, auth, body in kinds:
                lines = _lines(log_path)
                started = time.perf_counter()
                codes: dict[int, int] = {}
                for _ in range(args.abusive):
                    code = client.post(platform_url, json=body, headers=auth).status_code
                    codes[code] = codes.get(code, 0) + 1
                seconds = time.perf_counter() - started
                time.sleep(window + 1)  # let a window close, so its counts land in this kind
                abuse[kind] = {
                    "calls": args.abusive,
                    "status_counts": {str(k): v for k, v in sorted(codes.items())},
                    "seconds": round(seconds, 2),
                    "log_lines_before": lines,
                }
            client.close()
        final = _lines(log_path)  # the endpoint has stopped: buffered counts are flushed
        order = list(abuse)
        for index, kind in enumerate(order):
            end = abuse[order[index + 1]]["log_lines_before"] if index + 1 < len(order) else final
            written = end - abuse[kind].pop("log_lines_before")
            abuse[kind]["audit_entries_written"] = written
            abuse[kind]["audit_entries_per_1000_calls"] = round(written * 1000 / args.abusive, 1)
    summary = {
        "what": "single-enterprise scoring latency, sequential requests on 127.0.0.1",
        "end_to_end_invocations": _percentiles(e2e),
        "platform_hop_reference": _percentiles(hop),
        "abuse": abuse,
        "model": {"n_estimators": 3, "max_depth": 2, "platform_splits": n_splits},
        "train_seconds": round(train_s, 1),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(summary, indent=2))
    args.summary_json.parent.mkdir(parents=True, exist_ok=True)
    args.summary_json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
