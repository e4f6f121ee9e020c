"""Bank-side horizontal training: schema encoder, nets, local rounds, FedProx, DP-SGD accounting."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from models.evaluation import EvaluationReport
from models.horizontal import (
    DPConfig,
    DPConfigError,
    DPPlanMismatchError,
    DPState,
    FeatureEncoder,
    LocalTrainingConfig,
    ModelSpecError,
    ParameterMismatchError,
    PrivacyBudgetExhaustedError,
    PrivacyBudgetTooSmallError,
    SchemaError,
    SchemaMismatchError,
    SecureRNGUnavailableError,
    TrainingConfigError,
    TrainingDataError,
    arrays_to_parameters,
    build_model,
    evaluate_local,
    merge_schemas,
    n_parameters,
    numeric_schema,
    parameter_names,
    parameters_to_arrays,
    plan_noise,
    schema_from_table,
    secure_rng_available,
    train_local,
)
from models.horizontal.dp import PLAN_RELATIVE_TOLERANCE
from models.horizontal.encoding import NUMERIC_CLIP
from models.privacy import epsilon
from tests.conftest import DATA


def _bank_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    revenue = rng.lognormal(mean=14, sigma=1, size=n)
    revenue[rng.random(n) < 0.1] = np.nan
    industry = rng.choice(["C13", "F51", "I65"], size=n, p=[0.5, 0.45, 0.05])
    return pd.DataFrame(
        {
            "revenue": revenue,
            "age": rng.integers(1, 30, size=n).astype(float),
            "industry": pd.Series(industry, dtype="category"),
        }
    )


def _xy(n: int = 400, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    w = np.linspace(1.5, -1.0, d)
    y = (X @ w + rng.normal(size=n) > 0.8).astype(np.int8)
    return X, y


# --- encoder ------------------------------------------------------------------------------


def test_banks_build_identical_encoders_from_published_schemas() -> None:
    bank_a, bank_b = _bank_frame(500, 1), _bank_frame(300, 2)
    published = [schema_from_table(bank_a), schema_from_table(bank_b)]
    # What travels is JSON: no rows, only kinds, categories and rounded constants.
    job_schema = json.loads(json.dumps(merge_schemas(published)))
    enc_a = FeatureEncoder.from_schema(job_schema)
    enc_b = FeatureEncoder.from_schema(json.loads(json.dumps(job_schema)))
    assert enc_a == enc_b
    assert enc_a.to_schema() == FeatureEncoder.from_schema(enc_a.to_schema()).to_schema()
    # The same enterprise encodes to the same vector at either bank.
    row = bank_a.iloc[[3]]
    both = pd.concat([bank_b, row], ignore_index=True)
    assert np.array_equal(enc_a.transform(row)[0], enc_b.transform(both)[-1])
    assert enc_a.output_names == [
        "revenue",
        "revenue__missing",
        "age",
        "industry=C13",
        "industry=F51",
        "industry=I65",
        "industry__other",
    ]
    assert enc_a.transform(bank_a).shape == (500, enc_a.n_outputs)


def test_schema_from_table_publishes_rounded_constants_and_no_rare_category() -> None:
    frame = _bank_frame(200, 3)
    frame["industry"] = frame["industry"].cat.add_categories(["Z99"])
    frame.loc[0, "industry"] = "Z99"  # one enterprise: must not be published
    schema = schema_from_table(frame)
    columns = {c["name"]: c for c in schema["columns"]}
    assert "Z99" not in columns["industry"]["categories"]
    revenue = columns["revenue"]
    assert revenue["scaling"] == "median-iqr"
    assert revenue["missing_indicator"] is True
    for key in ("center", "scale"):
        assert float(f"{revenue[key]:.2g}") == revenue[key]  # 2 significant digits
    values = frame["revenue"].dropna().to_numpy()
    assert revenue["center"] == pytest.approx(np.median(values), rel=0.05)
    assert "missing_indicator" not in columns["age"]
    assert schema_from_table(frame, numeric_scaling="mean-std")["columns"][1]["scaling"] == (
        "mean-std"
    )
    assert "center" not in schema_from_table(frame, numeric_scaling="none")["columns"][0]
    constant = schema_from_table(pd.DataFrame({"k": [2.0] * 20, "z": [0.0] * 15 + [1.0] * 5}))
    assert constant["columns"][0]["scale"] == 1.0
    assert constant["columns"][1]["scale"] > 0


def test_encoder_handles_missing_unknown_and_outliers() -> None:
    schema = {
        "columns": [
            {
                "name": "amount",
                "kind": "numeric",
                "center": 10.0,
                "scale": 2.0,
                "missing_indicator": True,
            },
            {"name": "z", "kind": "numeric"},
            {"name": "grade", "kind": "categorical", "categories": ["A", "B"]},
        ]
    }
    enc = FeatureEncoder.from_schema(schema)
    frame = pd.DataFrame(
        {
            "amount": [12.0, np.nan, 1e9],
            "z": [0.5, -np.inf, 7.0],
            "grade": pd.Series(["B", None, "Q"], dtype="string"),
            "ignored": ["x", "y", "z"],
        }
    )
    out = enc.transform(frame)
    assert out.dtype == np.float32
    expected = np.array(
        [
            [1.0, 0.0, 0.5, 0.0, 1.0, 0.0],
            [0.0, 1.0, -NUMERIC_CLIP, 0.0, 0.0, 0.0],  # missing -> 0 + indicator; all-zero one-hot
            [NUMERIC_CLIP, 0.0, NUMERIC_CLIP, 0.0, 0.0, 1.0],  # clipped; unknown -> other
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(out, expected)
    # integer codes and object columns are read as text
    coded = FeatureEncoder.from_schema(
        {"columns": [{"name": "c", "kind": "categorical", "categories": ["1", "2"]}]}
    )
    got = coded.transform(pd.DataFrame({"c": [1, 2, 3]}))
    np.testing.assert_array_equal(got, np.eye(3, dtype=np.float32))
    obj = coded.transform(pd.DataFrame({"c": pd.Series(["1", None, 2.0], dtype=object)}))
    np.testing.assert_array_equal(obj, [[1, 0, 0], [0, 0, 0], [0, 1, 0]])


def test_fate_schema_is_just_numeric_columns() -> None:
    frame = pd.read_csv(DATA / "default_credit" / "horizontal" / "bank_1.csv", nrows=300)
    names = [f"x{i}" for i in range(23)]
    enc = FeatureEncoder.from_schema(numeric_schema(names))
    out = enc.transform(frame)
    assert enc.n_outputs == 23
    np.testing.assert_allclose(out, frame[names].clip(-NUMERIC_CLIP, NUMERIC_CLIP), atol=1e-6)


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"columns": []}, "non-empty list"),
        ({"columns": [{"name": "a", "kind": "numeric"}] * 2}, "duplicate column"),
        ({"columns": [{"name": "a", "kind": "date"}]}, "unknown kind"),
        ({"columns": [{"name": "a", "kind": "numeric", "center": 0, "scale": 0}]}, "> 0"),
        ({"columns": [{"name": "a", "kind": "numeric", "center": 1}]}, "both 'center'"),
        ({"columns": [{"name": "a", "kind": "numeric", "mean": 1}]}, "unknown keys"),
        ({"columns": [{"name": "a", "kind": "categorical", "categories": [1]}]}, "strings"),
        ({"version": 2, "columns": [{"name": "a", "kind": "numeric"}]}, "version"),
    ],
)
def test_malformed_schemas_are_refused(schema: dict[str, object], fragment: str) -> None:
    with pytest.raises(SchemaError, match=fragment):
        FeatureEncoder.from_schema(schema)


def test_tables_that_do_not_match_the_schema_are_refused() -> None:
    enc = FeatureEncoder.from_schema(
        {"columns": [{"name": "a", "kind": "numeric"}, {"name": "b", "kind": "categorical"}]}
    )
    with pytest.raises(SchemaMismatchError, match=r"lacks schema columns \['b'\]"):
        enc.transform(pd.DataFrame({"a": [1.0]}))
    with pytest.raises(SchemaMismatchError, match="'a' is numeric"):
        enc.transform(pd.DataFrame({"a": ["x"], "b": ["y"]}))
    with pytest.raises(SchemaMismatchError, match="categorical=\\['b'\\]"):
        enc.transform(pd.DataFrame({"a": [1.0], "b": [0.5]}))
    with pytest.raises(SchemaError, match="agree on column"):
        merge_schemas([numeric_schema(["a"]), numeric_schema(["b"])])
    with pytest.raises(
        SchemaError,
        match=re.escape(
            "bank_2 lacks columns ['a'] and has extra columns ['c'] compared with bank_1"
        ),
    ):
        merge_schemas(
            [numeric_schema(["a", "b"]), numeric_schema(["b", "c"])], ["bank_1", "bank_2"]
        )
    with pytest.raises(SchemaError, match="schema 1 lists the same columns in another order"):
        merge_schemas([numeric_schema(["a", "b"]), numeric_schema(["b", "a"])])


# --- nets ---------------------------------------------------------------------------------


def test_build_model_is_seeded_without_touching_the_global_rng() -> None:
    state = torch.random.get_rng_state()
    a, b = build_model("mlp", 7, seed=3), build_model("mlp", 7, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())
    for x, y in zip(parameters_to_arrays(a), parameters_to_arrays(b), strict=True):
        np.testing.assert_array_equal(x, y)
    c = build_model("mlp", 7, seed=4)
    assert not np.array_equal(parameters_to_arrays(a)[0], parameters_to_arrays(c)[0])
    assert n_parameters(a) == 7 * 32 + 32 + 32 * 16 + 16 + 16 + 1
    assert n_parameters(build_model("logreg", 7)) == 8
    assert build_model("mlp", 7, hidden=(4,), activation="tanh")(torch.zeros(2, 7)).shape == (2, 1)
    with pytest.raises(ModelSpecError, match="unknown model kind"):
        build_model("tree", 7)  # type: ignore[arg-type]
    with pytest.raises(ModelSpecError, match="n_inputs"):
        build_model("logreg", 0)


def test_parameters_round_trip_through_opacus_wrapping() -> None:
    from opacus import GradSampleModule

    model = build_model("mlp", 5, seed=1)
    names, before = parameter_names(model), parameters_to_arrays(model)
    wrapped = GradSampleModule(model)
    assert next(iter(wrapped.state_dict())).startswith("_module.")
    assert parameter_names(wrapped) == names
    for x, y in zip(parameters_to_arrays(wrapped), before, strict=True):
        np.testing.assert_array_equal(x, y)
    wrapped.cleanup()

    # After a DP round the plain model gives the same list (order, shapes) and trains again.
    X, y = _xy(120, 5)
    dp = DPConfig(5.0, 1e-4, insecure_seed=0)
    state = DPState.start(
        plan_noise(dp, n_examples=120, batch_size=30, epochs_per_round=1, rounds=2)
    )
    cfg = LocalTrainingConfig(batch_size=30)
    first = train_local(model, X, y, cfg, global_arrays=before, dp=dp, dp_state=state)
    assert [a.shape for a in first.arrays] == [a.shape for a in before]
    assert parameter_names(model) == names
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())
    second = train_local(
        model, X, y, cfg, global_arrays=first.arrays, dp=dp, dp_state=first.dp_state
    )
    assert not np.array_equal(second.arrays[0], first.arrays[0])

    other = build_model("mlp", 5, seed=9)
    arrays_to_parameters(other, second.arrays)
    x = torch.from_numpy(X[:4])
    assert torch.equal(other(x), model(x))
    with pytest.raises(ParameterMismatchError, match="got 3 arrays"):
        arrays_to_parameters(other, second.arrays[:3])
    with pytest.raises(ParameterMismatchError, match="shape"):
        arrays_to_parameters(other, [a.T for a in second.arrays])
    with pytest.raises(ParameterMismatchError, match="non-finite"):
        arrays_to_parameters(other, [a * np.nan for a in second.arrays])


# --- local training -----------------------------------------------------------------------


def test_training_is_deterministic_given_a_seed() -> None:
    X, y = _xy()
    init = parameters_to_arrays(build_model("mlp", 5, seed=0))
    cfg = LocalTrainingConfig(epochs=2, seed=11)

    def run(config: LocalTrainingConfig) -> list[np.ndarray]:
        model = build_model("mlp", 5, seed=5)
        return train_local(model, X, y, config, global_arrays=init).arrays

    a, b = run(cfg), run(cfg)
    for x, z in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, z)
    c = run(LocalTrainingConfig(epochs=2, seed=12))
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], init[0])


def test_training_learns_and_reports_loss() -> None:
    X, y = _xy(800)
    model = build_model("logreg", 5)
    result = train_local(model, X, y, LocalTrainingConfig(epochs=3, seed=0))
    assert result.n_examples == 800
    assert result.events == []
    assert result.dp_state is None
    assert 0 < result.train_loss < math.log(2)
    assert evaluate_local(model, X, y).auc > 0.85
    weighted = train_local(
        build_model("logreg", 5), X, y, LocalTrainingConfig(epochs=3, seed=0, pos_weight=4.0)
    )
    assert weighted.train_loss != result.train_loss


def _distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.sqrt(sum(((x - z) ** 2).sum() for x, z in zip(a, b, strict=True))))


@pytest.mark.parametrize("private", [False, True])
def test_fedprox_term_pulls_toward_the_global_weights(private: bool) -> None:
    X, y = _xy(300)
    global_arrays = parameters_to_arrays(build_model("mlp", 5, seed=2))
    dp = DPConfig(8.0, 1e-4, insecure_seed=4) if private else None
    distances = []
    for mu in (0.0, 1.0, 100.0):
        cfg = LocalTrainingConfig(
            epochs=2, batch_size=30, learning_rate=0.005, momentum=0.0, proximal_mu=mu, seed=0
        )
        state = (
            DPState.start(
                plan_noise(dp, n_examples=300, batch_size=30, epochs_per_round=2, rounds=1)
            )
            if dp
            else None
        )
        result = train_local(
            build_model("mlp", 5), X, y, cfg, global_arrays=global_arrays, dp=dp, dp_state=state
        )
        distances.append(_distance(result.arrays, global_arrays))
    assert distances[0] > distances[1] > distances[2]
    assert distances[2] < 0.2 * distances[0]


def test_bad_training_inputs_are_refused() -> None:
    X, y = _xy(50)
    model = build_model("logreg", 5)
    cfg = LocalTrainingConfig()
    with pytest.raises(TrainingDataError, match="6 columns but the model takes 5"):
        train_local(model, np.hstack([X, X[:, :1]]), y, cfg)
    with pytest.raises(TrainingDataError, match="NaN"):
        train_local(model, np.where(X > 2, np.nan, X), y, cfg)
    with pytest.raises(TrainingDataError, match="0 \\(good\\) or 1"):
        train_local(model, X, y * 2, cfg)
    with pytest.raises(TrainingDataError, match="rows but y has"):
        train_local(model, X, y[:-1], cfg)
    with pytest.raises(TrainingConfigError, match="needs global_arrays"):
        train_local(model, X, y, LocalTrainingConfig(proximal_mu=0.1))
    plan = plan_noise(
        DPConfig(1.0, 1e-5), n_examples=50, batch_size=64, epochs_per_round=1, rounds=1
    )
    with pytest.raises(TrainingConfigError, match="without dp"):
        train_local(model, X, y, cfg, dp_state=DPState.start(plan))
    with pytest.raises(DPConfigError, match="dp needs dp_state"):
        train_local(model, X, y, cfg, dp=DPConfig(1.0, 1e-5))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"optimizer": "lbfgs"}, "unknown optimizer"),
        ({"momentum": 1.0}, "momentum"),
        ({"proximal_mu": float("nan")}, "proximal_mu"),
        ({"pos_weight": 0.0}, "pos_weight"),
        ({"seed": True}, "seed"),
    ],
)
def test_training_config_is_validated(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(TrainingConfigError, match=fragment):
        LocalTrainingConfig(**kwargs)  # type: ignore[arg-type]


def test_evaluation_report_fields() -> None:
    X, y = _xy(500)
    model = build_model("logreg", 5)
    train_local(
        model, X, y, LocalTrainingConfig(epochs=2, seed=0, optimizer="adam", learning_rate=0.02)
    )
    report = evaluate_local(model, X, y)
    assert isinstance(report, EvaluationReport)
    assert report.n == 500
    assert report.n_bad == int(y.sum())
    assert 0.5 < report.auc <= 1.0
    assert report.gini == pytest.approx(2 * report.auc - 1)
    assert 0 < report.ks <= 1
    assert 0 <= report.ece < 1
    assert len(report.deciles) == 10
    assert len(report.calibration) == 10
    assert EvaluationReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


# --- differential privacy -----------------------------------------------------------------


@settings(max_examples=6, deadline=None)
@given(
    target=st.sampled_from([0.5, 1.0, 3.0, 8.0]),
    n=st.integers(20, 120),
    batch=st.integers(4, 40),
    epochs=st.integers(1, 2),
    rounds=st.integers(1, 4),
)
def test_planned_epsilon_is_what_the_accountant_spends_over_all_rounds(
    target: float, n: int, batch: int, epochs: int, rounds: int
) -> None:
    X, y = _xy(n, 3, seed=n)
    dp = DPConfig(target, 1e-5, insecure_seed=n + batch)
    plan = plan_noise(dp, n_examples=n, batch_size=batch, epochs_per_round=epochs, rounds=rounds)
    assert plan.planned_epsilon <= target
    assert plan.planned_epsilon >= target * (1 - 2 * PLAN_RELATIVE_TOLERANCE)
    assert plan.planned_epsilon == epsilon(plan.events(), 1e-5)
    cfg = LocalTrainingConfig(epochs=epochs, batch_size=batch)
    model = build_model("logreg", 3)
    arrays = parameters_to_arrays(model)
    state = DPState.start(plan)
    spent = []
    for _ in range(rounds):
        # the node keeps its state as JSON between rounds
        state = DPState.from_dict(json.loads(json.dumps(state.to_dict())))
        before = state.epsilon(1e-5)
        result = train_local(model, X, y, cfg, global_arrays=arrays, dp=dp, dp_state=state)
        assert result.dp_state is not None
        state, arrays = result.dp_state, result.arrays
        assert [e.steps for e in result.events] == [plan.steps_per_round]
        spent.extend(result.events)
        assert before < state.epsilon(1e-5) <= target  # cumulative, never above target
    assert state.steps_taken == plan.total_steps
    assert state.epsilon(1e-5) == pytest.approx(plan.planned_epsilon, rel=1e-3)
    assert epsilon(spent, 1e-5) == pytest.approx(plan.planned_epsilon, rel=1e-3)
    with pytest.raises(PrivacyBudgetExhaustedError, match="would exceed"):
        train_local(model, X, y, cfg, global_arrays=arrays, dp=dp, dp_state=state)


@settings(max_examples=6, deadline=None)
@given(
    low=st.floats(0.3, 10.0),
    factor=st.floats(1.2, 4.0),
    n=st.integers(1_000, 20_000),
    batch=st.integers(16, 256),
    rounds=st.integers(1, 30),
)
def test_noise_multiplier_grows_as_epsilon_shrinks(
    low: float, factor: float, n: int, batch: int, rounds: int
) -> None:
    def plan(eps: float) -> float:
        dp = DPConfig(eps, 1e-5)
        return plan_noise(
            dp, n_examples=n, batch_size=batch, epochs_per_round=1, rounds=rounds
        ).noise_multiplier

    assert plan(low) > plan(low * factor)


def test_prv_plan_is_met_by_training() -> None:
    X, y = _xy(100, 3)
    dp = DPConfig(2.0, 1e-5, accountant="prv", insecure_seed=0)
    plan = plan_noise(dp, n_examples=100, batch_size=25, epochs_per_round=1, rounds=2)
    assert plan.planned_epsilon <= 2.0
    model, state = build_model("logreg", 3), DPState.start(plan)
    for _ in range(2):
        result = train_local(model, X, y, LocalTrainingConfig(batch_size=25), dp=dp, dp_state=state)
        assert result.dp_state is not None
        state = result.dp_state
    assert state.epsilon(1e-5, "prv") == pytest.approx(plan.planned_epsilon, rel=1e-3)


def _manual_gradients(model: nn.Module, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-record gradients, flattened in parameter order (rows x parameters)."""
    rows = []
    for i in range(len(y)):
        model.zero_grad()
        logit = model(torch.from_numpy(X[i : i + 1])).reshape(-1)
        nn.functional.binary_cross_entropy_with_logits(
            logit, torch.tensor([float(y[i])])
        ).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy())
    return np.stack(rows)


def test_dp_clips_each_record_and_adds_calibrated_noise() -> None:
    n, clip, lr = 200, 0.01, 1.0
    X, y = _xy(n, 4)
    start = parameters_to_arrays(build_model("mlp", 4, hidden=(8,), seed=3))
    reference = build_model("mlp", 4, hidden=(8,))
    arrays_to_parameters(reference, start)
    grads = _manual_gradients(reference, X, y)
    norms = np.linalg.norm(grads, axis=1)
    assert norms.min() > clip  # every record is clipped
    clipped_mean = (grads * (clip / norms)[:, None]).mean(axis=0)
    plain_mean = grads.mean(axis=0)

    # One full-batch step (batch >= n: sampling rate 1) of plain SGD, so update = -lr * grad.
    cfg = LocalTrainingConfig(batch_size=n, learning_rate=lr, momentum=0.0, seed=0)

    def step(dp: DPConfig | None) -> np.ndarray:
        state = (
            DPState.start(plan_noise(dp, n_examples=n, batch_size=n, epochs_per_round=1, rounds=1))
            if dp
            else None
        )
        result = train_local(
            build_model("mlp", 4, hidden=(8,)),
            X,
            y,
            cfg,
            global_arrays=start,
            dp=dp,
            dp_state=state,
        )
        if dp is not None:
            assert result.events[0].sample_rate == 1.0
            assert result.events[0].steps == 1
        flat = np.concatenate([a.reshape(-1) for a in result.arrays])
        return (np.concatenate([a.reshape(-1) for a in start]) - flat) / lr

    np.testing.assert_allclose(step(None), plain_mean, rtol=1e-4, atol=1e-6)
    dp_a = DPConfig(8.0, 1e-5, max_grad_norm=clip, insecure_seed=1)
    dp_b = DPConfig(8.0, 1e-5, max_grad_norm=clip, insecure_seed=2)
    sigma = plan_noise(
        dp_a, n_examples=n, batch_size=n, epochs_per_round=1, rounds=1
    ).noise_multiplier
    a, b = step(dp_a), step(dp_b)
    noise_std = sigma * clip / n
    # The DP step is the clipped mean plus noise of std sigma * C / n per coordinate ...
    residual = a - clipped_mean
    assert 0.6 * noise_std < residual.std() < 1.5 * noise_std
    assert np.linalg.norm(a - plain_mean) > 5 * np.linalg.norm(residual)
    # ... fresh noise for a fresh seed, identical for the same seed.
    assert 0.6 * noise_std * math.sqrt(2) < (a - b).std() < 1.5 * noise_std * math.sqrt(2)
    np.testing.assert_array_equal(a, step(dp_a))


def test_default_dp_noise_is_not_reproducible() -> None:
    X, y = _xy(60, 3)
    dp = DPConfig(1.0, 1e-5)
    plan = plan_noise(dp, n_examples=60, batch_size=60, epochs_per_round=1, rounds=1)
    start = parameters_to_arrays(build_model("logreg", 3))
    cfg = LocalTrainingConfig(batch_size=60, seed=0)  # the training seed does not seed DP noise
    runs = [
        train_local(
            build_model("logreg", 3),
            X,
            y,
            cfg,
            global_arrays=start,
            dp=dp,
            dp_state=DPState.start(plan),
        ).arrays[0]
        for _ in range(2)
    ]
    assert not np.array_equal(runs[0], runs[1])


def test_dp_rounds_that_do_not_fit_the_plan_are_refused() -> None:
    X, y = _xy(100, 3)
    dp = DPConfig(3.0, 1e-5)
    state = DPState.start(
        plan_noise(dp, n_examples=100, batch_size=10, epochs_per_round=1, rounds=1)
    )
    model = build_model("logreg", 3)
    with pytest.raises(DPPlanMismatchError, match="n_examples is 99"):
        train_local(
            model, X[:99], y[:99], LocalTrainingConfig(batch_size=10), dp=dp, dp_state=state
        )
    with pytest.raises(DPPlanMismatchError, match="batch_size is 20"):
        train_local(model, X, y, LocalTrainingConfig(batch_size=20), dp=dp, dp_state=state)
    with pytest.raises(DPPlanMismatchError, match="target_epsilon"):
        train_local(
            model, X, y, LocalTrainingConfig(batch_size=10), dp=DPConfig(4.0, 1e-5), dp_state=state
        )
    with pytest.raises(PrivacyBudgetTooSmallError, match="raise the budget"):
        plan_noise(
            DPConfig(1e-4, 1e-12), n_examples=10, batch_size=10, epochs_per_round=50, rounds=50
        )
    for bad in (
        {"target_epsilon": 0.0},
        {"target_delta": 1.0},
        {"max_grad_norm": -1.0},
        {"accountant": "gdp"},
    ):
        with pytest.raises(DPConfigError):
            DPConfig(**{"target_epsilon": 1.0, "target_delta": 1e-5, **bad})  # type: ignore[arg-type]
    with pytest.raises(DPConfigError, match="positive integer"):
        plan_noise(dp, n_examples=0, batch_size=10, epochs_per_round=1, rounds=1)


@pytest.mark.skipif(secure_rng_available(), reason="torchcsprng is installed here")
def test_secure_rng_is_refused_with_the_reason() -> None:
    dp = DPConfig(3.0, 1e-5, secure_rng=True)
    with pytest.raises(SecureRNGUnavailableError, match="torchcsprng"):
        plan_noise(dp, n_examples=100, batch_size=10, epochs_per_round=1, rounds=1)
