"""The state file of a deployment folder: what runs, where, with which files.

``DIR/deployment.json`` is written once every process is up and connected and read by
``lab train --deployment`` and ``lab down``. It holds pids, ports and file paths only (no key
material).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab.deploy.errors import DeploymentError

STATE_FILE = "deployment.json"
#: Profiles of the deployment engine (see :mod:`lab.deploy.deployment`).
PROFILES = ("tuned", "stock")


@dataclass(frozen=True)
class ProcessInfo:
    """One started process: its pid and its log."""

    pid: int
    log: str


@dataclass(frozen=True)
class NodeInfo:
    """One party's SuperNode (and, in the tuned profile, its ClientApp worker)."""

    party: str
    role: str
    data: str
    node_id: int
    runtime_port: int
    supernode: ProcessInfo
    worker: ProcessInfo | None
    private_key: str
    public_key: str
    governance_home: str
    store: str


@dataclass(frozen=True)
class DeploymentState:
    """Everything ``lab up`` started for one experiment's parties."""

    folder: str
    experiment: str
    experiment_name: str
    profile: str
    superlink_port: int
    superlink: ProcessInfo
    ca_cert: str
    nodes: tuple[NodeInfo, ...] = field(default_factory=tuple)
    pending_pids: tuple[int, ...] = ()

    @property
    def address(self) -> str:
        """``host:port`` of the SuperLink (Fleet, Control and Runtime APIs)."""
        return f"127.0.0.1:{self.superlink_port}"

    def pids(self) -> list[int]:
        """Every pid the deployment started (SuperLink, SuperNodes, workers)."""
        out = [self.superlink.pid, *self.pending_pids]
        for node in self.nodes:
            out.append(node.supernode.pid)
            if node.worker is not None:
                out.append(node.worker.pid)
        return out

    def node(self, party: str) -> NodeInfo:
        """The node of ``party``."""
        for node in self.nodes:
            if node.party == party:
                return node
        raise DeploymentError(
            f"the deployment in {self.folder} runs no node for party '{party}' "
            f"(it runs {[n.party for n in self.nodes]}); run 'lab up' for this experiment"
        )

    def write(self, folder: Path) -> Path:
        """Write the state file atomically."""
        path = folder / STATE_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, folder: Path) -> DeploymentState:
        """Read ``folder``'s state file.

        Raises
        ------
        DeploymentError
            If the folder holds no deployment.
        """
        path = folder / STATE_FILE
        if not path.is_file():
            raise DeploymentError(
                f"{folder} holds no deployment ({STATE_FILE} missing); start one with "
                f"'lab up --dir {folder} --experiment EXPERIMENT'"
            )
        try:
            raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            nodes = tuple(
                NodeInfo(
                    **{
                        **n,
                        "supernode": ProcessInfo(**n["supernode"]),
                        "worker": ProcessInfo(**n["worker"]) if n.get("worker") else None,
                    }
                )
                for n in raw["nodes"]
            )
            return cls(
                **{
                    **raw,
                    "superlink": ProcessInfo(**raw["superlink"]),
                    "nodes": nodes,
                    "pending_pids": tuple(raw.get("pending_pids", ())),
                }
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DeploymentError(
                f"{path} is damaged ({exc}); stop what it started with 'lab down --dir "
                f"{folder}' or remove the folder"
            ) from exc
