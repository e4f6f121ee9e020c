"""scikit-learn faces of the vertical models, trained through the in-process runtime.

They live in ``federated`` because ``fit`` runs the real protocol between in-process party
runtimes (:mod:`federated.inprocess`); ``models`` holds the protocols and never imports upward.
"""

from federated.estimators.hetero_lr import HeteroLRClassifier
from federated.estimators.secureboost import SecureBoostClassifier

__all__ = ["HeteroLRClassifier", "SecureBoostClassifier"]
