"""A ServerApp that measures one message hop: a tiny message to one node and its reply.

Each round sends one ``query.ping`` message to each connected node in turn and times the
round trip (push, the node's poll, its ClientApp's execution, the reply, the coordinator's
pull). Writes ``ping.json`` (``{"seconds": [...], "nodes": n}``) into the run config's
``result-dir``. The ClientApp's ``ping`` handler (:mod:`federated.client_app`) echoes the
message without touching any party data.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from federated.flower_transport import FlowerTransport
from federated.server_app import parse_poll, write_error

PING_FILE = "ping.json"
MESSAGE_TYPE = "query.ping"

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Time ``rounds`` round trips to every node."""
    config = context.run_config
    result_dir = Path(str(config["result-dir"]))
    rounds = int(str(config.get("rounds", 20)))
    expected = int(str(config.get("nodes", 2)))
    timeout = float(str(config.get("timeout", 600.0)))
    transport = FlowerTransport(
        grid, expected, timeout=timeout, poll=parse_poll(str(config.get("poll", "")))
    )
    try:
        deadline = time.monotonic() + timeout
        while len(nodes := sorted(grid.get_node_ids())) < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(nodes)} of {expected} nodes connected")
            time.sleep(0.05)
        seconds: list[float] = []
        for index in range(rounds):
            for node in nodes:
                content = RecordDict({"ping": ConfigRecord({"round": index})})
                message = Message(content=content, dst_node_id=node, message_type=MESSAGE_TYPE)
                started = time.monotonic()
                replies = transport.send_and_receive([message], timeout)
                elapsed = time.monotonic() - started
                if len(replies) != 1 or replies[0].has_error():
                    raise RuntimeError(f"node {node} did not answer ping {index}")
                seconds.append(elapsed)
        payload = {"seconds": seconds, "nodes": len(nodes), "rounds": rounds}
        (result_dir / PING_FILE).write_text(json.dumps(payload), encoding="utf-8")
    except Exception as exc:  # the benchmark must learn why
        write_error(result_dir, type(exc).__name__, str(exc))
