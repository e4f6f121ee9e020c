"""Vertical SecureBoost: plaintext core, federated protocol over Paillier, model parts.

:mod:`~models.secureboost.core` the plaintext trees, :mod:`~models.secureboost.protocol` the
party state machines (roles in ``bank``, ``bank_trees`` and ``platform``; settings in
``params``; the DP release plan in ``privacy``), :mod:`~models.secureboost.crypto` the encrypted
row layout, :mod:`~models.secureboost.parts` what each party keeps. The scikit-learn face is
:class:`federated.estimators.SecureBoostClassifier`.
"""

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
