"""SecureBoost validation, early stopping and sample weights: the protocol equals the core.

The federated model stops at the tree where the plaintext core stops, keeps (and every party
keeps) the trees up to the best one, and with sample weights makes the core's splits; the
platform's node decides whether it routes validation rows at all.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest

import federated.estimators.secureboost as estimator_module
from features.binning import BinnedTable, fit_transform, transform
from federated.estimators import SecureBoostClassifier
from federated.transport import PartyError
from models.early_stopping import ValidationPlan, validation_mask
from models.guard import PolicyRefusalError, single_operator
from models.sample_weights import training_weights
from models.secureboost.core import CoreModel, TreeParams, train
from models.vertical import validation as vertical_validation
from models.vertical.setup import BankRows
from tests.test_secureboost_protocol import KEYS, _data, _kinds

SETTINGS = {"max_depth": 2, "max_bin": 8, "min_child_samples": 5, "learning_rate": 0.6}


def _core(
    bank: pd.DataFrame,
    y: np.ndarray,
    platforms: dict[str, pd.DataFrame],
    n_estimators: int,
    plan: ValidationPlan,
    weights: np.ndarray | None = None,
    test: np.ndarray | None = None,
) -> tuple[CoreModel, list[BinnedTable]]:
    """The plaintext core on the same rows: validation held out as the bank does it."""
    all_frames = [bank, *platforms.values()]
    if test is not None:
        frames = [f[~test].reset_index(drop=True) for f in all_frames]
        y = y[~test]
        weights = None if weights is None else weights[~test]
    else:
        frames = all_frames
    held = validation_mask(y, plan.fraction, plan.seed)
    fit_tables = [fit_transform(f[~held].reset_index(drop=True), _kinds(f), 8) for f in frames]
    valid_tables = [
        transform(f[held].reset_index(drop=True), t.specs)
        for f, t in zip(frames, fit_tables, strict=True)
    ]
    model = train(
        fit_tables,
        y[~held],
        TreeParams(max_depth=2, min_child_samples=5, learning_rate=0.6),
        n_estimators,
        weights=None if weights is None else weights[~held],
        valid=valid_tables if plan.enabled else None,
        y_valid=y[held],
        plan=plan,
    )
    all_tables = [transform(f, t.specs) for f, t in zip(all_frames, fit_tables, strict=True)]
    return model, all_tables


def _same_trees(clf: SecureBoostClassifier, core: CoreModel) -> None:
    assert len(clf.bank_part_.trees) == len(core.trees)
    for fed_tree, core_tree in zip(clf.bank_part_.trees, core.trees, strict=True):
        assert sorted(fed_tree) == sorted(core_tree.nodes)
        for node_id, node in core_tree.nodes.items():
            if node.split is None:
                assert fed_tree[node_id].weight == pytest.approx(node.weight, abs=1e-12)


def test_early_stopping_stops_where_the_core_does_and_both_parties_keep_the_best_tree() -> None:
    bank, y, platforms = _data(700)
    test = np.arange(y.size) >= 600
    plan = ValidationPlan(fraction=0.3, seed=4, rounds=2, metric="auc")
    clf = SecureBoostClassifier(
        n_estimators=20,
        validation_fraction=plan.fraction,
        validation_seed=plan.seed,
        early_stopping_rounds=plan.rounds,
        **SETTINGS,
        **KEYS,
    ).fit(bank, y, platforms, test_mask=test)
    core, tables = _core(bank, y, platforms, 20, plan, test=test)
    validation = clf.outcome_.validation
    assert validation is not None
    # Stopped early, where the core stopped, at the core's best tree.
    assert core.best_iteration is not None
    assert validation["best_iteration"] == core.best_iteration
    assert validation["stopped_early"] is True
    assert validation["iterations_trained"] == len(core.history) < 20
    assert validation["iterations_kept"] == core.best_iteration + 1
    fed_auc = [t["valid_auc"] for t in clf.outcome_.per_tree]
    assert fed_auc == pytest.approx([h["valid_auc"] for h in core.history], abs=1e-12)
    assert validation["best_score"] == pytest.approx(max(fed_auc), abs=1e-12)
    # The bank's part holds the kept trees; the platform's part only splits of those trees.
    _same_trees(clf, core)
    referenced = {
        str(n.split_id) for tree in clf.bank_part_.trees for n in tree.values() if n.split_id
    }
    assert set(clf.platform_parts_["platform"].splits) == referenced
    assert all(int(s[1:].split("n")[0]) <= core.best_iteration for s in referenced)
    federated = clf.predict_proba(bank, platforms)[:, 1]
    assert np.abs(federated - core.predict_proba(tables)).max() < 1e-9
    # Per-tree test AUCs only for the kept trees (the platform released nothing for the rest).
    kept = [t["tree"] <= core.best_iteration for t in clf.outcome_.per_tree]
    assert [("test_auc" in t) for t in clf.outcome_.per_tree] == kept
    assert clf.outcome_.report["n"] == 100


def test_validation_without_early_stopping_scores_every_tree_and_keeps_them_all() -> None:
    bank, y, platforms = _data(400, seed=2)
    plan = ValidationPlan(fraction=0.25, seed=0)
    clf = SecureBoostClassifier(n_estimators=4, validation_fraction=0.25, **SETTINGS, **KEYS).fit(
        bank, y, platforms
    )
    core, tables = _core(bank, y, platforms, 4, plan)
    assert core.best_iteration is None
    assert len(core.trees) == 4
    validation = clf.outcome_.validation
    assert validation is not None
    assert validation["iterations_kept"] == 4
    assert validation["stopped_early"] is False
    assert [t["valid_logloss"] for t in clf.outcome_.per_tree] == pytest.approx(
        [h["valid_logloss"] for h in core.history], abs=1e-12
    )
    _same_trees(clf, core)
    assert (
        np.abs(clf.predict_proba(bank, platforms)[:, 1] - core.predict_proba(tables)).max() < 1e-9
    )


def test_two_platforms_route_their_own_validation_rows_and_equal_the_core() -> None:
    bank, y, platforms = _data(500, seed=3)
    frame = platforms["platform"]
    split = {"platform_a": frame[["tax_score"]], "platform_b": frame[["grade", "employees"]]}
    plan = ValidationPlan(fraction=0.3, seed=2, rounds=2)
    clf = SecureBoostClassifier(
        n_estimators=8,
        validation_fraction=plan.fraction,
        validation_seed=plan.seed,
        early_stopping_rounds=plan.rounds,
        class_weight={0: 1.0, 1: 2.0},
        **SETTINGS,
        **KEYS,
    ).fit(bank, y, split)
    weights = training_weights(y, {0: 1.0, 1: 2.0})
    core, tables = _core(bank, y, split, 8, plan, weights)
    validation = clf.outcome_.validation
    assert validation is not None
    assert validation["best_iteration"] == core.best_iteration
    assert [t["valid_auc"] for t in clf.outcome_.per_tree] == pytest.approx(
        [h["valid_auc"] for h in core.history], abs=1e-12
    )
    _same_trees(clf, core)
    federated = clf.predict_proba(bank, split)[:, 1]
    assert np.abs(federated - core.predict_proba(tables)).max() < 1e-9


def test_sample_weights_are_lossless_against_the_core() -> None:
    bank, y, platforms = _data(500, seed=5)
    column = np.random.default_rng(1).uniform(0.2, 3.0, size=y.size)
    clf = SecureBoostClassifier(n_estimators=3, class_weight="balanced", **SETTINGS, **KEYS).fit(
        bank, y, platforms, sample_weight=column
    )
    weights = training_weights(y, "balanced", column)
    assert weights is not None
    assert weights.max() == 1.0
    core, tables = _core(bank, y, platforms, 3, ValidationPlan(), weights)
    unweighted, _ = _core(bank, y, platforms, 3, ValidationPlan())
    _same_trees(clf, core)
    for fed_tree, core_tree in zip(clf.bank_part_.trees, core.trees, strict=True):
        for node_id, node in core_tree.nodes.items():
            if node.split is not None:
                assert fed_tree[node_id].owner == ("bank" if node.split.owner == 0 else "platform")
    federated = clf.predict_proba(bank, platforms)[:, 1]
    assert np.abs(federated - core.predict_proba(tables)).max() < 1e-9
    # The weights changed the model (the test would pass vacuously otherwise).
    assert np.abs(core.predict_proba(tables) - unweighted.predict_proba(tables)).max() > 1e-3


def test_a_platform_whose_policy_serves_no_validation_rows_refuses_them() -> None:
    limits = single_operator(insecure_test_keys=True)
    refusing = replace(limits, validation_serve=False)
    with pytest.raises(PolicyRefusalError, match=r"validation\.serve=false"):
        refusing.check_validation(10, 90)
    capped = replace(limits, validation_max_share=0.1)
    with pytest.raises(PolicyRefusalError, match=r"validation\.max_share=0\.1"):
        capped.check_validation(20, 80)
    capped.check_validation(10, 90)


def test_the_platform_node_refuses_validation_rows_its_policy_does_not_serve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The refusal comes from the node's own limits at ``init``, not from the job's settings."""
    bank, y, platforms = _data(300, seed=1)
    base = single_operator(insecure_test_keys=True)
    refusing = replace(base, validation_serve=False)
    monkeypatch.setattr(
        estimator_module, "single_operator", lambda insecure_test_keys=False: refusing
    )
    clf = SecureBoostClassifier(n_estimators=2, early_stopping_rounds=1, **SETTINGS, **KEYS)
    with pytest.raises(PartyError, match=r"validation\.serve=false"):
        clf.fit(bank, y, platforms)


def _curious_hold_out(share: float, overlap: bool) -> Any:
    """A bank's ``hold_out`` that marks validation rows its job spec did not ask for."""
    honest = vertical_validation.hold_out

    def hold_out(ctx: Any, own: BankRows, plan: ValidationPlan) -> Any:
        fit, valid, y_valid = honest(ctx, own, plan)
        positions = np.flatnonzero(fit.train)
        extra = positions[: int(share * positions.size)]
        valid = valid.copy()
        valid[extra] = True
        if not overlap:
            fit = replace(fit, train=fit.train & ~valid)
        return fit, valid, y_valid

    return hold_out


@pytest.mark.parametrize(
    ("share", "overlap", "refusal"),
    [
        (0.1, True, "validation rows overlap the training rows"),
        (0.9, False, r"above this node's policy validation\.max_share=0\.5"),
    ],
    ids=["overlapping", "too-many"],
)
def test_the_platform_counts_validation_rows_from_the_masks_not_the_job_spec(
    monkeypatch: pytest.MonkeyPatch, share: float, overlap: bool, refusal: str
) -> None:
    """A curious bank marks more (or training) rows for validation than its spec says."""
    bank, y, platforms = _data(300, seed=1)
    limits = replace(single_operator(insecure_test_keys=True), validation_max_share=0.5)
    monkeypatch.setattr(
        estimator_module, "single_operator", lambda insecure_test_keys=False: limits
    )
    monkeypatch.setattr(vertical_validation, "hold_out", _curious_hold_out(share, overlap))
    clf = SecureBoostClassifier(n_estimators=2, validation_fraction=0.2, **SETTINGS, **KEYS)
    with pytest.raises(PartyError, match=refusal):
        clf.fit(bank, y, platforms)
