"""Plaintext LightGBM reference models: what one party can do alone, and the pooled ceiling.

Every job reports, beside the joint model, a **bank-only** baseline (trained by the bank on its
own columns, in its own domain) and, where one process can see every file (demos and
benchmarks only), a **pooled** reference trained on the joined data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pandas as pd

from models.evaluation import EvaluationReport, evaluate_scores
from models.secureboost.settings import DEFAULTS as SECUREBOOST

if TYPE_CHECKING:  # lightgbm costs seconds to import: only what fits a baseline imports it
    import lightgbm as lgb


@dataclass(frozen=True)
class GBDTSettings:
    """Gradient-boosting budget shared by baselines and the joint model they are compared with.

    The defaults are SecureBoost's (:data:`models.secureboost.settings.DEFAULTS`: FATE's
    benchmark setting of 30 trees, depth 3, 32 bins, learning rate 0.3), the setting of the
    reference figures in ``data/default_credit/README.md``.
    """

    n_estimators: int = SECUREBOOST.n_estimators
    max_depth: int = SECUREBOOST.max_depth
    max_bin: int = SECUREBOOST.max_bin
    learning_rate: float = SECUREBOOST.learning_rate
    min_child_samples: int = SECUREBOOST.min_child_samples
    reg_lambda: float = 0.0


def fit_lightgbm(
    features: pd.DataFrame,
    label: npt.NDArray[np.int8],
    settings: GBDTSettings,
    *,
    seed: int,
    n_jobs: int | None = None,
) -> lgb.LGBMClassifier:
    """Fit a depth-wise-limited LightGBM classifier (categoricals via pandas ``category``)."""
    import lightgbm as lgb

    model = lgb.LGBMClassifier(
        n_estimators=settings.n_estimators,
        max_depth=settings.max_depth,
        num_leaves=2**settings.max_depth,
        max_bin=settings.max_bin,
        learning_rate=settings.learning_rate,
        min_child_samples=settings.min_child_samples,
        reg_lambda=settings.reg_lambda,
        random_state=seed,
        deterministic=True,
        force_col_wise=True,
        n_jobs=n_jobs or os.cpu_count() or 1,
        verbose=-1,
    )
    model.fit(features, label)
    return model


def fit_and_evaluate(
    features: pd.DataFrame,
    label: npt.NDArray[np.int8],
    test_mask: npt.NDArray[np.bool_],
    settings: GBDTSettings,
    *,
    seed: int,
    n_jobs: int | None = None,
) -> EvaluationReport:
    """Train on the rows outside ``test_mask`` and evaluate on the rows inside it."""
    train = ~test_mask
    model = fit_lightgbm(
        features.loc[train].reset_index(drop=True),
        label[train],
        settings,
        seed=seed,
        n_jobs=n_jobs,
    )
    proba = np.asarray(model.predict_proba(features.loc[test_mask].reset_index(drop=True)))
    scores = proba[:, 1]
    return evaluate_scores(label[test_mask], scores)
