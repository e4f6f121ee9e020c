"""Vertical SecureBoost: plaintext core, federated protocol over Paillier, model parts.

:mod:`~models.secureboost.core` the plaintext trees, :mod:`~models.secureboost.protocol` the
party state machines (roles in ``bank``, ``bank_trees`` and ``platform``; settings in
``params``; the DP release plan in ``privacy``), :mod:`~models.secureboost.crypto` the encrypted
row layout, :mod:`~models.secureboost.parts` what each party keeps,
:mod:`~models.secureboost.explain` per-enterprise contributions (:func:`saabas`). The
scikit-learn face, :class:`SecureBoostClassifier`, is importable from here but lives in
:mod:`federated.estimators.secureboost`, because its ``fit`` runs this protocol between in-process
party runtimes (``federated``, a layer above this one). It is loaded on first access (PEP 562
``__getattr__``), so importing this package imports nothing from ``federated``.
"""

from typing import TYPE_CHECKING, Any

from models.secureboost.explain import saabas
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

if TYPE_CHECKING:
    from federated.estimators.secureboost import SecureBoostClassifier


def __getattr__(name: str) -> Any:
    """``SecureBoostClassifier``, imported from :mod:`federated.estimators` on first access."""
    if name == "SecureBoostClassifier":
        from federated.estimators.secureboost import SecureBoostClassifier

        return SecureBoostClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DP_MECHANISM",
    "PROTOCOL",
    "SecureBoostClassifier",
    "SecureBoostOutcome",
    "SecureBoostParams",
    "SecureBoostParty",
    "conclude",
    "planned_privacy_events",
    "release_grants",
    "saabas",
    "start_envelope",
]
