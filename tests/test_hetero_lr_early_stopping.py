"""Hetero LR validation, early stopping and sample weights: the protocol equals the core.

The federated model scores every epoch on the bank's validation rows as the plaintext core
does, stops at the same epoch, keeps the best epoch's coefficients on both sides (the platform
releases only that epoch's), and with sample weights (encrypted for the platforms) matches the
core's weighted descent.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from federated.estimators import HeteroLRClassifier
from models.early_stopping import ValidationPlan, validation_mask
from models.sample_weights import training_weights
from models.vertical_lr.core import fit
from tests.test_vertical_lr import KEYS, _data, _woe_matrix


def test_early_stopping_stops_where_the_core_does_and_keeps_the_best_epoch() -> None:
    bank, y, platforms = _data(700, seed=2)
    plan = ValidationPlan(fraction=0.3, seed=1, rounds=1, metric="logloss")
    clf = HeteroLRClassifier(
        batch_size=128,
        max_epochs=12,
        tol=0.0,
        learning_rate=1.9,
        decay=0.0,
        validation_fraction=plan.fraction,
        validation_seed=plan.seed,
        early_stopping_rounds=plan.rounds,
        early_stopping_metric=plan.metric,
        **KEYS,
    ).fit(bank, y, platforms)
    x, keys = _woe_matrix(clf, bank, platforms)
    held = validation_mask(y, plan.fraction, plan.seed)
    core = fit(
        x[~held],
        y[~held],
        clf._params.lr(),
        seed=clf.outcome_.seed,
        x_valid=x[held],
        y_valid=y[held],
        plan=plan,
    )
    validation = clf.outcome_.validation
    assert validation is not None
    assert core.best_epoch is not None
    assert validation["best_iteration"] == core.best_epoch
    assert validation["iterations_trained"] == core.epochs == len(clf.outcome_.history)
    assert validation["stopped_early"] is True
    assert core.epochs < 12
    assert [h["valid_logloss"] for h in clf.outcome_.history] == pytest.approx(
        [h["valid_logloss"] for h in core.history], abs=1e-7
    )
    # Both parties keep the best epoch: the bank's coefficients and the platform's release.
    federated = np.array([clf.bank_part_.coefficients[k] for k in keys])
    assert np.abs(federated - core.coef).max() < 1e-7
    assert abs(clf.bank_part_.intercept - core.intercept) < 1e-7
    p = clf.predict_proba(bank, platforms)[:, 1]
    assert np.abs(p - core.predict_proba(x)).max() < 1e-7


def test_sample_weights_are_lossless_with_two_platforms() -> None:
    bank, y, platforms = _data(500, seed=4)
    rng = np.random.default_rng(1)
    platforms["registry"] = pd.DataFrame({"employees": rng.integers(0, 200, len(y)) * 1.0})
    column = rng.uniform(0.1, 2.0, size=y.size)
    clf = HeteroLRClassifier(
        batch_size=128, max_epochs=2, tol=0.0, class_weight={0: 1.0, 1: 3.0}, **KEYS
    ).fit(bank, y, platforms, sample_weight=column)
    x, keys = _woe_matrix(clf, bank, platforms)
    weights = training_weights(y, {0: 1.0, 1: 3.0}, column)
    core = fit(x, y, clf._params.lr(), seed=clf.outcome_.seed, weights=weights)
    unweighted = fit(x, y, clf._params.lr(), seed=clf.outcome_.seed)
    federated = np.array([clf.bank_part_.coefficients[k] for k in keys])
    assert np.abs(federated - core.coef).max() < 1e-7
    assert abs(clf.bank_part_.intercept - core.intercept) < 1e-7
    # The weights changed the model (the comparison would pass vacuously otherwise).
    assert np.abs(core.coef - unweighted.coef).max() > 1e-3
