"""Privacy events and their composition: mechanism, accounting and policy kept apart.

Code that adds noise emits :class:`PrivacyEvent` values (immutable); an accountant from Opacus
composes them into (ε, δ); the budget ledger (governance) decides whether a job may run. No
privacy arithmetic is hand-written here: :func:`epsilon` hands the events to Opacus's RDP or PRV
accountant.

Every mechanism in the lab is a (possibly subsampled) Gaussian mechanism, so an event is the
triple Opacus accountants understand, ``(noise_multiplier, sample_rate, steps)``, plus the unit
it protects and a label for auditors.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

Accountant = Literal["rdp", "prv"]
Unit = Literal["record", "enterprise", "client"]

ACCOUNTANTS: tuple[Accountant, ...] = ("rdp", "prv")


class PrivacyError(ValueError):
    """Malformed privacy events or accounting parameters."""


@dataclass(frozen=True)
class PrivacyEvent:
    """``steps`` applications of a Gaussian mechanism with the given noise and sampling.

    Attributes
    ----------
    noise_multiplier : float
        Noise standard deviation divided by the L2 sensitivity (clipping norm).
    sample_rate : float
        Poisson sampling probability per step (1.0: every record every step).
    steps : int
        Number of applications.
    unit : {"record", "enterprise", "client"}
        What one neighbouring dataset differs by: one row, one enterprise, one client.
    mechanism : str
        Human label (``dp-sgd``, ``secureboost-histogram-noise`` ...).
    """

    noise_multiplier: float
    sample_rate: float
    steps: int
    unit: Unit = "record"
    mechanism: str = "gaussian"

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise PrivacyError(f"noise_multiplier must be > 0, got {self.noise_multiplier}")
        if not 0 < self.sample_rate <= 1:
            raise PrivacyError(f"sample_rate must be in (0, 1], got {self.sample_rate}")
        if self.steps < 1:
            raise PrivacyError(f"steps must be >= 1, got {self.steps}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrivacyEvent:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


def epsilon(events: Iterable[PrivacyEvent], delta: float, accountant: Accountant = "rdp") -> float:
    """Compose events with an Opacus accountant and return ε at the given δ.

    Raises
    ------
    PrivacyError
        If δ is not in (0, 1), the accountant is unknown, or the events protect different units.
    """
    from opacus.accountants import PRVAccountant, RDPAccountant

    events = list(events)
    if not 0 < delta < 1:
        raise PrivacyError(f"delta must be in (0, 1), got {delta}")
    if accountant not in ACCOUNTANTS:
        raise PrivacyError(f"unknown accountant {accountant!r}; use one of {ACCOUNTANTS}")
    if not events:
        return 0.0
    units = {e.unit for e in events}
    if len(units) > 1:
        raise PrivacyError(f"events protect different units {sorted(units)}; account them apart")
    acc = RDPAccountant() if accountant == "rdp" else PRVAccountant()
    acc.history = [(e.noise_multiplier, e.sample_rate, e.steps) for e in events]
    with warnings.catch_warnings():
        # "Optimal order is the largest alpha": a looser, still valid, bound.
        warnings.simplefilter("ignore", UserWarning)
        return float(acc.get_epsilon(delta))
