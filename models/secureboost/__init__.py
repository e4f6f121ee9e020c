"""Vertical SecureBoost: plaintext core, federated protocol over Paillier, model parts."""

from models.secureboost.protocol import (
    DP_MECHANISM,
    PROTOCOL,
    SecureBoostOutcome,
    SecureBoostParams,
    SecureBoostParty,
    conclude,
    planned_privacy_events,
    release_grants,
    start_envelope,
)

__all__ = [
    "DP_MECHANISM",
    "PROTOCOL",
    "SecureBoostOutcome",
    "SecureBoostParams",
    "SecureBoostParty",
    "conclude",
    "planned_privacy_events",
    "release_grants",
    "start_envelope",
]
