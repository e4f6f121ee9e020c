"""The real deployment runtime: a SuperLink and one SuperNode per party, TLS and node auth.

Public API (imported lazily, so ``lab --help`` stays fast):

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
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lab.deploy' has no attribute {name!r}")
