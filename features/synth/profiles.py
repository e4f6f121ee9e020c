"""Bank profiles: how banks differ (non-IID) in customers, products and risk.

A profile tilts which firms a bank lends to (industry, level of the
registering office, firm health and size), its product mix and pricing, and
its target default rate. ``heterogeneity`` interpolates every profile towards
a neutral bank: 0 gives identically distributed banks, 1 the profiles as
written, values above 1 exaggerate the differences.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from features.synth.divisions import DIVISION_LEVELS
from features.synth.schema import INDUSTRIES, LOAN_PRODUCTS

__all__ = ["BANK_PROFILES", "DEFAULT_PROFILE_CYCLE", "BankProfile", "ResolvedProfile"]


@dataclass(frozen=True)
class BankProfile:
    """Stylised lending profile of one kind of bank.

    Attributes
    ----------
    name : str
        Registry key.
    description : str
        English description.
    default_rate : float
        Target 12-month default rate of the bank's book.
    size_weight : float
        Relative book size when bank sizes are derived.
    industry_tilt : dict of str to float
        Multiplicative selection weight by industry section letter (default 1).
    level_tilt : dict of str to float
        Multiplicative selection weight by division level (default 1).
    health_selection : float
        Log selection weight per unit of latent firm health (screening).
    size_selection : float
        Log selection weight per standard deviation of log firm size.
    product_mix : tuple of float
        Base shares of :data:`~features.synth.schema.LOAN_PRODUCTS`.
    base_rate_pct : float
        Interest rate for an average borrower, per cent.
    relationship_months : float
        Mean length of the account relationship, months.
    """

    name: str
    description: str
    default_rate: float
    size_weight: float
    industry_tilt: dict[str, float] = field(default_factory=dict)
    level_tilt: dict[str, float] = field(default_factory=dict)
    health_selection: float = 0.3
    size_selection: float = 0.0
    product_mix: tuple[float, float, float, float] = (0.30, 0.30, 0.20, 0.20)
    base_rate_pct: float = 4.2
    relationship_months: float = 40.0


_NEUTRAL = BankProfile("neutral", "Neutral reference bank.", 0.035, 1.0)

BANK_PROFILES: dict[str, BankProfile] = {
    p.name: p
    for p in (
        BankProfile(
            "city_commercial",
            "City commercial bank: local urban SMEs, balanced industries, average risk.",
            default_rate=0.035,
            size_weight=1.0,
            industry_tilt={"F": 1.2, "L": 1.2, "H": 1.1, "A": 0.6},
            level_tilt={"Urban district": 1.3, "County": 0.6},
            health_selection=0.3,
            product_mix=(0.30, 0.30, 0.20, 0.20),
            base_rate_pct=4.3,
            relationship_months=40.0,
        ),
        BankProfile(
            "rural_commercial",
            "Rural commercial bank: counties, agriculture and small manufacturing, "
            "higher default rate, more guaranteed and mortgage loans.",
            default_rate=0.055,
            size_weight=0.6,
            industry_tilt={"A": 5.0, "C": 1.6, "H": 1.2, "I": 0.35, "M": 0.4, "K": 0.6},
            level_tilt={
                "County": 3.5,
                "County-level city": 2.0,
                "Urban district": 0.5,
                "Provincial or municipal": 0.3,
            },
            health_selection=0.0,
            size_selection=-0.2,
            product_mix=(0.15, 0.20, 0.30, 0.35),
            base_rate_pct=5.2,
            relationship_months=60.0,
        ),
        BankProfile(
            "joint_stock",
            "Joint-stock commercial bank: urban, technology and larger firms, "
            "stricter screening, lower default rate, more tax-credit loans.",
            default_rate=0.022,
            size_weight=0.8,
            industry_tilt={"I": 2.2, "M": 2.0, "C": 1.3, "A": 0.25, "H": 0.5, "O": 0.6},
            level_tilt={
                "Urban district": 1.5,
                "Provincial or municipal": 1.6,
                "County": 0.35,
                "County-level city": 0.8,
            },
            health_selection=0.7,
            size_selection=0.3,
            product_mix=(0.45, 0.30, 0.15, 0.10),
            base_rate_pct=3.7,
            relationship_months=30.0,
        ),
    )
}
"""Known profiles by name."""

DEFAULT_PROFILE_CYCLE: tuple[str, ...] = ("city_commercial", "rural_commercial", "joint_stock")
"""Profiles assigned to ``bank_1``, ``bank_2``, ... when none are configured (cycled)."""


@dataclass(frozen=True)
class ResolvedProfile:
    """A profile after applying ``heterogeneity``, as arrays ready for sampling.

    Attributes
    ----------
    name : str
        Profile name.
    default_rate : float
        Target default rate.
    industry_log_tilt : numpy.ndarray
        Log selection weight per industry (index of :data:`INDUSTRIES`).
    level_log_tilt : numpy.ndarray
        Log selection weight per division level.
    health_selection, size_selection : float
        Log selection slopes.
    product_mix : numpy.ndarray
        Product shares.
    base_rate_pct, relationship_months : float
        Pricing and relationship parameters.
    """

    name: str
    default_rate: float
    industry_log_tilt: NDArray[np.float64]
    level_log_tilt: NDArray[np.float64]
    health_selection: float
    size_selection: float
    product_mix: NDArray[np.float64]
    base_rate_pct: float
    relationship_months: float


def resolve(
    profile: BankProfile, heterogeneity: float, default_rate: float | None
) -> ResolvedProfile:
    """Interpolate ``profile`` towards the neutral bank.

    Parameters
    ----------
    profile : BankProfile
        Profile as written.
    heterogeneity : float
        0 = neutral (IID banks), 1 = as written.
    default_rate : float or None
        Override of the target default rate (taken as is).

    Returns
    -------
    ResolvedProfile
        Arrays ready for sampling.
    """
    het = float(heterogeneity)

    def lerp(neutral: float, value: float) -> float:
        return neutral + het * (value - neutral)

    ind = np.array([np.log(profile.industry_tilt.get(name[0], 1.0)) for name in INDUSTRIES]) * het
    lev = np.array([np.log(profile.level_tilt.get(lv, 1.0)) for lv in DIVISION_LEVELS]) * het
    mix = np.array(_NEUTRAL.product_mix) + het * (
        np.array(profile.product_mix) - np.array(_NEUTRAL.product_mix)
    )
    mix = np.clip(mix, 0.01, None)
    rate = lerp(_NEUTRAL.default_rate, profile.default_rate)
    if default_rate is not None:
        rate = default_rate
    rate = float(np.clip(rate, 0.002, 0.3))
    if len(mix) != len(LOAN_PRODUCTS):  # pragma: no cover - guarded by typing
        raise ValueError("product_mix must have one share per loan product")
    return ResolvedProfile(
        name=profile.name,
        default_rate=rate,
        industry_log_tilt=ind,
        level_log_tilt=lev,
        health_selection=lerp(_NEUTRAL.health_selection, profile.health_selection),
        size_selection=lerp(_NEUTRAL.size_selection, profile.size_selection),
        product_mix=mix / mix.sum(),
        base_rate_pct=lerp(_NEUTRAL.base_rate_pct, profile.base_rate_pct),
        relationship_months=lerp(_NEUTRAL.relationship_months, profile.relationship_months),
    )
