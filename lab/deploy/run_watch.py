"""A party node's watch over the runs of its open budget reservations.

A platform's node reserves a job's planned privacy spend in its own ledger before it reads its
data and commits what it released when the job ends (``job/end``). If the job's run ends
without that message (the coordinator restarted mid-job, its ServerApp died), the reservation
would stay open until an operator settles it. This watch runs inside the party's SuperNode
process (:mod:`lab.deploy.supernode`), in its polling loop: every :data:`WATCH_SECONDS` it
asks the SuperLink, over the node's own authenticated Fleet connection, about the run each
open journal names (``GetRun``); a run the SuperLink no longer runs (finished, failed,
stopped or unknown) has its reservation settled by the node, in a separate process
(``python -m lab.deploy.run_watch``), with :func:`lab.governance.node.settle`.

What the coordinator's answer can do: only end this node's part in a job. What is charged comes
from the node's own journal (every release is journaled before it leaves the node, and none
is refunded), and once a reservation is settled the node refuses every further release of
that job (:meth:`lab.governance.node.LabNodePolicy.progress`), so a coordinator that claims a
run ended (before any release, or that it never started) and carries on gets no uncharged
release. A node that starts settles every reservation it left open
(:func:`lab.deploy.node_runtime.start`), since its previous process's job state is gone.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Seconds between two looks at the runs of the node's open reservations.
WATCH_SECONDS = 10.0


def run_ended(get_run: Callable[[int], Any], run: int) -> str | None:
    """Why the SuperLink no longer runs ``run`` (``None``: it runs, or it could not answer)."""
    from flwr.supercore.run import RunNotRunningException

    try:
        get_run(run)
    except RunNotRunningException:  # a BaseException in Flower 1.41: caught by name
        return f"run {run} is no longer running on the SuperLink (ended, stopped or unknown)"
    except Exception as exc:  # the link is down, a transient error: look again later
        logger.info("could not ask the SuperLink about run %d: %s", run, exc)
    return None


class RunWatch:
    """The watch of one node home (see the module docstring).

    Parameters
    ----------
    home : Path
        The node's governance home (its journals and ledger).
    every : float
        Seconds between two looks.
    settle : callable, optional
        ``settle(reservation, run, reason) -> bool`` (settled); default
        :func:`settle_in_process`.
    background : bool
        Settle in a daemon thread, so the node's loop goes on meanwhile (default).
    """

    def __init__(
        self,
        home: Path,
        every: float = WATCH_SECONDS,
        settle: Callable[[str, int, str], bool] | None = None,
        *,
        background: bool = True,
    ) -> None:
        self.home = home
        self.every = every
        self._settle = settle or settle_in_process(home)
        self._background = background
        self._next = 0.0
        self._lock = threading.Lock()
        #: Reservations being settled, and when a failed settlement may be tried again.
        self._busy: set[str] = set()
        self._retry_at: dict[str, float] = {}

    def tick(self, get_run: Callable[[int], Any]) -> list[str]:
        """Look at the open reservations if it is time; return those handed over to settle."""
        now = time.monotonic()
        if now < self._next:
            return []
        self._next = now + self.every
        return self.look(get_run)

    def look(self, get_run: Callable[[int], Any]) -> list[str]:
        """Settle every open reservation whose run the SuperLink no longer runs."""
        from lab.governance.node import open_journals

        handed: list[str] = []
        for journal in open_journals(self.home):
            with self._lock:
                waiting = self._retry_at.get(journal.reservation, 0.0) > time.monotonic()
                if journal.run is None or journal.reservation in self._busy or waiting:
                    continue
            reason = run_ended(get_run, journal.run)
            if reason is None:
                continue
            logger.warning("settling reservation %s: %s", journal.reservation, reason)
            with self._lock:
                self._busy.add(journal.reservation)
            if self._background:
                threading.Thread(
                    target=self._run_settle,
                    args=(journal.reservation, journal.run, reason),
                    name=f"settle-{journal.reservation}",
                    daemon=True,
                ).start()
            else:
                self._run_settle(journal.reservation, journal.run, reason)
            handed.append(journal.reservation)
        return handed

    def _run_settle(self, reservation: str, run: int, reason: str) -> None:
        try:
            ok = self._settle(reservation, run, reason)
        except Exception:
            logger.exception("settling %s failed", reservation)
            ok = False
        with self._lock:
            self._busy.discard(reservation)
            if not ok:  # the journal is still there: look again later, not at every tick
                self._retry_at[reservation] = time.monotonic() + 6 * self.every


def settle_in_process(home: Path) -> Callable[[str, int, str], bool]:
    """A settle function that runs ``python -m lab.deploy.run_watch`` for one reservation.

    The SuperNode process never imports the ledger's accounting (Opacus, torch): each
    settlement is its own short process, logged.
    """

    def settle(reservation: str, run: int, reason: str) -> bool:
        command = [
            sys.executable,
            "-m",
            "lab.deploy.run_watch",
            "--home",
            str(home),
            "--reservation",
            reservation,
            "--run",
            str(run),
            "--reason",
            reason,
        ]
        done = subprocess.run(  # noqa: S603 (built here, never from input)
            command, capture_output=True, text=True, check=False
        )
        log = logger.info if done.returncode == 0 else logger.error
        log("settle %s: %s", reservation, (done.stdout + done.stderr).strip()[-500:])
        return done.returncode == 0

    return settle


def main(argv: list[str] | None = None) -> None:
    """Settle one reservation of the node home ``--home`` whose run ``--run`` ended."""
    parser = argparse.ArgumentParser(prog="python -m lab.deploy.run_watch")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--reservation", required=True)
    parser.add_argument("--run", type=int, required=True)
    parser.add_argument("--reason", required=True)
    options = parser.parse_args(argv)
    from lab.governance.errors import GovernanceError
    from lab.governance.node import settle

    try:
        outcome = settle(
            options.reservation,
            options.home,
            reason=f"the node's run watch: {options.reason}",
            run=options.run,
        )
    except GovernanceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"{outcome} {options.reservation}")


if __name__ == "__main__":
    main()
