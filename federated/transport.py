"""Moving envelopes between the coordinator and the parties.

A :class:`Transport` delivers a batch of envelopes to their parties in one hop and returns
what the parties answered. :func:`run_protocol` is the coordinator's relay loop on top of it:
envelopes a party addresses to another party are forwarded on the next hop, envelopes
addressed to the coordinator are handed to the coordinator's step. Everything a protocol
sends therefore passes the coordinator, which is what a message-capture test observes.

:class:`InProcessTransport` calls party runtimes directly (unit tests, notebooks);
:class:`federated.flower_transport.FlowerTransport` sends Flower messages (jobs).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from federated.party import ERROR_PROTOCOL, ERROR_STAGE, PartyRuntime
from models.protocol import COORDINATOR, Envelope, ProtocolError

Direction = Literal["to_party", "from_party"]
Tap = Callable[[Direction, Envelope], None]


class TransportError(RuntimeError):
    """A hop could not be completed: a party is missing, silent, or answered twice."""


class PartyError(RuntimeError):
    """A party reported that a protocol step failed.

    Attributes
    ----------
    party, error_type, stage : str
        Who failed, the error class at the party, and the protocol stage it was running.
    """

    def __init__(self, party: str, error_type: str, message: str, stage: str) -> None:
        super().__init__(f"party '{party}' ({stage}): {message}")
        self.party = party
        self.error_type = error_type
        self.stage = stage


@dataclass
class TrafficStats:
    """Hops, envelopes and payload bytes that crossed the coordinator, per party."""

    hops: int = 0
    envelopes: int = 0
    uploaded: Counter[str] = field(default_factory=Counter)
    downloaded: Counter[str] = field(default_factory=Counter)
    hop_seconds: list[float] = field(default_factory=list)

    def hop(self, seconds: float) -> None:
        """Count one completed hop and how long it took (parties' compute included)."""
        self.hops += 1
        self.hop_seconds.append(seconds)

    def record(self, direction: Direction, envelope: Envelope) -> None:
        """Count one envelope delivered to, or received from, a party."""
        size = envelope.nbytes()
        self.envelopes += 1
        if direction == "to_party":
            self.downloaded[envelope.recipient] += size
        else:
            self.uploaded[envelope.sender] += size

    def copy(self) -> TrafficStats:
        """A snapshot, to measure one stage as the difference of two."""
        return TrafficStats(
            self.hops,
            self.envelopes,
            Counter(self.uploaded),
            Counter(self.downloaded),
            list(self.hop_seconds),
        )

    def since(self, earlier: TrafficStats) -> TrafficStats:
        """Traffic between ``earlier`` (a snapshot) and now."""
        return TrafficStats(
            self.hops - earlier.hops,
            self.envelopes - earlier.envelopes,
            self.uploaded - earlier.uploaded,
            self.downloaded - earlier.downloaded,
            self.hop_seconds[len(earlier.hop_seconds) :],
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form."""
        return {
            "hops": self.hops,
            "envelopes": self.envelopes,
            "bytes_sent": dict(self.uploaded),
            "bytes_received": dict(self.downloaded),
            "hop_seconds": [round(s, 3) for s in self.hop_seconds],
        }


class Transport(Protocol):
    """Delivers envelopes to parties, one hop at a time."""

    stats: TrafficStats

    def hello(self, envelope: Envelope) -> list[Envelope]:
        """Deliver ``envelope`` (recipient ``ANY_PARTY``) to every party node.

        Returns each node's reply; afterwards the transport knows which node is which party.
        """

    def exchange(self, envelopes: Sequence[Envelope]) -> list[Envelope]:
        """Deliver envelopes to their recipients in one hop and return all replies."""

    def exchange_partial(
        self, envelopes: Sequence[Envelope], *, timeout: float, final: bool = False
    ) -> tuple[list[Envelope], dict[str, str]]:
        """Like :meth:`exchange`, but return the failures (party -> why) instead of raising.

        ``final``: the job's last hop, delivered even after a stop was requested.
        """

    @property
    def joined(self) -> list[str]:
        """Parties whose node answered ``hello``."""


def raise_for_errors(replies: Sequence[Envelope]) -> None:
    """Raise :class:`PartyError` for the first error envelope among ``replies``."""
    for env in replies:
        if env.protocol == ERROR_PROTOCOL and env.stage == ERROR_STAGE:
            raise PartyError(
                env.sender,
                str(env.payload.get("error_type", "Error")),
                str(env.payload.get("message", "")),
                str(env.payload.get("while", "?")),
            )


CoordinatorStep = Callable[[Envelope], Sequence[Envelope]]


def run_protocol(
    transport: Transport,
    envelopes: Sequence[Envelope],
    coordinator: CoordinatorStep | None = None,
) -> list[Envelope]:
    """Relay envelopes until no party has anything left to send.

    Parameters
    ----------
    transport : Transport
        Moves one hop of envelopes.
    envelopes : sequence of Envelope
        The first hop.
    coordinator : callable, optional
        Called with every envelope addressed to the coordinator; returns envelopes to send on
        the next hop (secure aggregation sums, for instance). Without it the coordinator only
        relays.

    Returns
    -------
    list of Envelope
        Every envelope addressed to the coordinator, in arrival order.

    Raises
    ------
    PartyError
        As soon as a party reports a failed step.
    """
    pending = list(envelopes)
    received: list[Envelope] = []
    while pending:
        for env in pending:
            if env.sender != COORDINATOR and env.recipient == COORDINATOR:
                raise ProtocolError(f"envelope from '{env.sender}' to the coordinator not routed")
        replies = transport.exchange(pending)
        raise_for_errors(replies)
        pending = []
        for env in replies:
            if env.recipient == COORDINATOR:
                received.append(env)
                if coordinator is not None:
                    pending.extend(coordinator(env))
            else:
                pending.append(env)
    return received


class InProcessTransport:
    """Calls party runtimes in this process; for unit tests and notebooks.

    Parameters
    ----------
    parties : Mapping[str, PartyRuntime]
        Runtimes by party name.
    tap : callable, optional
        Sees every envelope delivered to or received from a party (message capture).
    """

    def __init__(self, parties: Mapping[str, PartyRuntime], tap: Tap | None = None) -> None:
        self.parties = dict(parties)
        self.tap = tap
        self.stats = TrafficStats()

    def hello(self, envelope: Envelope) -> list[Envelope]:
        """Deliver ``envelope`` to every party."""
        started = time.perf_counter()
        replies = []
        for name, party in self.parties.items():
            replies.extend(self._deliver(party, _addressed(envelope, name)))
        self.stats.hop(time.perf_counter() - started)
        return replies

    def exchange(self, envelopes: Sequence[Envelope]) -> list[Envelope]:
        """Deliver envelopes in order, each to its party."""
        started = time.perf_counter()
        replies = []
        for env in envelopes:
            party = self.parties.get(env.recipient)
            if party is None:
                raise TransportError(f"no party '{env.recipient}' is connected")
            replies.extend(self._deliver(party, env))
        self.stats.hop(time.perf_counter() - started)
        return replies

    def exchange_partial(
        self, envelopes: Sequence[Envelope], *, timeout: float, final: bool = False
    ) -> tuple[list[Envelope], dict[str, str]]:
        """Deliver envelopes; a party's error envelope is reported, not raised."""
        del timeout, final  # in-process calls return at once
        replies: list[Envelope] = []
        failed: dict[str, str] = {}
        for env in self.exchange(envelopes):
            if env.protocol == ERROR_PROTOCOL and env.stage == ERROR_STAGE:
                error = f"{env.payload.get('error_type')!s}: {env.payload.get('message')!s}"
                failed[env.sender] = error
            else:
                replies.append(env)
        return replies, failed

    @property
    def joined(self) -> list[str]:
        """Every connected party."""
        return list(self.parties)

    def _deliver(self, party: PartyRuntime, env: Envelope) -> list[Envelope]:
        self._observe("to_party", env)
        out = party.dispatch(env)
        for reply in out:
            if reply.sender != party.name:
                raise TransportError(f"party '{party.name}' sent as '{reply.sender}'")
            self._observe("from_party", reply)
        return out

    def _observe(self, direction: Direction, env: Envelope) -> None:
        self.stats.record(direction, env)
        if self.tap is not None:
            self.tap(direction, env)


def _addressed(envelope: Envelope, recipient: str) -> Envelope:
    return Envelope(envelope.protocol, envelope.stage, envelope.sender, recipient, envelope.payload)
