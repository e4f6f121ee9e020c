"""Vertical SecureBoost: plaintext core, federated protocol over Paillier, model parts."""

from models.secureboost.protocol import (
    PROTOCOL,
    SecureBoostOutcome,
    SecureBoostParams,
    SecureBoostParty,
    conclude,
    planned_privacy_events,
    start_envelope,
)

__all__ = [
    "PROTOCOL",
    "SecureBoostOutcome",
    "SecureBoostParams",
    "SecureBoostParty",
    "conclude",
    "planned_privacy_events",
    "start_envelope",
]
