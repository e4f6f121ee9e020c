"""The coordinator's transport over Flower's Message API (``Grid``).

Each hop is one ``send_and_receive`` with one message per node; a node's message carries every
envelope for it (see :mod:`federated.codec`). The first hop, ``hello``, goes to every node
and learns which node acts for which party; afterwards a node may only speak for its party.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence

from flwr.app import Message
from flwr.serverapp import Grid

from federated import interrupt
from federated.codec import decode, encode
from federated.party import ERROR_PROTOCOL, ERROR_STAGE
from federated.transport import Direction, Tap, TrafficStats, TransportError
from models.protocol import ANY_PARTY, COORDINATOR, Envelope

logger = logging.getLogger(__name__)

#: Flower message type of every lab protocol message.
MESSAGE_TYPE = "query.lab"


def error_reason(reason: str | bytes | None) -> str:
    """The failing node's own message out of a Flower error reason (which may hold a traceback).

    The simulation engine wraps a ClientApp exception as ``... Message: <text>'>``; the
    deployment engine passes the text more directly. Either way, return the last message.
    """
    if reason is None:
        return "unknown error"
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    marker = "Message: "
    if marker in reason:
        reason = reason.rsplit(marker, 1)[1]
    return reason.strip().rstrip(">").strip().strip("'").strip() or "unknown error"


def _reply_node(reply: Message, sent: Sequence[Message]) -> int:
    """The node a reply answers for.

    An error reply the SuperLink makes for an unreachable node (``Node Unavailable``) comes
    from the SuperLink itself, so the node is found from the message it replies to.
    """
    for message in sent:
        if message.metadata.message_id == reply.metadata.reply_to_message_id:
            return int(message.metadata.dst_node_id)
    return int(reply.metadata.src_node_id)


class FlowerTransport:
    """Delivers envelopes to party nodes through a Flower ``Grid``.

    Parameters
    ----------
    grid : Grid
        The ServerApp's grid.
    expected_nodes : int
        How many party nodes the job needs; :meth:`hello` waits for them.
    timeout : float
        Seconds to wait for the replies of one hop (and for nodes to connect) before failing.
    tap : callable, optional
        Sees every envelope delivered to or received from a party (message capture).
    poll : tuple of float, optional
        ``(fastest, slowest)`` seconds between pulls for replies on the deployment engine,
        backing off geometrically while no reply arrives. ``None`` keeps the grid's own
        ``send_and_receive`` (Flower 1.41's HTTP grid pulls every 3 s).
    """

    def __init__(
        self,
        grid: Grid,
        expected_nodes: int,
        *,
        timeout: float,
        tap: Tap | None = None,
        poll: tuple[float, float] | None = None,
    ) -> None:
        self.grid = grid
        self.expected_nodes = expected_nodes
        self.timeout = timeout
        self.tap = tap
        self.poll = poll
        self.stats = TrafficStats()
        self._node_of: dict[str, int] = {}
        self._party_of: dict[int, str] = {}
        if hasattr(grid, "pull_interval"):
            # The in-memory grid of the simulation runtime polls for replies every 0.1 s by
            # default; protocols with hundreds of hops (SecureBoost) feel every poll.
            grid.pull_interval = 0.01

    def hello(self, envelope: Envelope) -> list[Envelope]:
        """Send ``envelope`` to every connected node and map nodes to parties."""
        node_ids = self._wait_for_nodes()
        hello = Envelope(
            envelope.protocol, envelope.stage, envelope.sender, ANY_PARTY, envelope.payload
        )
        replies_by_node = self._hop({node: [hello] for node in node_ids}, observe_out=False)
        replies: list[Envelope] = []
        for node, envs in replies_by_node.items():
            for env in envs:
                # Count the hello as delivered to the party that answered it.
                self._observe(
                    "to_party",
                    Envelope(hello.protocol, hello.stage, hello.sender, env.sender, hello.payload),
                )
                if env.recipient != COORDINATOR:
                    raise TransportError(f"node {node} answered hello to '{env.recipient}'")
                if env.sender in self._node_of and self._node_of[env.sender] != node:
                    raise TransportError(
                        f"two nodes claim to act for party '{env.sender}'; each party runs "
                        "exactly one node"
                    )
                self._node_of[env.sender] = node
                self._party_of[node] = env.sender
                replies.append(env)
        return replies

    def exchange(self, envelopes: Sequence[Envelope]) -> list[Envelope]:
        """Deliver envelopes, one message per recipient node, and collect the replies."""
        batches: dict[int, list[Envelope]] = defaultdict(list)
        for env in envelopes:
            node = self._node_of.get(env.recipient)
            if node is None:
                raise TransportError(f"no node acts for party '{env.recipient}'")
            batches[node].append(env)
        replies = []
        for node, envs in self._hop(batches).items():
            party = self._party_of[node]
            for env in envs:
                if env.sender != party:
                    raise TransportError(f"node of party '{party}' sent as '{env.sender}'")
                replies.append(env)
        return replies

    @property
    def joined(self) -> list[str]:
        """Parties whose node answered ``hello``."""
        return list(self._node_of)

    @property
    def node_of(self) -> dict[str, int]:
        """Which node acts for which party (known after :meth:`hello`)."""
        return dict(self._node_of)

    def exchange_partial(
        self, envelopes: Sequence[Envelope], *, timeout: float, final: bool = False
    ) -> tuple[list[Envelope], dict[str, str]]:
        """Like :meth:`exchange`, but a party that fails or stays silent is reported, not fatal.

        For protocols that tolerate dropouts (secure aggregation): returns the replies of the
        parties that answered and, for each that did not, why (its error, or silence within
        ``timeout`` seconds). ``final``: the last hop of a job (``job/end``), delivered even
        after a stop was requested.
        """
        batches: dict[int, list[Envelope]] = defaultdict(list)
        for env in envelopes:
            node = self._node_of.get(env.recipient)
            if node is None:
                raise TransportError(f"no node acts for party '{env.recipient}'")
            batches[node].append(env)
        messages = []
        for node, envs in batches.items():
            for env in envs:
                self._observe("to_party", env)
            messages.append(
                Message(content=encode(envs), dst_node_id=node, message_type=MESSAGE_TYPE)
            )
        started = time.monotonic()
        raw = self.send_and_receive(messages, timeout, interruptible=not final)
        self.stats.hop(time.monotonic() - started)
        replies: list[Envelope] = []
        failed: dict[str, str] = {}
        answered = set()
        for reply in raw:
            node = _reply_node(reply, messages)
            party = self._party_of.get(node, str(node))
            answered.add(node)
            if reply.has_error():
                failed[party] = f"node failed: {error_reason(reply.error.reason)}"
                continue
            for env in decode(reply.content):
                self._observe("from_party", env)
                if env.sender != party:
                    raise TransportError(f"node of party '{party}' sent as '{env.sender}'")
                if env.protocol == ERROR_PROTOCOL and env.stage == ERROR_STAGE:
                    failed[party] = f"{env.text('error_type')}: {env.text('message')}"
                else:
                    replies.append(env)
        for node in batches:
            if node not in answered:
                failed[self._party_of.get(node, str(node))] = f"no reply within {timeout:.0f} s"
        return replies, failed

    def _wait_for_nodes(self) -> list[int]:
        deadline = time.monotonic() + self.timeout
        while True:
            # A requested stop ends the wait too: the runtime may have failed to start its
            # nodes at all (Ray not up in time on a loaded machine), and nothing else would.
            interrupt.check()
            node_ids = sorted(self.grid.get_node_ids())
            if len(node_ids) >= self.expected_nodes:
                return node_ids
            if time.monotonic() > deadline:
                raise TransportError(
                    f"only {len(node_ids)} of {self.expected_nodes} party nodes connected "
                    f"within {self.timeout:.0f} s; start the missing SuperNodes"
                )
            time.sleep(0.05)

    def _hop(
        self, batches: dict[int, list[Envelope]], *, observe_out: bool = True
    ) -> dict[int, list[Envelope]]:
        messages = []
        for node, envs in batches.items():
            for env in envs:
                if observe_out:
                    self._observe("to_party", env)
            messages.append(
                Message(content=encode(envs), dst_node_id=node, message_type=MESSAGE_TYPE)
            )
        started = time.monotonic()
        replies = self.send_and_receive(messages, self.timeout)
        self.stats.hop(time.monotonic() - started)
        logger.debug("hop to %d node(s): %.3f s", len(messages), time.monotonic() - started)
        by_node: dict[int, list[Envelope]] = {}
        for reply in replies:
            node = _reply_node(reply, messages)
            if reply.has_error():
                error = reply.error
                raise TransportError(
                    f"node of party '{self._party_of.get(node, node)}' failed: "
                    f"{error_reason(error.reason)}"
                )
            envs = decode(reply.content)
            for env in envs:
                self._observe("from_party", env)
            by_node[node] = envs
        missing = [n for n in batches if n not in by_node]
        if missing:
            who = ", ".join(f"'{self._party_of.get(n, n)}'" for n in missing)
            raise TransportError(
                f"no reply from {who} within {self.timeout:.0f} s; the party's node may have "
                "stopped"
            )
        return by_node

    def send_and_receive(
        self, messages: list[Message], timeout: float, *, interruptible: bool = True
    ) -> list[Message]:
        """Push ``messages`` and pull their replies until all arrived or ``timeout`` passed.

        One hop at the Flower level (no lab envelopes, no traffic accounting). With ``poll``
        set, replies are pulled adaptively instead of at the grid's own fixed interval (the
        simulation's in-memory grid: every ``pull_interval``). Between pulls a requested stop
        (:mod:`federated.interrupt`) ends the wait, unless ``interruptible`` is off.
        """
        if self.poll is not None:
            fastest, slowest = self.poll
        elif hasattr(self.grid, "pull_interval"):
            fastest = slowest = float(self.grid.pull_interval)
        else:
            return list(self.grid.send_and_receive(messages, timeout=timeout))
        waiting = set(self.grid.push_messages(messages))
        deadline = time.monotonic() + timeout
        delay = fastest
        replies: list[Message] = []
        while waiting:
            if interruptible:
                interrupt.check()
            pulled = list(self.grid.pull_messages(waiting))
            replies.extend(pulled)
            waiting -= {m.metadata.reply_to_message_id for m in pulled}
            left = deadline - time.monotonic()
            if not waiting or left <= 0:
                break
            delay = fastest if pulled else min(slowest, delay * 1.5)
            time.sleep(min(delay, left))
        return replies

    def _observe(self, direction: Direction, env: Envelope) -> None:
        self.stats.record(direction, env)
        if self.tap is not None:
            self.tap(direction, env)
