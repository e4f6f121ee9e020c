"""The real deployment runtime: a SuperLink and one SuperNode per party, TLS and node auth.

Two shapes from the same pieces: each party on its own host (``lab node``:
:mod:`lab.deploy.node_home`, :mod:`lab.deploy.node_runtime`, the coordinator's
:mod:`lab.deploy.jobs_endpoint` and the bank's :mod:`lab.deploy.jobs_client`), and ``lab up``
on one machine (:mod:`lab.deploy.deployment`).

Public API (imported lazily, so ``lab --help`` stays fast):

- :func:`init_node`, :class:`NodeHome` (:mod:`lab.deploy.node_home`), :func:`start_node`,
  :func:`stop_node` (:mod:`lab.deploy.node_runtime`): one party's installation;

- :func:`up`, :func:`down` (:mod:`lab.deploy.deployment`): start and stop a deployment;
- :func:`run_deployed` (:mod:`lab.deploy.run`): run a job on it;
- :class:`DeploymentState` (:mod:`lab.deploy.state`): what runs where;
- :func:`generate_tls` (:mod:`lab.deploy.tls`), :func:`generate_node_key`
  (:mod:`lab.deploy.node_keys`): the TLS and node-authentication material;
- errors: :class:`DeploymentError`, :class:`StartupError`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "init_node": "lab.deploy.node_home",
    "NodeHome": "lab.deploy.node_home",
    "start_node": "lab.deploy.node_runtime",
    "stop_node": "lab.deploy.node_runtime",
    "up": "lab.deploy.deployment",
    "down": "lab.deploy.deployment",
    "run_deployed": "lab.deploy.run",
    "DeploymentState": "lab.deploy.state",
    "generate_tls": "lab.deploy.tls",
    "TlsFiles": "lab.deploy.tls",
    "generate_node_key": "lab.deploy.node_keys",
    "NodeKey": "lab.deploy.node_keys",
    "DeploymentError": "lab.deploy.errors",
    "StartupError": "lab.deploy.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        attribute = {"start_node": "start", "stop_node": "stop"}.get(name, name)
        return getattr(importlib.import_module(_EXPORTS[name]), attribute)
    raise AttributeError(f"module 'lab.deploy' has no attribute {name!r}")
