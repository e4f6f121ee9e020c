"""A view of the ServerApp's grid for one job: its own nodes only, every message accounted.

Flower strategies sample nodes from ``grid.get_node_ids()`` and move messages with
``grid.send_and_receive``. :class:`JobGrid` wraps the real grid so that a strategy sees only the
job's party nodes (a SuperLink may serve other nodes), and so that every Flower message of the
job, not only lab envelopes, is counted in the job's traffic and, when capture is on, written
to the capture log: an auditor (or a test) sees exactly what the coordinator received.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from federated.codec import decode
from federated.transport import Direction, Tap, TrafficStats
from models.protocol import COORDINATOR, Envelope, PayloadValue

#: Protocol name under which Flower's own messages (train, evaluate) appear in captures.
FLOWER_PROTOCOL = "flower"
_LAB_COUNT = "lab.count"


def record_bytes(content: RecordDict) -> int:
    """Payload bytes of a message: array data, plus JSON size of config and metric values."""
    total = 0
    for arrays in content.array_records.values():
        total += sum(len(array.data) for array in arrays.values())
    records: list[ConfigRecord | MetricRecord] = [
        *content.config_records.values(),
        *content.metric_records.values(),
    ]
    for record in records:
        for key, value in record.items():
            total += len(key)
            if isinstance(value, bytes):
                total += len(value)
            else:
                total += len(json.dumps(value, default=str))
    return total


def flower_view(content: RecordDict) -> dict[str, PayloadValue]:
    """The non-envelope part of a Flower message as a flat payload (for captures)."""
    payload: dict[str, PayloadValue] = {}
    for key, arrays in content.array_records.items():
        if key.startswith("e") and key.endswith(".a"):
            continue  # arrays of lab envelopes: captured with their envelope
        for name, array in arrays.items():
            payload[f"{key}/{name}"] = array.numpy()
    for key, metrics in content.metric_records.items():
        for name, metric in metrics.items():
            payload[f"{key}/{name}"] = _scalar(metric)
    for key, record in content.config_records.items():
        if key == _LAB_COUNT or (key.startswith("e") and key[1:].isdigit()):
            continue
        for name, value in record.items():
            payload[f"{key}/{name}"] = _scalar(value)
    return payload


def _scalar(value: Any) -> PayloadValue:
    if isinstance(value, list):
        return np.asarray(value)
    if isinstance(value, int | float | str | bytes | bool):
        return value
    return str(value)


class JobGrid(Grid):
    """The job's nodes of ``grid``, with traffic accounting and capture.

    Parameters
    ----------
    grid : Grid
        The ServerApp's grid.
    party_of : callable
        Maps a node id to the party it acts for, or ``None`` for nodes outside the job.
    stats : TrafficStats
        Where message bytes are counted (the job transport's, so totals cover both).
    tap : callable, optional
        Sees every message as envelopes (Flower part as protocol ``flower``).
    """

    def __init__(
        self,
        grid: Grid,
        party_of: Callable[[int], str | None],
        stats: TrafficStats,
        tap: Tap | None = None,
    ) -> None:
        self._grid = grid
        self._party_of = party_of
        self.stats = stats
        self.tap = tap

    # The four abstract methods Flower's strategies and helpers use.
    def set_run(self, run: Any) -> None:
        """Delegate to the real grid."""
        self._grid.set_run(run)

    @property
    def run(self) -> Any:
        """The real grid's run."""
        return self._grid.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:  # pragma: no cover - legacy
        """Delegate to the real grid."""
        return self._grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        """Node ids of the job's parties (nodes of other parties are invisible)."""
        return [n for n in self._grid.get_node_ids() if self._party_of(n) is not None]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Push (and account) messages."""
        messages = list(messages)
        for message in messages:
            self._account("to_party", message, message.metadata.dst_node_id)
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Pull (and account) replies."""
        replies = list(self._grid.pull_messages(message_ids))
        for reply in replies:
            self._account("from_party", reply, reply.metadata.src_node_id)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Send, wait, account; one hop in the job's statistics."""
        messages = list(messages)
        for message in messages:
            self._account("to_party", message, message.metadata.dst_node_id)
        started = time.monotonic()
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        self.stats.hop(time.monotonic() - started)
        for reply in replies:
            self._account("from_party", reply, reply.metadata.src_node_id)
        return replies

    def _account(self, direction: Direction, message: Message, node: int) -> None:
        party = self._party_of(node) or f"node-{node}"
        if message.has_error():
            return
        content = message.content
        size = record_bytes(content)
        if direction == "to_party":
            self.stats.downloaded[party] += size
        else:
            self.stats.uploaded[party] += size
        self.stats.envelopes += 1
        if self.tap is None:
            return
        sender, recipient = (
            (COORDINATOR, party) if direction == "to_party" else (party, COORDINATOR)
        )
        self.tap(
            direction,
            Envelope(
                FLOWER_PROTOCOL,
                message.metadata.message_type,
                sender,
                recipient,
                flower_view(content),
            ),
        )
        if _LAB_COUNT in content.config_records:
            for envelope in decode(content):
                self.tap(direction, envelope)


def party_lookup(node_of: Mapping[str, int]) -> Callable[[int], str | None]:
    """Node id -> party name, from a transport's party -> node map."""
    inverse = {node: party for party, node in node_of.items()}
    return inverse.get
