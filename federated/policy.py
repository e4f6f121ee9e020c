"""A node's data-governance policy, applied to its own table before any protocol reads it.

The policy is the platform's (or bank's) own rule for what it may serve: the published version
of a feature set, and only enterprises with a valid authorization for the job's bank and
purpose. The runtime loads it by name from the node's binding (``module:attribute``), so this
package does not depend on any particular implementation; the lab's is
:class:`lab.governance.node.LabNodePolicy`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol

from features.io import PartyTable
from federated.spec import JobSpec, PartyBinding, SpecError


@dataclass(frozen=True)
class Admission:
    """What a policy let through: the table to use and aggregate counts for the audit log."""

    table: PartyTable
    n_rows: int
    n_admitted: int
    detail: dict[str, object]


class NodePolicy(Protocol):
    """Decides which of a party's rows and columns a job may use."""

    def admit(self, binding: PartyBinding, job: JobSpec, table: PartyTable) -> Admission:
        """Return the admitted part of ``table`` for ``job``, or raise with the reason."""


def load_policy(name: str) -> NodePolicy:
    """Instantiate the policy class named ``module:attribute``."""
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise SpecError(f"governance policy {name!r} must look like 'package.module:Class'")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"cannot load governance policy {name!r}: {exc}") from exc
    policy: NodePolicy = factory()
    return policy
