"""``python -m lab.deploy.supernode``: Flower's SuperNode with its polling made adaptive.

Flower 1.41's SuperNode (``flwr.supernode.start_client_internal``) sleeps a fixed 3 s after
every empty poll of the SuperLink and 0.5 s between checks for a ClientApp's reply, and no
option changes either. This launcher runs the unchanged ``flower-supernode`` entry point
after replacing those two waits: empty polls back off from ``--poll-fastest`` to
``--poll-slowest`` (:class:`~lab.deploy.polling.Backoff`, reset whenever a message arrives)
and the reply check waits ``--reply-poll``. Everything else (TLS, node authentication, node
config, isolation) is Flower's, from the arguments after ``--``.

With ``--watch-home`` the loop also runs the node's run watch (:mod:`lab.deploy.run_watch`):
every ``--watch-every`` seconds it asks the SuperLink, over the node's own connection, about
the run of each budget reservation the node journaled in that home, and settles those whose
run has ended.

What it gives up: more HTTPS requests to the SuperLink while a job runs (at most one per
``--poll-fastest`` seconds per node, fewer when idle); the patch is tied to Flower 1.41's
module layout and fails loudly if it changes.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from lab.deploy.polling import Backoff
from lab.deploy.run_watch import WATCH_SECONDS, RunWatch

logger = logging.getLogger(__name__)

#: The fixed waits of Flower 1.41's SuperNode loop that this launcher replaces.
IDLE_POLL_SECONDS = 3
REPLY_POLL_SECONDS = 0.5


class _Clock:
    """Stands in for the ``time`` module inside Flower's SuperNode loop."""

    def __init__(self, backoff: Backoff, reply_poll: float) -> None:
        self._backoff = backoff
        self._reply_poll = reply_poll

    def sleep(self, seconds: float) -> None:
        if seconds == IDLE_POLL_SECONDS:
            self._backoff.sleep()
        elif seconds == REPLY_POLL_SECONDS:
            time.sleep(self._reply_poll)
        else:
            time.sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def patch(
    module: ModuleType, backoff: Backoff, reply_poll: float, watch: RunWatch | None = None
) -> None:
    """Make ``module``'s SuperNode loop poll adaptively (and run ``watch``; module docstring)."""
    pull: Callable[..., int | None] | None = getattr(module, "_pull_and_store_message", None)
    if pull is None or getattr(module, "time", None) is not time:
        raise RuntimeError(
            "flwr.supernode.start_client_internal no longer has the layout this launcher "
            "patches (Flower 1.41); start flower-supernode directly"
        )

    def pulled(*args: Any, **kwargs: Any) -> int | None:
        get_run = kwargs.get("get_run")
        if watch is not None and get_run is not None:
            try:
                watch.tick(get_run)
            except Exception:  # the watch must never stop the node's loop
                logger.exception("the run watch failed; it looks again later")
        run_id = pull(*args, **kwargs)
        if run_id is not None:
            backoff.active()
        return run_id

    module._pull_and_store_message = pulled  # type: ignore[attr-defined]
    module.time = _Clock(backoff, reply_poll)  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> None:
    """Parse the launcher's options, patch the SuperNode loop, run ``flower-supernode``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="python -m lab.deploy.supernode")
    parser.add_argument("--poll-fastest", type=float, default=0.02)
    parser.add_argument("--poll-slowest", type=float, default=0.25)
    parser.add_argument("--reply-poll", type=float, default=0.005)
    parser.add_argument("--watch-home", type=Path, default=None)
    parser.add_argument("--watch-every", type=float, default=WATCH_SECONDS)
    options = parser.parse_args(argv[:split])
    watch = None
    if options.watch_home is not None:
        lab_logger = logging.getLogger("lab")  # Flower's own logger keeps its handlers
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        lab_logger.addHandler(handler)
        lab_logger.setLevel(logging.INFO)
        watch = RunWatch(options.watch_home, every=options.watch_every)
    from flwr.supernode import start_client_internal
    from flwr.supernode.cli import flower_supernode

    patch(
        start_client_internal,
        Backoff(fastest=options.poll_fastest, slowest=options.poll_slowest),
        options.reply_poll,
        watch,
    )
    sys.argv = ["flower-supernode", *argv[split + 1 :]]
    flower_supernode()


if __name__ == "__main__":
    main()
