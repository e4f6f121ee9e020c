"""Stopping a running job on request (Ctrl-C) without losing its governance.

The first interrupt only *asks* the coordinator to stop: :func:`check` raises
:class:`JobInterruptedError` at its next poll for replies, the driver then tells every node the
job failed (``job/end``), so a platform commits the releases it counted to its own ledger, and
the runtime winds down. A second interrupt stops at once (see :mod:`federated.simulation`).
"""

from __future__ import annotations

import threading

_STOP = threading.Event()


class JobInterruptedError(RuntimeError):
    """The job was interrupted on request (Ctrl-C) and stopped before it finished."""


def request_stop() -> None:
    """Ask the running job to stop at its next hop."""
    _STOP.set()


def stop_requested() -> bool:
    """Whether a stop was asked for."""
    return _STOP.is_set()


def reset() -> None:
    """Forget a stop request (a new job starts)."""
    _STOP.clear()


def check() -> None:
    """Raise :class:`JobInterruptedError` if a stop was asked for."""
    if _STOP.is_set():
        raise JobInterruptedError("the job was interrupted (Ctrl-C) and stopped")
