"""Vertical (hetero) logistic regression over Paillier encryption, with encrypted WOE binning.

:mod:`~models.vertical_lr.core` is the plaintext arithmetic, :mod:`~models.vertical_lr.protocol`
the party state machines (roles in ``bank``, ``bank_woe``, ``bank_descent`` and ``platform``;
settings in ``params``; the platform's batch checks in ``privacy``),
:mod:`~models.vertical_lr.parts` what each party keeps. The scikit-learn face is
:class:`federated.estimators.HeteroLRClassifier`.
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
