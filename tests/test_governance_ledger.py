"""The privacy-budget ledger: never overspends, even under races; reserve/commit/release rules."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.governance.audit import AuditLog
from lab.governance.errors import (
    AccountingError,
    BudgetExceededError,
    DeltaExceedsCapError,
    FeatureSetRefError,
    JobStateError,
    LedgerError,
    NoCapError,
    UnknownJobError,
)
from lab.governance.ledger import BudgetLedger, compose
from models.privacy import PrivacyEvent, epsilon

FS = "sme_platform@1"
BANK = "bank_1"
DELTA = 1e-5
EVENT = PrivacyEvent(1.0, 0.01, 100, unit="enterprise", mechanism="dp-sgd")


def eps(n: int) -> float:
    """ε of n jobs that each emit EVENT."""
    return compose([EVENT] * n, DELTA, "rdp")


def cap_between(n: int) -> float:
    """A cap that fits exactly n jobs of EVENT."""
    return (eps(n) + eps(n + 1)) / 2


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def ledger(tmp_path: Path) -> BudgetLedger:
    return BudgetLedger(tmp_path / "governance.db", audit=AuditLog(tmp_path / "log.jsonl"))


def _dump(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        caps = conn.execute("SELECT * FROM budget_caps ORDER BY 1, 2").fetchall()
        jobs = conn.execute("SELECT * FROM budget_jobs ORDER BY 1").fetchall()
    finally:
        conn.close()
    return [*caps, *jobs]


def test_composition_is_opacus_and_subadditive() -> None:
    assert eps(1) == pytest.approx(epsilon([EVENT], DELTA, "rdp"))
    assert eps(1) < eps(2) < 2 * eps(1)
    assert compose([], DELTA, "rdp") == 0.0


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.3, 20.0),
            st.floats(1e-4, 1.0),
            st.integers(1, 5000),
        ),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from([1e-3, 1e-5, 1e-8]),
)
def test_rdp_epsilon_is_opacus_rdp_accountants(
    specs: list[tuple[float, float, int]], delta: float
) -> None:
    """The budget's RDP path (Opacus's analysis module, loaded without torch) gives exactly what
    ``opacus.accountants.RDPAccountant`` gives, with the same orders."""
    import warnings

    from opacus.accountants import RDPAccountant

    from models.privacy import RDP_ORDERS

    assert list(RDP_ORDERS) == RDPAccountant.DEFAULT_ALPHAS
    accountant = RDPAccountant()
    accountant.history = list(specs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = accountant.get_epsilon(delta)
    events = [PrivacyEvent(n, q, s) for n, q, s in specs]
    assert epsilon(events, delta, "rdp") == expected


def test_a_budget_decision_imports_no_torch(tmp_path: Path) -> None:
    """A fresh process reserves budget without importing torch (so twenty racing processes get a
    decision in seconds, not after twenty torch imports on two cores)."""
    script = f"""
import sys
from pathlib import Path
from lab.governance.audit import AuditLog
from lab.governance.ledger import BudgetLedger
from models.privacy import PrivacyEvent
home = Path({str(tmp_path / "home")!r})
home.mkdir()
ledger = BudgetLedger(home / "g.db", audit=AuditLog(home / "l.jsonl"))
ledger.set_cap("fs@1", "bank", epsilon=10.0, delta=1e-5)
ledger.reserve("fs@1", "bank", "job-1", [PrivacyEvent(1.0, 0.01, 100)], 1e-5)
print("torch" in sys.modules)
"""
    env = {**os.environ, "LAB_KEYS": str(tmp_path / "keys")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


@settings(max_examples=12, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0.8, 1.0, 1.5]),
            st.sampled_from([0.01, 0.05]),
            st.integers(1, 200),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_merging_identical_mechanisms_changes_nothing(
    specs: list[tuple[float, float, int]],
) -> None:
    events = [PrivacyEvent(n, q, s, unit="enterprise") for n, q, s in specs]
    assert compose(events, DELTA, "rdp") == pytest.approx(epsilon(events, DELTA, "rdp"), rel=1e-9)


def test_reserve_commit_status(ledger: BudgetLedger) -> None:
    ledger.set_cap(FS, BANK, epsilon=cap_between(3), delta=DELTA)
    job = ledger.reserve(FS, BANK, "j1", [EVENT], DELTA)
    assert job.state == "reserved"
    assert job.planned_events == (EVENT,)
    (row,) = ledger.status()
    assert row.spent_epsilon == 0.0
    assert row.reserved_epsilon == pytest.approx(eps(1))
    assert row.open_reservations == 1
    ledger.commit("j1", [EVENT])
    (row,) = ledger.status()
    assert row.spent_epsilon == pytest.approx(eps(1))
    assert row.reserved_epsilon == 0.0
    assert row.remaining_epsilon == pytest.approx(cap_between(3) - eps(1))
    assert (row.accountant, row.delta, row.window_days) == ("rdp", DELTA, 365)
    types = [e.type for e in ledger.audit.entries()]
    assert types == ["budget_set", "budget_checked", "budget_spent"]
    checked = next(ledger.audit.entries("budget_checked")).payload
    assert checked["would_be_epsilon"] == pytest.approx(eps(1))
    assert checked["events"] == [EVENT.to_dict()]


def test_refusal_names_the_numbers_and_leaves_the_ledger_unchanged(
    ledger: BudgetLedger,
) -> None:
    ledger.set_cap(FS, BANK, epsilon=cap_between(2), delta=DELTA)
    ledger.reserve(FS, BANK, "j1", [EVENT])
    ledger.commit("j1", [EVENT])
    ledger.reserve(FS, BANK, "j2", [EVENT])
    before = _dump(ledger.path)
    with pytest.raises(BudgetExceededError) as info:
        ledger.reserve(FS, BANK, "j3", [EVENT])
    check = info.value.check
    assert check.spent_epsilon == pytest.approx(eps(2))
    assert check.planned_epsilon == pytest.approx(eps(1))
    assert check.would_be_epsilon == pytest.approx(eps(3))
    assert check.cap_epsilon == pytest.approx(cap_between(2))
    assert not check.fits
    message = str(info.value)
    for number in (check.cap_epsilon, check.spent_epsilon, check.would_be_epsilon):
        assert f"{number:.4g}" in message
    assert "j3" in message
    assert BANK in message
    assert FS in message
    assert _dump(ledger.path) == before
    refused = next(ledger.audit.entries("budget_refused")).payload
    assert refused["job_id"] == "j3"
    assert refused["fits"] is False
    assert ledger.audit.verify().ok


def test_a_precheck_refuses_as_reserve_would_and_writes_nothing_else(
    ledger: BudgetLedger,
) -> None:
    ledger.set_cap(FS, BANK, epsilon=cap_between(1), delta=DELTA)
    before = _dump(ledger.path)
    entries = len(list(ledger.audit.entries()))
    # Fits: nothing written, nothing audited; the numbers are reserve's.
    check = ledger.precheck(FS, BANK, "a", [EVENT])
    assert check.fits
    assert check.would_be_epsilon == pytest.approx(eps(1))
    assert ledger.check(FS, BANK, "a", [EVENT]) == check
    assert _dump(ledger.path) == before
    assert len(list(ledger.audit.entries())) == entries
    # Does not fit: refused with reserve's message and audit entry, the ledger unchanged.
    ledger.reserve(FS, BANK, "a", [EVENT])
    before = _dump(ledger.path)
    assert not ledger.check(FS, BANK, "b", [EVENT]).fits  # check alone audits nothing
    assert not list(ledger.audit.entries("budget_refused"))
    with pytest.raises(BudgetExceededError, match="b") as info:
        ledger.precheck(FS, BANK, "b", [EVENT])
    assert info.value.check.would_be_epsilon == pytest.approx(eps(2))
    assert _dump(ledger.path) == before
    [refused] = [e.payload for e in ledger.audit.entries("budget_refused")]
    assert refused["job_id"] == "b"
    with pytest.raises(NoCapError):
        ledger.precheck("other@1", BANK, "c", [EVENT])
    with pytest.raises(DeltaExceedsCapError):
        ledger.check(FS, BANK, "c", [EVENT], delta=1e-3)


def test_reservations_count_until_released(ledger: BudgetLedger) -> None:
    ledger.set_cap(FS, BANK, epsilon=cap_between(1), delta=DELTA)
    ledger.reserve(FS, BANK, "a", [EVENT])
    with pytest.raises(BudgetExceededError):
        ledger.reserve(FS, BANK, "b", [EVENT])
    ledger.release("a")
    assert ledger.reserve(FS, BANK, "b", [EVENT]).state == "reserved"


def test_reserve_commit_release_are_idempotent(ledger: BudgetLedger) -> None:
    ledger.set_cap(FS, BANK, epsilon=cap_between(3), delta=DELTA)
    first = ledger.reserve(FS, BANK, "j1", [EVENT], DELTA)
    assert ledger.reserve(FS, BANK, "j1", [EVENT], DELTA) == first
    done = ledger.commit("j1", [EVENT])
    assert ledger.commit("j1", [EVENT]) == done
    ledger.reserve(FS, BANK, "j2", [EVENT])
    gone = ledger.release("j2")
    assert ledger.release("j2") == gone
    (row,) = ledger.status()
    assert row.spent_epsilon == pytest.approx(eps(1))
    assert row.open_reservations == 0
    # Each transition is audited once.
    types = [e.type for e in ledger.audit.entries()]
    assert types.count("budget_checked") == 2
    assert types.count("budget_spent") == 1
    assert types.count("budget_released") == 1


def test_invalid_transitions(ledger: BudgetLedger) -> None:
    ledger.set_cap(FS, BANK, epsilon=cap_between(5), delta=DELTA)
    ledger.reserve(FS, BANK, "j1", [EVENT])
    with pytest.raises(JobStateError, match="other parameters"):
        ledger.reserve(FS, BANK, "j1", [EVENT, EVENT])
    ledger.commit("j1", [EVENT])
    with pytest.raises(JobStateError, match="already committed"):
        ledger.reserve(FS, BANK, "j1", [EVENT])
    with pytest.raises(JobStateError, match="already committed"):
        ledger.commit("j1", [EVENT, EVENT])
    with pytest.raises(JobStateError, match="cannot be released"):
        ledger.release("j1")
    ledger.reserve(FS, BANK, "j2", [EVENT])
    ledger.release("j2")
    with pytest.raises(JobStateError, match="released"):
        ledger.commit("j2", [EVENT])
    with pytest.raises(UnknownJobError, match="nope"):
        ledger.commit("nope", [])
    with pytest.raises(UnknownJobError):
        ledger.release("nope")


def test_failed_job_after_data_still_spends(ledger: BudgetLedger) -> None:
    ledger.set_cap(FS, BANK, epsilon=cap_between(3), delta=DELTA)
    ledger.reserve(FS, BANK, "j1", [EVENT, EVENT])
    job = ledger.commit("j1", [EVENT], outcome="failed")
    assert (job.state, job.outcome) == ("committed", "failed")
    (row,) = ledger.status()
    assert row.spent_epsilon == pytest.approx(eps(1))


def test_job_without_dp_is_recorded_and_spends_nothing(ledger: BudgetLedger) -> None:
    ledger.set_cap(FS, BANK, epsilon=0.5, delta=DELTA)
    ledger.reserve(FS, BANK, "plain", [])
    job = ledger.commit("plain", [])
    assert not job.dp
    (row,) = ledger.status()
    assert row.spent_epsilon == 0.0
    assert row.jobs_in_window == 1
    assert [j.job_id for j in ledger.jobs()] == ["plain"]
    assert next(ledger.audit.entries("budget_spent")).payload["dp"] is False


def test_spending_beyond_the_plan_is_recorded_and_flagged(ledger: BudgetLedger) -> None:
    ledger.set_cap(FS, BANK, epsilon=cap_between(1), delta=DELTA)
    ledger.reserve(FS, BANK, "j1", [EVENT])
    ledger.commit("j1", [EVENT, EVENT])
    (row,) = ledger.status()
    assert row.remaining_epsilon < 0
    assert next(ledger.audit.entries("budget_spent")).payload["exceeded_plan"] is True


def test_no_cap_and_delta_checks(ledger: BudgetLedger) -> None:
    with pytest.raises(NoCapError, match="lab budget set sme_platform@1 --bank bank_1"):
        ledger.reserve(FS, BANK, "j1", [EVENT])
    ledger.set_cap(FS, BANK, epsilon=1.0, delta=DELTA)
    with pytest.raises(NoCapError):
        ledger.reserve(FS, "bank_2", "j1", [EVENT])
    with pytest.raises(DeltaExceedsCapError, match=r"delta=0\.001"):
        ledger.reserve(FS, BANK, "j1", [EVENT], 1e-3)
    with pytest.raises(FeatureSetRefError, match="name@version"):
        ledger.reserve("sme_platform", BANK, "j1", [EVENT])
    assert ledger.jobs() == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epsilon": 0.0, "delta": DELTA}, "epsilon must be"),
        ({"epsilon": float("inf"), "delta": DELTA}, "epsilon must be"),
        ({"epsilon": 1.0, "delta": 1.0}, "delta must be in"),
        ({"epsilon": 1.0, "delta": DELTA, "accountant": "gdp"}, "unknown accountant"),
        ({"epsilon": 1.0, "delta": DELTA, "window_days": 0}, "window_days"),
    ],
)
def test_invalid_caps(ledger: BudgetLedger, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(LedgerError, match=match):
        ledger.set_cap(FS, BANK, **kwargs)


def test_events_of_different_units_cannot_be_composed(ledger: BudgetLedger) -> None:
    ledger.set_cap(FS, BANK, epsilon=10.0, delta=DELTA)
    ledger.reserve(FS, BANK, "j1", [EVENT])
    with pytest.raises(AccountingError, match="different units"):
        ledger.reserve(FS, BANK, "j2", [PrivacyEvent(1.0, 0.01, 10, unit="record")])


def test_window_renews(tmp_path: Path) -> None:
    clock = Clock()
    ledger = BudgetLedger(tmp_path / "g.db", audit=AuditLog(tmp_path / "log.jsonl"), clock=clock)
    ledger.set_cap(FS, BANK, epsilon=cap_between(1), delta=DELTA, window_days=30)
    ledger.reserve(FS, BANK, "old", [EVENT])
    ledger.commit("old", [EVENT])
    clock.now += timedelta(days=29)
    with pytest.raises(BudgetExceededError):
        ledger.reserve(FS, BANK, "early", [EVENT])
    clock.now += timedelta(days=2)
    assert ledger.reserve(FS, BANK, "later", [EVENT]).state == "reserved"
    (row,) = ledger.status()
    assert row.spent_epsilon == 0.0
    assert row.jobs_in_window == 1
    # An open reservation counts until it is closed, however old it is.
    clock.now += timedelta(days=90)
    with pytest.raises(BudgetExceededError):
        ledger.reserve(FS, BANK, "much-later", [EVENT])


def test_changing_the_accountant_reaccounts_what_was_spent(ledger: BudgetLedger) -> None:
    ledger.set_cap(FS, BANK, epsilon=5.0, delta=DELTA)
    ledger.reserve(FS, BANK, "j1", [EVENT])
    ledger.commit("j1", [EVENT])
    ledger.set_cap(FS, BANK, epsilon=5.0, delta=DELTA, accountant="prv")
    (row,) = ledger.status()
    assert row.accountant == "prv"
    assert row.spent_epsilon == pytest.approx(epsilon([EVENT], DELTA, "prv"), rel=1e-6)
    previous = list(ledger.audit.entries("budget_set"))[-1].payload["previous"]
    assert previous["accountant"] == "rdp"


def _race(path: str, log: str, job: str, barrier: Any, results: Any) -> None:
    ledger = BudgetLedger(Path(path), audit=AuditLog(Path(log)))
    barrier.wait(timeout=60)
    try:
        ledger.reserve(FS, BANK, job, [EVENT], DELTA)
        results.put((job, "reserved"))
    except BudgetExceededError:
        results.put((job, "refused"))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put((job, f"error: {type(exc).__name__}: {exc}"))


def test_twenty_processes_racing_for_the_last_budget_never_overspend(tmp_path: Path) -> None:
    db, log = tmp_path / "governance.db", tmp_path / "log.jsonl"
    already, room, racers = 4, 3, 20
    with BudgetLedger(db, audit=AuditLog(log)) as ledger:
        ledger.set_cap(FS, BANK, epsilon=cap_between(already + room), delta=DELTA)
        for i in range(already):
            ledger.reserve(FS, BANK, f"past-{i}", [EVENT])
            ledger.commit(f"past-{i}", [EVENT])
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(racers)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_race, args=(str(db), str(log), f"race-{i}", barrier, results))
        for i in range(racers)
    ]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert not [o for o in outcomes.values() if o.startswith("error")], outcomes
    winners = sorted(j for j, o in outcomes.items() if o == "reserved")
    assert len(winners) == room, outcomes
    with BudgetLedger(db, audit=AuditLog(log)) as ledger:
        (row,) = ledger.status()
        assert row.remaining_epsilon >= 0
        assert row.open_reservations == room
        assert sorted(j.job_id for j in ledger.jobs() if j.state == "reserved") == winners
    audit = AuditLog(log)
    assert audit.verify().ok
    assert len(list(audit.entries("budget_refused"))) == racers - room


def _race_fresh(db: str, log: str, job: str, barrier: Any, results: Any) -> None:
    """A racer in a new interpreter: nothing imported (no torch, no Opacus) before it reserves."""
    from lab.governance.audit import AuditLog
    from lab.governance.errors import BudgetExceededError
    from lab.governance.ledger import BudgetLedger

    ledger = BudgetLedger(Path(db), audit=AuditLog(Path(log)))
    barrier.wait()
    try:
        ledger.reserve(FS, BANK, job, [EVENT], DELTA)
        results.put((job, "reserved"))
    except BudgetExceededError:
        results.put((job, "refused"))
    except Exception as exc:
        results.put((job, f"error: {type(exc).__name__}: {exc}"))


@pytest.mark.slow
def test_twenty_fresh_interpreters_all_get_a_decision(tmp_path: Path) -> None:
    """Like separate `lab train` processes: each must import Opacus before it can compose.

    Timings are in benchmarks/budget_race.py; here: every racer decides, nobody crashes with
    'database is locked', nothing is overspent.
    """
    db, log = tmp_path / "governance.db", tmp_path / "log.jsonl"
    already, room, racers = 4, 3, 20
    with BudgetLedger(db, audit=AuditLog(log)) as ledger:
        ledger.set_cap(FS, BANK, epsilon=cap_between(already + room), delta=DELTA)
        for i in range(already):
            ledger.reserve(FS, BANK, f"past-{i}", [EVENT])
            ledger.commit(f"past-{i}", [EVENT])
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(racers)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_race_fresh, args=(str(db), str(log), f"fresh-{i}", barrier, results))
        for i in range(racers)
    ]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=600) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert not [o for o in outcomes.values() if o.startswith("error")], outcomes
    assert sorted(outcomes.values()).count("reserved") == room
    with BudgetLedger(db, audit=AuditLog(log)) as ledger:
        (row,) = ledger.status()
        assert row.remaining_epsilon >= 0
    assert AuditLog(log).verify().ok


def test_composition_never_runs_under_the_write_lock(
    ledger: BudgetLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lab.governance.ledger as ledger_module

    seen: list[bool] = []
    real = ledger_module.compose

    def spy(*args: Any, **kwargs: Any) -> float:
        seen.append(ledger.conn.in_transaction)
        return real(*args, **kwargs)

    monkeypatch.setattr(ledger_module, "compose", spy)
    ledger.set_cap(FS, BANK, epsilon=cap_between(1), delta=DELTA)
    ledger.reserve(FS, BANK, "j1", [EVENT])
    ledger.commit("j1", [EVENT])
    with pytest.raises(BudgetExceededError):
        ledger.reserve(FS, BANK, "j2", [EVENT])
    assert len(seen) >= 8
    assert not any(seen), "Opacus composed inside a transaction"


def test_a_decision_made_on_a_stale_snapshot_is_composed_again(
    ledger: BudgetLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another job reserves between the snapshot and the lock: the first must not overspend."""
    import lab.governance.ledger as ledger_module

    ledger.set_cap(FS, BANK, epsilon=cap_between(1), delta=DELTA)
    other = BudgetLedger(ledger.path, audit=ledger.audit)
    real = ledger_module._budget_check
    calls: list[str] = []

    def interleave(job_id: str, *args: Any) -> Any:
        calls.append(job_id)
        if job_id == "slow" and calls.count("slow") == 1:
            other.reserve(FS, BANK, "fast", [EVENT])  # sneaks in before "slow" takes the lock
        return real(job_id, *args)

    monkeypatch.setattr(ledger_module, "_budget_check", interleave)
    with pytest.raises(BudgetExceededError):
        ledger.reserve(FS, BANK, "slow", [EVENT])
    assert calls == ["slow", "fast", "slow"]
    assert [j.job_id for j in ledger.jobs()] == ["fast"]
    other.close()


def test_a_store_locked_elsewhere_ends_in_a_clear_retry_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lab.governance._common as common
    from lab.governance.errors import StoreBusyError

    monkeypatch.setattr(common, "SQLITE_TIMEOUT_S", 0.2)
    db = tmp_path / "governance.db"
    ledger = BudgetLedger(db, audit=AuditLog(tmp_path / "log.jsonl"))
    ledger.set_cap(FS, BANK, epsilon=5.0, delta=DELTA)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreBusyError, match=r"is busy: .* retry the command"):
            ledger.reserve(FS, BANK, "j1", [])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert ledger.reserve(FS, BANK, "j1", []).state == "reserved"
    ledger.close()
