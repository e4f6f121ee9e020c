"""The party-side protocols a node speaks, by protocol name.

The job, alignment, screening, monitoring and horizontal protocols every node speaks, plus the
party protocol of every registered vertical model type (:func:`models.model_type.model_types`).
"""

from __future__ import annotations

from collections.abc import Mapping

from federated.horizontal_protocol import HorizontalParty
from federated.job_protocol import JobParty
from federated.monitoring_protocol import MonitoringParty
from federated.screening_protocol import ScreeningParty
from federated.secagg_party import SecAggParty
from models.alignment import PSIParty
from models.model_type import model_types
from models.protocol import PartyProtocol


def party_protocols() -> Mapping[str, PartyProtocol]:
    """Return a fresh registry of party-side protocol handlers."""
    handlers: list[PartyProtocol] = [
        JobParty(),
        PSIParty(),
        ScreeningParty(),
        MonitoringParty(),
        HorizontalParty(),
        SecAggParty(),
    ]
    handlers += [t.party() for t in model_types() if t.party is not None]
    return {h.name: h for h in handlers}
