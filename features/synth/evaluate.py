"""Measure how much signal each party's columns carry (centralised, for calibration).

This joins a bank's table with the platform's in the clear, which only the
generator may do: it checks that the synthetic data have the intended shape
of signal (platform > bank, joint > both). Requires LightGBM and scikit-learn.

Calibration (default config: 20,000 platform firms, one city bank of 8,000
borrowers, 7,200 of them known to the platform, ~240 defaults; 200 trees,
learning rate 0.05, 5-fold): mean over seeds 0-19 of AUC bank-only 0.712,
platform-only 0.750, joint 0.787, each with a seed-to-seed standard deviation
of about 0.025 -- a single seed can miss the targets by that much.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.synth.generator import SMEDataset
from features.synth.schema import ID_COLUMN, LABEL_COLUMN

__all__ = ["SignalReport", "measure_signal"]


@dataclass(frozen=True)
class SignalReport:
    """Cross-validated AUCs on one bank's borrowers known to the platform.

    Attributes
    ----------
    bank : str
        Bank measured.
    n_rows : int
        Matched borrowers used.
    n_defaults : int
        Defaults among them.
    auc_bank, auc_platform, auc_joint : float
        Mean out-of-fold AUC with bank columns only, platform columns only, both.
    """

    bank: str
    n_rows: int
    n_defaults: int
    auc_bank: float
    auc_platform: float
    auc_joint: float


def measure_signal(
    dataset: SMEDataset,
    bank: str = "bank_1",
    *,
    n_estimators: int = 200,
    learning_rate: float = 0.05,
    n_splits: int = 5,
    seed: int = 0,
    n_jobs: int = 2,
) -> SignalReport:
    """Fit LightGBM on bank-only, platform-only and joint columns; report AUCs.

    Parameters
    ----------
    dataset : SMEDataset
        Generated data.
    bank : str, optional
        Which bank's label and columns to use.
    n_estimators, learning_rate : optional
        LightGBM settings (defaults: 200 trees, 0.05).
    n_splits : int, optional
        Stratified folds (same folds for the three feature sets).
    seed : int, optional
        Seed of the fold split and of LightGBM.
    n_jobs : int, optional
        LightGBM threads.

    Returns
    -------
    SignalReport
        The three AUCs.
    """
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    joined = dataset.matched(bank)
    y = joined[LABEL_COLUMN].to_numpy()
    bank_cols = [c for c in dataset.banks[bank].columns if c not in (ID_COLUMN, LABEL_COLUMN)]
    plat_cols = [c for c in dataset.platform.columns if c != ID_COLUMN]
    sets = {"bank": bank_cols, "platform": plat_cols, "joint": bank_cols + plat_cols}
    folds = list(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(joined, y))
    aucs: dict[str, float] = {}
    for name, cols in sets.items():
        x: pd.DataFrame = joined[cols]
        scores = []
        for train, test in folds:
            model = lgb.LGBMClassifier(
                n_estimators=n_estimators,
                learning_rate=learning_rate,
                random_state=seed,
                n_jobs=n_jobs,
                verbose=-1,
            )
            model.fit(x.iloc[train], y[train])
            pred = np.asarray(model.predict_proba(x.iloc[test]))[:, 1]
            scores.append(roc_auc_score(y[test], pred))
        aucs[name] = float(np.mean(scores))
    return SignalReport(
        bank=bank,
        n_rows=len(joined),
        n_defaults=int(y.sum()),
        auc_bank=aucs["bank"],
        auc_platform=aucs["platform"],
        auc_joint=aucs["joint"],
    )
