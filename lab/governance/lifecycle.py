"""A governed job's lifecycle: budget before data, spend and audit after.

::

    with governed(experiment, spec) as job:   # reserve budget, audit job_started
        job.touched_data()                    # from here a failure still spends
        ...run...
        job.finished(result, registered)      # commit actual events, audit the end

A refused reservation raises :class:`~lab.governance.errors.BudgetExceededError` before any data
is read, leaving the ledger and MLflow untouched (only the refusal is audited). A job that fails
before touching data releases its reservation; after, it commits what it planned, because
the data may have been used.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from federated.result import JobResult
from federated.spec import JobSpec
from lab.config import Experiment, HeteroLRConfig, HorizontalModelConfig
from lab.governance import events
from lab.governance.audit import AuditLog
from lab.governance.errors import NonPrivateJobError
from lab.governance.ledger import BudgetLedger
from models.privacy import PrivacyEvent
from models.secureboost import SecureBoostParams, planned_privacy_events


def releases_statistics(spec: JobSpec) -> bool:
    """Whether the job releases statistics of platform data to the bank (beyond alignment)."""
    if spec.task != "train":
        return False
    if spec.model_type == "hetero_lr":
        return True  # per-bin label counts of platform columns, gradients of their coefficients
    if spec.model_type != "secureboost":
        return False
    return int(spec.model.get("n_estimators", 30)) > int(spec.model.get("bank_only_trees", 0))


def planned_events(spec: JobSpec) -> list[PrivacyEvent]:
    """What the job's mechanisms will emit at most, from its settings alone."""
    if spec.model_type == "secureboost" and spec.task == "train":
        params = SecureBoostParams.from_spec(dict(spec.model), dict(spec.crypto))
        return planned_privacy_events(params, len(spec.by_role("platform")))
    return []


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
                "WOE and IV), its own gradients, the platforms' final coefficients and the "
                "coarse bins of its test enterprises"
            ),
            "platform_learns": (
                "aligned ids, training mask, the coarse mapping and WOE of its own bins, its own "
                "gradients; no labels"
            ),
            "coordinator_learns": "ciphertexts, masked sums, sizes, timings",
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
        "coordinator_learns": "ciphertexts, sizes, timings",
    }


@dataclass
class GovernedJob:
    """Hooks of one running job (see the module docstring)."""

    spec: JobSpec
    experiment: Experiment
    audit: AuditLog
    ledger: BudgetLedger | None
    reservations: list[str] = field(default_factory=list)
    data_touched: bool = False
    closed: bool = False

    def touched_data(self) -> None:
        """Mark that parties have started reading data: a failure from now on still spends."""
        self.data_touched = True

    def finished(self, result: JobResult, registered: dict[str, Any] | None) -> None:
        """Commit the actual privacy events and audit the alignment, registration and end."""
        raw = result.joint.details.get("privacy_events", []) if result.joint.details else []
        actual = [PrivacyEvent.from_dict(e) for e in raw]
        for reservation in self.reservations:
            if self.ledger is not None:
                self.ledger.commit(reservation, actual, outcome="finished")
        alignment = result.alignment
        if alignment:
            platform = next((p for p in result.parties if p.role == "platform"), None)
            events.alignment(
                self.audit,
                job_id=self.spec.job_id,
                n_platform=platform.n_rows if platform else 0,
                n_authorized=platform.n_admitted if platform else 0,
                n_bank=int(alignment["n_bank"]),
                n_aligned=result.n_aligned,
                reveal=str(alignment["reveal"]),
            )
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
        """Spend (if data was touched) or release the reservations; audit the failure."""
        if self.closed:
            return
        for reservation in self.reservations:
            if self.ledger is None:
                continue
            if self.data_touched:
                self.ledger.commit(reservation, planned_events(self.spec), outcome="failed")
            else:
                self.ledger.release(reservation)
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
    """Run the block as a governed job (budget reserved first, audit throughout)."""
    audit = AuditLog()
    feature_sets = [p.feature_set for p in spec.parties if p.feature_set]
    bank = spec.label_holder().name if spec.kind == "vertical" else None
    ledger = BudgetLedger(audit=audit) if feature_sets and bank else None
    job = GovernedJob(spec, experiment, audit, ledger)
    planned = planned_events(spec)
    model = experiment.config.model
    delta = model.dp_delta if planned and not isinstance(model, HeteroLRConfig) else None
    if feature_sets and releases_statistics(spec) and not planned:
        if isinstance(model, HeteroLRConfig):
            raise NonPrivateJobError(
                f"job '{spec.name}' would show the bank exact per-bin label counts of budgeted "
                f"feature set(s) {feature_sets}: an unbounded privacy spend, and hetero_lr has no "
                "differential-privacy mode. Train secureboost with model.dp_epsilon on budgeted "
                "feature sets, or use a platform file that is not a budgeted feature set"
            )
        raise NonPrivateJobError(
            f"job '{spec.name}' would show the bank exact histogram sums of budgeted feature "
            f"set(s) {feature_sets}: an unbounded privacy spend. Set model.dp_epsilon (and "
            "dp_delta) so the platform's histograms are noised, or make every tree bank-only"
        )
    try:
        for feature_set in feature_sets:
            if ledger is None or bank is None:
                break
            if not planned and not ledger.has_cap(feature_set, bank):
                continue  # nothing to spend (alignment, bank-only trees) and nothing to record
            reservation = f"{spec.job_id}/{feature_set}"
            ledger.reserve(feature_set, bank, reservation, planned, delta)
            job.reservations.append(reservation)
        events.job_started(
            audit,
            job_id=spec.job_id,
            config_hash=spec.config_hash,
            kind=spec.kind,
            model=spec.model_type,
            feature_sets=feature_sets,
            banks=[p.name for p in spec.by_role("bank")],
            purpose=spec.governance.purpose,
            privacy=privacy_parameters(experiment),
        )
        yield job
    except BaseException as exc:
        if job.reservations or job.data_touched:
            job.failed("job", exc)
        elif ledger is not None:
            pass  # the reservation itself was refused: the ledger audited the refusal
        raise
    finally:
        if ledger is not None:
            ledger.close()
