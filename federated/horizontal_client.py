"""A bank's Flower ``train`` and ``evaluate`` handlers for horizontal jobs.

``train``: load the global model, train on this bank's training rows (FedAvg/FedProx, with
record-level DP-SGD when the job asks for it, the accountant's history kept in the node's own
state so ε is cumulative across rounds), and answer with the new weights and the number of
examples, or, with secure aggregation, only a masked vector of the weighted update.
``evaluate``: score the global model on this bank's test rows (bank-side evaluation).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from federated.codec import decode, encode
from federated.horizontal_protocol import SETTINGS_KEY, HorizontalSettings, local_data
from federated.party import PartyRuntime
from federated.secagg_party import masked_update
from models.horizontal import (
    DPConfig,
    DPState,
    FeatureEncoder,
    arrays_to_parameters,
    evaluate_local,
    parameters_to_arrays,
    plan_noise,
    train_local,
)
from models.protocol import ProtocolError

_DP_STATE = "hz.dp_state"


def _settings(message: Message) -> HorizontalSettings:
    config = message.content.config_records.get("config")
    if config is None or SETTINGS_KEY not in config:
        raise ProtocolError("horizontal round message lacks the job's settings")
    return HorizontalSettings.from_json(str(config[SETTINGS_KEY]))


def _global_arrays(message: Message) -> list[np.ndarray]:
    record = message.content.array_records.get("arrays")
    if record is None:
        raise ProtocolError("horizontal round message lacks the global model")
    return list(record.to_numpy_ndarrays())


def train(runtime: PartyRuntime, message: Message) -> Message:
    """One local round; see the module docstring."""
    settings = _settings(message)
    encoder = FeatureEncoder.from_schema(settings.schema)
    features, labels = local_data(runtime, encoder, test=False)
    model = settings.new_model(encoder.n_outputs)
    global_arrays = _global_arrays(message)
    arrays_to_parameters(model, global_arrays)
    local = replace(settings.local_config(), seed=local_seed(runtime, settings, message))
    dp = None
    dp_state = None
    if settings.dp is not None:
        dp = DPConfig.from_dict(settings.dp)
        raw = runtime.store.get_json(_DP_STATE)
        if raw is None:
            plan = plan_noise(
                dp,
                n_examples=len(labels),
                batch_size=local.batch_size,
                epochs_per_round=local.epochs,
                rounds=settings.rounds,
            )
            dp_state = DPState.start(plan)
        else:
            dp_state = DPState.from_dict(raw)
    result = train_local(
        model, features, labels, local, global_arrays=global_arrays, dp=dp, dp_state=dp_state
    )
    metrics: dict[str, Any] = {"num-examples": result.n_examples}
    if result.dp_state is not None and dp is not None:
        runtime.store.put_json(_DP_STATE, result.dp_state.to_dict())
        metrics.update(dp_metrics(result.dp_state, dp))
    else:
        metrics["train_loss"] = result.train_loss  # not DP: only reported without DP
    content: dict[str, Any] = {"metrics": MetricRecord(metrics)}
    if settings.secure_aggregation:
        requests = [e for e in decode(message.content) if e.protocol == "secagg"]
        if len(requests) != 1:
            raise ProtocolError(
                "a secure-aggregation round needs exactly one masked-vector request"
            )
        request = requests[0]
        weight = float(request.payload["weight"])  # type: ignore[arg-type]
        delta = np.concatenate(
            [
                (np.asarray(new, dtype=np.float64) - np.asarray(old, dtype=np.float64)).ravel()
                for new, old in zip(result.arrays, global_arrays, strict=True)
            ]
        )
        vector = np.concatenate([delta * weight, [weight]])
        clipped = int(np.count_nonzero(np.abs(vector) > settings.clipping_range))
        metrics["clipped_coordinates"] = clipped
        content["metrics"] = MetricRecord(metrics)
        envelope = masked_update(runtime, request, vector)
        records = encode([envelope])
        for key, record in records.items():
            content[key] = record
    else:
        content["arrays"] = ArrayRecord([np.asarray(a) for a in result.arrays])
    return Message(RecordDict(content), reply_to=message)


def local_seed(runtime: PartyRuntime, settings: HorizontalSettings, message: Message) -> int:
    """Seed of this bank's data shuffling in this round, derived from the job's seed.

    Makes a job without DP reproducible (same seed, same data: same model, with or without
    secure aggregation up to its quantisation). DP noise and sampling never use it.
    """
    config = message.content.config_records.get("config")
    server_round = int(config.get("server-round", 0)) if config is not None else 0  # type: ignore[arg-type]
    index = [p.name for p in runtime.job().parties].index(runtime.name)
    return (settings.seed * 1_000_003 + server_round * 7_919 + index) % 2**31


def evaluate(runtime: PartyRuntime, message: Message) -> Message:
    """Score the global model on this bank's test rows."""
    settings = _settings(message)
    encoder = FeatureEncoder.from_schema(settings.schema)
    features, labels = local_data(runtime, encoder, test=True)
    model = settings.new_model(encoder.n_outputs)
    arrays_to_parameters(model, _global_arrays(message))
    report = evaluate_local(model, features, labels)
    metrics: dict[str, Any] = {
        "num-examples": report.n,
        "auc": report.auc,
        "ks": report.ks,
        "brier": report.brier,
    }
    raw = runtime.store.get_json(_DP_STATE)
    if raw is not None and settings.dp is not None:
        metrics.update(dp_metrics(DPState.from_dict(raw), DPConfig.from_dict(settings.dp)))
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=message)


def dp_metrics(state: DPState, dp: DPConfig) -> dict[str, float | int]:
    """What a bank reports about its DP accounting: cumulative ε and the events behind it.

    ``epsilon`` is the accountant's value for every step taken so far (all rounds);
    ``planned_epsilon`` is what the plan promised for the whole job. The event fields let the
    coordinator recompose ε for the budget ledger with the same accountant.
    """
    return {
        "epsilon": state.epsilon(dp.target_delta, dp.accountant),
        "planned_epsilon": state.plan.planned_epsilon,
        "dp_steps": state.steps_taken,
        "dp_noise_multiplier": state.plan.noise_multiplier,
        "dp_sample_rate": state.plan.sample_rate,
    }


def model_arrays(model: Any) -> list[np.ndarray]:
    """The model's parameters in the wire order (for the coordinator's initial model)."""
    return [np.asarray(a) for a in parameters_to_arrays(model)]
