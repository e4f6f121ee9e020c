"""A scikit-learn face for vertical SecureBoost, for notebooks and tests.

``fit`` runs the real protocol (every stage, real Paillier encryption) between in-process party
runtimes (:mod:`federated.inprocess`), each reading only its own table; rows must already be
aligned (same order in every frame). Jobs use the same protocol through Flower (``lab train``).
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from federated.estimators.base import Frames, VerticalClassifier
from federated.inprocess import inprocess_job
from models.early_stopping import Metric
from models.guard import single_operator
from models.sample_weights import ClassWeight
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


class SecureBoostClassifier(VerticalClassifier):
    """Vertical SecureBoost between one bank (labels) and one or more platforms.

    Parameters are those of :class:`~models.secureboost.params.SecureBoostParams`, with its
    defaults; they are stored as given and validated by ``fit``.
    After ``fit``: ``bank_part_``, ``platform_parts_`` (what each party keeps), ``outcome_``
    (timings, operation counts, importance), ``privacy_`` (per party: the DP releases it
    counted and their privacy events), ``traffic_``, and the classifier attributes of
    :class:`~federated.estimators.base.VerticalClassifier` (``classes_``,
    ``feature_names_in_``, ``feature_importances_``).

    ``feature_importances_`` is each feature's share of the total split gain of all trees.
    These are the bank's numbers: the bank chooses every split, so it knows each platform
    split's feature *name* (a published column) and gain, never its threshold (that stays in
    the platform's part). With ``dp_epsilon`` set, platform gains are computed from DP-noised
    histograms and are inflated by the noise (the bank's own gains are exact), so compare
    parties' shares with care.

    ``scheme`` picks the homomorphic scheme (:data:`secure_agg.schemes.SCHEMES`: ``paillier``, the
    default, or ``ou``, Okamoto–Uchiyama); one operator acts for every party here, so no node
    policy restricts it.
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
        scheme: str = _DEFAULTS.scheme,
        dp_epsilon: float | None = _DEFAULTS.dp_epsilon,
        dp_delta: float = _DEFAULTS.dp_delta,
        gradient_chunks: int = _DEFAULTS.gradient_chunks,
        validation_fraction: float | None = _DEFAULTS.validation_fraction,
        validation_seed: int = _DEFAULTS.validation_seed,
        early_stopping_rounds: int | None = _DEFAULTS.early_stopping_rounds,
        early_stopping_metric: Metric = _DEFAULTS.early_stopping_metric,
        class_weight: ClassWeight = _DEFAULTS.class_weight,
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
        self.scheme = scheme
        self.dp_epsilon = dp_epsilon
        self.dp_delta = dp_delta
        self.gradient_chunks = gradient_chunks
        self.validation_fraction = validation_fraction
        self.validation_seed = validation_seed
        self.early_stopping_rounds = early_stopping_rounds
        self.early_stopping_metric = early_stopping_metric
        self.class_weight = class_weight

    def _fit_frames(
        self,
        bank: pd.DataFrame,
        labels: npt.NDArray[np.int8],
        platforms: Frames,
        test_mask: npt.NDArray[np.bool_] | None,
        sample_weight: npt.NDArray[np.float64] | None = None,
    ) -> None:
        params = SecureBoostParams(**self.get_params())
        model = {k: v for k, v in self.get_params().items() if k not in CRYPTO_FIELDS}
        with inprocess_job(
            bank,
            labels,
            platforms,
            name="secureboost-estimator",
            model={"type": "secureboost", **model},
            crypto={name: getattr(params, name) for name in CRYPTO_FIELDS},
            limits=single_operator(self.insecure_test_keys),
            test_mask=test_mask,
            sample_weight=sample_weight,
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

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.dp_epsilon is not None  # lossless unless DP noise is on
        return tags

    def _default_probability(
        self, bank: pd.DataFrame, platforms: Frames
    ) -> npt.NDArray[np.float64]:
        decisions = {}
        for party, ids in self.bank_part_.platform_splits().items():
            part = self.platform_parts_[party]
            decisions[party] = (ids, part.decisions(platforms[party], ids))
        return self.bank_part_.predict_proba(bank, decisions)

    def _raw_importance(self) -> dict[str, float]:
        return {f"{e['party']}:{e['feature']}": float(e["gain"]) for e in self.outcome_.importance}
