"""Vertical (hetero) logistic regression over Paillier encryption, with encrypted WOE binning.

:mod:`~models.vertical_lr.core` is the plaintext arithmetic, :mod:`~models.vertical_lr.protocol`
the party state machines (roles in ``bank``, ``bank_woe``, ``bank_descent`` and ``platform``;
settings in ``params``; the platform's batch checks in ``privacy``),
:mod:`~models.vertical_lr.parts` what each party keeps, :mod:`~models.vertical_lr.explain`
per-enterprise contributions and importance by group. The scikit-learn face,
:class:`HeteroLRClassifier`, is importable from here but lives in
:mod:`federated.estimators.hetero_lr`, because its ``fit`` runs this protocol between in-process
party runtimes (``federated``, a layer above this one). It is loaded on first access (PEP 562
``__getattr__``), so importing this package imports nothing from ``federated``.
"""

from typing import TYPE_CHECKING, Any

from models.vertical_lr.explain import contributions, group_importance
from models.vertical_lr.protocol import (
    PROTOCOL,
    HeteroLROutcome,
    HeteroLRParams,
    HeteroLRParty,
    conclude,
    start_envelope,
)

if TYPE_CHECKING:
    from federated.estimators.hetero_lr import HeteroLRClassifier


def __getattr__(name: str) -> Any:
    """``HeteroLRClassifier``, imported from :mod:`federated.estimators` on first access."""
    if name == "HeteroLRClassifier":
        from federated.estimators.hetero_lr import HeteroLRClassifier

        return HeteroLRClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PROTOCOL",
    "HeteroLRClassifier",
    "HeteroLROutcome",
    "HeteroLRParams",
    "HeteroLRParty",
    "conclude",
    "contributions",
    "group_importance",
    "start_envelope",
]
