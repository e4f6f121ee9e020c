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
from lab.config import Experiment, HeteroLRConfig, HorizontalModelConfig
from lab.governance import events
from lab.governance.audit import AuditLog


def privacy_parameters(experiment: Experiment) -> dict[str, Any]:
    """What an auditor needs to judge a job's privacy: keys, DP, reveal mode, who learns what."""
    cfg = experiment.config
    model = cfg.model
    if isinstance(model, HeteroLRConfig):
        return {
            "dp_epsilon": None,
            "dp_delta": None,
            "key_bits": cfg.crypto.key_bits,
            "psi_reveal": cfg.alignment.reveal,
            "bank_learns": (
                "per-bin row and bad counts of every platform column (anonymous ordered bins: "
                "WOE and IV), its own gradients (weighted sums of platform partial logits over "
                "batches of at least the platform's minimum size), one settled bit per platform "
                "and epoch, the platforms' final coefficients and the coarse bins of its test "
                "enterprises"
            ),
            "platform_learns": (
                "aligned ids, training mask, the coarse mapping and WOE of its own bins, its own "
                "gradients; no labels"
            ),
            "coordinator_learns": (
                "ciphertexts, masked sums, sizes, timings, the evaluation report and per-epoch "
                "history"
            ),
        }
    dp = {
        "dp_epsilon": model.dp_epsilon,
        "dp_delta": model.dp_delta if model.dp_epsilon else None,
    }
    if isinstance(model, HorizontalModelConfig):
        secagg = cfg.secure_aggregation.enabled
        return {
            **dp,
            "dp_unit": "one loan record of one bank" if model.dp_epsilon else None,
            "secure_aggregation": secagg,
            "coordinator_learns": (
                "masked updates and their sum only" if secagg else "every bank's model update"
            ),
            "banks_learn": "the global model after every round",
        }
    return {
        **dp,
        "key_bits": cfg.crypto.key_bits,
        "psi_reveal": cfg.alignment.reveal,
        "bank_only_trees": model.bank_only_trees,
        "bank_learns": "per-bin gradient sums of platform features"
        + (" (with Gaussian noise)" if model.dp_epsilon else " (exact)")
        + " and the instance partition of platform splits",
        "platform_learns": "aligned ids, training mask, instance partition; no labels",
        "coordinator_learns": (
            "ciphertexts, sizes, timings, the evaluation report, per-tree metrics, gain per "
            "feature name, each node's privacy charge"
        ),
    }


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
