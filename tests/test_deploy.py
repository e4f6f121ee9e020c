"""The deployment runtime: real processes on 127.0.0.1, real TLS, real SuperNode authentication.

Slow tests start a SuperLink and one SuperNode per party (``lab up``), run jobs through them
and always stop everything (``lab down``) in a ``finally``. No timing assertions: timeouts
are generous for a shared 2-core machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from mlflow.tracking import MlflowClient

from lab.cli import EXIT_JOB, run
from lab.deploy import processes
from lab.deploy.control import ControlClient
from lab.deploy.deployment import down, supernode_command
from lab.deploy.errors import DeploymentError
from lab.deploy.node_keys import generate_node_key
from lab.deploy.state import DeploymentState
from lab.deploy.tls import TlsFiles, generate_tls
from tests.conftest import allow_test_keys, make_vertical, sme_parties, vertical_config

FAST_KEYS = {"key_bits": 512, "insecure_test_keys": True}


# --- TLS and node keys (fast) ------------------------------------------------------------------


def test_tls_material_is_a_private_ca_and_a_loopback_server_certificate(tmp_path: Path) -> None:
    files = generate_tls(tmp_path / "tls")
    for key in (files.ca_key, files.server_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert server.issuer == ca.subject
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1"}
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    server.verify_directly_issued_by(ca)


def test_a_client_trusting_the_ca_completes_a_tls_handshake_on_loopback(tmp_path: Path) -> None:
    files = generate_tls(tmp_path / "tls")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.server_cert, files.server_key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            received.append(tls.recv(16))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(files.ca_cert))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"hello")
    thread.join(10)
    listener.close()
    assert received == [b"hello"]
    # A client that does not trust this CA refuses the server.
    other = generate_tls(tmp_path / "other")
    strict = ssl.create_default_context(cafile=str(other.ca_cert))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_once() -> None:
        conn, _ = listener.accept()
        try:
            server_ctx.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            conn.close()

    thread = threading.Thread(target=serve_once, daemon=True)
    thread.start()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        strict.wrap_socket(raw, server_hostname="127.0.0.1")
    thread.join(10)
    listener.close()


def test_node_keys_are_p384_openssh_with_a_private_private_key(tmp_path: Path) -> None:
    pair = generate_node_key(tmp_path, "bank")
    assert stat.S_IMODE(pair.private_key.stat().st_mode) == 0o600
    private = serialization.load_ssh_private_key(pair.private_key.read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.curve.name == "secp384r1"
    public = serialization.load_ssh_public_key(pair.public_key.read_bytes())
    assert public == private.public_key()
    assert b"BEGIN PUBLIC KEY" in pair.public_bytes()


def test_down_is_idempotent_and_a_folder_without_deployment_is_refused(tmp_path: Path) -> None:
    assert down(tmp_path / "nothing") == []
    assert run(["down", "--dir", str(tmp_path / "nothing")]) == 0
    with pytest.raises(DeploymentError, match="lab up"):
        DeploymentState.read(tmp_path)


# --- real deployments (slow) ---------------------------------------------------------------------


def _vertical_experiment(folder: Path, n: int = 300) -> Path:
    make_vertical(folder, n=n)
    config = vertical_config()
    config["crypto"] = dict(FAST_KEYS)
    config["runtime"] = {"message_timeout": 120.0}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _family_pids(state: DeploymentState) -> set[int]:
    pids: set[int] = set()
    for pid in state.pids():
        pids |= {p.pid for p in processes.family(pid)}
    return pids


@pytest.fixture
def deployment_dir(tmp_path: Path) -> Iterator[Path]:
    """A deployment folder that is always torn down."""
    folder = tmp_path / "deployment"
    try:
        yield folder
    finally:
        down(folder, grace=5.0)


def _govern_in_node_home(home: Path, folder: Path, ref: str, share: float) -> set[str]:
    """Act as the platform in its node's own home: publish its file, import authorizations."""
    from lab.governance.audit import AuditLog
    from lab.governance.authorizations import AuthorizationRegistry
    from lab.governance.catalog import Catalog
    from lab.governance.spec import spec_from_synth_columns, write_spec

    audit = AuditLog(home / "audit" / "log.jsonl")
    name, version = ref.split("@")
    spec = spec_from_synth_columns(
        folder / "columns.json", name=name, version=version, owner="platform", description="t"
    )
    write_spec(spec, folder / "spec.yaml")
    Catalog(home / "catalog", audit=audit).publish(folder / "spec.yaml", folder / "platform.csv")
    ids = pd.read_csv(folder / "platform.csv", usecols=["enterprise_id"], dtype=str)
    rng = np.random.default_rng(4)
    allowed = ids["enterprise_id"][rng.uniform(size=len(ids)) < share]
    groups = sorted(
        {
            str(v["group"])
            for v in json.loads((folder / "columns.json").read_text()).values()
            if v.get("party") == "platform"
        }
    )
    today = datetime.now(UTC).date()
    pd.DataFrame(
        {
            "enterprise_id": allowed,
            "bank": "bank",
            "purpose": "credit_risk_modeling",
            "valid_from": (today - timedelta(days=1)).isoformat(),
            "valid_to": (today + timedelta(days=30)).isoformat(),
            "groups": ";".join(groups),
            "personal_consent": "true",
            "reference": "T",
        }
    ).to_csv(folder / "auth.csv", index=False)
    with AuthorizationRegistry(home / "governance.db", audit=audit) as registry:
        registry.import_csv(folder / "auth.csv")
    return set(allowed)


@pytest.mark.slow
def test_lab_up_train_down_on_loopback(
    tmp_path: Path, lab_home: Path, deployment_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lab.demo import synthesize

    folder = tmp_path / "sme"
    synthesize(folder, n_enterprises=3000, n_banks=1, bank_size=1400, unmatched_rate=0.1, seed=6)
    # The bank's job asks the platform for nothing: no feature set, authorizations "off".
    config: dict[str, Any] = {
        "name": "tiny",
        "kind": "vertical",
        "parties": sme_parties(),
        "model": {"type": "secureboost", "n_estimators": 3, "max_depth": 2, "max_bin": 8},
        "crypto": dict(FAST_KEYS),
        "evaluation": {"test_size": 0.25, "random_state": 1},
        "alignment": {"id_scheme": "uscc", "min_intersection": 10},
        "governance": {"require_authorization": False},
        "runtime": {"message_timeout": 120.0},
    }
    experiment = folder / "tiny.yaml"
    experiment.write_text(yaml.safe_dump(config))
    up_args = ["up", "--dir", str(deployment_dir), "--experiment", str(experiment)]
    assert run(up_args) == 0
    state = DeploymentState.read(deployment_dir)
    assert [n.party for n in state.nodes] == ["bank", "platform"]
    # Each node was told only its own party's file; keys and TLS material are on disk.
    files = {"bank": "bank_1.csv", "platform": "platform.csv"}
    for node in state.nodes:
        node_config = (deployment_dir / "nodes" / node.party / "node-config.toml").read_text()
        assert files[node.party] in node_config
        other = "platform" if node.party == "bank" else "bank"
        assert files[other] not in node_config
        assert stat.S_IMODE(Path(node.private_key).stat().st_mode) == 0o600
    # A second 'lab up' on a running folder is refused.
    assert run(up_args) != 0
    # Each node decides from the policy in its own home: test keys in both; the platform has
    # published its file and imported authorizations in *its* home, and lets this unbudgeted
    # set give exact statistics.
    for node in state.nodes:
        allow_test_keys(Path(node.governance_home))
    platform_home = Path(state.node("platform").governance_home)
    allowed = _govern_in_node_home(platform_home, folder, "sme_node@1", share=0.5)
    allow_test_keys(platform_home, "dp.require=false")
    bank_ids = set(pd.read_csv(folder / "bank_1.csv", dtype=str)["enterprise_id"])

    # The lab reads no party's file on a deployment: not a header, not a row.
    def no_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("the lab read a party's file on a deployment")

    from lab import job as lab_job
    from lab.config import load as lab_config

    monkeypatch.setattr(lab_job, "read_kept_table", no_read)
    monkeypatch.setattr(lab_config, "read_header", no_read)
    summary_path = tmp_path / "summary.json"
    code = run(
        [
            "train",
            str(experiment),
            "--deployment",
            str(deployment_dir),
            "--summary-json",
            str(summary_path),
        ]
    )
    assert code == 0
    summary = json.loads(summary_path.read_text())
    assert summary["runtime"].startswith("deployment")
    assert summary["joint_model"]["status"] == "trained"
    # The platform's node served only authorised enterprises, whatever the job said.
    assert summary["n_aligned"] == len(bank_ids & allowed)
    assert summary["alignment"]["n_platform"] == {"platform": len(allowed)}
    registered = summary["registered_model"]
    assert registered["name"] == "tiny"
    client = MlflowClient(tracking_uri=f"sqlite:///{lab_home / 'mlflow.db'}")
    versions = client.search_model_versions("name='tiny'")
    assert [str(v.version) for v in versions] == [str(registered["version"])]
    run_data = client.get_run(summary["mlflow_run_id"]).data
    assert run_data.tags["lab.runtime"].startswith("deployment")
    # No party's data location in what the bank's tracking server records.
    assert not [v for v in run_data.params.values() if str(folder) in v]
    # The platform's model part stayed in the platform node's store; its audit log (in its own
    # home) records the alignment it served.
    assert any((Path(state.node("platform").store)).rglob("*"))
    from lab.governance.audit import AuditLog

    [aligned] = AuditLog(platform_home / "audit" / "log.jsonl").entries("alignment")
    assert aligned.payload["n_authorized"] == len(allowed)
    # Each node's log holds the other's audit heads of the job's start and end.
    bank_home = Path(state.node("bank").governance_home)
    bank_log = AuditLog(bank_home / "audit" / "log.jsonl")
    platform_log = AuditLog(platform_home / "audit" / "log.jsonl")
    assert sorted(h.when for h in bank_log.peer_heads(party="platform")) == ["end", "start"]
    assert sorted(h.when for h in platform_log.peer_heads(party="bank")) == ["end", "start"]

    pids = _family_pids(state)
    assert pids
    assert run(["down", "--dir", str(deployment_dir)]) == 0
    assert not [pid for pid in pids if processes.alive(pid)]
    assert run(["down", "--dir", str(deployment_dir)]) == 0


@pytest.mark.slow
def test_an_unregistered_supernode_cannot_join(tmp_path: Path, deployment_dir: Path) -> None:
    experiment = _vertical_experiment(tmp_path / "data")
    assert run(["up", "--dir", str(deployment_dir), "--experiment", str(experiment)]) == 0
    state = DeploymentState.read(deployment_dir)
    intruder = generate_node_key(tmp_path / "intruder", "intruder")
    config = tmp_path / "intruder" / "node-config.toml"
    config.write_text(f'party = "bank"\nrole = "bank"\ndata = "{tmp_path / "data" / "bank.csv"}"\n')
    command = supernode_command(
        state.address,
        TlsFiles.in_folder(deployment_dir / "tls"),
        intruder.private_key,
        config,
        processes.free_port(),
        "stock",
    )
    log = tmp_path / "intruder" / "supernode.log"
    pid = processes.spawn(command, log, processes.service_env(), tmp_path)
    try:
        deadline = time.monotonic() + 180
        while processes.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not processes.alive(pid), "the unregistered SuperNode kept running"
        assert "Failed to activate SuperNode" in log.read_text()
        with ControlClient(state.address, Path(state.ca_cert)) as control:
            assert control.online_nodes() == {n.node_id for n in state.nodes}
    finally:
        processes.stop([pid], grace=2.0)


REF = "sme_deploy@1"


def _governed_experiment(folder: Path, n_enterprises: int = 1500, bank_size: int = 700) -> Path:
    """Synthetic data published as a feature set, authorised, with a DP budget."""
    from lab.demo import publish_feature_set, synthesize
    from lab.home import lab_home

    synthesize(
        folder,
        n_enterprises=n_enterprises,
        n_banks=1,
        bank_size=bank_size,
        unmatched_rate=0.1,
        seed=5,
    )
    publish_feature_set(folder, REF)
    allow_test_keys(lab_home())
    ids = pd.read_csv(folder / "platform.csv", usecols=["enterprise_id"], dtype=str)
    groups = sorted(
        {
            str(v["group"])
            for v in json.loads((folder / "columns.json").read_text()).values()
            if v.get("party") == "platform"
        }
    )
    today = datetime.now(UTC).date()
    rng = np.random.default_rng(0)
    allowed = ids["enterprise_id"][rng.uniform(size=len(ids)) < 0.8]
    pd.DataFrame(
        {
            "enterprise_id": allowed,
            "bank": "bank",
            "purpose": "credit_risk_modeling",
            "valid_from": (today - timedelta(days=1)).isoformat(),
            "valid_to": (today + timedelta(days=30)).isoformat(),
            "groups": ";".join(groups),
            "personal_consent": "true",
            "reference": "T",
        }
    ).to_csv(folder / "auth.csv", index=False)
    assert run(["authorizations", "import", str(folder / "auth.csv")]) == 0
    assert run(["budget", "set", REF, "--bank", "bank", "--epsilon", "20", "--delta", "1e-5"]) == 0
    config: dict[str, Any] = {
        "name": "governed-deploy",
        "kind": "vertical",
        "parties": sme_parties(REF),
        "model": {
            "type": "secureboost",
            "n_estimators": 4,
            "max_depth": 3,
            "max_bin": 8,
            "dp_epsilon": 2.0,
            "dp_delta": 1e-5,
        },
        "crypto": dict(FAST_KEYS),
        "evaluation": {"test_size": 0.25, "random_state": 1},
        "alignment": {"id_scheme": "uscc", "min_intersection": 20},
        "governance": {"require_authorization": True},
        "runtime": {"message_timeout": 60.0},
    }
    path = folder / "governed.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _worker_tasks(log: Path) -> int:
    if not log.is_file():
        return 0
    return sum(" task " in line for line in log.read_text().splitlines())


def _answering(supernode_log: Path) -> bool:
    """Whether the SuperNode holds a message it has not started replying to (mid-task).

    Killed then, the node leaves no half-uploaded reply: the coordinator gives up after the
    job's message timeout. Killed while a reply's objects are on their way, it would wait
    Flower's object-push session out (180 s) before reporting the party's failure.
    """
    text = supernode_log.read_text() if supernode_log.is_file() else ""
    return text.count("Received successfully") > text.count("Sending:")


@pytest.mark.slow
def test_a_party_killed_mid_job_fails_the_job_cleanly_and_a_rerun_succeeds(
    tmp_path: Path, lab_home: Path, deployment_dir: Path
) -> None:
    from lab.governance.audit import AuditLog
    from lab.governance.ledger import BudgetLedger

    experiment = _governed_experiment(tmp_path / "sme")
    up_args = [
        "up",
        "--dir",
        str(deployment_dir),
        "--experiment",
        str(experiment),
        "--governance-home",
        str(lab_home),
    ]
    assert run(up_args) == 0
    state = DeploymentState.read(deployment_dir)
    platform = state.node("platform")
    assert platform.worker is not None
    env = processes.service_env({"LAB_HOME": str(lab_home)})
    lab = str(Path(sys.executable).parent / "lab")
    # The killed run gives up on a silent party after 30 s (the experiment's own 60 s is for
    # the rerun): no hop of this small job comes near it, and the wait is pure waiting.
    fail_fast = ["--set", "runtime.message_timeout=30"]
    train = subprocess.Popen(
        [lab, "train", str(experiment), "--deployment", str(deployment_dir), *fail_fast],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until the platform's node has served a few steps and is working on the next,
        # then kill it (and its ClientApp worker) without warning.
        deadline = time.monotonic() + 300
        supernode_log = Path(platform.supernode.log)
        while _worker_tasks(Path(platform.worker.log)) < 4 or not _answering(supernode_log):
            assert train.poll() is None, train.communicate()
            assert time.monotonic() < deadline, "the job never reached the platform"
            time.sleep(0.02)
        for pid in (platform.supernode.pid, platform.worker.pid):
            for proc in processes.family(pid):
                proc.send_signal(signal.SIGKILL)
        _, err = train.communicate(timeout=600)
    finally:
        if train.poll() is None:
            train.kill()
            train.communicate()
    assert train.returncode == EXIT_JOB
    assert "error:" in err
    assert "'platform'" in err
    # Nothing registered. The platform's node died before it could close its reservation: the
    # whole plan stays counted until the platform's operator settles it from what the node
    # journaled (releases it made before it died); the audit log verifies and records it all.
    client = MlflowClient(tracking_uri=f"sqlite:///{lab_home / 'mlflow.db'}")
    assert client.search_registered_models() == []
    with BudgetLedger() as ledger:
        [job] = ledger.jobs()
    assert (job.state, job.outcome) == ("reserved", None)
    assert run(["budget", "settle", job.job_id]) == 0
    with BudgetLedger() as ledger:
        [job] = ledger.jobs()
    assert (job.state, job.outcome) == ("committed", "failed")
    assert job.actual_events is not None
    assert sum(e.steps for e in job.actual_events) <= sum(e.steps for e in job.planned_events)
    log = AuditLog()
    assert log.verify().ok
    types = [e.type for e in log.entries()]
    assert "job_failed" in types
    assert "model_registered" not in types

    # Restart the deployment; the same job now succeeds and registers its model.
    assert run(["down", "--dir", str(deployment_dir)]) == 0
    assert run(up_args) == 0
    summary_path = tmp_path / "rerun.json"
    code = run(
        [
            "train",
            str(experiment),
            "--deployment",
            str(deployment_dir),
            "--summary-json",
            str(summary_path),
        ]
    )
    assert code == 0
    summary = json.loads(summary_path.read_text())
    assert summary["registered_model"] is not None
    with BudgetLedger() as ledger:
        states = sorted((j.state, j.outcome) for j in ledger.jobs())
    assert states == [("committed", "failed"), ("committed", "finished")]
    assert AuditLog().verify().ok
    assert os.environ.get("LAB_HOME") == str(lab_home)


# --- parties installed with `lab node` on one host: coordinator restart, key rotation (slow) ------


class _LoopbackParties:
    """A coordinator, a bank and a platform installed with ``lab node`` on 127.0.0.1.

    Each has its own home and its own audit key folder; the operators exchange only the
    coordinator's CA certificate and the parties' public keys, as on separate hosts. The
    installation runs in-process (``lab node init`` is tested in tests/test_deploy_node.py);
    starting, stopping and rotating run the installed ``lab``.
    """

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.monkeypatch = monkeypatch
        self.homes = {name: root / name / "home" for name in ("coord", "bank", "platform")}
        self.ports = (processes.free_port(), processes.free_port())

    @property
    def superlink(self) -> str:
        return f"127.0.0.1:{self.ports[0]}"

    def env(self, party: str) -> dict[str, str]:
        return {"LAB_HOME": str(self.homes[party]), "LAB_KEYS": str(self.root / party / "keys")}

    def act_as(self, party: str) -> None:
        """Make in-process lab calls act as ``party``'s operator, on its host."""
        for key, value in self.env(party).items():
            self.monkeypatch.setenv(key, value)

    def here(self, party: str, *args: str) -> None:
        self.act_as(party)
        assert run(list(args)) == 0, (party, args)

    def lab(self, party: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        from tests.cli_helpers import run_lab

        done = run_lab(args, home=self.homes[party], env=self.env(party))
        if check:
            assert done.returncode == 0, (party, args, done.stdout, done.stderr)
        return done

    def install(self) -> None:
        superlink, jobs = (str(p) for p in self.ports)
        ports = ["--superlink-port", superlink, "--jobs-port", jobs]
        coord = self.homes["coord"]
        self.here("coord", "node", "init", "--home", str(coord), "--role", "coordinator",
                  "--name", "coord", *ports)  # fmt: skip
        for name in ("bank", "platform"):
            home = self.homes[name]
            self.here(name, "node", "init", "--home", str(home), "--role", name, "--name", name,
                      "--coordinator", "127.0.0.1", *ports)  # fmt: skip
            self.here(
                name, "node", "trust", "--home", str(home), str(coord / "exchange" / "ca.crt")
            )
            self.here("coord", "node", "add-party", "--home", str(coord), "--name", name,
                      "--role", name, str(home / "exchange" / f"{name}.pub"))  # fmt: skip

    def start(self, party: str, data: Path | None = None) -> None:
        extra = [] if data is None else ["--data", str(data)]
        self.lab(party, "node", "start", "--home", str(self.homes[party]), *extra)

    def pids(self, party: str, name: str | None = None) -> list[int]:
        run_file = self.homes[party] / "run.json"
        if not run_file.is_file():
            return []
        procs = json.loads(run_file.read_text())["processes"]
        return [
            p.pid
            for key, info in procs.items()
            if name in (None, key)
            for p in processes.family(int(info["pid"]))
        ]

    def down(self) -> None:
        for party in self.homes:
            processes.stop(self.pids(party), grace=3.0)


def _journaled_releases(home: Path) -> int:
    from lab.governance.node import JOURNAL_DIR

    total = 0
    for path in (home / JOURNAL_DIR).glob("*.json"):
        with contextlib.suppress(ValueError, OSError, KeyError):
            total += sum(int(v) for v in json.loads(path.read_text())["releases"].values())
    return total


@pytest.mark.slow
def test_lab_node_parties_survive_a_coordinator_restart_and_a_key_rotation(
    tmp_path: Path, lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coordinator restarts mid-job: the platform's node settles its own reservation.

    Then the platform rotates its SuperNode key per docs/deployment.md's runbook: the old key
    is refused and the next job runs with the new one.
    """
    from lab.deploy.node_keys import NodeKey
    from lab.governance.audit import AuditLog
    from lab.governance.ledger import BudgetLedger

    fed = _LoopbackParties(tmp_path / "hosts", monkeypatch)
    try:
        fed.install()
        platform, bank, coord = fed.homes["platform"], fed.homes["bank"], fed.homes["coord"]
        fed.here("bank", "policy", "set", "crypto.min_key_bits=512",
                 "crypto.allow_insecure_test_keys=true")  # fmt: skip
        # The platform's operator governs its own file in its own home: published, authorised,
        # a DP budget for the bank.
        fed.act_as("platform")
        experiment = _governed_experiment(tmp_path / "sme", n_enterprises=1000, bank_size=500)
        config = yaml.safe_load(experiment.read_text())
        config["model"].update(n_estimators=1, max_depth=2)  # two releases (tree levels)
        config["evaluation"].update(test_size=0.5, stratify=True)  # few defaults in 500 rows
        experiment.write_text(yaml.safe_dump(config))
        data = (tmp_path / "sme" / "platform.csv", tmp_path / "sme" / "bank_1.csv")
        fed.start("coord")
        with ThreadPoolExecutor(2) as pool:  # each party's operator on its own host
            list(pool.map(fed.start, ("platform", "bank"), data))

        lab = str(Path(sys.executable).parent / "lab")
        train = subprocess.Popen(
            [lab, "train", str(experiment), "--deployment", str(bank)],
            env=processes.service_env(fed.env("bank")),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 300
            while _journaled_releases(platform) < 1:
                assert train.poll() is None, train.communicate()
                assert time.monotonic() < deadline, "the platform never released anything"
                time.sleep(0.05)
            # The coordinator's host goes down hard mid-job and comes back with its state.
            for pid in fed.pids("coord"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            seen = _journaled_releases(platform)
            fed.start("coord")
            _, err = train.communicate(timeout=600)
        finally:
            if train.poll() is None:
                train.kill()
                train.communicate()
        assert train.returncode == EXIT_JOB, err
        assert "restarted" in err
        models = MlflowClient(tracking_uri=f"sqlite:///{bank / 'mlflow.db'}")
        assert models.search_registered_models() == []
        # The platform's node settles its reservation by itself (its run watch saw the run
        # end on the restarted SuperLink): committed as failed, charged what it released.
        deadline = time.monotonic() + 120
        while True:
            with BudgetLedger(platform / "governance.db") as ledger:
                [job] = ledger.jobs()
            if job.state != "reserved" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert (job.state, job.outcome) == ("committed", "failed")
        assert job.actual_events is not None
        charged = sum(e.steps for e in job.actual_events)
        assert 1 <= seen <= charged <= sum(e.steps for e in job.planned_events)
        log = AuditLog(platform / "audit" / "log.jsonl")
        [settled] = [e.payload for e in log.entries("reservation_settled")]
        assert settled["reservation"] == job.job_id
        assert sum(settled["releases"].values()) == charged
        assert "run watch" in settled["reason"]
        assert log.verify().ok

        # Rotate the platform's SuperNode key (docs/deployment.md): a new pair on the
        # platform, the new public key admitted on the running coordinator, which refuses the
        # old one at once: the platform's running SuperNode is turned away and exits.
        old_supernode = fed.pids("platform", "supernode")[0]
        fed.lab("platform", "node", "rotate-key", "--home", str(platform))
        new_public = NodeKey(platform / "keys" / "node", platform / "keys" / "node.pub")
        fed.lab("coord", "node", "add-party", "--home", str(coord), "--name", "platform",
                "--role", "platform", str(platform / "exchange" / "platform.pub"))  # fmt: skip
        refused_at = time.monotonic()
        while processes.alive(old_supernode) and time.monotonic() < refused_at + 90:
            time.sleep(0.2)
        assert not processes.alive(old_supernode), "the SuperLink kept serving the old key"
        with ControlClient(fed.superlink, coord / "tls" / "ca.crt") as control:
            keys = {e.public_key for e in control.nodes()
                    if e.name == "platform" and e.status != "unregistered"}  # fmt: skip
        assert keys == {new_public.public_bytes()}
        fed.lab("platform", "node", "stop", "--home", str(platform), "--grace", "2")
        fed.start("platform", data[0])

        # A later job (a stump: one release) runs on the restarted coordinator with the
        # platform's new key.
        config["model"].update(max_depth=1)
        later = experiment.with_name("later.yaml")
        later.write_text(yaml.safe_dump(config))
        fed.act_as("bank")
        summary = tmp_path / "after.json"
        code = run(["train", str(later), "--deployment", str(bank),
                    "--summary-json", str(summary)])  # fmt: skip
        assert code == 0
        assert json.loads(summary.read_text())["registered_model"] is not None
        with BudgetLedger(platform / "governance.db") as ledger:
            states = sorted((j.state, j.outcome) for j in ledger.jobs())
        assert states == [("committed", "failed"), ("committed", "finished")]
        fed.act_as("platform")
        assert AuditLog(platform / "audit" / "log.jsonl").verify().ok
    finally:
        fed.down()
