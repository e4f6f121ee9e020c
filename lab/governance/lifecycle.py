"""A job's lifecycle as the lab that started it records it: audit before, during and after.

::

    served = check_governance(experiment, spec, tables)   # refused: job_refused, nothing ran
    with governed(experiment, spec) as job:   # audit job_started
        job.touched_data()                    # from here a failure is recorded as such
        ...run...
        job.settle_open()                     # embedded: what stopped nodes left open
        job.finished(result, registered)      # audit registration and the end

Budgets are not here: the privacy-budget ledger lives with the data it protects. Each
platform's node reserves the job's planned spend in its own ledger before it reads its data,
counts its own releases and commits them when the job ends (:mod:`lab.governance.node`); a
refusal comes back as the job's failure before any data was read. The lab records what the
nodes reported (:attr:`federated.result.JobResult.nodes`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from features.io import PartyTable
from federated.result import JobResult
from federated.spec import JobSpec
from lab.config import Experiment
from lab.errors import JobInterruptedError, JobRefusedError
from lab.governance import events
from lab.governance.audit import AuditLog
from lab.governance.errors import GovernanceError
from lab.governance.node import settle_job
from lab.governance.preflight import PreflightRefusalError, ServedRows, check_job

logger = logging.getLogger(__name__)


def privacy_parameters(experiment: Experiment) -> dict[str, Any]:
    """What an auditor needs to judge a job's privacy: keys, DP, reveal mode, who learns what.

    Who learns what is the model type's own description (:mod:`models.model_type`).
    """
    cfg = experiment.config
    model = cfg.model
    privacy = experiment.model_type.privacy
    epsilon = getattr(model, "dp_epsilon", None)
    out: dict[str, Any] = {
        "dp_epsilon": epsilon,
        "dp_delta": getattr(model, "dp_delta", None) if epsilon else None,
        "controls": {name: getattr(model, name) for name in privacy.controls},
        "bank_learns": privacy.bank_learns,
        "platform_learns": privacy.platform_learns,
        "coordinator_learns": privacy.coordinator_learns,
        "explanations_reveal": privacy.explanations,
    }
    if cfg.kind == "vertical":
        out.update(
            scheme=cfg.crypto.scheme,
            key_bits=cfg.crypto.key_bits,
            psi_reveal=cfg.alignment.reveal,
        )
    else:
        out["secure_aggregation"] = cfg.secure_aggregation.enabled
    return out


@dataclass
class GovernedJob:
    """Hooks of one running job (see the module docstring)."""

    spec: JobSpec
    experiment: Experiment
    audit: AuditLog
    data_touched: bool = False
    closed: bool = False
    #: Reservations the lab settled for nodes that stopped without closing them.
    settled: dict[str, str] = field(default_factory=dict)

    def touched_data(self) -> None:
        """Mark that parties have started reading data."""
        self.data_touched = True

    def finished(self, result: JobResult, registered: dict[str, Any] | None) -> None:
        """Audit the registration and the end of the job."""
        if registered:
            events.model_registered(
                self.audit,
                job_id=self.spec.job_id,
                registry="mlflow",
                model_name=str(registered["name"]),
                version=str(registered["version"]),
                platform_part_digest=";".join(
                    ref["content_hash"] for ref in registered.get("platform_parts", {}).values()
                )
                or None,
            )
        metrics = {}
        if result.joint.report is not None:
            metrics = {"test_auc": result.joint.report.auc, "test_ks": result.joint.report.ks}
        events.job_finished(
            self.audit, job_id=self.spec.job_id, metrics=metrics, served=served_counts(result)
        )
        self.closed = True

    def settle_open(self) -> dict[str, str]:
        """Settle what the job's stopped nodes left open in the lab's home (embedded runtime).

        A node stopped (Ctrl-C) before it heard ``job/end`` is charged the releases it
        journaled, or nothing if it never got past ``hello``; never its whole plan. Only for a
        runtime whose nodes share the lab's home, after they stopped.
        """
        homes = {b.governance_home for b in self.experiment.bindings() if b.role == "platform"}
        for home in sorted(h for h in homes if h is not None):
            try:
                self.settled.update(settle_job(self.spec.job_id, home))
            except GovernanceError as exc:  # the job's own failure is what the user must see
                logger.warning("could not settle job %s in %s: %s", self.spec.job_id, home, exc)
        return self.settled

    def failed(self, stage: str, error: BaseException) -> None:
        """Audit the failure (the nodes closed their own reservations)."""
        if self.closed:
            return
        events.job_failed(
            self.audit,
            job_id=self.spec.job_id,
            stage=stage,
            error=f"{type(error).__name__}: {error}"[:500],
            data_touched=self.data_touched,
            ended=ending(error),
        )
        self.closed = True


def ending(error: BaseException) -> str:
    """How a job that raised ``error`` ended: ``refused``, ``interrupted`` or ``failed``."""
    if isinstance(error, JobRefusedError):
        return "refused"
    if isinstance(error, JobInterruptedError | KeyboardInterrupt):
        return "interrupted"
    return "failed"


def served_counts(result: JobResult) -> dict[str, dict[str, int | None]]:
    """Per party: rows in its file, rows its node's authorization filter let through, dropped.

    ``n_authorized`` is ``None`` for a party whose node filters no rows by authorization.
    """
    out: dict[str, dict[str, int | None]] = {}
    for party in result.parties:
        filtered = bool(party.governance.get("authorization"))
        out[party.name] = {
            "n_rows": party.n_rows,
            "n_authorized": party.n_admitted if filtered else None,
            "n_dropped_unauthorized": party.n_rows - party.n_admitted if filtered else 0,
        }
    return out


def check_governance(
    experiment: Experiment, spec: JobSpec, tables: Mapping[str, PartyTable]
) -> list[ServedRows]:
    """The governance preflight of an embedded job, before it starts or reserves anything.

    Raises
    ------
    JobRefusedError
        After auditing ``job_refused`` (stage ``preflight``): nothing ran, nothing was
        reserved, no MLflow run exists.
    """
    try:
        return check_job(spec, experiment.bindings(), tables)
    except PreflightRefusalError as exc:
        banks = spec.by_role("bank")
        events.job_refused_before_start(
            AuditLog(),
            job_id=spec.job_id,
            party=exc.party,
            bank=banks[0].name if spec.kind == "vertical" and banks else None,
            purpose=spec.governance.purpose,
            feature_sets=[p.feature_set for p in spec.parties if p.feature_set],
            reason=f"{exc.reason}: {exc}",
        )
        raise JobRefusedError(
            f"job '{spec.name}' refused before it started: {exc}; nothing ran and no budget "
            "was spent"
        ) from exc


@contextmanager
def governed(
    experiment: Experiment, spec: JobSpec, resumed: tuple[str, int] | None = None
) -> Iterator[GovernedJob]:
    """Run the block as an audited job.

    ``resumed`` is ``(how the job last ended, its resume count)`` when the block resumes an
    interrupted job (audited ``job_resumed`` instead of ``job_started``).
    """
    audit = AuditLog()
    job = GovernedJob(spec, experiment, audit)
    if resumed is not None:
        events.job_resumed(
            audit,
            job_id=spec.job_id,
            config_hash=spec.config_hash,
            previous=resumed[0],
            resumes=resumed[1],
        )
    else:
        _started(audit, experiment, spec)
    try:
        yield job
    except BaseException as exc:
        job.failed("job", exc)
        raise


def _started(audit: AuditLog, experiment: Experiment, spec: JobSpec) -> None:
    events.job_started(
        audit,
        job_id=spec.job_id,
        config_hash=spec.config_hash,
        kind=spec.kind,
        model=spec.model_type,
        feature_sets=[p.feature_set for p in spec.parties if p.feature_set],
        banks=[p.name for p in spec.by_role("bank")],
        purpose=spec.governance.purpose,
        privacy=privacy_parameters(experiment),
    )
