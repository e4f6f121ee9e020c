"""The coordinator's side of a job: which protocol runs when, and what it reports.

:func:`run_job` is transport-independent: the ServerApp calls it with a
:class:`~federated.flower_transport.FlowerTransport`, unit tests with an
:class:`~federated.transport.InProcessTransport`. The coordinator reads no party data: it
only relays envelopes and collects aggregates.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from typing import Any

from federated import interrupt, progress
from federated.monitoring_protocol import run_monitoring
from federated.privacy_plan import job_model
from federated.result import JobResult, JointOutcome, PartyReport
from federated.screening_protocol import run_screening
from federated.spec import JobSpec
from federated.transport import Transport, TransportError, raise_for_errors, run_protocol
from models.alignment import AlignmentOutcome, AlignmentSettings, conclude, start_envelopes
from models.evaluation import EvaluationReport
from models.model_type import StartRequest
from models.protocol import ANY_PARTY, COORDINATOR, Envelope, ProtocolError, dumps

logger = logging.getLogger(__name__)

JOB = "job"

#: Seconds the coordinator waits for nodes to close their part of a job that failed.
CLOSE_TIMEOUT = 60.0
#: ... of a job interrupted on request: a node busy with a long step is not waited for (its
#: reservation stays open until its operator settles it from the node's journal).
INTERRUPTED_CLOSE_TIMEOUT = 5.0


class StageClock:
    """Wall seconds per named stage of a job."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        """Time the enclosed block as ``stage`` (accumulating repeats)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.seconds[stage] = self.seconds.get(stage, 0.0) + elapsed


def run_job(spec: JobSpec, transport: Transport, *, resume: bool = False) -> JobResult:
    """Run one job end to end and return what the coordinator learned.

    Vertical jobs align first (private set intersection); an ``align`` task stops there. With
    ``resume`` every node continues the job ``spec.job_id`` from its own last checkpoint: the
    coordinator keeps no state of its own, it runs the same stages again and each node restores
    its protocol state where its checkpoint says (:mod:`models.checkpoint`).

    Raises
    ------
    federated.transport.PartyError
        When a party reports a failed step (bad data, protocol violation).
    federated.transport.TransportError
        When a party is missing or silent.
    """
    clock = StageClock()
    stages = ["connect"]
    if spec.kind == "vertical":
        stages.append("align")
    if spec.task == "monitor":
        stages.append("monitor")
    if spec.task == "train":
        stages += ["split", "screen", "baseline", "joint"]
        if not spec.screening.enabled or spec.kind != "vertical":
            stages.remove("screen")
    done = 0

    def stage(name: str, detail: str) -> AbstractContextManager[None]:
        nonlocal done
        progress.report("job", done, len(stages), detail)
        done += 1
        return clock(name)

    try:
        result = _run_stages(spec, transport, stages, stage, clock, resume)
    except BaseException:
        close_parties(transport, "failed")
        raise
    nodes = close_parties(transport, "finished", strict=True)
    exchange_audit_heads(transport, result.parties, nodes)
    progress.report("job", len(stages), len(stages), "done")
    return replace(result, nodes=nodes, traffic=transport.stats.to_dict())


def _run_stages(
    spec: JobSpec,
    transport: Transport,
    stages: list[str],
    stage: Callable[[str, str], AbstractContextManager[None]],
    clock: StageClock,
    resume: bool,
) -> JobResult:
    with stage("connect", "connecting to parties"):
        parties = connect_parties(spec, transport, resume=resume)
    alignment: dict[str, object] = {}
    n_aligned = None
    if "align" in stages:
        with stage("align", "aligning enterprises (PSI)"):
            before = transport.stats.copy()
            outcome = _align(spec, transport)
        alignment = {
            **outcome.to_dict(),
            "seconds": clock.seconds["align"],
            "traffic": transport.stats.since(before).to_dict(),
        }
        n_aligned = outcome.n_aligned
    sizes: dict[str, tuple[int, int]] = {}
    bank_only: dict[str, EvaluationReport] = {}
    screening: dict[str, object] = {}
    joint = JointOutcome(status="unavailable", reason=f"{spec.task} task: no model trained")
    monitored: dict[str, Any] = {}
    if "monitor" in stages:
        with stage("monitor", "monitoring: scoring the book in both windows"):
            monitored = run_monitoring(spec, transport)
    if spec.task == "train":
        with stage("split", "splitting for evaluation"):
            sizes = split_for_evaluation(spec, transport)
        if "screen" in stages:
            with stage("screen", "screening: stability and information value"):
                screening = run_screening(spec, transport)
        with stage("baseline", "bank-only baseline"):
            bank_only = _baselines(spec, transport)
        with stage("joint", "joint model"):
            joint = _joint(spec, transport)
    return JobResult(
        job_id=spec.job_id,
        name=spec.name,
        kind=spec.kind,
        model_type=spec.model_type,
        parties=parties,
        n_aligned=n_aligned,
        n_train=sum(s[0] for s in sizes.values()),
        n_test=sum(s[1] for s in sizes.values()),
        joint=joint,
        bank_only=bank_only,
        stage_seconds=clock.seconds,
        traffic=transport.stats.to_dict(),
        alignment=alignment,
        screening=screening,
        monitoring=monitored,
    )


def close_parties(
    transport: Transport, outcome: str, *, strict: bool = False
) -> dict[str, dict[str, object]]:
    """Tell every joined node that the job ended (``job/end``); return what each charged.

    Each node closes its part: a platform commits the releases it counted itself to its own
    privacy-budget ledger (or releases the reservation if the job never reached its data).
    With ``strict`` a node's failure to close raises; otherwise (the job already failed) it is
    logged: that node keeps its reservation open, counted against its budget, until its
    operator closes it.
    """
    names = transport.joined
    if not names:
        return {}
    envelopes = [Envelope(JOB, "end", COORDINATOR, n, {"outcome": outcome}) for n in names]
    timeout = INTERRUPTED_CLOSE_TIMEOUT if interrupt.stop_requested() else CLOSE_TIMEOUT
    try:
        replies, failed = transport.exchange_partial(envelopes, timeout=timeout, final=True)
    except (TransportError, ProtocolError) as exc:
        if strict:
            raise
        logger.warning("could not close the job at its nodes: %s", exc)
        return {}
    if failed:
        if strict:
            party, why = next(iter(failed.items()))
            raise TransportError(f"node of party '{party}' did not close the job: {why}")
        logger.warning("nodes did not close the job: %s", failed)
    return {
        env.sender: {
            **env.json("report"),
            "audit_end": env.json("audit") if "audit" in env.payload else None,
        }
        for env in replies
        if env.stage == "end"
    }


def exchange_audit_heads(
    transport: Transport, parties: Sequence[PartyReport], nodes: dict[str, dict[str, object]]
) -> None:
    """Give every node its peers' audit heads of the job's start and end (``job/peers``).

    Best effort: the job's result stands if a node cannot record them (logged).
    """
    heads = {
        p.name: {"start": p.audit, "end": nodes.get(p.name, {}).get("audit_end")}
        for p in parties
        if p.audit or nodes.get(p.name, {}).get("audit_end")
    }
    if len(heads) < 2:
        return
    envelopes = [
        Envelope(JOB, "peers", COORDINATOR, p.name, {"heads": dumps(heads)}) for p in parties
    ]
    _, failed = transport.exchange_partial(envelopes, timeout=CLOSE_TIMEOUT, final=True)
    if failed:
        logger.warning("nodes did not record their peers' audit heads: %s", failed)


def _align(spec: JobSpec, transport: Transport) -> AlignmentOutcome:
    bank = spec.label_holder().name
    platforms = [p.name for p in spec.by_role("platform")]
    settings = AlignmentSettings(
        reveal=spec.alignment.reveal, min_intersection=spec.alignment.min_intersection
    )
    replies = run_protocol(transport, start_envelopes(spec.job_id, bank, platforms, settings))
    return conclude(replies, bank, settings)


def connect_parties(
    spec: JobSpec, transport: Transport, *, resume: bool = False
) -> tuple[PartyReport, ...]:
    """Send the job to every node (``job/hello``) and return what each party disclosed.

    With ``resume`` the nodes continue the job from their own checkpoints.
    """
    payload: dict[str, str | bool] = {"job": spec.to_json()}
    if resume:
        payload["resume"] = True
    hello = Envelope(JOB, "hello", COORDINATOR, ANY_PARTY, payload)
    replies = transport.hello(hello)
    raise_for_errors(replies)
    joined = {}
    for env in replies:
        if not env.payload.get("joined"):
            logger.info("node of party '%s' is not part of job '%s'", env.sender, spec.name)
            continue
        joined[env.sender] = PartyReport(
            name=env.sender,
            role=env.text("role"),
            n_rows=env.integer("n_rows"),
            n_admitted=env.integer("n_admitted"),
            n_features=env.integer("n_features"),
            digest=env.text("digest"),
            feature_kinds=json.loads(env.text("feature_kinds")),
            governance=json.loads(env.text("governance")) if "governance" in env.payload else {},
            audit=json.loads(env.text("audit")) if "audit" in env.payload else None,
        )
    missing = [p.name for p in spec.parties if p.name not in joined]
    if missing:
        raise TransportError(
            f"parties {missing} of job '{spec.name}' did not join; start their nodes with "
            "matching party names"
        )
    return tuple(joined[p.name] for p in spec.parties)


def _label_holders(spec: JobSpec) -> list[str]:
    return [p.name for p in spec.parties if p.label_column is not None]


def split_for_evaluation(spec: JobSpec, transport: Transport) -> dict[str, tuple[int, int]]:
    """Have every label holder split its rows into train and test; return the sizes."""
    requests = [Envelope(JOB, "split", COORDINATOR, name) for name in _label_holders(spec)]
    replies = run_protocol(transport, requests)
    return {env.sender: (env.integer("n_train"), env.integer("n_test")) for env in replies}


def _baselines(spec: JobSpec, transport: Transport) -> dict[str, EvaluationReport]:
    requests = [Envelope(JOB, "baseline", COORDINATOR, name) for name in _label_holders(spec)]
    replies = run_protocol(transport, requests)
    return {env.sender: EvaluationReport.from_dict(env.json("report")) for env in replies}


def _joint(spec: JobSpec, transport: Transport) -> JointOutcome:
    """Train the job's model through its type's protocol (:mod:`models.model_type`)."""
    described, settings = job_model(spec)
    if described.start is None or described.conclude is None:
        return JointOutcome(
            status="unavailable",
            reason=(
                f"model type '{described.name}' has no vertical protocol in this version of the "
                "lab; no joint model was trained"
            ),
        )
    bank, platforms, order = _vertical_roles(spec)
    request = StartRequest(settings, dict(spec.crypto), bank, platforms, order, spec.job_id)
    trained = described.conclude(run_protocol(transport, [described.start(request)]))
    report = EvaluationReport.from_dict(trained.report) if trained.report else None
    return JointOutcome(status="trained", report=report, details=trained.details)


def _vertical_roles(spec: JobSpec) -> tuple[str, list[str], list[str]]:
    """The bank, the platforms and every party in config order."""
    platforms = [p.name for p in spec.by_role("platform")]
    return spec.label_holder().name, platforms, [p.name for p in spec.parties]
