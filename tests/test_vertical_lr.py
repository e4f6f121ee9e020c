"""Hetero LR: plaintext core vs scikit-learn, protocol vs core, encrypted IV, leakage, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from features.binning import fit_bins
from features.errors import DataError
from features.io import read_party_table
from features.woe import count_bins
from federated.estimators import HeteroLRClassifier
from models.protocol import Envelope
from models.scorecard import Scorecard
from models.vertical_lr import fixedpoint as fp
from models.vertical_lr.core import (
    LRParams,
    batch_schedule,
    fit,
    penalised_objective,
    residual,
)

KEYS = {"key_bits": 512, "insecure_test_keys": True}


def _data(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, npt_int, dict[str, pd.DataFrame]]:
    rng = np.random.default_rng(seed)
    bank = pd.DataFrame({"deposits": rng.normal(size=n), "tenure": rng.integers(0, 20, n) * 1.0})
    tax = rng.normal(size=n)
    platforms = {
        "platform": pd.DataFrame(
            {
                "tax_score": np.where(rng.uniform(size=n) < 0.1, np.nan, tax),
                "grade": pd.Categorical(rng.choice(list("ABCD"), size=n)),
            }
        )
    }
    logit = 1.3 * tax + 0.7 * bank["deposits"].to_numpy() - 1.0
    logit += (platforms["platform"]["grade"].astype(str) == "D").to_numpy() * 1.2
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return bank, y, platforms


npt_int = np.ndarray


def _woe_matrix(clf: HeteroLRClassifier, bank: pd.DataFrame, platforms: dict[str, pd.DataFrame]):
    """The WOE-encoded training matrix every party would see if the data were pooled."""
    part = clf.bank_part_
    bins = part.coarse_bins(bank, clf.platform_bins(platforms))
    keys = [part.table_key(t) for t in part.tables]
    return np.column_stack(
        [np.asarray(t.woe)[bins[k]] for t, k in zip(part.tables, keys, strict=True)]
    ), keys


# ---------------------------------------------------------------- plaintext core


def test_core_with_exact_gradient_matches_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 4))
    y = (rng.uniform(size=400) < 1 / (1 + np.exp(-(x @ [1.0, -0.5, 0.3, 0.0] + 0.2)))).astype(int)
    l2 = 0.01
    params = LRParams(
        learning_rate=1.0,
        decay=0.0,
        l2=l2,
        batch_size=0,
        max_epochs=4000,
        tol=1e-12,
        gradient="exact",
    )
    ours = fit(x, y, params)
    sk = LogisticRegression(C=1.0 / (l2 * len(y)), tol=1e-10, max_iter=10_000).fit(x, y)
    assert np.abs(ours.coef - sk.coef_[0]).max() < 1e-5
    assert abs(ours.intercept - sk.intercept_[0]) < 1e-5
    assert (
        penalised_objective(x, y, ours.coef, ours.intercept, l2)
        <= penalised_objective(x, y, sk.coef_[0], float(sk.intercept_[0]), l2) + 1e-9
    )


def test_taylor_residual_is_the_first_order_expansion() -> None:
    z = np.linspace(-0.2, 0.2, 9)
    y = np.zeros(9)
    assert np.abs(residual(z, y, "taylor") - residual(z, y, "exact")).max() < 1e-3


def test_batch_schedule_visits_every_row_once_per_epoch_and_is_reproducible() -> None:
    batches = batch_schedule(1000, 128, epoch=2, seed=99)
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(1000))
    # The remainder joins the last batch: no batch sums over fewer than batch_size rows.
    assert [b.size for b in batches] == [128] * 6 + [232]
    again = batch_schedule(1000, 128, epoch=2, seed=99)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    other = np.concatenate(batch_schedule(1000, 128, epoch=3, seed=99))
    assert not np.array_equal(rows, other)
    assert len(batch_schedule(10, 0, 0, 1)) == 1  # full batch


# ---------------------------------------------------------------- protocol == core


@pytest.mark.parametrize("n_platforms", [1, 2], ids=["one-platform", "two-platforms"])
def test_federated_coefficients_equal_the_core_on_the_same_schedule(n_platforms: int) -> None:
    bank, y, platforms = _data()
    if n_platforms == 2:
        rng = np.random.default_rng(1)
        platforms["registry"] = pd.DataFrame({"employees": rng.integers(0, 200, len(y)) * 1.0})
    clf = HeteroLRClassifier(batch_size=256, max_epochs=3, tol=0.0, **KEYS).fit(bank, y, platforms)
    x, keys = _woe_matrix(clf, bank, platforms)
    params = clf._params.lr()
    core = fit(x, y, params, seed=clf.outcome_.seed)
    federated = np.array([clf.bank_part_.coefficients[k] for k in keys])
    assert len(clf.outcome_.history) == core.epochs == 3
    assert np.abs(federated - core.coef).max() < 1e-7
    assert abs(clf.bank_part_.intercept - core.intercept) < 1e-7
    p = clf.predict_proba(bank, platforms)[:, 1]
    assert np.abs(p - core.predict_proba(x)).max() < 1e-7


def test_encrypted_iv_equals_plaintext_iv_on_joined_data() -> None:
    bank, y, platforms = _data(800, seed=4)
    clf = HeteroLRClassifier(max_epochs=1, **KEYS).fit(bank, y, platforms)
    iv = {(r["party"], r["feature"]): r["iv"] for r in clf.iv_}
    joined = pd.concat([bank, platforms["platform"]], axis=1)
    params = clf._params
    for party, frame in (("bank", bank), ("platform", platforms["platform"])):
        for column in frame.columns:
            kind = "categorical" if str(frame[column].dtype) == "category" else "numeric"
            spec = fit_bins(joined[column], kind, params.max_bin)
            total, bad = count_bins(spec.transform(joined[column]), y, spec.n_bins + 1)
            table = params.woe_table(column, party, kind, total, bad, spec)
            assert abs(table.iv - iv[(party, column)]) <= 1e-9, (party, column)
    assert iv[("platform", "tax_score")] > iv[("bank", "tenure")]


def test_scorecard_points_follow_the_joint_logit() -> None:
    bank, y, platforms = _data(500, seed=6)
    clf = HeteroLRClassifier(max_epochs=2, **KEYS).fit(bank, y, platforms)
    part = clf.bank_part_
    card = Scorecard.from_dict(part.scorecard)
    bins = part.coarse_bins(bank, clf.platform_bins(platforms))
    logit = part.logits(bank, clf.platform_bins(platforms))
    expected = card.scaling.offset - card.scaling.factor * logit
    assert np.abs(card.score(bins) - expected).max() < 1e-6
    reasons = card.reason_codes(bins, top_k=2)
    assert len(reasons) == len(bank)
    assert all(len(r) <= 2 for r in reasons)
    table = card.table()
    assert {"bank:deposits", "platform:tax_score"} <= set(table["feature"])


def test_holdout_rows_are_evaluated_not_trained_on() -> None:
    bank, y, platforms = _data(700, seed=8)
    test = np.zeros(len(y), dtype=bool)
    test[::5] = True
    clf = HeteroLRClassifier(max_epochs=2, **KEYS).fit(bank, y, platforms, test_mask=test)
    assert clf.outcome_.report is not None
    assert clf.outcome_.report["auc"] > 0.7
    assert sum(r["n_bins"] > 0 for r in clf.iv_) == 4


# ---------------------------------------------------------------- what crosses domains


def test_message_capture_shows_no_label_platform_value_or_partial_logit() -> None:
    from federated.transport import InProcessTransport

    bank, y, platforms = _data(300, seed=5)
    seen: list[Envelope] = []
    original = InProcessTransport.__init__

    def tapped(self: InProcessTransport, parties, tap=None) -> None:  # type: ignore[no-untyped-def]
        original(self, parties, tap=lambda _d, env: seen.append(env))

    InProcessTransport.__init__ = tapped  # type: ignore[method-assign]
    try:
        clf = HeteroLRClassifier(max_epochs=2, batch_size=100, **KEYS).fit(bank, y, platforms)
    finally:
        InProcessTransport.__init__ = original  # type: ignore[method-assign]
    values = {float(v) for v in platforms["platform"]["tax_score"].dropna()}
    assert seen
    for env in seen:
        if env.protocol != "hetero_lr":
            continue
        for key, value in env.payload.items():
            if isinstance(value, np.ndarray):
                if value.dtype.kind == "f":
                    assert not values & set(value.ravel().tolist()), (env.stage, key)
                if value.size == len(y) and value.dtype.kind in "iub" and key != "train_mask":
                    assert not np.array_equal(value.astype(int), y), (env.stage, key)
            if isinstance(value, str) and env.stage not in ("counts", "bins", "final", "done"):
                # Column names are published metadata; data-bearing stages carry none.
                assert "tax_score" not in value, (env.stage, key)
    assert clf.outcome_.converged in (True, False)
    # per-batch stages carry ciphertexts and masked integers only: no float (no partial logit)
    texts = " ".join(
        str(v)
        for e in seen
        if e.stage in ("partial", "update", "cross_sums")
        for v in e.payload.values()
        if isinstance(v, str)
    )
    assert "e-" not in texts  # only masked integers as text, no floats


def test_masked_sums_hide_values_and_refuse_tampering() -> None:
    mask = fp.masks(3)
    assert all(m < 1 << (fp.VALUE_BITS + fp.STATISTICAL_BITS) for m in mask)
    values = [5, -7, 1 << 100]
    assert fp.unmask([v + m for v, m in zip(values, mask, strict=True)], mask) == values
    with pytest.raises(Exception, match="out of range"):
        fp.unmask([mask[0] + (1 << 200)], mask[:1])
    n = (1 << 521) - 1
    assert fp.from_residue(fp.to_residue([-3, 4], n), n) == [-3, 4]


def test_single_class_labels_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    bank, y, platforms = _data(200)
    with pytest.raises(ValueError, match="y holds one class"):  # the estimator, before any key
        HeteroLRClassifier(max_epochs=1, **KEYS).fit(bank, np.zeros_like(y), platforms)
    table = tmp_path / "bank.csv"  # and the bank's node, reading its table in a job
    bank.assign(id=[f"r{i}" for i in range(len(bank))], y=0).to_csv(table, index=False)
    with pytest.raises(DataError, match="needs both good"):
        read_party_table(table, id_column="id", label_column="y")


def test_a_platform_refuses_a_bins_message_from_another_party() -> None:
    from federated.party import DictStore, PartyRuntime  # noqa: F401 - runtime wiring below
    from models.vertical_lr.protocol import HeteroLRParty

    class _Ctx:
        name, role = "platform", "platform"

        def __init__(self) -> None:
            self.store = DictStore()

    ctx = _Ctx()
    ctx.store.put_json("hetero_lr.stage", "init")
    ctx.store.put_json("hlr.state", {"bank": "bank"})
    env = Envelope("hetero_lr", "bins", "mallory", "platform", {"tables": "[]", "settings": "{}"})
    with pytest.raises(Exception, match="not expected"):
        HeteroLRParty().handle(env, ctx)  # type: ignore[arg-type]


# ---------------------------------------------------------------- experiment configs


def _config(model: dict[str, object], kind: str = "vertical") -> dict[str, object]:
    from tests.conftest import DATA

    parties = [
        {
            "name": "bank",
            "role": "bank",
            "data": str(DATA / "breast" / "bank.csv"),
            "label_column": "y",
        },
        {"name": "platform", "role": "platform", "data": str(DATA / "breast" / "platform.csv")},
    ]
    return {"name": "hlr", "kind": kind, "parties": parties, "model": model}


def test_a_config_with_only_the_type_gets_sound_defaults() -> None:
    from lab.config import experiment_from_dict
    from models.vertical_lr.protocol import HeteroLRParams

    experiment = experiment_from_dict(_config({"type": "hetero_lr"}), source=None)
    spec = experiment.job_spec()
    params = HeteroLRParams.from_spec(dict(spec.model), dict(spec.crypto))
    assert params.key_bits == 2048
    assert not params.insecure_test_keys
    assert params.binning == "monotone"
    assert params.lr().normalize
    assert params.groups == {}


@pytest.mark.parametrize(
    ("model", "kind", "message"),
    [
        (
            {"type": "hetero_lr", "learning_rat": 1.0},
            "vertical",
            "unknown key 'model.learning_rat'",
        ),
        ({"type": "hetero_lr", "learning_rate": 2.5}, "vertical", "model.learning_rate"),
        ({"type": "hetero_lr", "binning": "optimal"}, "vertical", "model.binning"),
        ({"type": "hetero_lr"}, "horizontal", "is a vertical model"),
    ],
)
def test_bad_hetero_lr_configs_are_refused_clearly(
    model: dict[str, object], kind: str, message: str
) -> None:
    from lab.config import experiment_from_dict
    from lab.errors import ConfigError

    raw = _config(model, kind)
    if kind == "horizontal":
        raw["parties"][1]["role"] = "bank"  # type: ignore[index]
        raw["parties"][1]["label_column"] = "y"  # type: ignore[index]
    with pytest.raises(ConfigError, match=message):
        experiment_from_dict(raw, source=None)


def test_scorecard_groups_resolve_per_party_column() -> None:
    from lab.config import experiment_from_dict

    model = {"type": "hetero_lr", "scorecard": {"groups": {"size": ["x0", "platform:x1"]}}}
    from models.model_type import model_type
    from models.vertical_lr.descriptor import params

    spec = experiment_from_dict(_config(model), source=None).job_spec()
    # The parties receive the settings' form and resolve it per column.
    settings = model_type("hetero_lr").parse(spec.model)
    assert params(settings, spec.crypto).groups == {"x0": "size", "platform:x1": "size"}
