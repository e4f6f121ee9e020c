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

from federated.codec import decode, encode
from federated.context_store import ContextStore
from federated.party import PartyRuntime
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


@app.query("lab")
def lab(message: Message, context: Context) -> Message:
    """Handle every envelope of one hop for this node's party."""
    binding, disclose = binding_from_context(context)
    runtime = PartyRuntime(
        binding, ContextStore(context.state), party_protocols(), disclose_errors=disclose
    )
    replies = []
    for envelope in decode(message.content):
        replies.extend(runtime.dispatch(envelope))
    return Message(encode(replies), reply_to=message)
