"""Vertical SecureBoost: plaintext core, federated protocol over Paillier, model parts."""

from models.secureboost.protocol import (
    PROTOCOL,
    SecureBoostOutcome,
    SecureBoostParams,
    SecureBoostParty,
    conclude,
    start_envelope,
)

__all__ = [
    "PROTOCOL",
    "SecureBoostOutcome",
    "SecureBoostParams",
    "SecureBoostParty",
    "conclude",
    "start_envelope",
]
