"""Adaptive polling: poll fast right after activity, back off while idle.

Flower's deployment engine moves messages by polling (a SuperNode asks the SuperLink for
messages, a SuperExec asks its SuperNode for tasks, a ServerApp asks for replies). A fixed
short interval costs CPU on every idle poll; a fixed long one is added to every hop. Backing
off geometrically from ``fastest`` to ``slowest`` while nothing happens keeps hops short in a
busy exchange and idle polling cheap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Backoff:
    """The delay before the next poll.

    Attributes
    ----------
    fastest : float
        Delay right after activity (seconds).
    slowest : float
        Largest delay while idle (seconds).
    factor : float
        Growth of the delay per idle poll.
    """

    fastest: float = 0.01
    slowest: float = 0.2
    factor: float = 1.5
    current: float = 0.01

    def __post_init__(self) -> None:
        if not 0 < self.fastest <= self.slowest:
            raise ValueError(
                f"need 0 < fastest <= slowest, got fastest={self.fastest}, slowest={self.slowest}"
            )
        if self.factor < 1.0:
            raise ValueError(f"factor must be >= 1, got {self.factor}")
        self.current = self.fastest

    def active(self) -> None:
        """Something happened: poll fast again."""
        self.current = self.fastest

    def idle(self) -> float:
        """Nothing happened: return the delay to wait now and lengthen the next one."""
        delay = self.current
        self.current = min(self.slowest, self.current * self.factor)
        return delay

    def sleep(self) -> None:
        """Wait the idle delay."""
        time.sleep(self.idle())
