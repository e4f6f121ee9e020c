"""One party's own installation on its own host: ``lab node init``.

A party's home (mode 0700) is the ``$LAB_HOME`` of that party's host: its governance stores
(policy, catalog, authorizations, budget ledger, audit log), MLflow for a bank, and its node's
files. Nothing in it is generated for another party; what a party hands to another is written
into ``exchange/`` for its operator to copy::

    coordinator home                       party home (bank or platform)
      node.json       identity, ports        node.json       identity, coordinator address
      tls/ca.crt      the CA (exchange)      keys/node       SuperNode signing key (0600)
      tls/ca.key      0600, issues certs     keys/node.pub   its public key (exchange)
      tls/server.*    SANs: --host names     trust/ca.crt    copied from the coordinator
      parties/N.pub   copied from party N    local-tls/      its own CA for the loopback
      parties/N.json  N's role                               Runtime API (SuperNode <-> worker)
      superlink/      state.db, nonces.db,   node/           node config, store, logs
                      logs
      runs/           each job's outcome     policy.yaml, audit/, catalog/, governance.db,
      exchange/ca.crt                        mlflow.db (bank); exchange/N.pub

The coordinator listens on ``--listen`` (127.0.0.1 unless the deployment says otherwise);
its certificate is valid for every ``--host`` name or address given (plus loopback).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from lab.deploy.errors import DeploymentError
from lab.deploy.node_keys import NodeKey, generate_node_key
from lab.deploy.tls import SERVER_HOSTS, TlsFiles, generate_tls

ROLES = ("coordinator", "bank", "platform")
NODE_FILE = "node.json"
#: Default ports on the coordinator: the SuperLink (HTTPS; Fleet API for peers, Control and
#: Runtime APIs for the coordinator's own host only) and the lab's job endpoint (HTTPS).
SUPERLINK_PORT = 9092
JOBS_PORT = 9094
#: Where the coordinator listens unless its deployment says otherwise.
DEFAULT_LISTEN = "127.0.0.1"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class NodeIdentity:
    """What ``node.json`` says about one installation (no key material)."""

    role: str
    name: str
    #: Coordinator: the address its services listen on; party: unused.
    listen: str = DEFAULT_LISTEN
    #: Coordinator: the names and addresses its certificate is valid for.
    hosts: tuple[str, ...] = ()
    #: Party: the coordinator's host name or address (must be in its certificate).
    coordinator: str = DEFAULT_LISTEN
    superlink_port: int = SUPERLINK_PORT
    jobs_port: int = JOBS_PORT

    @property
    def superlink_address(self) -> str:
        """``host:port`` of the SuperLink as this node reaches it."""
        host = self.listen if self.role == "coordinator" else self.coordinator
        return f"{host}:{self.superlink_port}"

    @property
    def jobs_address(self) -> str:
        """``host:port`` of the coordinator's job endpoint as this node reaches it."""
        host = self.listen if self.role == "coordinator" else self.coordinator
        return f"{host}:{self.jobs_port}"


@dataclass(frozen=True)
class NodeHome:
    """The files of one installation (see the module docstring)."""

    path: Path
    identity: NodeIdentity

    # --- layout -------------------------------------------------------------------------------
    @property
    def tls(self) -> TlsFiles:
        """Coordinator: its CA and server certificate."""
        return TlsFiles.in_folder(self.path / "tls")

    @property
    def local_tls(self) -> TlsFiles:
        """Party: its own CA and certificate for the loopback Runtime API."""
        return TlsFiles.in_folder(self.path / "local-tls")

    @property
    def key(self) -> NodeKey:
        """Party: its SuperNode key pair."""
        return NodeKey(self.path / "keys" / "node", self.path / "keys" / "node.pub")

    @property
    def trusted_ca(self) -> Path:
        """The CA this installation verifies the coordinator with."""
        if self.identity.role == "coordinator":
            return self.tls.ca_cert
        return self.path / "trust" / "ca.crt"

    @property
    def exchange(self) -> Path:
        """What the operator hands to the other parties."""
        return self.path / "exchange"

    @property
    def parties(self) -> Path:
        """Coordinator: the public keys and roles of the parties it admits."""
        return self.path / "parties"

    @property
    def node_dir(self) -> Path:
        """Party: its SuperNode's config, store and logs."""
        return self.path / "node"

    @property
    def runs(self) -> Path:
        """Coordinator: one folder per job with the ServerApp's outcome."""
        return self.path / "runs"

    @property
    def database(self) -> Path:
        """Coordinator: the SuperLink's state (registered nodes, runs)."""
        return self.path / "superlink" / "state.db"

    @property
    def nonces(self) -> Path:
        """Coordinator: the nonces of the signed job requests it accepted, while they are valid."""
        return self.path / "superlink" / "nonces.db"

    def admitted(self) -> dict[str, str]:
        """Coordinator: ``{party: role}`` of every party whose key was added."""
        out: dict[str, str] = {}
        for meta in sorted(self.parties.glob("*.json")):
            out[meta.stem] = str(json.loads(meta.read_text(encoding="utf-8"))["role"])
        return out

    # --- persistence --------------------------------------------------------------------------
    @classmethod
    def read(cls, path: Path) -> NodeHome:
        """Read the installation in ``path``.

        Raises
        ------
        DeploymentError
            ``path`` holds no installation, or a damaged ``node.json``.
        """
        path = path.expanduser().resolve()
        file = path / NODE_FILE
        if not file.is_file():
            raise DeploymentError(
                f"{path} is no node home ({NODE_FILE} missing); create one with "
                f"'lab node init --home {path} --role ROLE --name NAME'"
            )
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
            identity = NodeIdentity(**{**raw, "hosts": tuple(raw.get("hosts", ()))})
        except (TypeError, ValueError) as exc:
            raise DeploymentError(f"{file} is damaged ({exc}); run 'lab node init' again") from exc
        return cls(path, identity)

    def write(self) -> None:
        """Write ``node.json``."""
        data = asdict(self.identity)
        (self.path / NODE_FILE).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def check_name(name: str, what: str = "--name") -> str:
    """A party or node name: letters, digits, ``_.-``; at most 64 characters."""
    if not _NAME.match(name):
        raise DeploymentError(
            f"{what} '{name}' is not a valid name; use letters, digits, '_', '.', '-' "
            "(at most 64 characters, starting with a letter or digit)"
        )
    return name


def init_node(
    path: Path,
    role: str,
    name: str,
    *,
    hosts: tuple[str, ...] = (),
    listen: str = DEFAULT_LISTEN,
    coordinator: str = DEFAULT_LISTEN,
    superlink_port: int = SUPERLINK_PORT,
    jobs_port: int = JOBS_PORT,
) -> NodeHome:
    """Create one party's installation in ``path`` (see the module docstring).

    Parameters
    ----------
    path : Path
        The new home (created with mode 0700; must not hold an installation yet).
    role : {"coordinator", "bank", "platform"}
        The party's role.
    name : str
        The party's name (a job's party name for banks and platforms).
    hosts : tuple of str
        Coordinator: the names and addresses parties reach it by (its certificate's SANs;
        ``listen`` and loopback are always included).
    listen : str
        Coordinator: the address its services listen on.
    coordinator : str
        Bank or platform: the coordinator's name or address (one of its ``hosts``).
    superlink_port, jobs_port : int
        The coordinator's ports.

    Raises
    ------
    DeploymentError
        Bad role or name, or ``path`` already holds an installation.
    """
    if role not in ROLES:
        raise DeploymentError(f"--role '{role}' is unknown; use one of {list(ROLES)}")
    check_name(name)
    for port in (superlink_port, jobs_port):
        if not 0 < port < 65536:
            raise DeploymentError(f"port {port} is out of range; use 1-65535")
    path = path.expanduser().resolve()
    if (path / NODE_FILE).exists():
        raise DeploymentError(
            f"{path} already holds the installation of '{NodeHome.read(path).identity.name}'; "
            "choose another --home or remove it"
        )
    existed = path.exists()
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    try:
        home = _init(path, role, name, hosts, listen, coordinator, superlink_port, jobs_port)
    except BaseException:
        if not existed:
            shutil.rmtree(path, ignore_errors=True)
        raise
    return home


def _init(
    path: Path,
    role: str,
    name: str,
    hosts: tuple[str, ...],
    listen: str,
    coordinator: str,
    superlink_port: int,
    jobs_port: int,
) -> NodeHome:
    identity = NodeIdentity(
        role=role,
        name=name,
        listen=listen if role == "coordinator" else DEFAULT_LISTEN,
        hosts=_dedupe((*hosts, listen, *SERVER_HOSTS)) if role == "coordinator" else (),
        coordinator=coordinator,
        superlink_port=superlink_port,
        jobs_port=jobs_port,
    )
    home = NodeHome(path, identity)
    home.exchange.mkdir(exist_ok=True)
    if role == "coordinator":
        generate_tls(home.tls.ca_cert.parent, hosts=identity.hosts)
        shutil.copyfile(home.tls.ca_cert, home.exchange / "ca.crt")
        home.parties.mkdir(exist_ok=True)
        home.runs.mkdir(exist_ok=True)
        home.database.parent.mkdir(exist_ok=True)
    else:
        key = generate_node_key(home.key.private_key.parent, "node")
        shutil.copyfile(key.public_key, home.exchange / f"{name}.pub")
        generate_tls(home.local_tls.ca_cert.parent, hosts=SERVER_HOSTS)
        (path / "trust").mkdir(exist_ok=True)
        home.node_dir.mkdir(exist_ok=True)
        _init_governance(path, role, name)
    home.write()
    return home


def _dedupe(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


def _init_governance(path: Path, role: str, name: str) -> None:
    """The party's governance stores in its own home (and MLflow's store for a bank)."""
    from lab.governance.audit import AuditLog
    from lab.governance.authorizations import AuthorizationRegistry
    from lab.governance.ledger import BudgetLedger
    from lab.governance.policy import read_policy

    read_policy(path)  # secure defaults; 'lab policy set' writes the file
    audit = AuditLog(path / "audit" / "log.jsonl")
    audit.record("node_initialized", {"party": name, "role": role})
    (path / "catalog").mkdir(exist_ok=True)
    if role == "platform":  # its authorizations and budget ledger (one database)
        for store in (
            AuthorizationRegistry(path / "governance.db", audit=audit),
            BudgetLedger(path / "governance.db", audit=audit),
        ):
            with store:
                _ = store.conn
    elif not os.environ.get("MLFLOW_TRACKING_URI"):  # else the bank tracks elsewhere
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=f"sqlite:///{path / 'mlflow.db'}").search_experiments()


def add_party(home: NodeHome, name: str, role: str, public_key: Path) -> Path:
    """Coordinator: admit party ``name`` with the public key its operator handed over.

    The key is copied into ``parties/`` (replacing an earlier key of that party: a rotation);
    ``lab node start`` registers every admitted key on the SuperLink.

    Raises
    ------
    DeploymentError
        Not a coordinator, a bad name or role, or a file that is no P-384 OpenSSH public key.
    """
    if home.identity.role != "coordinator":
        raise DeploymentError(
            f"{home.path} is the home of {home.identity.role} '{home.identity.name}'; parties "
            "are added on the coordinator's home"
        )
    check_name(name, "the party name")
    if role not in ("bank", "platform"):
        raise DeploymentError(f"--role '{role}' is unknown for a party; use 'bank' or 'platform'")
    candidate = NodeKey(public_key, public_key)
    try:
        candidate.public_bytes()
    except (ValueError, OSError, TypeError) as exc:
        raise DeploymentError(
            f"{public_key}: not a SuperNode public key ({exc}); copy the file "
            "'exchange/NAME.pub' the party's 'lab node init' wrote"
        ) from exc
    home.parties.mkdir(exist_ok=True)
    target = home.parties / f"{name}.pub"
    shutil.copyfile(public_key, target)
    (home.parties / f"{name}.json").write_text(json.dumps({"role": role}) + "\n", "utf-8")
    return target


def trust_ca(home: NodeHome, ca_cert: Path) -> Path:
    """Party: install the coordinator's CA certificate its operator handed over."""
    from cryptography import x509

    if home.identity.role == "coordinator":
        raise DeploymentError("the coordinator trusts its own CA; 'trust' is for parties")
    try:
        cert = x509.load_pem_x509_certificate(ca_cert.read_bytes())
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (ValueError, OSError, x509.ExtensionNotFound) as exc:
        raise DeploymentError(
            f"{ca_cert}: not a CA certificate ({exc}); copy the coordinator's exchange/ca.crt"
        ) from exc
    if not constraints.ca:
        raise DeploymentError(f"{ca_cert} is no CA certificate; copy the coordinator's ca.crt")
    home.trusted_ca.parent.mkdir(exist_ok=True)
    shutil.copyfile(ca_cert, home.trusted_ca)
    return home.trusted_ca


def rotate_key(home: NodeHome) -> NodeKey:
    """Party: replace its SuperNode key pair; the new public key is in ``exchange/``."""
    if home.identity.role == "coordinator":
        raise DeploymentError("the coordinator has no SuperNode key; rotate its CA with 'init'")
    key = generate_node_key(home.key.private_key.parent, "node")
    shutil.copyfile(key.public_key, home.exchange / f"{home.identity.name}.pub")
    return key


def rotate_ca(home: NodeHome) -> TlsFiles:
    """Coordinator: a new CA and server certificate for the same hosts (``exchange/ca.crt``)."""
    if home.identity.role != "coordinator":
        raise DeploymentError("only the coordinator has a CA; a party rotates its key")
    files = generate_tls(home.tls.ca_cert.parent, hosts=home.identity.hosts)
    shutil.copyfile(files.ca_cert, home.exchange / "ca.crt")
    return files
