"""Reconcile the privacy-budget ledger with the audit log.

``governance.db`` is the ledger's working state; the audit log is its signed, hash-chained
history. Every ledger transition writes an audit entry before it commits (``budget_set``,
``budget_checked`` for a reservation, ``budget_spent`` for a commit, ``budget_released``), so
replaying those entries rebuilds what the ledger must hold. :func:`reconcile` does that and
lists every difference: a cap or a job edited, inserted or deleted in the database behind the
ledger's back (e.g. ``UPDATE budget_jobs SET state='released'``, which would silently give a
bank its budget back).

It trusts the log, so check the log first (``lab audit verify`` does both, in that order). The
ledger's write lock is held while both are read, so no decision can be half-written meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lab.governance.audit import AuditEntry, AuditLog
from lab.governance.ledger import BudgetLedger, Cap, JobRecord
from models.privacy import PrivacyEvent

#: Cap fields compared between the log's latest ``budget_set`` and ``budget_caps``.
CAP_FIELDS = ("epsilon", "delta", "accountant", "window_days")


@dataclass(frozen=True)
class Difference:
    """One disagreement between the ledger and the log.

    Attributes
    ----------
    subject : str
        ``cap <feature set> x <bank>`` or ``job <job id>``.
    field : str
        What differs (``state``, ``epsilon``, ``row``, ...).
    ledger : Any
        The value in ``governance.db`` (``None``: no such row).
    log : Any
        The value the audit log implies (``None``: never recorded).
    evidence : str
        The audit entry the log's value comes from (``seq N (type)``), or why none.
    """

    subject: str
    field: str
    ledger: Any
    log: Any
    evidence: str

    def describe(self) -> str:
        """One sentence for the auditor."""
        if self.field == "row" and self.ledger is None:
            return f"{self.subject}: in the audit log ({self.evidence}) but not in governance.db"
        if self.field == "row" and self.log is None:
            return f"{self.subject}: in governance.db but never recorded in the audit log"
        return (
            f"{self.subject}: {self.field} is {self.ledger!r} in governance.db but "
            f"{self.log!r} in the audit log ({self.evidence})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "subject": self.subject,
            "field": self.field,
            "ledger": self.ledger,
            "log": self.log,
            "evidence": self.evidence,
            "detail": self.describe(),
        }


@dataclass(frozen=True)
class ReconcileReport:
    """Outcome of :func:`reconcile`.

    Attributes
    ----------
    ledger, log : str
        The files compared.
    caps, jobs : int
        Caps and jobs rebuilt from the log.
    differences : tuple of Difference
        Every disagreement, caps first, then jobs in log order.
    """

    ledger: str
    log: str
    caps: int
    jobs: int
    differences: tuple[Difference, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """Whether the ledger is exactly what the log implies."""
        return not self.differences

    def summary(self) -> str:
        """One line for people."""
        what = f"{self.caps} cap(s) and {self.jobs} job(s) rebuilt from {self.log}"
        if self.ok:
            return f"ok: governance.db matches the audit log ({what})"
        first = self.differences[0].describe()
        more = len(self.differences) - 1
        extra = f" (and {more} more difference(s))" if more else ""
        return f"LEDGER EDITED: {first}{extra}; {what}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "ok": self.ok,
            "ledger": self.ledger,
            "log": self.log,
            "caps": self.caps,
            "jobs": self.jobs,
            "differences": [d.to_dict() for d in self.differences],
        }


@dataclass
class _Job:
    feature_set: str
    bank: str
    state: str
    outcome: str | None
    planned: tuple[PrivacyEvent, ...]
    actual: tuple[PrivacyEvent, ...] | None
    evidence: str


def _events(raw: Any) -> tuple[PrivacyEvent, ...]:
    return tuple(PrivacyEvent.from_dict(dict(e)) for e in raw or [])


def _where(entry: AuditEntry) -> str:
    return f"seq {entry.seq} ({entry.type})"


#: Latest ``budget_set`` payload per (feature set, bank), with where it is in the log.
_LoggedCaps = dict[tuple[str, str], tuple[dict[str, Any], str]]


def replay(log: AuditLog) -> tuple[_LoggedCaps, dict[str, _Job]]:
    """Rebuild caps and jobs from the ``budget_*`` entries of ``log`` (log order)."""
    caps: _LoggedCaps = {}
    jobs: dict[str, _Job] = {}
    for entry in log.entries():
        p = entry.payload
        if entry.type == "budget_set":
            caps[(str(p["feature_set"]), str(p["bank"]))] = (p, _where(entry))
        elif entry.type == "budget_checked":
            jobs[str(p["job_id"])] = _Job(
                str(p["feature_set"]),
                str(p["bank"]),
                "reserved",
                None,
                _events(p.get("events")),
                None,
                _where(entry),
            )
        elif entry.type in ("budget_spent", "budget_released"):
            job = jobs.get(str(p["job_id"]))
            if job is None:
                # A close without a reservation in the log: keep it so the row is compared.
                job = jobs[str(p["job_id"])] = _Job(
                    str(p["feature_set"]), str(p["bank"]), "reserved", None, (), None, ""
                )
            if entry.type == "budget_spent":
                job.state, job.outcome = "committed", str(p["outcome"])
                job.actual = _events(p.get("events"))
            else:
                job.state = "released"
            job.evidence = _where(entry)
    return caps, jobs


def reconcile(ledger: BudgetLedger, log: AuditLog | None = None) -> ReconcileReport:
    """Compare ``governance.db`` with the budget history in the audit log.

    Parameters
    ----------
    ledger : BudgetLedger
        The ledger (its database).
    log : AuditLog, optional
        Default: the ledger's own audit log.
    """
    log = log if log is not None else ledger.audit
    with ledger.frozen() as (db_caps, db_jobs):
        caps, jobs = replay(log)
    found: list[Difference] = []
    found += _cap_differences(caps, {(c.feature_set, c.bank): c for c in db_caps})
    found += _job_differences(jobs, {j.job_id: j for j in db_jobs})
    return ReconcileReport(str(ledger.path), str(log.path), len(caps), len(jobs), tuple(found))


def _cap_differences(logged: _LoggedCaps, stored: dict[tuple[str, str], Cap]) -> list[Difference]:
    out: list[Difference] = []
    for pair in sorted(set(logged) | set(stored)):
        subject = f"cap {pair[0]} x {pair[1]}"
        cap = stored.get(pair)
        if pair not in logged:
            out.append(Difference(subject, "row", "present", None, "no budget_set entry"))
            continue
        payload, where = logged[pair]
        if cap is None:
            out.append(Difference(subject, "row", None, "present", where))
            continue
        for name in CAP_FIELDS:
            if getattr(cap, name) != payload.get(name):
                out.append(Difference(subject, name, getattr(cap, name), payload.get(name), where))
    return out


def _job_differences(logged: dict[str, _Job], stored: dict[str, JobRecord]) -> list[Difference]:
    out: list[Difference] = []
    for job_id in [*logged, *sorted(set(stored) - set(logged))]:
        subject = f"job {job_id}"
        row = stored.get(job_id)
        job = logged.get(job_id)
        if job is None:
            out.append(Difference(subject, "row", "present", None, "no budget_checked entry"))
            continue
        if row is None:
            out.append(Difference(subject, "row", None, "present", job.evidence))
            continue
        pairs: list[tuple[str, Any, Any]] = [
            ("feature_set", row.feature_set, job.feature_set),
            ("bank", row.bank, job.bank),
            ("state", row.state, job.state),
            ("outcome", row.outcome, job.outcome),
            ("planned_events", row.planned_events, job.planned),
            ("actual_events", row.actual_events, job.actual),
        ]
        for name, stored_value, logged_value in pairs:
            if stored_value != logged_value:
                out.append(
                    Difference(
                        subject, name, _show(stored_value), _show(logged_value), job.evidence
                    )
                )
    return out


def _show(value: Any) -> Any:
    if isinstance(value, tuple):
        return [e.to_dict() if isinstance(e, PrivacyEvent) else e for e in value]
    return value
