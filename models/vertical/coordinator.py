"""The coordinator's part of a vertical protocol: one ``setup`` to the bank, one ``done`` back.

The coordinator sends the bank the job's parameters and party order and relays everything
else; it learns only what the bank's ``done`` report holds (aggregates and references to the
model parts, never a key, row or bin).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING

from models.protocol import COORDINATOR, Envelope, ProtocolError, dumps

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


def setup_envelope(
    protocol: str,
    model_prefix: str,
    bank: str,
    platforms: list[str],
    order: list[str],
    params: DataclassInstance,
    job_id: str,
) -> Envelope:
    """The coordinator's only message: ``setup`` to the bank.

    Parameters
    ----------
    protocol : str
        The protocol's name.
    model_prefix : str
        First part of the model id (``<prefix>-<job id>-<8 random hex digits>``).
    bank, platforms, order : str, list of str, list of str
        The label holder, the platforms, and every party in the job's order.
    params : dataclass
        The protocol's settings (sent as a JSON object of its fields).
    job_id : str
        The job's id.
    """
    settings = {
        "params": asdict(params),
        "platforms": platforms,
        "order": order,
        "model_id": f"{model_prefix}-{job_id}-{secrets.token_hex(4)}",
    }
    return Envelope(protocol, "setup", COORDINATOR, bank, {"settings": dumps(settings)})


def bank_done(protocol: str, replies: Sequence[Envelope]) -> Envelope:
    """The bank's ``done`` report among the envelopes that reached the coordinator.

    Raises
    ------
    ProtocolError
        Unless there is exactly one.
    """
    done = [e for e in replies if e.stage == "done"]
    if len(done) != 1:
        raise ProtocolError(f"expected one {protocol}/done, got {len(done)}")
    return done[0]
