"""Typed helpers for the audit events the job pipeline writes.

The governance stores audit their own decisions (publications, authorization changes, budget
checks and spends). A job adds the events below; each helper fixes the payload's keys so
auditors can rely on them, and carries sizes, digests and parameters only.

Order in a vertical job (see ``docs/governance.md``)::

    job_started -> [budget_checked | budget_refused] -> alignment -> ... ->
    [budget_spent] -> model_registered -> job_finished     (or job_failed)

A resumed job writes ``job_resumed`` instead of ``job_started`` and ends the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lab.governance.audit import AuditEntry, AuditLog


def job_started(
    log: AuditLog,
    *,
    job_id: str,
    config_hash: str,
    kind: str,
    model: str,
    feature_sets: Sequence[str],
    banks: Sequence[str],
    purpose: str,
    privacy: Mapping[str, Any] | None = None,
    actor: str | None = None,
) -> AuditEntry:
    """Record that a job was accepted and is about to run.

    Parameters
    ----------
    job_id : str
        The job's id (the one the ledger reserved under).
    config_hash : str
        ``sha256:...`` of the experiment config.
    kind, model : str
        ``vertical``/``horizontal`` and the model type.
    feature_sets, banks : sequence of str
        ``name@version`` of every published set read, and the banks taking part.
    purpose : str
        The purpose the job runs for.
    privacy : Mapping, optional
        Privacy-relevant parameters (key sizes, DP settings, PSI reveal mode).
    actor : str, optional
        Who started it.
    """
    return log.record(
        "job_started",
        {
            "job_id": job_id,
            "config_hash": config_hash,
            "kind": kind,
            "model": model,
            "feature_sets": list(feature_sets),
            "banks": list(banks),
            "purpose": purpose,
            "privacy": dict(privacy or {}),
        },
        actor,
    )


def job_resumed(
    log: AuditLog,
    *,
    job_id: str,
    config_hash: str,
    previous: str,
    resumes: int,
    actor: str | None = None,
) -> AuditEntry:
    """Record that an interrupted job is resumed from its parties' checkpoints.

    ``previous`` is how the lab last saw the job: ``running`` when the run that started it was
    cut without an ending (a killed process), else ``failed`` or ``interrupted``; ``resumes``
    counts this resume. Each party's node records its own ``job_resumed`` in its own log.
    """
    return log.record(
        "job_resumed",
        {
            "job_id": job_id,
            "config_hash": config_hash,
            "previous": previous,
            "resumes": resumes,
        },
        actor,
    )


def alignment(
    log: AuditLog,
    *,
    job_id: str,
    n_platform: int,
    n_authorized: int,
    n_bank: int,
    n_aligned: int | None,
    reveal: str,
    actor: str | None = None,
) -> AuditEntry:
    """Record an alignment's sizes (never ids).

    Parameters
    ----------
    n_platform, n_authorized : int
        Platform rows before and after dropping enterprises without a valid authorization.
    n_bank : int
        Bank rows.
    n_aligned : int or None
        Intersection size (``None`` if the reveal mode hides it from whoever records).
    reveal : str
        The PSI reveal mode.
    """
    return log.record(
        "alignment",
        {
            "job_id": job_id,
            "n_platform": n_platform,
            "n_authorized": n_authorized,
            "n_unauthorized_dropped": n_platform - n_authorized,
            "n_bank": n_bank,
            "n_aligned": n_aligned,
            "reveal": reveal,
        },
        actor,
    )


def job_finished(
    log: AuditLog,
    *,
    job_id: str,
    metrics: Mapping[str, float] | None = None,
    wall_seconds: float | None = None,
    served: Mapping[str, Mapping[str, int | None]] | None = None,
    actor: str | None = None,
) -> AuditEntry:
    """Record a job's successful end with its headline metrics (aggregates only).

    ``served`` gives, per party, ``n_rows`` in its file, ``n_authorized`` (rows that passed its
    node's authorization filter; ``None`` when it filters none) and ``n_dropped_unauthorized``.
    """
    return log.record(
        "job_finished",
        {
            "job_id": job_id,
            "metrics": dict(metrics or {}),
            "wall_seconds": wall_seconds,
            "served": {k: dict(v) for k, v in (served or {}).items()},
        },
        actor,
    )


#: How a job that did not finish ended, for auditors (``job_failed`` and ``job_refused``).
ENDINGS = ("refused", "interrupted", "failed")


def job_failed(
    log: AuditLog,
    *,
    job_id: str,
    stage: str,
    error: str,
    data_touched: bool,
    ended: str = "failed",
    actor: str | None = None,
) -> AuditEntry:
    """Record a job's failure: where, the (redacted) error, whether data had been read.

    ``ended`` says how it ended, one of :data:`ENDINGS`.
    """
    if ended not in ENDINGS:
        raise ValueError(f"ended must be one of {ENDINGS}, got {ended!r}")
    return log.record(
        "job_failed",
        {
            "job_id": job_id,
            "stage": stage,
            "error": error,
            "data_touched": data_touched,
            "ended": ended,
        },
        actor,
    )


def job_refused_before_start(
    log: AuditLog,
    *,
    job_id: str,
    party: str,
    bank: str | None,
    purpose: str,
    feature_sets: Sequence[str],
    reason: str,
    actor: str | None = None,
) -> AuditEntry:
    """Record that the lab's governance preflight refused a job before it started.

    Nothing ran: no node was asked, no budget reserved, no data left any party.
    """
    return log.record(
        "job_refused",
        {
            "job_id": job_id,
            "party": party,
            "bank": bank,
            "purpose": purpose,
            "feature_sets": list(feature_sets),
            "stage": "preflight",
            "reason": reason[:1000],
        },
        actor,
    )


def model_registered(
    log: AuditLog,
    *,
    job_id: str,
    registry: str,
    model_name: str,
    version: str,
    platform_part_digest: str | None = None,
    actor: str | None = None,
) -> AuditEntry:
    """Record a model version registered at a bank (and the digest of the platform's part)."""
    return log.record(
        "model_registered",
        {
            "job_id": job_id,
            "registry": registry,
            "model_name": model_name,
            "version": version,
            "platform_part_digest": platform_part_digest,
        },
        actor,
    )


def scoring_call(
    log: AuditLog,
    *,
    model: str,
    caller: str,
    purpose: str,
    n_scored: int,
    n_refused: int = 0,
    outcome: str = "answered",
    http_status: int = 200,
    n_splits: int = 0,
    actor: str | None = None,
) -> AuditEntry:
    """Record one call of the platform's scoring endpoint (counts, not ids or scores).

    ``outcome`` is ``answered`` or the refusal's code (``unauthenticated``, ``not_authorized``,
    ``unknown_enterprise``, ``rate_limited``, ...); ``n_splits`` is how many split decisions
    per enterprise were revealed (0 when refused).
    """
    return log.record(
        "scoring_call",
        {
            "model": model,
            "caller": caller,
            "purpose": purpose,
            "n_scored": n_scored,
            "n_refused": n_refused,
            "outcome": outcome,
            "http_status": http_status,
            "n_splits": n_splits,
        },
        actor,
    )


def model_promoted(
    log: AuditLog,
    *,
    registry: str,
    model_name: str,
    version: str,
    alias: str,
    previous_version: str | None,
    from_alias: str | None = None,
    removed_aliases: Sequence[str] = (),
    actor: str | None = None,
) -> AuditEntry:
    """Record that a bank pointed a registry alias (``challenger``/``champion``) at a version.

    ``removed_aliases``: aliases the promotion took off that version (a champion is no longer
    the challenger).
    """
    return log.record(
        "model_promoted",
        {
            "registry": registry,
            "model_name": model_name,
            "version": version,
            "alias": alias,
            "previous_version": previous_version,
            "from_alias": from_alias,
            "removed_aliases": list(removed_aliases),
        },
        actor,
    )
