"""The party-side protocols a node speaks, by protocol name."""

from __future__ import annotations

from collections.abc import Mapping

from federated.job_protocol import JobParty
from models.alignment import PSIParty
from models.protocol import PartyProtocol
from models.secureboost import SecureBoostParty


def party_protocols() -> Mapping[str, PartyProtocol]:
    """Return a fresh registry of party-side protocol handlers."""
    handlers: list[PartyProtocol] = [JobParty(), PSIParty(), SecureBoostParty()]
    return {h.name: h for h in handlers}
