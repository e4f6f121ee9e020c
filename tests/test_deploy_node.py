"""Per-party installation (``lab node``), signed job requests, the SuperLink's peer filter.

Fast: no process is started except the installed ``lab`` for the CLI checks. The deployments
themselves run in ``tests/test_deploy_hosts.py`` (namespaces) and ``tests/test_deploy.py``.
"""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from federated.result import RESULT_FILE
from lab.config import experiment_from_dict
from lab.deploy.errors import DeploymentError
from lab.deploy.jobs_client import _write_outcome
from lab.deploy.jobs_endpoint import JobEndpoint
from lab.deploy.node_home import NodeHome, add_party, init_node, rotate_key, trust_ca
from lab.deploy.request_auth import (
    ReplayGuard,
    RequestRefusedError,
    sign_request,
    verify_request,
)
from lab.deploy.superlink import PeerFilter, allowed
from tests.cli_helpers import run_lab
from tests.conftest import make_vertical, vertical_config

# --- the SuperLink's peer filter ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "path", "ok"),
    [
        ("10.231.16.3", "/v1/fleet/pull-messages", True),  # a SuperNode elsewhere
        ("10.231.16.3", "/v1/control/start-run", False),  # a peer starting runs
        ("10.231.16.3", "/v1/control/register-node", False),  # a peer adding a node key
        ("10.231.16.3", "/v1/runtime/pull-messages", False),  # a peer posing as the ServerApp
        ("10.231.16.3", "/v1/fleetx", False),
        ("127.0.0.1", "/v1/control/start-run", True),  # the coordinator's own lab
        ("10.231.16.1", "/v1/control/start-run", True),  # ... over its listen address
        (None, "/v1/control/start-run", False),
        ("not-an-ip", "/v1/control/start-run", False),
    ],
)
def test_only_the_fleet_api_is_served_to_other_hosts(host: str | None, path: str, ok: bool) -> None:
    assert allowed(host, path, "10.231.16.1") is ok


def test_the_peer_filter_answers_403_before_the_app_runs() -> None:
    reached: list[str] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request"}

    middleware = PeerFilter(app, listen="10.231.16.1")
    remote = {"type": "http", "client": ("10.231.16.2", 5000)}
    asyncio.run(middleware({**remote, "path": "/v1/control/list-nodes"}, receive, send))
    assert reached == []
    assert sent[0]["status"] == 403
    asyncio.run(middleware({**remote, "path": "/v1/fleet/pull-messages"}, receive, send))
    local = {"type": "http", "client": ("127.0.0.1", 5000), "path": "/v1/control/list-nodes"}
    asyncio.run(middleware(local, receive, send))
    assert reached == ["/v1/fleet/pull-messages", "/v1/control/list-nodes"]
    assert len(sent) == 2  # the 403's start and body, nothing else


# --- installation ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_lab_node_init_makes_each_partys_own_home(tmp_path: Path, lab_home: Path) -> None:
    coord, bank = tmp_path / "coord", tmp_path / "bank"
    done = run_lab(
        ["node", "init", "--home", str(coord), "--role", "coordinator", "--name", "c",
         "--host", "coord.example", "--host", "10.231.16.1", "--listen", "10.231.16.1"],
        home=coord,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(coord.stat().st_mode) == 0o700
    cert = x509.load_pem_x509_certificate((coord / "tls" / "server.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"coord.example", "localhost"}
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {
        "10.231.16.1",
        "127.0.0.1",
    }
    assert stat.S_IMODE((coord / "tls" / "ca.key").stat().st_mode) == 0o600
    assert sorted(p.name for p in (coord / "exchange").iterdir()) == ["ca.crt"]

    done = run_lab(
        ["node", "init", "--home", str(bank), "--role", "bank", "--name", "bank_1",
         "--coordinator", "coord.example"],
        home=bank,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((bank / "keys" / "node").stat().st_mode) == 0o600
    assert sorted(p.name for p in (bank / "exchange").iterdir()) == ["bank_1.pub"]
    assert (bank / "mlflow.db").is_file()  # a bank's own tracking store (none for a platform)
    assert (bank / "audit" / "log.jsonl").is_file()
    assert not (bank / "tls").exists()  # no coordinator CA is made here
    ident = NodeHome.read(bank).identity
    assert (ident.role, ident.superlink_address) == ("bank", "coord.example:9092")

    # The operators exchange files: the CA one way, the public key the other.
    assert run_lab(["node", "trust", "--home", str(bank), str(coord / "exchange" / "ca.crt")],
                   home=bank).returncode == 0  # fmt: skip
    done = run_lab(
        ["node", "add-party", "--home", str(coord), "--name", "bank_1", "--role", "bank",
         str(bank / "exchange" / "bank_1.pub")],
        home=coord,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert NodeHome.read(coord).admitted() == {"bank_1": "bank"}
    assert (coord / "parties" / "bank_1.pub").read_bytes() == (
        bank / "keys" / "node.pub"
    ).read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "arbiter", "--name", "x"], "--role 'arbiter' is unknown"),
        (["--role", "bank", "--name", "../x"], "--name '../x' is not a valid name"),
        (["--role", "bank", "--name", "x", "--superlink-port", "0"], "port 0 is out of range"),
    ],
)
def test_bad_node_init_is_one_line_and_leaves_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    home = tmp_path / "home"
    done = run_lab(["node", "init", "--home", str(home), *args], home=home)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ")
    assert message in done.stderr
    assert not home.exists()


def test_a_home_is_initialised_once_and_bad_exchange_files_are_refused(
    tmp_path: Path, lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    coord = init_node(tmp_path / "coord", "coordinator", "c")
    with pytest.raises(DeploymentError, match="already holds the installation of 'c'"):
        init_node(tmp_path / "coord", "bank", "b")
    bogus = tmp_path / "bogus.pub"
    bogus.write_text("ssh-ed25519 AAAA nothing\n")
    with pytest.raises(DeploymentError, match="not a SuperNode public key"):
        add_party(coord, "b", "bank", bogus)
    bank = init_node(tmp_path / "bank", "bank", "b")
    with pytest.raises(DeploymentError, match="not a CA certificate"):
        trust_ca(bank, bogus)
    with pytest.raises(DeploymentError, match="parties are added on the coordinator"):
        add_party(bank, "b", "bank", bank.key.public_key)
    with pytest.raises(DeploymentError, match="'bank' or 'platform'"):
        add_party(coord, "b", "coordinator", bank.key.public_key)
    # A rotated key replaces the one in exchange/; the coordinator admits the new one.
    old = bank.key.public_key.read_bytes()
    rotate_key(bank)
    assert bank.key.public_key.read_bytes() != old
    assert (bank.exchange / "b.pub").read_bytes() == bank.key.public_key.read_bytes()


# --- signed requests --------------------------------------------------------------------------


@pytest.fixture
def homes(tmp_path: Path, lab_home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, NodeHome]:
    # These banks track in a server of their own (never contacted here): no local store.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    coord = init_node(tmp_path / "coord", "coordinator", "c")
    out = {"coord": coord}
    for name, role in (("bank", "bank"), ("platform", "platform"), ("bank_2", "bank")):
        home = init_node(tmp_path / name, role, name)
        add_party(coord, name, role, home.key.public_key)
        out[name] = home
    return out


def _keys(coord: NodeHome) -> dict[str, Path]:
    return {name: coord.parties / f"{name}.pub" for name in coord.admitted()}


def test_a_signed_request_names_its_party_once(homes: dict[str, NodeHome]) -> None:
    bank, coord = homes["bank"], homes["coord"]
    guard = ReplayGuard()
    raw = sign_request(bank.key.private_key, "bank", "status", {"run": "abc"})
    assert verify_request(raw, _keys(coord), guard) == ("bank", "status", {"run": "abc"})
    with pytest.raises(RequestRefusedError, match="replay"):
        verify_request(raw, _keys(coord), guard)
    # Signed by the platform's key while claiming to be the bank.
    forged = sign_request(homes["platform"].key.private_key, "bank", "status", {})
    with pytest.raises(RequestRefusedError, match="not signed by party 'bank'"):
        verify_request(forged, _keys(coord), guard)
    # A body changed after signing.
    envelope = json.loads(sign_request(bank.key.private_key, "bank", "status", {"run": "a"}))
    envelope["body"] = envelope["body"].replace('"a"', '"b"')
    with pytest.raises(RequestRefusedError, match="not signed"):
        verify_request(json.dumps(envelope).encode(), _keys(coord), guard)
    stranger = sign_request(bank.key.private_key, "mallory", "status", {})
    with pytest.raises(RequestRefusedError, match="'mallory' is not admitted"):
        verify_request(stranger, _keys(coord), guard)
    with pytest.raises(RequestRefusedError, match="malformed"):
        verify_request(b"{}", _keys(coord), guard)
    with pytest.raises(RequestRefusedError, match="clock"):
        ReplayGuard().check("n", sent=0.0, now=1000.0)


def _job(tmp_path: Path, platform: str = "platform") -> str:
    make_vertical(tmp_path / "data")
    raw = vertical_config("data/bank.csv", "data/platform.csv")
    raw["parties"][1]["name"] = platform  # type: ignore[index]
    return experiment_from_dict(raw, source=None, base_dir=tmp_path).job_spec().to_json()


def test_the_job_endpoint_takes_jobs_from_their_own_bank_only(
    homes: dict[str, NodeHome], tmp_path: Path
) -> None:
    # The platform's own governance stores are in its own home, none on the coordinator.
    assert (homes["platform"].path / "governance.db").is_file()
    assert not (homes["coord"].path / "governance.db").exists()
    endpoint = JobEndpoint(homes["coord"])
    job = _job(tmp_path)

    def ask(party: str, action: str, args: dict[str, Any], key: str | None = None) -> Any:
        raw = sign_request(homes[key or party].key.private_key, party, action, args)
        return endpoint.handle(raw)

    code, body = ask("platform", "submit", {"job": job})
    assert code == 403
    assert "only a bank the job names" in body["error"]
    code, body = ask("bank_2", "submit", {"job": job})  # another bank's job
    assert code == 403
    code, body = ask("bank", "submit", {"job": job}, key="bank_2")
    assert (code, body["error"]) == (403, "the request is not signed by party 'bank'")
    # A job naming a party the coordinator never admitted.
    code, body = ask("bank", "submit", {"job": _job(tmp_path / "x", platform="platform_9")})
    assert code == 403
    assert "names platform 'platform_9', which this coordinator has not admitted" in body["error"]
    code, body = ask("bank", "status", {"run": "0123abcd"})
    assert (code, body["error"]) == (403, "no run '0123abcd' on this coordinator")
    code, body = ask("bank", "status", {"run": "../../etc"})
    assert code == 403
    code, body = ask("bank", "delete", {})
    assert code == 400
    assert endpoint.handle(b"not json")[0] == 403


def test_outcome_files_from_the_coordinator_land_in_the_job_folder_by_name(
    tmp_path: Path,
) -> None:
    import base64

    data = base64.b64encode(b"{}").decode()
    assert _write_outcome({"capture.jsonl": data}, tmp_path) is False
    assert _write_outcome({RESULT_FILE: data}, tmp_path) is True
    assert (tmp_path / RESULT_FILE).read_bytes() == b"{}"
    with pytest.raises(DeploymentError, match="bad name"):
        _write_outcome({RESULT_FILE: data, "../x": data}, tmp_path)


def test_a_rotated_ca_keeps_the_coordinators_names_and_replaces_the_exchanged_file(
    tmp_path: Path, lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lab.deploy.node_home import rotate_ca

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")

    coord = init_node(tmp_path / "c", "coordinator", "c", hosts=("coord.example",))
    old = (coord.exchange / "ca.crt").read_bytes()
    files = rotate_ca(coord)
    assert (coord.exchange / "ca.crt").read_bytes() == files.ca_cert.read_bytes() != old
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(files.ca_cert.read_bytes()))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "coord.example" in san.get_values_for_type(x509.DNSName)
    bank = init_node(tmp_path / "b", "bank", "b")
    with pytest.raises(DeploymentError, match="only the coordinator has a CA"):
        rotate_ca(bank)


def test_a_request_replayed_after_the_coordinator_restarts_is_refused(
    homes: dict[str, NodeHome],
) -> None:
    bank, coord = homes["bank"], homes["coord"]
    raw = sign_request(bank.key.private_key, "bank", "status", {"run": "0123abcd"})
    # Accepted once (an unknown run: refused for that reason, after the signature and nonce).
    code, body = JobEndpoint(coord).handle(raw)
    assert (code, body["error"]) == (403, "no run '0123abcd' on this coordinator")
    # The coordinator restarts: a new endpoint on the same home still knows the nonce.
    code, body = JobEndpoint(NodeHome.read(coord.path)).handle(raw)
    assert (code, body["error"]) == (403, "the request was already used (replay)")
    assert coord.nonces.is_file()
    # A nonce is forgotten only once no request carrying it can be valid any more.
    guard = ReplayGuard(coord.nonces)
    guard.check("n-1", sent=1000.0, now=1000.0)
    with pytest.raises(RequestRefusedError, match="replay"):
        ReplayGuard(coord.nonces).check("n-1", sent=1000.0, now=1000.0 + guard.max_skew)
    ReplayGuard(coord.nonces).check("n-2", sent=1700.0, now=1700.0)  # purges n-1 (> 2 x skew)
    with pytest.raises(RequestRefusedError, match="clock"):
        guard.check("n-1", sent=1000.0, now=1700.0)
