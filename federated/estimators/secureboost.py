"""A scikit-learn face for vertical SecureBoost, for notebooks and tests.

``fit`` runs the real protocol (every stage, real Paillier encryption) between in-process party
runtimes (:mod:`federated.inprocess`), each reading only its own table; rows must already be
aligned (same order in every frame). Jobs use the same protocol through Flower (``lab train``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from federated.estimators.params import KeywordParams
from federated.inprocess import inprocess_job
from models.guard import single_operator
from models.secureboost.parts import BankPart, PlatformPart
from models.secureboost.protocol import (
    SecureBoostOutcome,
    SecureBoostParams,
    conclude,
    start_envelope,
)
from models.vertical.keys import CRYPTO_FIELDS

#: The settings' defaults, the only place they are written (:mod:`models.secureboost.params`).
_DEFAULTS = SecureBoostParams()


class SecureBoostClassifier(KeywordParams):
    """Vertical SecureBoost between one bank (labels) and one or more platforms.

    Parameters are those of :class:`~models.secureboost.params.SecureBoostParams`, with its
    defaults; they are stored as given and validated by ``fit``.
    After ``fit``: ``bank_part_``, ``platform_parts_`` (what each party keeps), ``outcome_``
    (timings, operation counts, importance), ``privacy_`` (per party: the DP releases it
    counted and their privacy events), ``traffic_``, ``classes_``.
    """

    _PARAMS = tuple(f.name for f in fields(SecureBoostParams))

    def __init__(
        self,
        n_estimators: int = _DEFAULTS.n_estimators,
        max_depth: int = _DEFAULTS.max_depth,
        max_bin: int = _DEFAULTS.max_bin,
        learning_rate: float = _DEFAULTS.learning_rate,
        reg_lambda: float = _DEFAULTS.reg_lambda,
        min_child_weight: float = _DEFAULTS.min_child_weight,
        min_child_samples: int = _DEFAULTS.min_child_samples,
        min_split_gain: float = _DEFAULTS.min_split_gain,
        bank_only_trees: int = _DEFAULTS.bank_only_trees,
        key_bits: int = _DEFAULTS.key_bits,
        insecure_test_keys: bool = _DEFAULTS.insecure_test_keys,
        dp_epsilon: float | None = _DEFAULTS.dp_epsilon,
        dp_delta: float = _DEFAULTS.dp_delta,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.max_bin = max_bin
        self.learning_rate = learning_rate
        self.reg_lambda = reg_lambda
        self.min_child_weight = min_child_weight
        self.min_child_samples = min_child_samples
        self.min_split_gain = min_split_gain
        self.bank_only_trees = bank_only_trees
        self.key_bits = key_bits
        self.insecure_test_keys = insecure_test_keys
        self.dp_epsilon = dp_epsilon
        self.dp_delta = dp_delta

    def fit(
        self,
        X_bank: pd.DataFrame,  # noqa: N803 - scikit-learn naming
        y: npt.ArrayLike,
        X_platforms: Mapping[str, pd.DataFrame],  # noqa: N803
    ) -> SecureBoostClassifier:
        """Train on aligned rows: the bank's columns and labels, each platform's columns."""
        params = SecureBoostParams(**self.get_params())
        model = {k: v for k, v in self.get_params().items() if k not in CRYPTO_FIELDS}
        with inprocess_job(
            X_bank,
            y,
            X_platforms,
            name="secureboost-estimator",
            model={"type": "secureboost", **model},
            crypto={name: getattr(params, name) for name in CRYPTO_FIELDS},
            limits=single_operator(self.insecure_test_keys),
        ) as job:
            start = start_envelope("bank", job.platforms, job.order, params, "fit")
            outcome: SecureBoostOutcome = conclude(job.run(start))
            self.bank_part_ = BankPart.from_dict(
                json.loads(Path(outcome.bank_part["path"]).read_text(encoding="utf-8"))
            )
            self.platform_parts_ = {
                name: PlatformPart.from_dict(raw)
                for name, raw in job.platform_parts(outcome.platform_parts).items()
            }
            self.outcome_ = outcome
            self.privacy_ = job.close()
            self.traffic_ = job.transport.stats.to_dict()
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(
        self,
        X_bank: pd.DataFrame,  # noqa: N803
        X_platforms: Mapping[str, pd.DataFrame],  # noqa: N803
    ) -> npt.NDArray[np.float64]:
        """Class probabilities, shape (rows, 2); column 1 is the default probability."""
        decisions = {}
        for party, ids in self.bank_part_.platform_splits().items():
            part = self.platform_parts_[party]
            decisions[party] = (ids, part.decisions(X_platforms[party].reset_index(drop=True), ids))
        p = self.bank_part_.predict_proba(X_bank.reset_index(drop=True), decisions)
        return np.column_stack([1.0 - p, p])
