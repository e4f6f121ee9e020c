"""Privacy events and their composition: mechanism, accounting and policy kept apart.

Code that adds noise emits :class:`PrivacyEvent` values (immutable); an accountant from Opacus
composes them into (ε, δ); the budget ledger (governance) decides whether a job may run. No
privacy arithmetic is hand-written here: :func:`epsilon` hands the events to Opacus's RDP or PRV
accountant. For RDP it calls Opacus's own analysis module (``opacus.accountants.analysis.rdp``,
numpy and scipy only) loaded by file, without the ``opacus`` package whose ``__init__`` imports
torch: a budget decision then costs milliseconds instead of a torch import (tens of seconds when
twenty processes start at once on two cores), and composes exactly as ``RDPAccountant`` does
(``tests/test_governance_ledger.py`` checks both agree).

Every mechanism in the lab is a (possibly subsampled) Gaussian mechanism, so an event is the
triple Opacus accountants understand, ``(noise_multiplier, sample_rate, steps)``, plus the unit
it protects and a label for auditors.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

Accountant = Literal["rdp", "prv"]
Unit = Literal["record", "enterprise", "client"]

ACCOUNTANTS: tuple[Accountant, ...] = ("rdp", "prv")

#: ``opacus.accountants.RDPAccountant.DEFAULT_ALPHAS`` (the RDP orders it tries), written here
#: so that reading it does not import torch; a test compares it with Opacus's.
RDP_ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))


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
    history = [(e.noise_multiplier, e.sample_rate, e.steps) for e in events]
    with warnings.catch_warnings():
        # "Optimal order is the largest alpha": a looser, still valid, bound.
        warnings.simplefilter("ignore", UserWarning)
        if accountant == "rdp":
            return _rdp_epsilon(history, delta)
        from opacus.accountants import PRVAccountant

        acc = PRVAccountant()
        acc.history = history
        return float(acc.get_epsilon(delta))


def _rdp_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """ε at ``delta`` of the composed history: ``RDPAccountant.get_privacy_spent``'s arithmetic."""
    analysis = rdp_analysis()
    rdp = sum(
        analysis.compute_rdp(q=rate, noise_multiplier=noise, steps=steps, orders=list(RDP_ORDERS))
        for noise, rate, steps in history
    )
    eps, _ = analysis.get_privacy_spent(orders=list(RDP_ORDERS), rdp=rdp, delta=delta)
    return float(eps)


@functools.cache
def rdp_analysis() -> ModuleType:
    """Opacus's ``accountants/analysis/rdp.py``, loaded by file without importing torch.

    Raises
    ------
    PrivacyError
        If Opacus is not installed or lacks the module.
    """
    package = importlib.util.find_spec("opacus")  # finds, does not run, its __init__
    origin = None if package is None else package.origin
    path = None if origin is None else Path(origin).parent / "accountants/analysis/rdp.py"
    spec = (
        None
        if path is None or not path.is_file()
        else importlib.util.spec_from_file_location("_lab_opacus_rdp_analysis", path)
    )
    if spec is None or spec.loader is None:
        raise PrivacyError("Opacus's RDP analysis (opacus.accountants.analysis.rdp) is missing")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
