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
from federated.inprocess import inprocess_job
from models.early_stopping import ValidationPlan, validation_mask
from models.guard import single_operator
from models.protocol import Envelope
from models.sample_weights import training_weights
from models.vertical.keys import CRYPTO_FIELDS
from models.vertical_lr.core import fit
from models.vertical_lr.protocol import HeteroLRParams, conclude, start_envelope
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


def test_a_weighted_share_to_a_peer_platform_is_freshly_encrypted() -> None:
    """A peer holds [[w]] too: a share [[w]]^(0.25 u_P) alone would give u_P away.

    At the first batch every coefficient is 0, so an unrandomised share would be the ciphertext
    1 (``[[w]]^0``) for every row; the platform multiplies each by a fresh encryption of 0.
    """
    bank, y, platforms = _data(300, seed=6)
    rng = np.random.default_rng(2)
    platforms["registry"] = pd.DataFrame({"employees": rng.integers(0, 200, len(y)) * 1.0})
    params = HeteroLRParams(batch_size=128, max_epochs=1, class_weight="balanced", **KEYS)
    seen: list[Envelope] = []
    with inprocess_job(
        bank,
        y,
        platforms,
        name="weighted-shares",
        model={"type": "hetero_lr", "class_weight": "balanced"},
        crypto={name: getattr(params, name) for name in CRYPTO_FIELDS},
        limits=single_operator(True),
    ) as job:
        job.transport.tap = lambda direction, env: seen.append(env)
        conclude(job.run(start_envelope("bank", job.platforms, job.order, params, "fit")))
        job.close()
    batches = [e for e in seen if e.stage == "batch"]
    assert batches
    assert all("enc_w" in e.payload for e in batches)
    first = [e for e in seen if e.stage == "peer" and e.integer("batch") == 0]
    assert first
    for env in first:
        shares = [int.from_bytes(row.tobytes(), "big") for row in env.array("enc_u")]
        assert 1 not in shares
        assert len(set(shares)) == len(shares)
