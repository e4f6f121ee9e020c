"""The vocabulary every protocol speaks: envelopes, stages and party contexts.

A protocol is a set of transport-independent state machines (one per role) plus, where the
protocol needs one, a coordinator step. A party step is a function of
``(party state, incoming envelope) -> (party state, outgoing envelopes)``: the party's state
lives in a :class:`PartyStore` that the runtime persists between messages, so the same code
runs in an in-process transport (unit tests, notebooks) and in Flower (jobs). No network call
hides inside a step.

Envelopes carry flat payloads of numpy arrays, bytes, strings and numbers, so every transport
can encode them without pickle.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

from features.io import PartyTable

if TYPE_CHECKING:
    from models.checkpoint import PartyCheckpoints
    from models.guard import NodeGuard

#: Name used as sender or recipient for the coordinator (Flower's ServerApp).
COORDINATOR = "coordinator"

#: Recipient of a first envelope sent to every node before the coordinator knows which node
#: acts for which party.
ANY_PARTY = "*"

Scalar: TypeAlias = bool | int | float | str | bytes
PayloadValue: TypeAlias = (
    npt.NDArray[Any] | Scalar | list[int] | list[float] | list[str] | list[bytes] | list[bool]
)
Payload: TypeAlias = Mapping[str, PayloadValue]


class ProtocolError(RuntimeError):
    """A message arrived that the protocol does not allow in the current stage, or is malformed."""


@dataclass(frozen=True)
class Envelope:
    """One protocol message between two named parties (or a party and the coordinator).

    Attributes
    ----------
    protocol : str
        Protocol name (``job``, ``psi``, ``secureboost`` ...), used to route the envelope.
    stage : str
        The named stage this message belongs to.
    sender, recipient : str
        Party names or :data:`COORDINATOR`.
    payload : Mapping[str, PayloadValue]
        Flat mapping of arrays, bytes, strings and numbers.
    """

    protocol: str
    stage: str
    sender: str
    recipient: str
    payload: Payload = field(default_factory=dict)

    def reply(self, stage: str, payload: Payload | None = None) -> Envelope:
        """Return an envelope of the same protocol back to this envelope's sender."""
        return Envelope(self.protocol, stage, self.recipient, self.sender, payload or {})

    def nbytes(self) -> int:
        """Approximate wire size of the payload in bytes (arrays, bytes and text)."""
        return sum(len(k) + _value_nbytes(v) for k, v in self.payload.items())

    def require(self, *keys: str) -> None:
        """Raise :class:`ProtocolError` unless every key is in the payload."""
        missing = [k for k in keys if k not in self.payload]
        if missing:
            raise ProtocolError(
                f"{self.protocol}/{self.stage} from '{self.sender}' lacks {missing}"
            )

    def array(self, key: str) -> npt.NDArray[Any]:
        """Return a payload entry that must be a numpy array."""
        value = self._get(key)
        if not isinstance(value, np.ndarray):
            raise ProtocolError(f"{self._where(key)} must be an array, got {type(value).__name__}")
        return value

    def text(self, key: str) -> str:
        """Return a payload entry that must be a string."""
        value = self._get(key)
        if not isinstance(value, str):
            raise ProtocolError(f"{self._where(key)} must be text, got {type(value).__name__}")
        return value

    def json(self, key: str) -> Any:
        """Decode a payload entry holding a JSON document."""
        try:
            return json.loads(self.text(key))
        except json.JSONDecodeError as exc:
            raise ProtocolError(f"{self._where(key)} is not valid JSON: {exc}") from exc

    def integer(self, key: str) -> int:
        """Return a payload entry that must be an integer."""
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(f"{self._where(key)} must be an integer")
        return value

    def _get(self, key: str) -> PayloadValue:
        if key not in self.payload:
            raise ProtocolError(f"{self._where(key)} is missing")
        return self.payload[key]

    def _where(self, key: str) -> str:
        return f"{self.protocol}/{self.stage} from '{self.sender}': '{key}'"


def _value_nbytes(value: PayloadValue) -> int:
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, list):
        return sum(_value_nbytes(v) for v in value)
    return 8


class PartyStore(Protocol):
    """State a party keeps between messages, persisted by the runtime.

    Values are numpy arrays and JSON documents; a Flower node keeps them in its ``Context``
    state, an in-process party in a dictionary. Nothing in a store leaves the party's domain.
    """

    def put_array(self, key: str, value: npt.NDArray[Any]) -> None:
        """Store an array under ``key`` (replacing any previous value)."""

    def get_array(self, key: str) -> npt.NDArray[Any]:
        """Return the array stored under ``key``; raise ``KeyError`` if absent."""

    def put_json(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable document under ``key``."""

    def get_json(self, key: str, default: Any = None) -> Any:
        """Return the document stored under ``key``, or ``default``."""

    def delete(self, key: str) -> None:
        """Forget ``key`` if present."""


class PartyContext(Protocol):
    """What a protocol step may use: who the party is, its own data and its own state."""

    @property
    def name(self) -> str:
        """The party's name."""

    @property
    def role(self) -> str:
        """``bank`` or ``platform``."""

    @property
    def store(self) -> PartyStore:
        """The party's persistent state."""

    def table(self) -> PartyTable:
        """The party's own validated data table (cached by the runtime)."""

    def model_dir(self) -> Path:
        """The party's own folder for model parts it keeps after a job."""

    @property
    def guard(self) -> NodeGuard:
        """The node's own policy: limits, DP grants and release counts, its audit log."""

    def checkpoints(self) -> PartyCheckpoints | None:
        """The party's own checkpoints of the current job (``None``: this job keeps none)."""

    def resuming(self) -> dict[str, Any] | None:
        """The party's checkpoint record when the current job is a resumed one, else ``None``."""


class PartyProtocol(Protocol):
    """The party side of a protocol: handles envelopes addressed to this party."""

    name: str

    def handle(self, envelope: Envelope, ctx: PartyContext) -> list[Envelope]:
        """Process one envelope and return the envelopes to send next."""


class StageMachine:
    """Allowed stage transitions of one party in one protocol, checked before any work runs.

    Parameters
    ----------
    protocol : str
        Protocol name, used in error messages and as the store key prefix.
    transitions : Mapping[str, Iterable[str]]
        For each incoming stage, the party stages in which it may arrive. The stage ``start``
        is the state before the first message (``idle``).
    """

    START = "idle"

    def __init__(self, protocol: str, transitions: Mapping[str, Iterable[str]]) -> None:
        self.protocol = protocol
        self.transitions = {stage: frozenset(prev) for stage, prev in transitions.items()}

    def key(self) -> str:
        """Store key holding this protocol's current stage for a party."""
        return f"{self.protocol}.stage"

    def current(self, store: PartyStore) -> str:
        """Return the party's current stage."""
        return str(store.get_json(self.key(), self.START))

    def advance(self, store: PartyStore, envelope: Envelope) -> str:
        """Check that ``envelope`` may arrive now; record its stage and return the previous one.

        Raises
        ------
        ProtocolError
            If the stage is unknown or not allowed after the party's current stage.
        """
        if envelope.protocol != self.protocol:
            raise ProtocolError(
                f"envelope for protocol '{envelope.protocol}' routed to '{self.protocol}'"
            )
        allowed = self.transitions.get(envelope.stage)
        if allowed is None:
            raise ProtocolError(
                f"{self.protocol}: unknown stage '{envelope.stage}' from '{envelope.sender}'; "
                f"known stages are {sorted(self.transitions)}"
            )
        previous = self.current(store)
        if previous not in allowed:
            raise ProtocolError(
                f"{self.protocol}: stage '{envelope.stage}' from '{envelope.sender}' is not "
                f"allowed after '{previous}' (allowed after {sorted(allowed)})"
            )
        store.put_json(self.key(), envelope.stage)
        return previous


@dataclass
class PhaseClock:
    """Seconds and operation counts per phase, kept by a party in its store between messages."""

    seconds: dict[str, float] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)

    def add(self, phase: str, seconds: float, ops: int = 0) -> None:
        """Add ``seconds`` (and ``ops`` operations) to ``phase``."""
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds
        if ops:
            self.ops[phase] = self.ops.get(phase, 0) + ops

    def since(self, phase: str, started: float, ops: int = 0) -> None:
        """Add the time since ``started`` (a :func:`time.perf_counter` value) to ``phase``."""
        self.add(phase, time.perf_counter() - started, ops)

    def to_dict(self) -> dict[str, Any]:
        """``{"seconds": ..., "ops": ...}``."""
        return {"seconds": dict(self.seconds), "ops": dict(self.ops)}

    @classmethod
    def load(cls, store: PartyStore, key: str) -> PhaseClock:
        """The clock saved under ``key`` (empty if none)."""
        raw = store.get_json(key) or {}
        return cls(seconds=dict(raw.get("seconds", {})), ops=dict(raw.get("ops", {})))

    def save(self, store: PartyStore, key: str) -> None:
        """Keep the clock under ``key``."""
        store.put_json(key, self.to_dict())


class RoleHandler(Protocol):
    """One role's side of a protocol."""

    def handle(self, envelope: Envelope, ctx: PartyContext) -> list[Envelope]:
        """Process one envelope and return the envelopes to send next."""


class RoleDispatch:
    """The party side of a bank/platform protocol: each envelope goes to the party's role."""

    name: str

    def __init__(self, bank: RoleHandler, platform: RoleHandler) -> None:
        self._bank = bank
        self._platform = platform

    def handle(self, envelope: Envelope, ctx: PartyContext) -> list[Envelope]:
        """Run one stage."""
        if ctx.role == "bank":
            return self._bank.handle(envelope, ctx)
        return self._platform.handle(envelope, ctx)


def dumps(value: Any) -> str:
    """Serialise a JSON payload document deterministically."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
