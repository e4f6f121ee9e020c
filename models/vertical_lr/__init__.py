"""Vertical (hetero) logistic regression over Paillier encryption, with encrypted WOE binning.

:mod:`~models.vertical_lr.core` is the plaintext arithmetic, :mod:`~models.vertical_lr.protocol`
the party state machines, :mod:`~models.vertical_lr.estimator` a scikit-learn face.
"""

from models.vertical_lr.protocol import (
    PROTOCOL,
    HeteroLROutcome,
    HeteroLRParams,
    HeteroLRParty,
    conclude,
    start_envelope,
)

__all__ = [
    "PROTOCOL",
    "HeteroLROutcome",
    "HeteroLRParams",
    "HeteroLRParty",
    "conclude",
    "start_envelope",
]
