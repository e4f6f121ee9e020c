"""Progress of a running job, reported by the coordinator to whoever listens.

Library code calls :func:`report`; only the CLI installs a listener (a progress bar). Without
a listener, progress goes to the module logger at debug level.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a job: ``stage`` (e.g. ``align``), ``done`` of ``total`` units."""

    stage: str
    done: int
    total: int
    detail: str = ""


Listener = Callable[[ProgressEvent], None]
_lock = threading.Lock()
_listeners: list[Listener] = []


def add_listener(listener: Listener) -> None:
    """Start forwarding progress events to ``listener``."""
    with _lock:
        _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    """Stop forwarding to ``listener``."""
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


def report(stage: str, done: int, total: int, detail: str = "") -> None:
    """Announce progress of ``stage``."""
    event = ProgressEvent(stage, done, total, detail)
    logger.debug("%s %d/%d %s", stage, done, total, detail)
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(event)
