"""Privacy-budget ledger: caps per (feature set, bank), reservations before data, spends after.

Mechanism, accounting and policy are kept apart: mechanisms emit
:class:`~models.privacy.PrivacyEvent` values, :func:`models.privacy.epsilon` (Opacus) composes
them, and this ledger decides. It stores *events*, never ε values it could add up, and every ε
it reports is Opacus's composition of the stored events at the cap's δ and accountant, so
changing a cap's accountant or δ re-accounts everything already spent.

Lifecycle of a job
------------------
1. The platform sets a cap: :meth:`BudgetLedger.set_cap` (``lab budget set``).
2. Before the job touches data, :meth:`BudgetLedger.reserve` composes the events of every spend
   and open reservation in the cap's renewal window with the job's planned events. If the
   composition fits under the cap the reservation is recorded, else
   :class:`~lab.governance.errors.BudgetExceededError` is raised with the numbers and nothing
   is recorded in the ledger (the refusal is audited).
3. When the job ends, :meth:`BudgetLedger.commit` records the events it actually emitted
   (also when it failed after touching data); a job that failed before touching data calls
   :meth:`BudgetLedger.release`. Both are idempotent. Open reservations count against the cap.

Concurrency
-----------
Every decision is written inside sqlite ``BEGIN IMMEDIATE`` (the database write lock), so
concurrent reservations from any number of processes are serialised and can never jointly
overspend. Composition (Opacus, and torch's import the first time) is slow, so it runs *before*
the lock, on a snapshot of what counts; under the lock the decision is taken only if what counts
is still exactly that snapshot, else it is composed again (optimistic concurrency). The lock is
therefore held for one audit append, and twenty racing processes each get a decision within
seconds. The audit entry is appended while the lock is held and before ``COMMIT``; if the
append fails the transaction rolls back. A lock held elsewhere for longer than the busy timeout
ends in :class:`~lab.governance.errors.StoreBusyError` ("retry"), never a crash.

Renewal window
--------------
Rolling: a spend counts for ``window_days`` days after the job was closed, so it is counted
for at least as long as the data was in use; an open reservation counts until it is closed
(a job that died without ``commit`` or ``release`` keeps blocking its budget: ``lab audit jobs``
shows it, and an operator closes it with the right call).

Remaining budget
----------------
``remaining = cap - ε(everything in the window)``. Composition is sub-additive, so a job whose
own ε exceeds ``remaining`` may still fit; :meth:`BudgetLedger.reserve` is the only test.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from lab.governance._common import (
    begin_immediate,
    default_actor,
    iso,
    parse_iso,
    read_transaction,
    write_transaction,
)
from lab.governance.errors import (
    AccountingError,
    BudgetExceededError,
    DeltaExceedsCapError,
    JobStateError,
    LedgerError,
    NoCapError,
    StoreBusyError,
    UnknownJobError,
)
from lab.governance.store import GovernanceStore
from lab.governance.vocabulary import check_name, format_ref, parse_ref
from models.privacy import ACCOUNTANTS, Accountant, PrivacyError, PrivacyEvent, Unit, epsilon

logger = logging.getLogger(__name__)

#: Default renewal window: one year, the usual period of a platform-bank data agreement.
DEFAULT_WINDOW_DAYS = 365

#: How many times a decision is recomputed when other jobs change the budget while it is being
#: composed (each success of another contender can invalidate it once).
MAX_DECISION_ATTEMPTS = 64

JobState = Literal["reserved", "committed", "released"]
Outcome = Literal["finished", "failed"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS budget_caps (
    feature_set TEXT NOT NULL,
    bank TEXT NOT NULL,
    epsilon REAL NOT NULL CHECK (epsilon > 0),
    delta REAL NOT NULL CHECK (delta > 0 AND delta < 1),
    accountant TEXT NOT NULL,
    window_days INTEGER NOT NULL CHECK (window_days > 0),
    set_at TEXT NOT NULL,
    set_by TEXT NOT NULL,
    PRIMARY KEY (feature_set, bank)
);
CREATE TABLE IF NOT EXISTS budget_jobs (
    job_id TEXT PRIMARY KEY,
    feature_set TEXT NOT NULL,
    bank TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('reserved', 'committed', 'released')),
    outcome TEXT CHECK (outcome IN ('finished', 'failed')),
    planned_events TEXT NOT NULL,
    actual_events TEXT,
    job_delta REAL,
    reserved_at TEXT NOT NULL,
    closed_at TEXT,
    reserved_by TEXT NOT NULL,
    closed_by TEXT
);
CREATE INDEX IF NOT EXISTS budget_jobs_pair ON budget_jobs (feature_set, bank);
"""


@dataclass(frozen=True)
class Cap:
    """A budget cap set by the platform for one bank on one feature-set version.

    Attributes
    ----------
    feature_set : str
        ``name@version``.
    bank : str
        The bank's name.
    epsilon, delta : float
        The (ε, δ) the bank's jobs may spend together within a window.
    accountant : {"rdp", "prv"}
        The Opacus accountant that composes the events.
    window_days : int
        Rolling renewal window.
    set_at, set_by : str
        When (UTC) and by whom the cap was last set.
    """

    feature_set: str
    bank: str
    epsilon: float
    delta: float
    accountant: Accountant
    window_days: int
    set_at: str
    set_by: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "feature_set": self.feature_set,
            "bank": self.bank,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "accountant": self.accountant,
            "window_days": self.window_days,
            "set_at": self.set_at,
            "set_by": self.set_by,
        }


@dataclass(frozen=True)
class BudgetCheck:
    """The numbers behind a reservation decision.

    Attributes
    ----------
    feature_set, bank, job_id : str
        What was checked.
    cap_epsilon, delta : float
        The cap, and the δ at which every ε here is computed.
    accountant : {"rdp", "prv"}
        The accountant used.
    window_days : int
        The cap's renewal window.
    spent_epsilon : float
        ε of committed spends and open reservations in the window, before this job.
    planned_epsilon : float
        ε of the job's planned events alone.
    would_be_epsilon : float
        ε of everything in the window together with the planned events.
    fits : bool
        ``would_be_epsilon <= cap_epsilon``.
    """

    feature_set: str
    bank: str
    job_id: str
    cap_epsilon: float
    delta: float
    accountant: Accountant
    window_days: int
    spent_epsilon: float
    planned_epsilon: float
    would_be_epsilon: float
    fits: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (also the audit payload)."""
        return {
            "feature_set": self.feature_set,
            "bank": self.bank,
            "job_id": self.job_id,
            "cap_epsilon": self.cap_epsilon,
            "delta": self.delta,
            "accountant": self.accountant,
            "window_days": self.window_days,
            "spent_epsilon": self.spent_epsilon,
            "planned_epsilon": self.planned_epsilon,
            "would_be_epsilon": self.would_be_epsilon,
            "fits": self.fits,
        }


@dataclass(frozen=True)
class JobRecord:
    """One job's reservation and, once closed, its spend.

    Attributes
    ----------
    job_id, feature_set, bank : str
        Identity.
    state : {"reserved", "committed", "released"}
        ``reserved`` counts its planned events; ``committed`` its actual events; ``released``
        nothing.
    outcome : {"finished", "failed"} or None
        How a committed job ended.
    planned_events, actual_events : tuple of PrivacyEvent
        What the job said it would emit, and (once committed) what it emitted.
    job_delta : float or None
        The δ the job asked for (at most the cap's).
    reserved_at, closed_at : str or None
        UTC timestamps.
    reserved_by, closed_by : str or None
        Actors.
    """

    job_id: str
    feature_set: str
    bank: str
    state: JobState
    outcome: Outcome | None
    planned_events: tuple[PrivacyEvent, ...]
    actual_events: tuple[PrivacyEvent, ...] | None
    job_delta: float | None
    reserved_at: str
    closed_at: str | None
    reserved_by: str
    closed_by: str | None

    @property
    def dp(self) -> bool:
        """Whether the job uses any differentially private mechanism."""
        events = self.actual_events if self.actual_events is not None else self.planned_events
        return bool(events)

    def counted_events(self) -> tuple[PrivacyEvent, ...]:
        """The events this job counts against its cap now."""
        if self.state == "committed":
            return self.actual_events or ()
        if self.state == "reserved":
            return self.planned_events
        return ()


@dataclass(frozen=True)
class BudgetStatus:
    """One row of :meth:`BudgetLedger.status`.

    Attributes
    ----------
    feature_set, bank : str
        The pair the cap applies to.
    cap_epsilon, delta : float
        The cap.
    accountant : {"rdp", "prv"}
        The accountant used for every ε of the row.
    window_days : int
        Renewal window; ``window_start`` is the oldest time that still counts.
    spent_epsilon : float
        ε of committed spends in the window.
    reserved_epsilon : float
        What open reservations add on top: ε(spent + reserved) − ε(spent).
    remaining_epsilon : float
        cap − ε(spent + reserved); negative if a job spent more than it planned.
    open_reservations, jobs_in_window : int
        Counts.
    """

    feature_set: str
    bank: str
    cap_epsilon: float
    delta: float
    accountant: Accountant
    window_days: int
    window_start: str
    spent_epsilon: float
    reserved_epsilon: float
    remaining_epsilon: float
    open_reservations: int
    jobs_in_window: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "feature_set": self.feature_set,
            "bank": self.bank,
            "cap_epsilon": self.cap_epsilon,
            "delta": self.delta,
            "accountant": self.accountant,
            "window_days": self.window_days,
            "window_start": self.window_start,
            "spent_epsilon": self.spent_epsilon,
            "reserved_epsilon": self.reserved_epsilon,
            "remaining_epsilon": self.remaining_epsilon,
            "open_reservations": self.open_reservations,
            "jobs_in_window": self.jobs_in_window,
        }


def compose(events: Iterable[PrivacyEvent], delta: float, accountant: Accountant) -> float:
    """Return ε of the events composed by the Opacus accountant, at ``delta``.

    Events with the same ``(noise_multiplier, sample_rate, unit)`` are merged by adding their
    steps before they reach Opacus: this is the history compaction Opacus's own
    ``RDPAccountant.step`` does for repeated identical steps, gives the same ε, and keeps the
    cost of a budget check proportional to the number of distinct mechanisms, not of jobs.

    Raises
    ------
    AccountingError
        If the events protect different units or the accountant refuses them.
    """
    merged: dict[tuple[float, float, Unit], int] = {}
    labels: dict[tuple[float, float, Unit], str] = {}
    for event in events:
        key = (event.noise_multiplier, event.sample_rate, event.unit)
        merged[key] = merged.get(key, 0) + event.steps
        labels.setdefault(key, event.mechanism)
    compact = [
        PrivacyEvent(noise, rate, steps, unit=unit, mechanism=labels[(noise, rate, unit)])
        for (noise, rate, unit), steps in merged.items()
    ]
    try:
        return epsilon(compact, delta, accountant)
    except PrivacyError as exc:
        raise AccountingError(f"cannot account these events: {exc}") from exc


class BudgetLedger(GovernanceStore):
    """The privacy-budget ledger of one lab home (or of an explicit database file).

    Parameters
    ----------
    path : Path, optional
        sqlite database; default ``$LAB_HOME/governance.db`` (shared with the authorization
        registry, separate tables).
    audit : AuditLog, optional
        Where decisions are audited; default the lab home's log.
    clock : callable, optional
        Returns the current aware UTC datetime (tests move time to cross a renewal window).
    """

    SCHEMA = _SCHEMA

    # -- caps ---------------------------------------------------------------------------------

    def set_cap(
        self,
        feature_set: str,
        bank: str,
        *,
        epsilon: float,
        delta: float,
        accountant: Accountant = "rdp",
        window_days: int = DEFAULT_WINDOW_DAYS,
        actor: str | None = None,
    ) -> Cap:
        """Set (or replace) the cap of a bank on a feature-set version.

        Replacing a cap keeps what was spent; everything is re-accounted under the new δ and
        accountant. A cap below what is already spent blocks further jobs until the window
        renews.

        Raises
        ------
        LedgerError
            If a value is out of range (ε ≤ 0, δ not in (0, 1), unknown accountant, window < 1).
        """
        feature_set = _check_ref(feature_set)
        check_name(bank, "bank name")
        if not epsilon > 0 or epsilon != epsilon or epsilon == float("inf"):
            raise LedgerError(f"epsilon must be a finite number > 0, got {epsilon}")
        if not 0 < delta < 1:
            raise LedgerError(f"delta must be in (0, 1), got {delta}; e.g. 1e-5")
        if accountant not in ACCOUNTANTS:
            raise LedgerError(
                f"unknown accountant {accountant!r}; use one of {', '.join(ACCOUNTANTS)}"
            )
        if window_days < 1:
            raise LedgerError(f"window_days must be >= 1, got {window_days}")
        who = actor or default_actor()
        now = iso(self._clock())
        with write_transaction(self.conn) as conn:
            previous = self._cap(conn, feature_set, bank)
            conn.execute(
                "INSERT OR REPLACE INTO budget_caps VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (feature_set, bank, epsilon, delta, accountant, window_days, now, who),
            )
            cap = Cap(feature_set, bank, epsilon, delta, accountant, window_days, now, who)
            payload = cap.to_dict()
            payload["previous"] = None if previous is None else previous.to_dict()
            self.audit.record("budget_set", payload, who)
        return cap

    def cap(self, feature_set: str, bank: str) -> Cap:
        """Return the cap of a pair.

        Raises
        ------
        NoCapError
            If none is set.
        """
        feature_set = _check_ref(feature_set)
        with read_transaction(self.conn) as conn:
            cap = self._cap(conn, feature_set, bank)
        if cap is None:
            raise _no_cap(feature_set, bank)
        return cap

    def has_cap(self, feature_set: str, bank: str) -> bool:
        """Whether the platform set a cap for the pair."""
        feature_set = _check_ref(feature_set)
        with read_transaction(self.conn) as conn:
            return self._cap(conn, feature_set, bank) is not None

    def caps(self) -> list[Cap]:
        """All caps, ordered by feature set and bank."""
        with read_transaction(self.conn) as conn:
            rows = conn.execute("SELECT * FROM budget_caps ORDER BY feature_set, bank").fetchall()
        return [_cap_from_row(r) for r in rows]

    # -- reservations and spends ----------------------------------------------------------------

    def check(
        self,
        feature_set: str,
        bank: str,
        job_id: str,
        planned_events: Sequence[PrivacyEvent],
        delta: float | None = None,
    ) -> BudgetCheck:
        """The numbers :meth:`reserve` would decide on now; nothing is written or audited.

        Raises
        ------
        NoCapError, DeltaExceedsCapError, AccountingError
            As :meth:`reserve`.
        """
        return self._snapshot_check(feature_set, bank, job_id, planned_events, delta)[0]

    def precheck(
        self,
        feature_set: str,
        bank: str,
        job_id: str,
        planned_events: Sequence[PrivacyEvent],
        delta: float | None = None,
        *,
        actor: str | None = None,
    ) -> BudgetCheck:
        """Refuse now what :meth:`reserve` would refuse, without reserving anything.

        A node calls it before it reads its data for the job's remaining checks (authorized
        rows), and reserves only after them, so a refused job leaves no reservation behind. The
        reservation itself decides again.

        Raises
        ------
        BudgetExceededError
            If the job does not fit now (``budget_refused`` is audited; the ledger unchanged).
        NoCapError, DeltaExceedsCapError, AccountingError
            As :meth:`reserve`.
        """
        check, cap = self._snapshot_check(feature_set, bank, job_id, planned_events, delta)
        if not check.fits:
            payload = {**check.to_dict(), "events": [e.to_dict() for e in planned_events]}
            self.audit.record("budget_refused", payload, actor or default_actor())
            raise BudgetExceededError(_refusal_message(check, cap), check)
        return check

    def _snapshot_check(
        self,
        feature_set: str,
        bank: str,
        job_id: str,
        planned_events: Sequence[PrivacyEvent],
        delta: float | None,
    ) -> tuple[BudgetCheck, Cap]:
        """Compose what counts now with the planned events (no lock held, nothing written)."""
        feature_set = _check_ref(feature_set)
        check_name(bank, "bank name")
        job_id = _check_job_id(job_id)
        planned = tuple(_check_events(planned_events))
        now = self._clock()
        with read_transaction(self.conn) as conn:
            cap = self._cap(conn, feature_set, bank)
            counted = [] if cap is None else self._counted(conn, cap, now)
        if cap is None:
            raise _no_cap(feature_set, bank)
        _check_delta(job_id, bank, feature_set, delta, cap)
        return _budget_check(job_id, cap, counted, planned), cap

    def reserve(
        self,
        feature_set: str,
        bank: str,
        job_id: str,
        planned_events: Sequence[PrivacyEvent],
        delta: float | None = None,
        *,
        actor: str | None = None,
    ) -> JobRecord:
        """Reserve a job's planned spend, or refuse it with the numbers.

        Parameters
        ----------
        feature_set : str
            ``name@version`` the job reads.
        bank : str
            The bank the job runs for.
        job_id : str
            Unique per job (one reservation per job id; a job reading two feature sets uses
            two ids, e.g. ``<run>/<feature set>``).
        planned_events : sequence of PrivacyEvent
            What the job's mechanisms will emit; empty for a job without DP (recorded, spends
            nothing).
        delta : float, optional
            The δ the job targets; must not exceed the cap's. All accounting uses the cap's δ.
        actor : str, optional
            Who asks; default ``$LAB_ACTOR`` or the OS user.

        Returns
        -------
        JobRecord
            The reservation (the existing one if this exact reservation was made before).

        Raises
        ------
        NoCapError
            If the platform set no cap for the pair.
        DeltaExceedsCapError
            If ``delta`` exceeds the cap's δ.
        BudgetExceededError
            If the composition would exceed the cap; ``.check`` holds the numbers.
        JobStateError
            If ``job_id`` was used for another reservation, or is already closed.
        AccountingError
            If the events cannot be composed with what was spent (different units).
        """
        feature_set = _check_ref(feature_set)
        check_name(bank, "bank name")
        job_id = _check_job_id(job_id)
        planned = tuple(_check_events(planned_events))
        who = actor or default_actor()
        for _ in range(MAX_DECISION_ATTEMPTS):
            # 1. Read what counts now (a snapshot; no write lock held).
            now = self._clock()
            with read_transaction(self.conn) as conn:
                existing = self._job(conn, job_id)
                cap = self._cap(conn, feature_set, bank)
                counted = [] if cap is None else self._counted(conn, cap, now)
            if existing is not None:
                return self._same_reservation(existing, feature_set, bank, planned, delta)
            if cap is None:
                raise _no_cap(feature_set, bank)
            _check_delta(job_id, bank, feature_set, delta, cap)
            # 2. Compose outside the lock (Opacus: imports torch once, then milliseconds).
            check = _budget_check(job_id, cap, counted, planned)
            payload = {**check.to_dict(), "events": [e.to_dict() for e in planned]}
            # 3. Decide under the write lock, if nothing that counts changed meanwhile.
            with write_transaction(self.conn) as conn:
                existing = self._job(conn, job_id)
                if existing is not None:
                    return self._same_reservation(existing, feature_set, bank, planned, delta)
                if self._cap(conn, feature_set, bank) != cap or _events_key(
                    self._counted(conn, cap, now)
                ) != _events_key(counted):
                    continue  # another job reserved or closed meanwhile: compose again
                if not check.fits:
                    # The refusal is audited; the ledger is left as it was (nothing written).
                    self.audit.record("budget_refused", payload, who)
                    raise BudgetExceededError(_refusal_message(check, cap), check)
                conn.execute(
                    "INSERT INTO budget_jobs (job_id, feature_set, bank, state, planned_events, "
                    "job_delta, reserved_at, reserved_by) VALUES (?, ?, ?, 'reserved', ?, ?, ?, ?)",
                    (job_id, feature_set, bank, _dump(planned), delta, iso(now), who),
                )
                self.audit.record("budget_checked", payload, who)
                record = self._job(conn, job_id)
            logger.info(
                "reserved %s on %s for %s: eps %.4g -> %.4g of %.4g",
                job_id,
                feature_set,
                bank,
                check.spent_epsilon,
                check.would_be_epsilon,
                cap.epsilon,
            )
            if record is None:  # pragma: no cover - inserted above in the same transaction
                raise UnknownJobError(f"job {job_id} vanished after its reservation")
            return record
        raise _busy(self, job_id)

    def commit(
        self,
        job_id: str,
        actual_events: Sequence[PrivacyEvent],
        *,
        outcome: Outcome = "finished",
        actor: str | None = None,
    ) -> JobRecord:
        """Record what a job actually spent; call it whenever the job touched data.

        Idempotent: committing the same events again returns the record unchanged. Events
        beyond the plan are recorded anyway (the data was used) and flagged in the audit log.

        Raises
        ------
        UnknownJobError
            If no reservation exists for ``job_id``.
        JobStateError
            If the job was released, or committed before with other events or outcome.
        """
        job_id = _check_job_id(job_id)
        actual = tuple(_check_events(actual_events))
        if outcome not in ("finished", "failed"):
            raise LedgerError(f"outcome must be 'finished' or 'failed', got {outcome!r}")
        who = actor or default_actor()
        for _ in range(MAX_DECISION_ATTEMPTS):
            with read_transaction(self.conn) as conn:
                job = self._require_job(conn, job_id)
                cap = self._cap(conn, job.feature_set, job.bank)
            extra = {} if cap is None else _spend_figures(job, actual, cap)  # outside the lock
            with write_transaction(self.conn) as conn:
                current = self._require_job(conn, job_id)
                if current.state == "committed":
                    if current.actual_events == actual and current.outcome == outcome:
                        return current
                    raise JobStateError(
                        f"job {job_id} was already committed with other events or outcome "
                        f"({current.outcome}); a spend is recorded once"
                    )
                if current.state == "released":
                    raise JobStateError(
                        f"job {job_id} was released (it never touched data); it cannot spend "
                        "now. Reserve a new job id"
                    )
                if current != job or self._cap(conn, job.feature_set, job.bank) != cap:
                    continue  # the cap changed meanwhile: account again
                now = iso(self._clock())
                conn.execute(
                    "UPDATE budget_jobs SET state = 'committed', outcome = ?, actual_events = ?, "
                    "closed_at = ?, closed_by = ? WHERE job_id = ?",
                    (outcome, _dump(actual), now, who, job_id),
                )
                payload: dict[str, Any] = {
                    "job_id": job_id,
                    "feature_set": job.feature_set,
                    "bank": job.bank,
                    "outcome": outcome,
                    "dp": bool(actual),
                    "events": [e.to_dict() for e in actual],
                    **extra,
                }
                if extra.get("exceeded_plan"):
                    logger.warning(
                        "job %s spent eps %.4g, more than the %.4g it reserved",
                        job_id,
                        extra["epsilon"],
                        extra["planned_epsilon"],
                    )
                self.audit.record("budget_spent", payload, who)
                return self._require_job(conn, job_id)
        raise _busy(self, job_id)

    def release(self, job_id: str, *, actor: str | None = None) -> JobRecord:
        """Drop the reservation of a job that failed before touching data (idempotent).

        Raises
        ------
        UnknownJobError
            If no reservation exists for ``job_id``.
        JobStateError
            If the job was committed: a spend cannot be undone.
        """
        job_id = _check_job_id(job_id)
        who = actor or default_actor()
        with write_transaction(self.conn) as conn:
            job = self._require_job(conn, job_id)
            if job.state == "released":
                return job
            if job.state == "committed":
                raise JobStateError(
                    f"job {job_id} was committed ({job.outcome}); a recorded spend cannot be "
                    "released"
                )
            conn.execute(
                "UPDATE budget_jobs SET state = 'released', closed_at = ?, closed_by = ? "
                "WHERE job_id = ?",
                (iso(self._clock()), who, job_id),
            )
            self.audit.record(
                "budget_released",
                {"job_id": job_id, "feature_set": job.feature_set, "bank": job.bank},
                who,
            )
            return self._require_job(conn, job_id)

    # -- queries --------------------------------------------------------------------------------

    def status(self) -> list[BudgetStatus]:
        """Caps, spent, reserved and remaining ε per (feature set, bank), at the cap's δ."""
        now = self._clock()
        rows: list[BudgetStatus] = []
        with read_transaction(self.conn) as conn:
            caps = [
                _cap_from_row(r)
                for r in conn.execute("SELECT * FROM budget_caps ORDER BY feature_set, bank")
            ]
            windows = [(cap, self._window_jobs(conn, cap, now)) for cap in caps]
        for cap, jobs in windows:
            spent_events = [e for j in jobs if j.state == "committed" for e in j.counted_events()]
            all_events = [e for j in jobs for e in j.counted_events()]
            spent = compose(spent_events, cap.delta, cap.accountant)
            total = compose(all_events, cap.delta, cap.accountant)
            rows.append(
                BudgetStatus(
                    feature_set=cap.feature_set,
                    bank=cap.bank,
                    cap_epsilon=cap.epsilon,
                    delta=cap.delta,
                    accountant=cap.accountant,
                    window_days=cap.window_days,
                    window_start=iso(now - timedelta(days=cap.window_days)),
                    spent_epsilon=spent,
                    reserved_epsilon=max(total - spent, 0.0),
                    remaining_epsilon=cap.epsilon - total,
                    open_reservations=sum(j.state == "reserved" for j in jobs),
                    jobs_in_window=len(jobs),
                )
            )
        return rows

    def jobs(self, feature_set: str | None = None, bank: str | None = None) -> list[JobRecord]:
        """Every job the ledger knows (all states, all time), oldest first."""
        sql = "SELECT * FROM budget_jobs"
        clauses, params = [], []
        if feature_set is not None:
            clauses.append("feature_set = ?")
            params.append(_check_ref(feature_set))
        if bank is not None:
            clauses.append("bank = ?")
            params.append(bank)
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY reserved_at, job_id"
        with read_transaction(self.conn) as conn:
            return [_job_from_row(r) for r in conn.execute(sql, params)]

    def job(self, job_id: str) -> JobRecord:
        """Return one job.

        Raises
        ------
        UnknownJobError
            If the ledger has no such job.
        """
        with read_transaction(self.conn) as conn:
            return self._require_job(conn, job_id)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[tuple[list[Cap], list[JobRecord]]]:
        """Every cap and job, with the write lock held for the block so nothing changes.

        For reconciling the ledger with the audit log: while the block runs no budget
        decision can be half-written (its audit entry appended, its row not yet committed).
        Falls back to a plain read snapshot when the database is read-only to this account.
        """
        conn = self.conn
        try:
            begin_immediate(conn)
        except sqlite3.OperationalError as exc:
            if "readonly" not in str(exc).lower():
                raise
            conn.execute("BEGIN")
        try:
            caps = [
                _cap_from_row(r)
                for r in conn.execute("SELECT * FROM budget_caps ORDER BY feature_set, bank")
            ]
            jobs = [
                _job_from_row(r)
                for r in conn.execute("SELECT * FROM budget_jobs ORDER BY reserved_at, job_id")
            ]
            yield caps, jobs
        finally:
            conn.execute("ROLLBACK")

    def epsilon_of(self, job: JobRecord) -> tuple[float, float | None]:
        """Return (planned ε, spent ε or None) of a job at its cap's δ and accountant."""
        cap = self.cap(job.feature_set, job.bank)
        planned = compose(job.planned_events, cap.delta, cap.accountant)
        spent = (
            None
            if job.actual_events is None
            else compose(job.actual_events, cap.delta, cap.accountant)
        )
        return planned, spent

    # -- internals ------------------------------------------------------------------------------

    @staticmethod
    def _cap(conn: sqlite3.Connection, feature_set: str, bank: str) -> Cap | None:
        row = conn.execute(
            "SELECT * FROM budget_caps WHERE feature_set = ? AND bank = ?", (feature_set, bank)
        ).fetchone()
        return None if row is None else _cap_from_row(row)

    @staticmethod
    def _job(conn: sqlite3.Connection, job_id: str) -> JobRecord | None:
        row = conn.execute("SELECT * FROM budget_jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else _job_from_row(row)

    def _require_job(self, conn: sqlite3.Connection, job_id: str) -> JobRecord:
        job = self._job(conn, job_id)
        if job is None:
            raise UnknownJobError(
                f"no reservation for job {job_id!r}; reserve() must run before the job touches data"
            )
        return job

    def _counted(self, conn: sqlite3.Connection, cap: Cap, now: datetime) -> list[PrivacyEvent]:
        """The events that count against ``cap`` at ``now`` (spends and open reservations)."""
        return [e for job in self._window_jobs(conn, cap, now) for e in job.counted_events()]

    @staticmethod
    def _window_jobs(conn: sqlite3.Connection, cap: Cap, now: datetime) -> list[JobRecord]:
        start = now - timedelta(days=cap.window_days)
        rows = conn.execute(
            "SELECT * FROM budget_jobs WHERE feature_set = ? AND bank = ? AND state != 'released'",
            (cap.feature_set, cap.bank),
        ).fetchall()
        jobs = [_job_from_row(r) for r in rows]
        return [
            j
            for j in jobs
            if j.state == "reserved"
            or (j.closed_at is not None and parse_iso(j.closed_at) >= start)
        ]

    @staticmethod
    def _same_reservation(
        job: JobRecord,
        feature_set: str,
        bank: str,
        planned: tuple[PrivacyEvent, ...],
        delta: float | None,
    ) -> JobRecord:
        same = (
            job.feature_set == feature_set
            and job.bank == bank
            and job.planned_events == planned
            and job.job_delta == delta
        )
        if not same:
            raise JobStateError(
                f"job id {job.job_id!r} already has a reservation ({job.feature_set}, "
                f"{job.bank}) with other parameters; use a new job id per job"
            )
        if job.state != "reserved":
            raise JobStateError(
                f"job {job.job_id!r} is already {job.state}; use a new job id for a new run"
            )
        return job


def _budget_check(
    job_id: str, cap: Cap, counted: list[PrivacyEvent], planned: tuple[PrivacyEvent, ...]
) -> BudgetCheck:
    """The numbers of a reservation decision (composes three times; no lock may be held)."""
    would_be = compose(counted + list(planned), cap.delta, cap.accountant)
    return BudgetCheck(
        feature_set=cap.feature_set,
        bank=cap.bank,
        job_id=job_id,
        cap_epsilon=cap.epsilon,
        delta=cap.delta,
        accountant=cap.accountant,
        window_days=cap.window_days,
        spent_epsilon=compose(counted, cap.delta, cap.accountant),
        planned_epsilon=compose(planned, cap.delta, cap.accountant),
        would_be_epsilon=would_be,
        fits=would_be <= cap.epsilon,
    )


def _check_delta(job_id: str, bank: str, feature_set: str, delta: float | None, cap: Cap) -> None:
    if delta is not None and not 0 < delta <= cap.delta:
        raise DeltaExceedsCapError(
            f"job {job_id} targets delta={delta:g} but the cap of {bank} on "
            f"{feature_set} is delta={cap.delta:g}; target delta <= {cap.delta:g}"
        )


def _spend_figures(job: JobRecord, actual: tuple[PrivacyEvent, ...], cap: Cap) -> dict[str, Any]:
    """ε spent and planned of a job at its cap's δ (for the ``budget_spent`` audit entry)."""
    spent = compose(actual, cap.delta, cap.accountant)
    planned = compose(job.planned_events, cap.delta, cap.accountant)
    return {
        "epsilon": spent,
        "planned_epsilon": planned,
        "delta": cap.delta,
        "accountant": cap.accountant,
        "exceeded_plan": spent > planned,
    }


def _events_key(events: Iterable[PrivacyEvent]) -> list[tuple[float, float, int, str, str]]:
    """An order-free key of a multiset of events (what a composition depends on)."""
    return sorted((e.noise_multiplier, e.sample_rate, e.steps, e.unit, e.mechanism) for e in events)


def _busy(ledger: BudgetLedger, job_id: str) -> StoreBusyError:
    return StoreBusyError(
        f"{ledger.path}: the budget of job {job_id} kept changing under it (other jobs reserved "
        f"or closed {MAX_DECISION_ATTEMPTS} times while it was being accounted); nothing was "
        "recorded; retry the command"
    )


def _closed_since(job: JobRecord, start: datetime) -> bool:
    return job.closed_at is not None and parse_iso(job.closed_at) >= start


def _check_ref(feature_set: str) -> str:
    name, version = parse_ref(feature_set)
    return format_ref(name, version or "")


def _check_job_id(job_id: str) -> str:
    job_id = job_id.strip()
    if not job_id or len(job_id) > 200:
        raise LedgerError(f"job id {job_id!r} must be 1-200 characters; use the run id")
    return job_id


def _check_events(events: Iterable[PrivacyEvent]) -> list[PrivacyEvent]:
    out = list(events)
    for index, event in enumerate(out):
        if not isinstance(event, PrivacyEvent):
            raise LedgerError(
                f"event {index} is a {type(event).__name__}, not a models.privacy.PrivacyEvent"
            )
    return out


def _no_cap(feature_set: str, bank: str) -> NoCapError:
    return NoCapError(
        f"no privacy budget is set for bank {bank!r} on feature set {feature_set}; the platform "
        f"sets one with `lab budget set {feature_set} --bank {bank} --epsilon E --delta D`"
    )


def _refusal_message(check: BudgetCheck, cap: Cap) -> str:
    return (
        f"privacy budget exceeded for bank {check.bank} on {check.feature_set}: cap "
        f"epsilon={cap.epsilon:.4g} (delta={cap.delta:g}, {cap.accountant}, {cap.window_days}-day "
        f"window), spent epsilon={check.spent_epsilon:.4g} (incl. open reservations), job "
        f"{check.job_id} plans epsilon={check.planned_epsilon:.4g} alone, would-be total "
        f"epsilon={check.would_be_epsilon:.4g} > cap; raise the noise, lower the sample rate or "
        "steps, wait for the window to renew, or ask the platform to raise the cap"
    )


def _dump(events: Iterable[PrivacyEvent]) -> str:
    return json.dumps([e.to_dict() for e in events], sort_keys=True)


def _load(text: str | None) -> tuple[PrivacyEvent, ...] | None:
    if text is None:
        return None
    return tuple(PrivacyEvent.from_dict(d) for d in json.loads(text))


def _cap_from_row(row: sqlite3.Row) -> Cap:
    return Cap(
        feature_set=row["feature_set"],
        bank=row["bank"],
        epsilon=row["epsilon"],
        delta=row["delta"],
        accountant=row["accountant"],
        window_days=row["window_days"],
        set_at=row["set_at"],
        set_by=row["set_by"],
    )


def _job_from_row(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        job_id=row["job_id"],
        feature_set=row["feature_set"],
        bank=row["bank"],
        state=row["state"],
        outcome=row["outcome"],
        planned_events=_load(row["planned_events"]) or (),
        actual_events=_load(row["actual_events"]),
        job_delta=row["job_delta"],
        reserved_at=row["reserved_at"],
        closed_at=row["closed_at"],
        reserved_by=row["reserved_by"],
        closed_by=row["closed_by"],
    )
