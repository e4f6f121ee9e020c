"""Twenty fresh processes race for the last privacy budget: how long until each gets a decision.

Usage::

    .venv/bin/python benchmarks/budget_race.py --racers 20 --summary-json out/budget-race.json

In a temporary folder it sets a cap with room for ``--room`` more jobs (after ``--spent`` spent
ones), then starts ``--racers`` new Python interpreters (``spawn``: nothing imported yet, as
separate ``lab train`` processes would be). Each imports the ledger, waits at a barrier, then
calls ``BudgetLedger.reserve`` once. Reported per racer: the outcome (reserved, refused, or the
error) and the seconds from the barrier to its decision; overall: how many got a decision, the
slowest decision, and whether the cap was overspent.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FS = "sme_platform@1"
BANK = "bank_1"
DELTA = 1e-5


def _event() -> Any:
    from models.privacy import PrivacyEvent

    return PrivacyEvent(1.0, 0.01, 100, unit="enterprise", mechanism="dp-sgd")


def _racer(db: str, log: str, job: str, barrier: Any, results: Any, warm: bool) -> None:
    from lab.governance.audit import AuditLog
    from lab.governance.errors import BudgetExceededError
    from lab.governance.ledger import BudgetLedger, compose

    if warm:
        compose([_event()], DELTA, "rdp")
    ledger = BudgetLedger(Path(db), audit=AuditLog(Path(log)))
    barrier.wait()
    started = time.monotonic()
    try:
        ledger.reserve(FS, BANK, job, [_event()], DELTA)
        outcome = "reserved"
    except BudgetExceededError:
        outcome = "refused"
    except Exception as exc:
        outcome = f"error: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        traceback.print_exc()
    results.put((job, outcome, time.monotonic() - started))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--racers", type=int, default=20)
    parser.add_argument("--room", type=int, default=3)
    parser.add_argument("--spent", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--warm", action="store_true", help="import Opacus before the barrier")
    parser.add_argument("--summary-json", type=Path, default=Path("out/budget-race.json"))
    args = parser.parse_args()

    from lab.governance.audit import AuditLog
    from lab.governance.ledger import BudgetLedger, compose

    with tempfile.TemporaryDirectory(prefix="lab-race-") as tmp:
        os.environ.setdefault("LAB_KEYS", str(Path(tmp) / "keys"))
        db, log = Path(tmp) / "home" / "governance.db", Path(tmp) / "home" / "audit" / "log.jsonl"
        event = _event()

        def eps(n: int) -> float:
            return compose([event] * n, DELTA, "rdp")

        cap = (eps(args.spent + args.room) + eps(args.spent + args.room + 1)) / 2
        with BudgetLedger(db, audit=AuditLog(log)) as ledger:
            ledger.set_cap(FS, BANK, epsilon=cap, delta=DELTA)
            for i in range(args.spent):
                ledger.reserve(FS, BANK, f"past-{i}", [event])
                ledger.commit(f"past-{i}", [event])
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(args.racers)
        results = ctx.Queue()
        procs = [
            ctx.Process(
                target=_racer,
                args=(str(db), str(log), f"race-{i}", barrier, results, args.warm),
            )
            for i in range(args.racers)
        ]
        for p in procs:
            p.start()
        outcomes: list[tuple[str, str, float]] = []
        deadline = time.monotonic() + args.timeout
        while len(outcomes) < args.racers and time.monotonic() < deadline:
            try:
                outcomes.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
            except Exception:
                break
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        with BudgetLedger(db, audit=AuditLog(log)) as ledger:
            (row,) = ledger.status()
        chain_ok = AuditLog(log).verify().ok
    seconds = sorted(s for _, _, s in outcomes)
    summary = {
        "what": "fresh processes racing for the last privacy budget (BudgetLedger.reserve)",
        "racers": args.racers,
        "warm": args.warm,
        "room_for": args.room,
        "decisions": sum(not o.startswith("error") for _, o, _ in outcomes),
        "reserved": sum(o == "reserved" for _, o, _ in outcomes),
        "refused": sum(o == "refused" for _, o, _ in outcomes),
        "errors": sorted({o for _, o, _ in outcomes if o.startswith("error")}),
        "no_answer": args.racers - len(outcomes),
        "seconds_to_decision": {
            "p50": round(seconds[len(seconds) // 2], 2) if seconds else None,
            "max": round(seconds[-1], 2) if seconds else None,
        },
        "remaining_epsilon": round(row.remaining_epsilon, 6),
        "overspent": row.remaining_epsilon < 0,
        "audit_chain_ok": chain_ok,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(summary, indent=2))
    args.summary_json.parent.mkdir(parents=True, exist_ok=True)
    args.summary_json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
