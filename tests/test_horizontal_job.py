"""Horizontal job pieces in process: configs, the horizontal and secagg party stages, drills."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from federated.driver import connect_parties, split_for_evaluation
from federated.faults import FaultDrill, InjectedFaultError
from federated.flower_transport import error_reason
from federated.horizontal_protocol import PROTOCOL, HorizontalSettings
from federated.horizontal_server import secure_aggregation_plan, settings_for
from federated.horizontal_strategy import flatten, unflatten
from federated.party import DictStore, PartyRuntime
from federated.protocols import party_protocols
from federated.secagg_party import (
    PROTOCOL as SECAGG,
)
from federated.secagg_party import (
    from_payload,
    masked_update,
    survivors_required,
    to_payload,
)
from federated.spec import JobSpec, PartyBinding, SpecError
from federated.transport import InProcessTransport, PartyError, run_protocol
from lab.config import experiment_from_dict
from lab.errors import ConfigError
from models.protocol import COORDINATOR, Envelope
from secure_agg.secagg import SecAggConfig, SecAggServer

N_BANKS = 3


def write_banks(folder: Path, n: int = 300, seed: int = 0) -> list[Path]:
    """Three banks with the same columns (two numeric, one categorical) and labels."""
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(1, N_BANKS + 1):
        signal = rng.normal(size=n)
        frame = pd.DataFrame(
            {
                "id": [f"B{k}-{i:04d}" for i in range(n)],
                "y": (signal + rng.normal(size=n) > 1.0).astype(int),
                "deposits": (signal + rng.normal(scale=0.7, size=n)).round(3),
                "queries": rng.integers(0, 6, size=n),
                "product": rng.choice(["credit", "tax_loan", "mortgage"], size=n),
            }
        )
        path = folder / f"bank_{k}.csv"
        frame.to_csv(path, index=False)
        paths.append(path)
    return paths


def raw_config(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "hz",
        "kind": "horizontal",
        "parties": [
            {"name": f"bank_{k}", "role": "bank", "data": f"bank_{k}.csv", "label_column": "y"}
            for k in range(1, N_BANKS + 1)
        ],
        "model": {"type": "mlp", "hidden": [8], "rounds": 2},
        "secure_aggregation": {"enabled": True},
    }
    raw.update(changes)
    return raw


@pytest.fixture
def experiment(tmp_path: Path) -> Any:
    write_banks(tmp_path)
    return experiment_from_dict(raw_config(), source=None, base_dir=tmp_path)


def transport_for(experiment: Any) -> InProcessTransport:
    parties = {
        b.name: PartyRuntime(b, DictStore(), party_protocols(), disclose_errors=True)
        for b in experiment.bindings()
    }
    return InProcessTransport(parties)


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"parties": raw_config()["parties"][:2]}, "at least 3 banks"),
        ({"model": {"type": "secureboost"}}, "vertical model"),
        ({"model": {"type": "mlp", "strategy": "fedprox"}}, "proximal_mu > 0"),
        ({"secure_aggregation": {"enabled": True, "min_survivors": 4}}, "exceeds the 3 banks"),
        ({"secure_aggregation": {"enabled": True, "neighbours": 3}}, "must be even"),
        (
            {"evaluation": {"holdout": {"party": "bank_9", "data": "bank_1.csv"}}},
            "holdout.party 'bank_9'",
        ),
        (
            {
                "evaluation": {
                    "holdout": {"party": "bank_1", "data": "bank_1.csv", "label_column": "z"}
                }
            },
            "holdout.label_column 'z'",
        ),
    ],
)
def test_bad_horizontal_configs_are_refused_with_the_key(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    write_banks(tmp_path)
    with pytest.raises(ConfigError, match=message):
        experiment_from_dict(raw_config(**changes), source=None, base_dir=tmp_path)


def test_two_banks_may_train_without_secure_aggregation(tmp_path: Path) -> None:
    write_banks(tmp_path)
    raw = raw_config(parties=raw_config()["parties"][:2], secure_aggregation={"enabled": False})
    experiment = experiment_from_dict(raw, source=None, base_dir=tmp_path)
    assert experiment.job_spec().secure_aggregation["enabled"] is False


def test_threshold_defaults_to_two_thirds_of_a_neighbourhood() -> None:
    assert survivors_required(3, None) == 2
    assert survivors_required(4, None) == 3
    assert survivors_required(5, None) == 4
    assert survivors_required(10, None, neighbours=4) == 4  # neighbourhoods of 5
    assert survivors_required(5, 3) == 3


def test_settings_carry_the_job_model_and_dp(experiment: Any) -> None:
    spec = experiment.job_spec()
    schema = {"columns": [{"name": "deposits", "kind": "numeric"}]}
    settings = settings_for(spec, schema)
    assert settings.model == "mlp"
    assert settings.hidden == (8,)
    assert settings.dp is None
    assert settings.secure_aggregation
    assert HorizontalSettings.from_json(settings.to_json()) == settings
    plan = secure_aggregation_plan(spec)
    assert plan is not None
    assert plan.threshold == 2


# ---------------------------------------------------------------- fault drills and errors


def test_fault_drills_parse_and_fire_only_where_named() -> None:
    drill = FaultDrill.parse("train@2, secagg/unmask")
    drill.check("train", 1)
    drill.check("evaluate", 2)
    with pytest.raises(InjectedFaultError, match="'train' of round 2"):
        drill.check("train", 2)
    with pytest.raises(InjectedFaultError):
        drill.check("secagg/unmask", 7)
    FaultDrill.parse(None).check("train", 1)
    with pytest.raises(SpecError, match="STAGE@ROUND"):
        FaultDrill.parse("train@zero")


def test_error_reason_keeps_the_nodes_own_message() -> None:
    wrapped = (
        "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'Traceback ...\n"
        "Exception ClientAppException occurred. Message: party 'bank_2' (train): DataError: x'>"
    )
    assert error_reason(wrapped) == "party 'bank_2' (train): DataError: x"
    assert error_reason("plain reason") == "plain reason"


def test_flatten_and_unflatten_round_trip() -> None:
    arrays = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(4, dtype=np.float32)]
    back = unflatten(flatten(arrays), arrays)
    assert all(
        np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(arrays, back, strict=True)
    )


# ---------------------------------------------------------------- party stages in process


def test_schema_alone_and_holdout_stages(tmp_path: Path) -> None:
    write_banks(tmp_path)
    holdout = {"party": "bank_1", "data": "bank_3.csv", "id_column": "id", "label_column": "y"}
    experiment = experiment_from_dict(
        raw_config(evaluation={"holdout": holdout}), source=None, base_dir=tmp_path
    )
    spec = experiment.job_spec()
    transport = transport_for(experiment)
    connect_parties(spec, transport)
    sizes = split_for_evaluation(spec, transport)
    assert set(sizes) == {"bank_1", "bank_2", "bank_3"}
    replies = run_protocol(
        transport, [Envelope(PROTOCOL, "schema", COORDINATOR, p.name) for p in spec.parties]
    )
    schemas = {e.sender: json.loads(e.text("schema")) for e in replies}
    for env in replies:
        assert env.integer("n_train") == sizes[env.sender][0]
    from models.horizontal import merge_schemas, parameters_to_arrays

    settings = settings_for(spec, merge_schemas(list(schemas.values())))
    alone = run_protocol(
        transport,
        [
            Envelope(PROTOCOL, "alone", COORDINATOR, p.name, {"settings": settings.to_json()})
            for p in spec.parties
        ],
    )
    by_bank = {e.sender: e for e in alone}
    assert "holdout" in by_bank["bank_1"].payload
    assert "holdout" not in by_bank["bank_2"].payload
    assert 0.5 < json.loads(by_bank["bank_2"].text("own_test"))["auc"] <= 1.0
    model = settings.new_model(settings.encoder().n_outputs)
    arrays = parameters_to_arrays(model)
    payload: dict[str, Any] = {"settings": settings.to_json(), "n_arrays": len(arrays)}
    payload.update({f"a{i}": a for i, a in enumerate(arrays)})
    report = run_protocol(
        transport, [Envelope(PROTOCOL, "holdout", COORDINATOR, "bank_1", payload)]
    )
    assert json.loads(report[0].text("report"))["n"] == 300
    with pytest.raises(PartyError, match="keeps no held-out file"):
        run_protocol(transport, [Envelope(PROTOCOL, "holdout", COORDINATOR, "bank_2", payload)])


def _secagg_round(
    transport: InProcessTransport, spec: JobSpec, vectors: dict[str, np.ndarray], threshold: int
) -> tuple[np.ndarray, SecAggConfig]:
    banks = sorted(vectors)
    ids = {b: i + 1 for i, b in enumerate(banks)}
    config = SecAggConfig(
        round_id=7, client_ids=tuple(ids.values()), threshold=threshold, vector_length=5
    )
    server = SecAggServer(config)
    setup = server.setup()
    replies = transport.exchange(
        [
            Envelope(SECAGG, "setup", COORDINATOR, b, {**to_payload(setup), "client_id": ids[b]})
            for b in banks
        ]
    )
    bank_of = {v: k for k, v in ids.items()}
    requests = server.share_keys([from_payload(e) for e in replies])
    replies = transport.exchange(
        [
            Envelope(SECAGG, "share_keys", COORDINATOR, bank_of[c], to_payload(r))
            for c, r in requests.items()
        ]
    )
    masked_requests = server.collect_masked_vectors([from_payload(e) for e in replies])
    masked = []
    for cid, request in masked_requests.items():
        bank = bank_of[cid]
        envelope = Envelope(SECAGG, "masked", COORDINATOR, bank, to_payload(request))
        masked.append(from_payload(masked_update(transport.parties[bank], envelope, vectors[bank])))
    unmask = server.unmask(masked)
    replies = transport.exchange(
        [
            Envelope(SECAGG, "unmask", COORDINATOR, bank_of[c], to_payload(r))
            for c, r in unmask.items()
        ]
    )
    return server.finish([from_payload(e) for e in replies]), config


def test_secagg_stages_through_party_runtimes_sum_within_the_error_bound(
    experiment: Any,
) -> None:
    spec = experiment.job_spec()
    transport = transport_for(experiment)
    connect_parties(spec, transport)
    rng = np.random.default_rng(3)
    vectors = {b: rng.uniform(-2, 2, size=5) for b in ("bank_1", "bank_2", "bank_3")}
    total, config = _secagg_round(transport, spec, vectors, threshold=2)
    assert np.abs(total - sum(vectors.values())).max() <= config.error_bound()
    # Key material is dropped once a bank has answered unmask.
    for runtime in transport.parties.values():
        assert runtime.store.get_json("secagg.client") is None


def test_a_bank_refuses_a_round_weaker_than_the_job(experiment: Any) -> None:
    spec = experiment.job_spec()
    transport = transport_for(experiment)
    connect_parties(spec, transport)
    config = SecAggConfig(round_id=1, client_ids=(1, 2, 3), threshold=2, vector_length=3)
    weaker = SecAggConfig(
        round_id=1, client_ids=(1, 2, 3), threshold=2, vector_length=3, quantization_bits=8
    )
    assert config.threshold == 2
    setup = SecAggServer(weaker).setup()
    replies = transport.exchange(
        [Envelope(SECAGG, "setup", COORDINATOR, "bank_1", {**to_payload(setup), "client_id": 1})]
    )
    assert replies[0].stage == "error"
    assert "quantization_bits=8 differs from the job's 24" in str(replies[0].payload["message"])


def test_secagg_on_a_node_without_a_job_is_refused(tmp_path: Path) -> None:
    paths = write_banks(tmp_path)
    runtime = PartyRuntime(PartyBinding("bank_1", "bank", paths[0]), DictStore(), party_protocols())
    setup = SecAggServer(
        SecAggConfig(round_id=1, client_ids=(1, 2, 3), threshold=2, vector_length=3)
    ).setup()
    reply = runtime.dispatch(
        Envelope(SECAGG, "setup", COORDINATOR, "bank_1", {**to_payload(setup), "client_id": 1})
    )
    assert reply[0].stage == "error"
    assert "before 'hello'" in str(reply[0].payload["message"])
