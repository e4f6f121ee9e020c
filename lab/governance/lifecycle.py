"""A job's lifecycle as the lab that started it records it: audit before, during and after.

::

    with governed(experiment, spec) as job:   # audit job_started
        job.touched_data()                    # from here a failure is recorded as such
        ...run...
        job.finished(result, registered)      # audit registration and the end

Budgets are not here: the privacy-budget ledger lives with the data it protects. Each
platform's node reserves the job's planned spend in its own ledger before it reads its data,
counts its own releases and commits them when the job ends (:mod:`lab.governance.node`); a
refusal comes back as the job's failure before any data was read. The lab records what the
nodes reported (:attr:`federated.result.JobResult.nodes`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from federated.result import JobResult
from federated.spec import JobSpec
from lab.config import Experiment
from lab.governance import events
from lab.governance.audit import AuditLog


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
    }
    if cfg.kind == "vertical":
        out.update(key_bits=cfg.crypto.key_bits, psi_reveal=cfg.alignment.reveal)
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
        events.job_finished(self.audit, job_id=self.spec.job_id, metrics=metrics)
        self.closed = True

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
        )
        self.closed = True


@contextmanager
def governed(experiment: Experiment, spec: JobSpec) -> Iterator[GovernedJob]:
    """Run the block as an audited job."""
    audit = AuditLog()
    job = GovernedJob(spec, experiment, audit)
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
    try:
        yield job
    except BaseException as exc:
        job.failed("job", exc)
        raise
