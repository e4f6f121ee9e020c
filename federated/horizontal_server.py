"""The coordinator's side of a horizontal job: banks with the same columns, one model.

Stages: ``connect`` (job/hello), ``split`` (each bank keeps a test share of its rows),
``schema`` (banks publish encodings; the coordinator merges them into one), ``alone`` (each
bank's own model, the reference the federation must beat), ``federated`` (Flower's FedAvg or
FedProx over ``train``/``evaluate`` messages, through :class:`JobStrategy`, with secure
aggregation and record-level DP when the job asks), ``holdout`` (the bank keeping the job's
held-out file scores the final global model).

The coordinator reads no data. What it learns is listed in :mod:`federated.horizontal_protocol`
and :mod:`federated.horizontal_strategy`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx

from federated import progress
from federated.driver import StageClock, connect_parties, split_for_evaluation
from federated.flower_transport import FlowerTransport
from federated.horizontal_protocol import PROTOCOL, SETTINGS_KEY, HorizontalSettings
from federated.horizontal_strategy import JobStrategy, SecureAggregationPlan
from federated.job_grid import JobGrid, party_lookup
from federated.privacy_plan import job_model
from federated.result import JobResult, JointOutcome
from federated.secagg_party import survivors_required
from federated.spec import JobSpec
from federated.transport import run_protocol
from models.evaluation import EvaluationReport
from models.privacy import PrivacyEvent
from models.protocol import COORDINATOR, Envelope

logger = logging.getLogger(__name__)

#: File (in the job's result directory) holding the final global model's arrays.
MODEL_FILE = "global_model.npz"

STAGES = ("connect", "split", "schema", "alone", "federated", "holdout")


def settings_for(spec: JobSpec, schema: dict[str, Any]) -> HorizontalSettings:
    """The settings every bank receives each round, from the job spec and merged schema."""
    model = dict(spec.model)
    dp = None
    if model.get("dp_epsilon"):
        dp = {
            "target_epsilon": float(model["dp_epsilon"]),
            "target_delta": float(model["dp_delta"]),
            "max_grad_norm": float(model["max_grad_norm"]),
            "accountant": str(model["accountant"]),
        }
    secagg = dict(spec.secure_aggregation)
    return HorizontalSettings(
        model=str(model["type"]),
        hidden=_layers(spec),
        seed=int(model["seed"]),
        schema=schema,
        local={
            "epochs": int(model["local_epochs"]),
            "batch_size": int(model["batch_size"]),
            "learning_rate": float(model["learning_rate"]),
            "optimizer": str(model["optimizer"]),
            "momentum": float(model["momentum"]),
            "proximal_mu": float(model["proximal_mu"]),
        },
        rounds=int(model["rounds"]),
        dp=dp,
        secure_aggregation=bool(secagg.get("enabled")),
        clipping_range=float(secagg.get("clipping_range", 8.0)),
    )


def _layers(spec: JobSpec) -> tuple[int, ...]:
    """Hidden layer widths of the job's network (its model type's settings say)."""
    _, settings = job_model(spec)
    layers: tuple[int, ...] = getattr(settings, "layers", tuple)()
    return layers


def secure_aggregation_plan(spec: JobSpec) -> SecureAggregationPlan | None:
    """The job's secure-aggregation parameters, or ``None`` when it is off."""
    secagg = dict(spec.secure_aggregation)
    if not secagg.get("enabled"):
        return None
    n_banks = len(spec.by_role("bank"))
    neighbours = secagg.get("neighbours")
    return SecureAggregationPlan(
        threshold=survivors_required(n_banks, secagg.get("min_survivors"), neighbours),
        neighbours=int(neighbours) if neighbours is not None else None,
        clipping_range=float(secagg.get("clipping_range", 8.0)),
        quantization_bits=int(secagg.get("quantization_bits", 24)),
        stage_timeout=min(float(spec.runtime.message_timeout), 300.0),
    )


def run_horizontal(
    spec: JobSpec, transport: FlowerTransport, grid: Grid, output_dir: Path
) -> JobResult:
    """Run a horizontal job end to end; write the global model into ``output_dir``."""
    from models.horizontal import merge_schemas

    clock = StageClock()
    done = 0

    def stage(name: str, detail: str) -> Any:
        nonlocal done
        progress.report("job", done, len(STAGES), detail)
        done += 1
        return clock(name)

    banks = [p.name for p in spec.by_role("bank")]
    with stage("connect", "connecting to banks"):
        parties = connect_parties(spec, transport)
    with stage("split", "splitting for evaluation"):
        sizes = split_for_evaluation(spec, transport)
    with stage("schema", "agreeing on the feature encoding"):
        replies = run_protocol(
            transport, [Envelope(PROTOCOL, "schema", COORDINATOR, b) for b in banks]
        )
        by_bank = {e.sender: e for e in replies}
        schema = merge_schemas(
            [json.loads(by_bank[b].text("schema")) for b in banks], [f"bank '{b}'" for b in banks]
        )
        n_train = {b: by_bank[b].integer("n_train") for b in banks}
    settings = settings_for(spec, schema)
    with stage("alone", "bank-alone references"):
        alone = _alone(spec, transport, banks, settings)
    with stage("federated", "federated training"):
        strategy = _strategy(spec, transport, n_train)
        job_grid = JobGrid(
            grid, party_lookup(_job_nodes(spec, transport)), transport.stats, tap=transport.tap
        )
        initial = _initial_arrays(settings)
        config = ConfigRecord({SETTINGS_KEY: settings.to_json()})
        outcome = strategy.start(
            job_grid,
            ArrayRecord(initial),
            num_rounds=settings.rounds,
            timeout=spec.runtime.message_timeout,
            train_config=config,
            evaluate_config=ConfigRecord({SETTINGS_KEY: settings.to_json()}),
        )
        final = list(outcome.arrays.to_numpy_ndarrays()) if strategy.rounds else initial
    model_path = output_dir / MODEL_FILE
    np.savez(model_path, *final)
    holdout = None
    with stage("holdout", "global held-out evaluation"):
        if spec.holdout:
            holdout = _holdout(spec, transport, settings, final)
    progress.report("job", len(STAGES), len(STAGES), "done")
    rounds = [r.to_dict() for r in strategy.rounds]
    last = rounds[-1] if rounds else {}
    return JobResult(
        job_id=spec.job_id,
        name=spec.name,
        kind=spec.kind,
        model_type=spec.model_type,
        parties=parties,
        n_aligned=None,
        n_train=sum(s[0] for s in sizes.values()),
        n_test=sum(s[1] for s in sizes.values()),
        joint=JointOutcome(
            status="trained",
            report=holdout,
            details={
                "rounds": rounds,
                "bank_side": last.get("evaluate", {}),
                "bank_alone": alone,
                "settings": json.loads(settings.to_json()),
                "model_file": str(model_path),
                "n_train_by_bank": n_train,
                "privacy_events_by_bank": _privacy_events(rounds),
                "epsilon_by_bank": _latest(rounds, "epsilon"),
                "planned_epsilon_by_bank": _latest(rounds, "planned_epsilon"),
                "secure_aggregation": _secagg_summary(strategy, rounds),
            },
        ),
        bank_only={
            bank: EvaluationReport.from_dict(reports["own_test"]) for bank, reports in alone.items()
        },
        stage_seconds=clock.seconds,
        traffic=transport.stats.to_dict(),
    )


def _job_nodes(spec: JobSpec, transport: FlowerTransport) -> dict[str, int]:
    """The nodes of the job's own parties.

    A SuperLink may serve other parties' nodes too (they answered ``job/hello`` without
    joining); a strategy must never sample them.
    """
    names = {p.name for p in spec.parties}
    return {party: node for party, node in transport.node_of.items() if party in names}


def _strategy(spec: JobSpec, transport: FlowerTransport, n_train: dict[str, int]) -> JobStrategy:
    model = dict(spec.model)
    n = len(n_train)
    common: dict[str, Any] = {
        "fraction_train": 1.0,
        "fraction_evaluate": 1.0,
        "min_train_nodes": n,
        "min_evaluate_nodes": n,
        "min_available_nodes": n,
    }
    inner: FedAvg
    if model["strategy"] == "fedprox":
        inner = FedProx(proximal_mu=float(model["proximal_mu"]), **common)
    else:
        inner = FedAvg(**common)
    return JobStrategy(inner, transport, n_train, secure_aggregation_plan(spec))


def _initial_arrays(settings: HorizontalSettings) -> list[np.ndarray]:
    from models.horizontal import parameters_to_arrays

    model = settings.new_model(settings.encoder().n_outputs)
    return [np.asarray(a) for a in parameters_to_arrays(model)]


def _alone(
    spec: JobSpec, transport: FlowerTransport, banks: list[str], settings: HorizontalSettings
) -> dict[str, dict[str, Any]]:
    requests = [
        Envelope(PROTOCOL, "alone", COORDINATOR, b, {"settings": settings.to_json()}) for b in banks
    ]
    out: dict[str, dict[str, Any]] = {}
    for env in run_protocol(transport, requests):
        out[env.sender] = {
            k: json.loads(env.text(k)) for k in ("own_test", "holdout") if k in env.payload
        }
    return out


def _holdout(
    spec: JobSpec,
    transport: FlowerTransport,
    settings: HorizontalSettings,
    arrays: list[np.ndarray],
) -> EvaluationReport:
    assert spec.holdout is not None
    party = str(spec.holdout["party"])
    payload: dict[str, Any] = {"settings": settings.to_json(), "n_arrays": len(arrays)}
    payload.update({f"a{i}": np.asarray(a) for i, a in enumerate(arrays)})
    replies = run_protocol(transport, [Envelope(PROTOCOL, "holdout", COORDINATOR, party, payload)])
    return EvaluationReport.from_dict(replies[0].json("report"))


def _latest(rounds: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Each bank's latest reported value of ``key`` (from its train or evaluate reports)."""
    out: dict[str, float] = {}
    for record in rounds:
        for part in ("train", "evaluate"):
            for bank, metrics in record[part].items():
                if key in metrics:
                    out[bank] = float(metrics[key])
    return out


def _privacy_events(rounds: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each bank's DP-SGD events, from its latest report (each bank's records are its own).

    Events of different banks protect different records and are never composed together:
    the job's ε is the largest bank's.
    """
    latest: dict[str, dict[str, float]] = {}
    for record in rounds:
        for part in ("train", "evaluate"):
            for bank, metrics in record[part].items():
                if "dp_steps" in metrics:
                    latest[bank] = metrics
    events: dict[str, list[dict[str, Any]]] = {}
    for bank in sorted(latest):
        m = latest[bank]
        event = PrivacyEvent(
            noise_multiplier=float(m["dp_noise_multiplier"]),
            sample_rate=float(m["dp_sample_rate"]),
            steps=int(m["dp_steps"]),
            unit="record",
            mechanism="dp-sgd",
        )
        events[bank] = [event.to_dict()]
    return events


def _secagg_summary(strategy: JobStrategy, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    plan = strategy.plan
    if plan is None:
        return {"enabled": False, "dropouts_tolerated": 0}
    n = len(strategy.n_train)
    size = n if plan.neighbours is None or plan.neighbours >= n - 1 else plan.neighbours + 1
    return {
        "enabled": True,
        "dropouts_tolerated": size - plan.threshold,
        "threshold": plan.threshold,
        "neighbourhood_size": size,
        "clipping_range": plan.clipping_range,
        "quantization_bits": plan.quantization_bits,
        "error_bound_per_coordinate": max(
            (r["error_bound"] for r in rounds if r["error_bound"] is not None), default=None
        ),
        "dropouts": {str(r["round"]): r["dropped"] for r in rounds if r["dropped"]},
        "clipped_coordinates": sum(int(r["clipped_coordinates"]) for r in rounds),
        "prg": "ChaCha20 keyed by HKDF(X25519 agreement | 32-byte seed from secrets)",
    }
