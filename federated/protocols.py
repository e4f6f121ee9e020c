"""The party-side protocols a node speaks, by protocol name."""

from __future__ import annotations

from collections.abc import Mapping

from federated.horizontal_protocol import HorizontalParty
from federated.job_protocol import JobParty
from federated.secagg_party import SecAggParty
from models.alignment import PSIParty
from models.protocol import PartyProtocol
from models.secureboost import SecureBoostParty
from models.vertical_lr.protocol import HeteroLRParty


def party_protocols() -> Mapping[str, PartyProtocol]:
    """Return a fresh registry of party-side protocol handlers."""
    handlers: list[PartyProtocol] = [
        JobParty(),
        PSIParty(),
        SecureBoostParty(),
        HeteroLRParty(),
        HorizontalParty(),
        SecAggParty(),
    ]
    return {h.name: h for h in handlers}
