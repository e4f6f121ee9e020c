"""What a message hop costs on Flower's deployment engine, stock and tuned, and a job's time.

Usage::

    .venv/bin/python benchmarks/deployment_hops.py --summary-json out/deployment-hops.json
    .venv/bin/python benchmarks/deployment_hops.py --rounds 10 --no-job        # hops only
    .venv/bin/python benchmarks/deployment_hops.py --stock-job                  # slow (minutes)

For each profile (``stock``: Flower 1.41 as shipped, a ClientApp process per message and
fixed 3 s polls; ``tuned``: adaptive polling and a warm ClientApp worker per node, see
``lab/deploy``), it runs ``lab up`` for the experiment's parties on loopback (TLS, node
authentication), runs the ``federated/flwr_ping`` app (``--rounds`` tiny round trips to each
node in turn, timed by the ServerApp) and reports p50/p95 per hop. Then it trains the
experiment (default: the breast SecureBoost smoke job with 1024-bit test keys, for speed)
embedded and deployed (tuned; stock too with ``--stock-job``) and reports the ratio. Each
profile is measured in the same run, because this machine is shared and noisy.

``--namespaces`` (root, Linux) also measures the tuned hop with the parties on their own hosts:
a coordinator, a platform and a bank installed with ``lab node init`` in network namespaces
of their own, each as its own uid (``tests/deploy_hosts.py``: a private bridge, no route out),
the ping app started on the coordinator's host. ``--no-stock`` skips the stock profile.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for key, value in {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
}.items():
    os.environ.setdefault(key, value)

from lab.config import load_experiment  # noqa: E402
from lab.deploy.deployment import down, up  # noqa: E402
from lab.deploy.run import run_app  # noqa: E402
from lab.governance.policy import set_policy  # noqa: E402
from lab.job import RunOptions, run_experiment  # noqa: E402

DEFAULT_EXPERIMENT = REPO / "experiments" / "breast_secureboost.yaml"
FAST_KEYS = ["crypto.key_bits=1024", "crypto.insecure_test_keys=true"]
TUNED_POLL = "0.005,0.2"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def measure_hops(experiment: Path, profile: str, rounds: int, folder: Path) -> dict[str, Any]:
    exp = load_experiment(experiment, [])
    started = time.perf_counter()
    state = up(folder, exp, profile=profile)
    up_seconds = time.perf_counter() - started
    try:
        result_dir = folder / "ping-result"
        result_dir.mkdir()
        app = Path(str(resources.files("federated") / "flwr_ping"))
        config: dict[str, str | int | float] = {
            "result-dir": str(result_dir),
            "rounds": rounds,
            "nodes": len(state.nodes),
            "timeout": 600.0,
            "poll": TUNED_POLL if profile == "tuned" else "",
        }
        run_app(state, app, config, result_dir, deadline=3600, outcome_files=("ping.json",))
        seconds = json.loads((result_dir / "ping.json").read_text())["seconds"]
    finally:
        down(folder)
    # The first hop of each node includes connecting the run (FAB fetch, context set-up).
    steady = seconds[len(state.nodes) :] or seconds
    return {
        "profile": profile,
        "hops": len(steady),
        "p50_seconds": round(percentile(steady, 0.5), 4),
        "p95_seconds": round(percentile(steady, 0.95), 4),
        "mean_seconds": round(statistics.fmean(steady), 4),
        "first_hops_seconds": [round(s, 3) for s in seconds[: len(state.nodes)]],
        "lab_up_seconds": round(up_seconds, 2),
    }


def ping_from_coordinator(home: Path, rounds: int, nodes: int, out: Path) -> None:
    """On the coordinator's host: run the ping app through the local Control API."""
    from lab.deploy.control import ControlClient
    from lab.deploy.node_home import NodeHome

    node = NodeHome.read(home)
    result_dir = node.runs / f"ping-{os.getpid()}"
    result_dir.mkdir(parents=True)
    app = Path(str(resources.files("federated") / "flwr_ping"))
    config: dict[str, str | int | float] = {
        "result-dir": str(result_dir),
        "rounds": rounds,
        "nodes": nodes,
        "timeout": 600.0,
        "poll": TUNED_POLL,
    }
    with ControlClient(node.identity.superlink_address, node.tls.ca_cert) as control:
        control.start_run(app, config)
    deadline = time.monotonic() + 1800
    while not (result_dir / "ping.json").is_file():
        if (result_dir / "error.json").is_file() or time.monotonic() > deadline:
            raise SystemExit(f"ping failed: {(result_dir / 'error.json').read_text()}")
        time.sleep(0.5)
    time.sleep(0.2)
    out.write_text((result_dir / "ping.json").read_text(), encoding="utf-8")


def measure_hops_namespaces(rounds: int) -> dict[str, Any]:
    """The tuned hop with a coordinator, a platform and a bank on their own hosts."""
    from tests.conftest import make_vertical
    from tests.deploy_hosts import SUBNET, Federation, namespaces_unavailable

    reason = namespaces_unavailable()
    if reason is not None:
        raise SystemExit(f"--namespaces: {reason}")
    coordinator = f"{SUBNET}.1"
    fed = Federation([("coord", "coordinator"), ("platform", "platform"), ("bank", "bank")])
    try:
        fed.up()
        coord = fed["coord"]
        coord.lab(
            "node", "init", "--home", str(coord.home), "--role", "coordinator",
            "--name", "coord", "--host", coordinator, "--listen", coordinator,
        )  # fmt: skip
        coord.lab("node", "start", "--home", str(coord.home))
        started = time.perf_counter()
        for name in ("platform", "bank"):
            party = fed[name]
            party.lab(
                "node", "init", "--home", str(party.home), "--role", name, "--name", name,
                "--coordinator", coordinator,
            )  # fmt: skip
            ca = party.give(coord.home / "exchange" / "ca.crt", "ca.crt")
            party.lab("node", "trust", "--home", str(party.home), str(ca))
            public = coord.give(party.home / "exchange" / f"{name}.pub", f"{name}.pub")
            coord.lab(
                "node", "add-party", "--home", str(coord.home), "--name", name,
                "--role", name, str(public),
            )  # fmt: skip
            make_vertical(party.root / "data", n=50)
            data = party.root / "data" / f"{name}.csv"
            os.chown(party.root / "data", party.uid, party.uid)
            os.chown(data, party.uid, party.uid)
            party.lab("node", "start", "--home", str(party.home), "--data", str(data))
        setup_seconds = time.perf_counter() - started
        out = coord.root / "ping-out.json"
        coord.run(
            sys.executable, str(Path(__file__).resolve()), "--ping-home", str(coord.home),
            "--rounds", str(rounds), "--nodes", "2", "--ping-out", str(out), timeout=3600,
        )  # fmt: skip
        seconds = json.loads(out.read_text())["seconds"]
    finally:
        fed.down()
    steady = seconds[2:] or seconds
    return {
        "profile": "tuned, parties in their own network namespaces",
        "hops": len(steady),
        "p50_seconds": round(percentile(steady, 0.5), 4),
        "p95_seconds": round(percentile(steady, 0.95), 4),
        "mean_seconds": round(statistics.fmean(steady), 4),
        "first_hops_seconds": [round(s, 3) for s in seconds[:2]],
        "parties_install_and_start_seconds": round(setup_seconds, 2),
    }


def time_job(experiment: Path, sets: list[str], deployment: Path | None) -> dict[str, Any]:
    exp = load_experiment(experiment, sets)
    started = time.perf_counter()
    summary = run_experiment(exp, RunOptions(deployment=deployment))
    return {
        "wall_seconds": round(time.perf_counter() - started, 2),
        "joint_seconds": summary["stage_seconds"].get("joint"),
        "stage_seconds": summary["stage_seconds"],
        "hops": summary["traffic"].get("hops"),
        "test_auc": summary["metrics"]["test_auc"],
        "registered": summary["registered_model"] is not None,
    }


def allow_fast_keys(home: Path | None, sets: list[str]) -> None:
    """The benchmark owns every node: let their policies accept its 1024-bit test keys."""
    if sets:
        set_policy(
            ["crypto.min_key_bits=1024", "crypto.allow_insecure_test_keys=true"],
            home,
            actor="benchmark",
        )


def deployed_job(experiment: Path, sets: list[str], profile: str, folder: Path) -> dict[str, Any]:
    state = up(folder, load_experiment(experiment, sets), profile=profile)
    for node in state.nodes:
        allow_fast_keys(Path(node.governance_home), sets)
    try:
        return time_job(experiment, sets, Path(state.folder)) | {"profile": profile}
    finally:
        down(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", type=Path, default=DEFAULT_EXPERIMENT)
    parser.add_argument("--rounds", type=int, default=10, help="ping rounds per node")
    parser.add_argument("--no-job", action="store_true", help="only measure hops")
    parser.add_argument("--stock-job", action="store_true", help="also time the job on stock")
    parser.add_argument("--full-keys", action="store_true", help="2048-bit keys for the job")
    parser.add_argument("--summary-json", type=Path)
    parser.add_argument("--namespaces", action="store_true", help="also across namespaces")
    parser.add_argument("--no-stock", action="store_true", help="skip the stock profile")
    parser.add_argument("--ping-home", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ping-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--nodes", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ping_home is not None:  # the coordinator's side of --namespaces
        ping_from_coordinator(args.ping_home, args.rounds, args.nodes, args.ping_out)
        return
    sets = [] if args.full_keys else FAST_KEYS
    report: dict[str, Any] = {"experiment": str(args.experiment), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="lab-hops-") as tmp:
        os.environ.setdefault("LAB_HOME", str(Path(tmp) / "lab-home"))
        os.environ.setdefault("LAB_KEYS", str(Path(tmp) / "lab-keys"))  # the home's audit key
        allow_fast_keys(None, sets)
        hops = {}
        for profile in ("tuned",) if args.no_stock else ("stock", "tuned"):
            hops[profile] = measure_hops(args.experiment, profile, args.rounds, Path(tmp) / profile)
            h = hops[profile]
            print(
                f"hop ({profile:5s}): p50 {h['p50_seconds']:.3f} s  p95 {h['p95_seconds']:.3f} s "
                f"over {h['hops']} hops; lab up {h['lab_up_seconds']} s",
                flush=True,
            )
        if args.namespaces:
            hops["namespaces"] = h = measure_hops_namespaces(args.rounds)
            print(
                f"hop (namespaces, tuned): p50 {h['p50_seconds']:.3f} s  p95 "
                f"{h['p95_seconds']:.3f} s over {h['hops']} hops",
                flush=True,
            )
        report["hops"] = hops
        if "stock" in hops:
            report["hop_p50_ratio_stock_over_tuned"] = round(
                hops["stock"]["p50_seconds"] / hops["tuned"]["p50_seconds"], 1
            )
        if not args.no_job:
            jobs: dict[str, Any] = {"embedded": time_job(args.experiment, sets, None)}
            profiles = ("tuned", "stock") if args.stock_job else ("tuned",)
            for profile in profiles:
                jobs[profile] = deployed_job(
                    args.experiment, sets, profile, Path(tmp) / f"job-{profile}"
                )
            for name, job in jobs.items():
                print(
                    f"job ({name:8s}): wall {job['wall_seconds']:.1f} s, joint stage "
                    f"{job['joint_seconds']:.1f} s, {job['hops']} hops, AUC {job['test_auc']:.4f}",
                    flush=True,
                )
            report["jobs"] = jobs
            report["job_wall_ratio_deployed_over_embedded"] = {
                p: round(jobs[p]["wall_seconds"] / jobs["embedded"]["wall_seconds"], 2)
                for p in profiles
            }
            print(f"deployed/embedded wall time: {report['job_wall_ratio_deployed_over_embedded']}")
    if "hop_p50_ratio_stock_over_tuned" in report:
        print(f"stock/tuned hop p50: {report['hop_p50_ratio_stock_over_tuned']}x")
    if args.summary_json:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
