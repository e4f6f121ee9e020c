"""The ClientApp: one per party node, acting for the party its node config names.

On the deployment engine the SuperNode's ``node_config`` holds ``party``, ``role`` and
``data`` (the party's own data file or directory). In the embedded simulation the lab that
starts the job passes the same three values per simulated node in the run config key
``sim-parties``, indexed by Flower's ``partition-id``.
"""

from __future__ import annotations

import json

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from features.errors import DataError
from federated.codec import decode, encode
from federated.context_store import ContextStore
from federated.faults import FaultDrill
from federated.horizontal_protocol import horizontal_errors
from federated.party import EXPECTED_ERRORS, PartyRuntime
from federated.protocols import party_protocols
from federated.spec import PartyBinding, SpecError

app = ClientApp()


def binding_from_context(context: Context) -> tuple[PartyBinding, bool]:
    """Return the party this node acts for and whether it discloses full error messages."""
    node = context.node_config
    if "party" in node:
        binding = PartyBinding.from_mapping(node, source="node config")
        return binding, str(node.get("disclose-errors", "false")).lower() == "true"
    raw = str(context.run_config.get("sim-parties", ""))
    if not raw or "partition-id" not in node:
        raise SpecError(
            "this node's config names no party; start the SuperNode with "
            "--node-config \"party='NAME' role='bank|platform' data='PATH'\""
        )
    entries = json.loads(raw)
    index = int(node["partition-id"])
    if not 0 <= index < len(entries):
        raise SpecError(f"simulated node {index} has no party in 'sim-parties'")
    entry = entries[index]
    return PartyBinding.from_mapping(entry, source="sim-parties"), bool(entry.get("disclose"))


def runtime_for(context: Context) -> PartyRuntime:
    """The party runtime of this node: its binding, its persistent state, its protocols."""
    binding, disclose = binding_from_context(context)
    return PartyRuntime(
        binding,
        ContextStore(context.state),
        party_protocols(),
        disclose_errors=disclose,
        run_id=int(context.run_id),
    )


@app.query("lab")
def lab(message: Message, context: Context) -> Message:
    """Handle every envelope of one hop for this node's party."""
    runtime = runtime_for(context)
    drill = FaultDrill.parse(runtime.binding.fault)
    envelopes = decode(message.content)
    for envelope in envelopes:
        server_round = envelope.payload.get("server_round")
        drill.check(
            f"{envelope.protocol}/{envelope.stage}",
            server_round if isinstance(server_round, int) else None,
        )
    replies = []
    for envelope in envelopes:
        replies.extend(runtime.dispatch(envelope))
    return Message(encode(replies), reply_to=message)


@app.query("ping")
def ping(message: Message, context: Context) -> Message:
    """Echo a hop-latency probe (:mod:`federated.ping_app`); reads no party data."""
    del context
    return Message(message.content, reply_to=message)


def _server_round(message: Message) -> int | None:
    config = message.content.config_records.get("config")
    value = config.get("server-round") if config is not None else None
    return value if isinstance(value, int) else None


class PartyStepError(RuntimeError):
    """A Flower train/evaluate step failed at a party; the message is safe to share."""


def _flower_step(kind: str, message: Message, context: Context) -> Message:
    runtime = runtime_for(context)
    FaultDrill.parse(runtime.binding.fault).check(kind, _server_round(message))
    runtime.touch()
    from federated import horizontal_client  # torch loads only for horizontal jobs

    step = horizontal_client.train if kind == "train" else horizontal_client.evaluate
    try:
        with horizontal_errors():
            return step(runtime, message)
    except EXPECTED_ERRORS as exc:
        shared = (
            exc.redacted if isinstance(exc, DataError) and not runtime.disclose_errors else str(exc)
        )
        raise PartyStepError(
            f"party '{runtime.name}' ({kind}): {type(exc).__name__}: {shared}"
        ) from None


@app.train()
def train(message: Message, context: Context) -> Message:
    """One local round of a horizontal job (see :mod:`federated.horizontal_client`)."""
    return _flower_step("train", message, context)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """Bank-side evaluation of a horizontal job's global model."""
    return _flower_step("evaluate", message, context)
