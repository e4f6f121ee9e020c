"""The SuperLink's Control API, as ``flwr supernode register`` and ``flwr run`` use it.

The lab talks to the Control API programmatically (same HTTPS endpoint, same requests as
the ``flwr`` CLI, verified against the deployment's CA) so it keeps the run id, can poll the
run's status and can stop a run that overruns its deadline.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.deploy.errors import DeploymentError

#: Flower's run statuses (``flwr.common.constant.Status`` / ``SubStatus``).
FINISHED = "finished"
COMPLETED = "completed"


@dataclass(frozen=True)
class RunStatus:
    """Where a run is: ``pending``/``starting``/``running``/``finished`` (+ sub-status)."""

    status: str
    sub_status: str
    details: str

    @property
    def finished(self) -> bool:
        """Whether the run has ended (in any way)."""
        return self.status == FINISHED


@dataclass(frozen=True)
class NodeEntry:
    """One SuperNode registration on the SuperLink."""

    node_id: int
    name: str
    public_key: bytes
    status: str


class ControlClient:
    """A small client of the Control API of one SuperLink.

    Parameters
    ----------
    address : str
        ``host:port`` of the SuperLink's HTTPS API.
    ca_cert : Path
        The deployment's root certificate (the server certificate is verified against it).
    """

    def __init__(self, address: str, ca_cert: Path) -> None:
        from flwr.cli.cli_client_interceptor import CliClientHttpInterceptor
        from flwr.supercore.control import ControlHttpClient
        from flwr.supercore.interceptors.http.runtime_version import (
            RuntimeVersionHttpInterceptor,
        )

        self.address = address
        self._client = ControlHttpClient.from_server_address(
            server_address=address,
            insecure=False,
            root_certificates=ca_cert.read_bytes(),
            interceptors=[
                CliClientHttpInterceptor(),
                RuntimeVersionHttpInterceptor(component_name="flwr CLI"),
            ],
        )

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connection."""
        self._client.close()

    def register_node(self, public_key: bytes, name: str) -> int:
        """Register a SuperNode's public key (``flwr supernode register``); return its id."""
        from flwr.proto.control_pb2 import RegisterNodeRequest

        response = self._client.RegisterNode(RegisterNodeRequest(public_key=public_key, name=name))
        if not response.node_id:
            raise DeploymentError(f"the SuperLink at {self.address} refused to register '{name}'")
        return int(response.node_id)

    def nodes(self) -> list[NodeEntry]:
        """Every SuperNode the SuperLink knows (``flwr supernode ls``), whatever its status."""
        from flwr.proto.control_pb2 import ListNodesRequest

        response = self._client.ListNodes(ListNodesRequest())
        return [
            NodeEntry(int(n.node_id), n.name, bytes(n.public_key), n.status)
            for n in response.nodes_info
        ]

    def unregister_node(self, node_id: int) -> None:
        """Remove a SuperNode's registration (``flwr supernode unregister``)."""
        from flwr.proto.control_pb2 import UnregisterNodeRequest

        self._client.UnregisterNode(UnregisterNodeRequest(node_id=node_id))

    def online_nodes(self) -> set[int]:
        """Ids of the SuperNodes currently connected (``flwr supernode ls``)."""
        from flwr.proto.control_pb2 import ListNodesRequest

        response = self._client.ListNodes(ListNodesRequest())
        return {int(n.node_id) for n in response.nodes_info if n.status == "online"}

    def start_run(self, app_dir: Path, run_config: Mapping[str, str | int | float]) -> int:
        """Build the app's FAB and start it with ``run_config`` overrides (``flwr run``)."""
        from flwr.cli.build import build_fab_from_disk
        from flwr.common.serde import fab_to_proto, user_config_to_proto
        from flwr.proto.control_pb2 import StartRunRequest
        from flwr.supercore.fab import Fab

        with warnings.catch_warnings():
            # Flower's FAB builder uses a pathspec pattern name pathspec now deprecates.
            warnings.simplefilter("ignore", DeprecationWarning)
            fab_bytes = build_fab_from_disk(app_dir)
        fab = Fab(hashlib.sha256(fab_bytes).hexdigest(), fab_bytes, {})
        override: dict[str, Any] = dict(run_config)
        response = self._client.StartRun(
            StartRunRequest(fab=fab_to_proto(fab), override_config=user_config_to_proto(override))
        )
        if not response.HasField("run_id"):
            raise DeploymentError(f"the SuperLink at {self.address} did not start the run")
        return int(response.run_id)

    def run_status(self, run_id: int) -> RunStatus:
        """Status of one run (``flwr ls --run-id``)."""
        from flwr.proto.control_pb2 import ListRunsRequest

        response = self._client.ListRuns(ListRunsRequest(run_id=run_id))
        run = response.run_dict.get(run_id)
        if run is None:
            raise DeploymentError(f"the SuperLink at {self.address} has no run {run_id}")
        return RunStatus(run.status.status, run.status.sub_status, run.status.details)

    def stop_run(self, run_id: int) -> None:
        """Ask the SuperLink to stop a run (``flwr stop``)."""
        from flwr.proto.control_pb2 import StopRunRequest

        self._client.StopRun(StopRunRequest(run_id=run_id))
