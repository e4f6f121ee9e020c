"""Parties on their own hosts: a coordinator, a platform and three banks in namespaces of their own.

Each party is installed with ``lab node init`` in its own home under a root folder owned by its
own uid (mode 0700), runs every command in its own network namespace as that uid, and gets
from the others only the files an operator copies (the coordinator's CA certificate, each
party's SuperNode public key). The parties listen on their namespace's address or loopback
only, on a private network of the test's own (``tests/deploy_hosts.py``). Across them run a
SecureBoost job, a hetero LR job and a horizontal job of three banks with secure aggregation
and DP, then a coordinator restart in the middle of a job. No timing assertions; each job's
wall time is printed for the deployment notes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import TEST_KEY_POLICY, make_vertical
from tests.deploy_hosts import SUBNET, Federation, Party, namespaces_unavailable

pytestmark = pytest.mark.slow

COORDINATOR = f"{SUBNET}.1"
PARTIES = [
    ("coord", "coordinator"),
    ("platform", "platform"),
    ("bank", "bank"),
    ("bank_2", "bank"),
    ("bank_3", "bank"),
]
BANKS = ("bank", "bank_2", "bank_3")
FAST_KEYS = {"key_bits": 512, "insecure_test_keys": True}
WALL: dict[str, float] = {}


def _bank_table(path: Path, n: int, seed: int) -> None:
    """A bank file with the columns of :func:`make_vertical`'s bank (for the horizontal job)."""
    rng = np.random.default_rng(seed)
    signal_ = rng.normal(size=n)
    pd.DataFrame(
        {
            "id": [f"H{seed}-{i:04d}" for i in range(n)],
            "y": (signal_ + rng.normal(size=n) > 1.0).astype(int),
            "deposits": (signal_ + rng.normal(scale=0.7, size=n)).round(3),
            "queries": rng.integers(0, 5, size=n),
            "product": rng.choice(["tax_loan", "credit", "mortgage"], size=n),
        }
    ).to_csv(path, index=False)


def _own(party: Party, path: Path) -> Path:
    os.chown(path, party.uid, party.uid)
    return path


def _write_data(fed: Federation) -> None:
    """Each party's file in its own root; the bank's experiments in the bank's root."""
    scratch = fed.base / "scratch"
    make_vertical(scratch, n=240)
    for name, file in (("bank", "bank.csv"), ("platform", "platform.csv")):
        target = fed[name].root / file
        target.write_bytes((scratch / file).read_bytes())
        _own(fed[name], target)
    for k, name in enumerate(BANKS[1:], start=2):
        _bank_table(fed[name].root / "bank.csv", 200, seed=k)
        _own(fed[name], fed[name].root / "bank.csv")
    for path in scratch.iterdir():
        path.unlink()
    scratch.rmdir()
    bank = fed["bank"]
    vertical: dict[str, Any] = {
        "kind": "vertical",
        "parties": [
            {"name": "bank", "role": "bank", "data": "bank.csv", "id_column": "id",
             "label_column": "y"},
            # The platform's file is on the platform's host: the bank's copy of the
            # experiment names it, the bank never reads it.
            {"name": "platform", "role": "platform", "data": "platform.csv", "id_column": "id"},
        ],
        "crypto": dict(FAST_KEYS),
        "evaluation": {"test_size": 0.25, "random_state": 1, "stratify": True},
        "runtime": {"message_timeout": 120.0},
    }  # fmt: skip
    experiments = {
        "secureboost": {
            **vertical,
            "name": "hosts-secureboost",
            "model": {"type": "secureboost", "n_estimators": 3, "max_depth": 2, "max_bin": 8},
        },
        "hetero_lr": {
            **vertical,
            "name": "hosts-hetero-lr",
            "model": {"type": "hetero_lr", "max_epochs": 2},
        },
        "horizontal": {
            "name": "hosts-horizontal",
            "kind": "horizontal",
            "parties": [
                {"name": b, "role": "bank", "data": "bank.csv", "label_column": "y"} for b in BANKS
            ],
            "model": {
                "type": "mlp",
                "hidden": [8],
                "rounds": 2,
                "dp_epsilon": 8.0,
                "dp_delta": 1e-5,
                "max_grad_norm": 1.0,
            },
            "secure_aggregation": {"enabled": True},
            "evaluation": {"test_size": 0.2, "random_state": 1, "stratify": True},
            "runtime": {"message_timeout": 120.0},
        },
    }
    for kind, config in experiments.items():
        (bank.root / f"{kind}.yaml").write_text(yaml.safe_dump(config))
        _own(bank, bank.root / f"{kind}.yaml")


def _install(fed: Federation) -> None:
    """What each party's operator does, on its own host, with only the exchanged files."""
    coord = fed["coord"]
    coord.lab(
        "node", "init", "--home", str(coord.home), "--role", "coordinator", "--name", "coord",
        "--host", COORDINATOR, "--listen", COORDINATOR,
    )  # fmt: skip

    def install(name: str, role: str) -> None:
        party = fed[name]
        party.lab(
            "node", "init", "--home", str(party.home), "--role", role, "--name", name,
            "--coordinator", COORDINATOR,
        )  # fmt: skip
        ca = party.give(coord.home / "exchange" / "ca.crt", "ca.crt")
        party.lab("node", "trust", "--home", str(party.home), str(ca))
        # Each party's own operator sets its node's policy: test keys; the platform also lets
        # this small job's mini-batches through.
        extra = ["hetero_lr.min_batch_size=64"] if role == "platform" else []
        party.lab("policy", "set", *TEST_KEY_POLICY, *extra)

    # The parties' operators work at the same time, each on its own host.
    with ThreadPoolExecutor(len(PARTIES) - 1) as pool:
        list(pool.map(lambda p: install(*p), PARTIES[1:]))
    for name, role in PARTIES[1:]:
        public = coord.give(fed[name].home / "exchange" / f"{name}.pub", f"{name}.pub")
        coord.lab("node", "add-party", "--home", str(coord.home), "--name", name,
                  "--role", role, str(public))  # fmt: skip


def _start(fed: Federation) -> None:
    fed["coord"].lab("node", "start", "--home", str(fed["coord"].home))

    def start(name: str, role: str) -> None:
        party = fed[name]
        data = party.root / ("platform.csv" if role == "platform" else "bank.csv")
        party.lab("node", "start", "--home", str(party.home), "--data", str(data))

    with ThreadPoolExecutor(len(PARTIES) - 1) as pool:
        list(pool.map(lambda p: start(*p), PARTIES[1:]))


@pytest.fixture(scope="module")
def fed() -> Iterator[Federation]:
    reason = namespaces_unavailable()
    if reason is not None:
        pytest.skip(f"parties on their own hosts need network namespaces: {reason}")
    federation = Federation(PARTIES)
    try:
        federation.up()
        probe = federation["bank"].run(
            sys.executable, "-c", "import lab.deploy.node_cli", check=False
        )
        if probe.returncode != 0:
            pytest.skip(
                "this checkout or its virtualenv is not readable by an unprivileged uid: "
                + probe.stderr.strip().splitlines()[-1]
            )
        _write_data(federation)
        _install(federation)
        _start(federation)
        yield federation
    finally:
        federation.down()


def _summary(fed: Federation, kind: str) -> dict[str, Any]:
    bank = fed["bank"]
    out = bank.root / f"{kind}-summary.json"
    started = time.perf_counter()
    bank.lab(
        "train", str(bank.root / f"{kind}.yaml"), "--deployment", str(bank.home),
        "--summary-json", str(out), timeout=600,
    )  # fmt: skip
    WALL[kind] = time.perf_counter() - started
    summary: dict[str, Any] = json.loads(out.read_text())
    print(f"\n{kind} deployed across namespaces: job wall {summary['wall_seconds']} s")
    return summary


def test_each_party_is_alone_on_its_host(fed: Federation) -> None:
    owners = set()
    for party in fed.parties.values():
        info = party.root.stat()
        assert stat.S_IMODE(info.st_mode) == 0o700
        assert info.st_uid == party.uid
        owners.add(info.st_uid)
        # Every process of the party runs as its uid, in its namespace.
        pids = party.pids()
        assert pids, f"{party.name} runs nothing"
        for pid in pids:
            assert os.stat(f"/proc/{pid}").st_uid == party.uid
            assert os.stat(f"/proc/{pid}/ns/net").st_ino == fed.netns_inode(party)
        # It listens on its own address or on loopback, nowhere else.
        allowed = {"127.0.0.1", "[::1]"} | ({COORDINATOR} if party.role == "coordinator" else set())
        assert fed.listening(party) <= allowed, (party.name, fed.listening(party))
    assert len(owners) == len(PARTIES)
    assert {fed["coord"].address} <= fed.listening(fed["coord"])
    # The kernel keeps a party out of another's files.
    peek = fed["bank"].run("cat", str(fed["platform"].home / "policy.yaml"), check=False)
    assert peek.returncode != 0
    assert "Permission denied" in peek.stderr
    # The platform's policy is in the platform's home only; no party holds another's key.
    assert (fed["platform"].home / "policy.yaml").is_file()
    assert not (fed["coord"].home / "policy.yaml").exists()
    assert sorted(p.name for p in (fed["coord"].home / "parties").glob("*.pub")) == sorted(
        f"{n}.pub" for n, _ in PARTIES[1:]
    )
    assert not list((fed["coord"].home).rglob("node")), "a party's private key on the coordinator"
    for name, _ in PARTIES[1:]:
        assert not (fed[name].home / "tls" / "ca.key").exists()
    # Another host reaches the coordinator's Fleet API only: its Control API answers 403.
    probe = fed["bank"].run(
        sys.executable, "-c",
        "import ssl, urllib.request, urllib.error, sys\n"
        f"ctx = ssl.create_default_context(cafile='{fed['bank'].home / 'trust' / 'ca.crt'}')\n"
        f"req = urllib.request.Request('https://{COORDINATOR}:9092/v1/control/list-nodes', "
        "data=b'', method='POST')\n"
        "try:\n    urllib.request.urlopen(req, context=ctx, timeout=20)\n"
        "except urllib.error.HTTPError as e:\n    print(e.code)\n",
    )  # fmt: skip
    assert probe.stdout.strip() == "403"


def test_secureboost_across_hosts(fed: Federation) -> None:
    summary = _summary(fed, "secureboost")
    assert summary["runtime"].startswith("deployment")
    assert summary["joint_model"]["status"] == "trained"
    assert summary["registered_model"]["name"] == "hosts-secureboost"
    assert summary["n_aligned"] == 240
    # The platform's model part stays in the platform's store; the bank's MLflow is the bank's.
    assert any((fed["platform"].home / "node" / "store").rglob("*"))
    assert (fed["bank"].home / "mlflow.db").is_file()
    assert not (fed["platform"].home / "mlflow.db").exists()


def _tasks(log: Path) -> int:
    return log.read_text().count(" task ") if log.is_file() else 0


def test_a_coordinator_restarted_mid_job_fails_it_cleanly_and_later_jobs_run(
    fed: Federation,
) -> None:
    coord, bank, platform = fed["coord"], fed["bank"], fed["platform"]
    registered = json.loads((coord.home / "run.json").read_text())["registered"]
    models = MlflowClient(tracking_uri=f"sqlite:///{bank.home / 'mlflow.db'}")
    before = {m.name: len(models.search_model_versions(f"name='{m.name}'"))
              for m in models.search_registered_models()}  # fmt: skip
    worker_log = platform.home / "node" / "worker.log"
    served = _tasks(worker_log)
    out = bank.root / "restart-summary.json"
    train = subprocess.Popen(
        bank.command(
            str(Path(sys.executable).parent / "lab"), "train", str(bank.root / "secureboost.yaml"),
            "--deployment", str(bank.home), "--summary-json", str(out),
        ),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while _tasks(worker_log) < served + 3:
            assert train.poll() is None, train.communicate()
            assert time.monotonic() < deadline, "the job never reached the platform"
            time.sleep(0.2)
        # The coordinator's host goes down hard (SIGKILL: no ServerApp writes anything) and
        # comes back with its state database.
        for pid in fed["coord"].pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        coord.lab("node", "start", "--home", str(coord.home))
        _, err = train.communicate(timeout=600)
    finally:
        if train.poll() is None:
            train.kill()
            train.communicate()
    assert train.returncode == 1, err
    assert "error: job 'hosts-secureboost' failed" in err
    assert "restarted" in err
    assert not out.exists()
    # The SuperLink kept its registrations; the nodes came back by themselves.
    assert json.loads((coord.home / "run.json").read_text())["registered"] == registered
    # Nothing registered for the failed job; its MLflow run is FAILED; the bank's audit log
    # records the failure and verifies.
    after = {m.name: len(models.search_model_versions(f"name='{m.name}'"))
             for m in models.search_registered_models()}  # fmt: skip
    assert after == before
    failed = models.search_runs(
        [models.get_experiment_by_name("hosts-secureboost").experiment_id],
        "attributes.status = 'FAILED'",
    )
    assert len(failed) == 1
    audit = bank.lab("audit", "verify")
    assert "ok" in audit.stdout.lower()
    # Later jobs run: the tests below run on the restarted coordinator.


def test_hetero_lr_across_hosts_after_the_restart(fed: Federation) -> None:
    """Run in module order, this job is the first on the restarted coordinator."""
    summary = _summary(fed, "hetero_lr")
    assert summary["joint_model"]["status"] == "trained"
    assert summary["registered_model"]["name"] == "hosts-hetero-lr"


def test_horizontal_with_secure_aggregation_and_dp_across_hosts(fed: Federation) -> None:
    summary = _summary(fed, "horizontal")
    assert summary["kind"] == "horizontal"
    assert summary["joint_model"]["status"] == "trained"
    assert summary["registered_model"]["name"] == "hosts-horizontal"
    assert summary["secure_aggregation"]["enabled"] is True
    assert summary["secure_aggregation"]["dropouts"] == {}
    by_bank = summary["privacy"]["by_bank"]
    assert sorted(by_bank) == sorted(BANKS)
    assert all(0 < b["epsilon"] <= 8.0 for b in by_bank.values())


def test_wall_times(fed: Federation) -> None:
    """Not an assertion of speed: the figures for docs/deployment.md."""
    del fed
    print("\nlab train wall, deployed across namespaces:", json.dumps(WALL))
