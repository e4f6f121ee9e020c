"""The coordinator's Flower strategy for horizontal jobs: FedAvg/FedProx, optionally secure.

:class:`JobStrategy` wraps one of Flower's strategies (``FedAvg``, ``FedProx``) and keeps its
sampling and configuration, adding what a bank consortium needs:

- **Secure aggregation** (:mod:`secure_agg.secagg`). Before each round's ``train`` messages
  go out, the coordinator runs the ``setup`` and ``share_keys`` stages with the sampled banks
  (lab envelopes over the same grid); each ``train`` message then carries the bank's
  masked-vector request. A bank answers with its masked vector
  ``y = mask + quantize([w * (new - global), w])`` where ``w = n_bank / n_round`` -- never with
  its weights. After the ``unmask`` stage the coordinator decodes only the sum ``S`` and sets
  ``global += S[:-1] / S[-1]``: the example-weighted FedAvg update of the surviving banks.
  Banks that fail or stay silent at any stage are dropouts; up to ``n - threshold`` per round
  are tolerated, one more aborts the round and the job, before anything is unmasked.
- **Accountability**. Per round: seconds of training, evaluation and secure aggregation, each
  bank's reported ε so far and its evaluation, and who dropped at which stage and why.
- **Strictness without secure aggregation**. A bank that fails a plain round fails the job
  with its own error message (silently averaging the others would hide bad data).

What the coordinator learns
---------------------------
Without secure aggregation: every bank's new weights each round (Flower's FedAvg). With it:
masked vectors (uniformly random to it), the weighted sum of the survivors' updates and the
sum of their weights, who dropped, and the global model. In both cases: per-bank metrics the
banks choose to report (ε so far; training loss only without DP; bank-side evaluation reports).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Strategy

from federated.codec import decode, encode
from federated.flower_transport import FlowerTransport, error_reason
from federated.secagg_party import PROTOCOL as SECAGG
from federated.secagg_party import from_payload, to_payload
from models.protocol import COORDINATOR, Envelope, ProtocolError
from secure_agg.secagg import SecAggConfig, SecAggError, SecAggServer

logger = logging.getLogger(__name__)


class RoundFailedError(ProtocolError):
    """A round could not complete: a bank failed a plain round, or too many banks dropped."""


@dataclass(frozen=True)
class SecureAggregationPlan:
    """The secure-aggregation parameters of every round of a job (agreed in the job spec)."""

    threshold: int
    neighbours: int | None
    clipping_range: float
    quantization_bits: int
    stage_timeout: float

    def config(self, client_ids: Sequence[int], vector_length: int) -> SecAggConfig:
        """A fresh round configuration (new random round id) for the sampled clients."""
        return SecAggConfig(
            round_id=secrets.randbits(62),
            client_ids=tuple(client_ids),
            threshold=self.threshold,
            vector_length=vector_length,
            clipping_range=self.clipping_range,
            quantization_bits=self.quantization_bits,
            neighbours=self.neighbours,
        )


@dataclass
class RoundRecord:
    """What the coordinator observed in one round."""

    round: int
    train_seconds: float = 0.0
    secagg_seconds: float = 0.0
    evaluate_seconds: float = 0.0
    banks: list[str] = field(default_factory=list)
    train: dict[str, dict[str, float]] = field(default_factory=dict)
    evaluate: dict[str, dict[str, float]] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    clipped_coordinates: int = 0
    error_bound: float | None = None
    bytes_up: dict[str, int] = field(default_factory=dict)
    bytes_down: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "round": self.round,
            "train_seconds": round(self.train_seconds, 4),
            "secagg_seconds": round(self.secagg_seconds, 4),
            "evaluate_seconds": round(self.evaluate_seconds, 4),
            "banks": list(self.banks),
            "train": self.train,
            "evaluate": self.evaluate,
            "dropped": dict(self.dropped),
            "clipped_coordinates": self.clipped_coordinates,
            "error_bound": self.error_bound,
            "bytes_up": dict(self.bytes_up),
            "bytes_down": dict(self.bytes_down),
        }


def _metrics(message: Message) -> dict[str, float]:
    record = message.content.metric_records.get("metrics")
    if record is None:
        return {}
    return {k: float(v) for k, v in record.items() if isinstance(v, int | float)}


def flatten(arrays: Sequence[npt.NDArray[Any]]) -> npt.NDArray[np.float64]:
    """Concatenate arrays into one float64 vector (the wire order of the model)."""
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])


def unflatten(
    vector: npt.NDArray[np.float64], like: Sequence[npt.NDArray[Any]]
) -> list[npt.NDArray[np.float32]]:
    """Split a vector back into arrays shaped (and typed) like ``like``."""
    out = []
    offset = 0
    for array in like:
        size = int(np.asarray(array).size)
        piece = vector[offset : offset + size].reshape(np.asarray(array).shape)
        out.append(piece.astype(np.asarray(array).dtype, copy=False))
        offset += size
    return out


class JobStrategy(Strategy):
    """A Flower strategy wrapped with the lab's secure aggregation and round records.

    Parameters
    ----------
    inner : FedAvg
        Flower's strategy (FedAvg or FedProx) that samples, configures and, without secure
        aggregation, aggregates.
    transport : FlowerTransport
        The job's transport (knows which node acts for which bank; carries SecAgg stages).
    n_train : Mapping[str, int]
        Training rows per bank (from the schema stage), for the FedAvg weights.
    secure_aggregation : SecureAggregationPlan, optional
        Mask every update (see the module docstring).
    """

    def __init__(
        self,
        inner: FedAvg,
        transport: FlowerTransport,
        n_train: Mapping[str, int],
        secure_aggregation: SecureAggregationPlan | None = None,
    ) -> None:
        self.inner = inner
        self.transport = transport
        self.n_train = dict(n_train)
        self.plan = secure_aggregation
        self.client_ids = {bank: i + 1 for i, bank in enumerate(sorted(self.n_train))}
        self.rounds: list[RoundRecord] = []
        self._party_of_node = {node: party for party, node in transport.node_of.items()}
        self._global: list[npt.NDArray[Any]] = []
        self._server: SecAggServer | None = None
        self._bank_of_client: dict[int, str] = {}
        self._sent: dict[int, str] = {}
        self._clock = 0.0
        self._traffic = transport.stats.copy()

    # ------------------------------------------------------------------ Flower's interface

    def summary(self) -> None:
        """Log the inner strategy's summary."""
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample banks (inner strategy); with secure aggregation, set up the round's masks."""
        self._clock = time.perf_counter()
        self._traffic = self.transport.stats.copy()
        record = RoundRecord(server_round)
        self.rounds.append(record)
        self._global = list(arrays.to_numpy_ndarrays())
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        self._sent = {m.metadata.dst_node_id: self._party(m.metadata.dst_node_id) for m in messages}
        record.banks = sorted(self._sent.values())
        if self.plan is None:
            return messages
        started = time.perf_counter()
        requests = self._secagg_prepare(server_round, record)
        record.secagg_seconds += time.perf_counter() - started
        out = []
        for message in messages:
            node = message.metadata.dst_node_id
            envelope = requests.get(self._sent[node])
            if envelope is None:
                continue  # dropped during setup or share_keys: no train message
            content = RecordDict(
                {**dict(message.content.items()), **dict(encode([envelope]).items())}
            )
            out.append(
                Message(
                    content=content, dst_node_id=node, message_type=message.metadata.message_type
                )
            )
        self._sent = {m.metadata.dst_node_id: self._sent[m.metadata.dst_node_id] for m in out}
        return out

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate (securely, if planned); record per-bank metrics and dropouts."""
        record = self.rounds[-1]
        ok = self._collect(list(replies), record, stage="train")
        if self.plan is None:
            if record.dropped:
                bank, reason = next(iter(record.dropped.items()))
                raise RoundFailedError(f"round {server_round}: bank '{bank}' failed: {reason}")
            arrays, _ = self.inner.aggregate_train(server_round, ok)
        else:
            started = time.perf_counter()
            arrays = self._secagg_finish(server_round, ok, record)
            record.secagg_seconds += time.perf_counter() - started
        for message in ok:
            metrics = _metrics(message)
            bank = self._party(message.metadata.src_node_id)
            record.train[bank] = metrics
            record.clipped_coordinates += int(metrics.get("clipped_coordinates", 0))
        record.train_seconds = time.perf_counter() - self._clock
        return arrays, MetricRecord(dict(self._train_summary(record)))

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Bank-side evaluation of the new global model (inner strategy's sampling)."""
        self._clock = time.perf_counter()
        messages = list(self.inner.configure_evaluate(server_round, arrays, config, grid))
        self._sent = {m.metadata.dst_node_id: self._party(m.metadata.dst_node_id) for m in messages}
        return messages

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Record each bank's evaluation; a failure fails the job unless banks may drop."""
        record = self.rounds[-1]
        before = dict(record.dropped)
        ok = self._collect(list(replies), record, stage="evaluate")
        failed = {b: r for b, r in record.dropped.items() if b not in before}
        if failed and (self.plan is None or not ok):
            bank, reason = next(iter(failed.items()))
            raise RoundFailedError(f"round {server_round}: bank '{bank}' failed: {reason}")
        for message in ok:
            record.evaluate[self._party(message.metadata.src_node_id)] = _metrics(message)
        record.evaluate_seconds = time.perf_counter() - self._clock
        traffic = self.transport.stats.since(self._traffic)
        record.bytes_up = dict(traffic.uploaded)
        record.bytes_down = dict(traffic.downloaded)
        return self.inner.aggregate_evaluate(server_round, ok) if ok else None

    # ------------------------------------------------------------------ helpers

    def _party(self, node: int) -> str:
        party = self._party_of_node.get(node)
        if party is None:
            raise RoundFailedError(f"node {node} does not act for a bank of this job")
        return party

    def _collect(self, replies: list[Message], record: RoundRecord, *, stage: str) -> list[Message]:
        ok = []
        answered = set()
        for reply in replies:
            node = reply.metadata.src_node_id
            answered.add(node)
            bank = self._party(node)
            if reply.has_error():
                record.dropped[bank] = f"{stage}: {error_reason(reply.error.reason)}"
            else:
                ok.append(reply)
        for node, bank in self._sent.items():
            if node not in answered:
                record.dropped[bank] = f"{stage}: no reply"
        return ok

    def _train_summary(
        self, record: RoundRecord
    ) -> dict[str, int | float | list[int] | list[float]]:
        out: dict[str, int | float | list[int] | list[float]] = {"banks": float(len(record.train))}
        eps = [m["epsilon"] for m in record.train.values() if "epsilon" in m]
        if eps:
            out["epsilon_max"] = max(eps)
        if record.train and all("train_loss" in m for m in record.train.values()):
            weights = [m.get("num-examples", 1.0) for m in record.train.values()]
            losses = [m["train_loss"] for m in record.train.values()]
            out["train_loss"] = float(np.average(losses, weights=weights))
        return out

    # ------------------------------------------------------------------ secure aggregation

    def _fail(self, server_round: int, exc: Exception, record: RoundRecord) -> RoundFailedError:
        dropped = "; ".join(f"{b}: {r}" for b, r in record.dropped.items()) or "none"
        return RoundFailedError(
            f"round {server_round}: secure aggregation aborted, nothing was unmasked: {exc} "
            f"(dropouts: {dropped})"
        )

    def _exchange(
        self, envelopes: list[Envelope], record: RoundRecord, stage: str
    ) -> list[Envelope]:
        assert self.plan is not None
        replies, failed = self.transport.exchange_partial(
            envelopes, timeout=self.plan.stage_timeout
        )
        for bank, reason in failed.items():
            record.dropped[bank] = f"secagg/{stage}: {reason}"
        return replies

    def _envelope(
        self, stage: str, bank: str, message: Any, server_round: int, **extra: float | int
    ) -> Envelope:
        payload = {**to_payload(message), "server_round": server_round, **extra}
        return Envelope(SECAGG, stage, COORDINATOR, bank, payload)

    def _secagg_prepare(self, server_round: int, record: RoundRecord) -> dict[str, Envelope]:
        """Run setup and share_keys; return each live bank's masked-vector request."""
        assert self.plan is not None
        banks = sorted(self._sent.values())
        ids = [self.client_ids[b] for b in banks]
        self._bank_of_client = {self.client_ids[b]: b for b in banks}
        vector_length = int(sum(np.asarray(a).size for a in self._global)) + 1
        try:
            config = self.plan.config(ids, vector_length)
        except SecAggError as exc:
            raise self._fail(server_round, exc, record) from exc
        record.error_bound = config.error_bound()
        server = SecAggServer(config)
        self._server = server
        setup = server.setup()
        replies = self._exchange(
            [
                self._envelope("setup", b, setup, server_round, client_id=self.client_ids[b])
                for b in banks
            ],
            record,
            "setup",
        )
        try:
            requests = server.share_keys([from_payload(e) for e in replies])
            replies = self._exchange(
                [
                    self._envelope("share_keys", self._bank_of_client[c], req, server_round)
                    for c, req in requests.items()
                ],
                record,
                "share_keys",
            )
            masked = server.collect_masked_vectors([from_payload(e) for e in replies])
        except SecAggError as exc:
            raise self._fail(server_round, exc, record) from exc
        live = [self._bank_of_client[c] for c in masked]
        total = sum(self.n_train[b] for b in live)
        return {
            self._bank_of_client[c]: self._envelope(
                "masked",
                self._bank_of_client[c],
                req,
                server_round,
                weight=self.n_train[self._bank_of_client[c]] / total,
            )
            for c, req in masked.items()
        }

    def _secagg_finish(
        self, server_round: int, ok: list[Message], record: RoundRecord
    ) -> ArrayRecord:
        """Collect masked vectors, unmask the sum, and return the new global model."""
        server = self._server
        assert server is not None
        masked = []
        for message in ok:
            bank = self._party(message.metadata.src_node_id)
            envelopes = [
                e for e in decode(message.content) if e.protocol == SECAGG and e.stage == "masked"
            ]
            if len(envelopes) != 1 or envelopes[0].sender != bank:
                raise RoundFailedError(
                    f"round {server_round}: bank '{bank}' did not answer with one masked vector"
                )
            if "arrays" in message.content.array_records:
                raise RoundFailedError(
                    f"round {server_round}: bank '{bank}' sent its update unmasked; refusing it"
                )
            masked.append(from_payload(envelopes[0]))
        try:
            requests = server.unmask(masked)
            replies = self._exchange(
                [
                    self._envelope("unmask", self._bank_of_client[c], req, server_round)
                    for c, req in requests.items()
                ],
                record,
                "unmask",
            )
            total = server.finish([from_payload(e) for e in replies])
        except SecAggError as exc:
            raise self._fail(server_round, exc, record) from exc
        finally:
            self._server = None
        weight = float(total[-1])
        if not weight > 0:
            raise RoundFailedError(f"round {server_round}: the survivors' weights sum to {weight}")
        update = total[:-1] / weight
        new = flatten(self._global) + update
        return ArrayRecord(unflatten(new, self._global))
