"""Configuration of the synthetic SME generator."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from features.synth.profiles import BANK_PROFILES, DEFAULT_PROFILE_CYCLE

__all__ = ["MIN_BANK_SIZE", "SMEConfig"]

MIN_BANK_SIZE = 20
"""Smallest bank book the generator accepts."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SMEConfig:
    """What to generate: the platform universe, the banks and their differences.

    Parameters
    ----------
    n_enterprises : int
        Firms the platform knows (rows of the platform table), default 20000.
    n_banks : int
        Number of banks, default 1. Banks are named ``bank_1``, ``bank_2``, ...
    bank_sizes : tuple of int or None
        Borrowers per bank. ``None`` derives them: ``bank_share`` x
        ``n_enterprises`` x the profile's ``size_weight``.
    bank_share : float
        Book size of a bank with ``size_weight`` 1 as a fraction of the
        universe, default 0.4 (the platform knows far more firms than a bank).
    unmatched_rate : float
        Fraction of each bank's borrowers the platform does not know, default 0.10.
    seed : int
        Seed of the only source of randomness, ``numpy.random.PCG64(seed)``.
    bank_profiles : tuple of str or None
        Profile per bank (keys of :data:`~features.synth.profiles.BANK_PROFILES`);
        ``None`` cycles city commercial, rural commercial, joint-stock.
    heterogeneity : float
        0 makes banks identically distributed (IID), 1 (default) uses the
        profiles as written, up to 3 exaggerates their differences.
    default_rates : tuple of float or None
        Override of each bank's target default rate.

    Raises
    ------
    ValueError
        If a field is out of range; the message names the field and the fix.
    """

    n_enterprises: int = 20_000
    n_banks: int = 1
    bank_sizes: tuple[int, ...] | None = None
    bank_share: float = 0.4
    unmatched_rate: float = 0.10
    seed: int = 0
    bank_profiles: tuple[str, ...] | None = None
    heterogeneity: float = 1.0
    default_rates: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("bank_sizes", "bank_profiles", "default_rates"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        self._check_scalars()
        self._check_banks()

    def _check_scalars(self) -> None:
        n = self.n_enterprises
        if not _is_int(n) or not 100 <= n <= 50_000_000:
            raise ValueError(
                f"n_enterprises must be an int between 100 and 50,000,000, got {n!r}; "
                "pass e.g. n_enterprises=20000"
            )
        if not _is_int(self.n_banks) or not 1 <= self.n_banks <= 26:
            raise ValueError(f"n_banks must be an int between 1 and 26, got {self.n_banks!r}")
        if not _is_real(self.bank_share) or not 0.0 < self.bank_share <= 1.0:
            raise ValueError(
                f"bank_share must be in (0, 1], got {self.bank_share!r}; "
                "it is a bank's book as a fraction of n_enterprises (default 0.4)"
            )
        if not _is_real(self.unmatched_rate) or not 0.0 <= self.unmatched_rate <= 0.9:
            raise ValueError(
                f"unmatched_rate must be in [0, 0.9], got {self.unmatched_rate!r}; "
                "it is the fraction of a bank's borrowers unknown to the platform (e.g. 0.10)"
            )
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        if not _is_real(self.heterogeneity) or not 0.0 <= self.heterogeneity <= 3.0:
            raise ValueError(
                f"heterogeneity must be in [0, 3], got {self.heterogeneity!r}; "
                "use 0 for IID banks, 1 for the profiles as written"
            )

    def _check_banks(self) -> None:
        k = self.n_banks
        if self.bank_profiles is not None:
            if not isinstance(self.bank_profiles, tuple) or len(self.bank_profiles) != k:
                raise ValueError(
                    f"bank_profiles must be a tuple of {k} profile names (one per bank) "
                    f"or None, got {self.bank_profiles!r}"
                )
            unknown = [p for p in self.bank_profiles if p not in BANK_PROFILES]
            if unknown:
                raise ValueError(
                    f"bank_profiles has unknown profile(s) {unknown}; "
                    f"choose from {sorted(BANK_PROFILES)}"
                )
        if self.default_rates is not None:
            rates = self.default_rates
            if not isinstance(rates, tuple) or len(rates) != k:
                raise ValueError(
                    f"default_rates must be a tuple of {k} rates (one per bank) or None, "
                    f"got {rates!r}"
                )
            if not all(_is_real(r) and 0.002 <= r <= 0.3 for r in rates):
                raise ValueError(f"default_rates must each be in [0.002, 0.3], got {rates!r}")
        if self.bank_sizes is not None:
            sizes = self.bank_sizes
            if not isinstance(sizes, tuple) or len(sizes) != k:
                raise ValueError(
                    f"bank_sizes must be a tuple of {k} ints (one per bank) or None, "
                    f"got {sizes!r}; set n_banks to match"
                )
            if not all(_is_int(s) for s in sizes):
                raise ValueError(f"bank_sizes must hold ints, got {sizes!r}")
        for name, size in zip(self.bank_names, self.resolved_bank_sizes(), strict=True):
            if size < MIN_BANK_SIZE:
                raise ValueError(
                    f"bank_sizes: {name} would have {size} borrowers, fewer than "
                    f"{MIN_BANK_SIZE}; raise bank_sizes, bank_share or n_enterprises"
                )
            if size > self.n_enterprises:
                raise ValueError(
                    f"bank_sizes: {name} has {size} borrowers, more than the "
                    f"{self.n_enterprises} firms the platform knows; lower bank_sizes "
                    "or raise n_enterprises"
                )

    @property
    def bank_names(self) -> tuple[str, ...]:
        """Names of the banks, ``bank_1`` ... ``bank_k``."""
        return tuple(f"bank_{i + 1}" for i in range(self.n_banks))

    def resolved_profiles(self) -> tuple[str, ...]:
        """Return the profile name of each bank.

        Returns
        -------
        tuple of str
            One name per bank.
        """
        if self.bank_profiles is not None:
            return self.bank_profiles
        cycle = DEFAULT_PROFILE_CYCLE
        return tuple(cycle[i % len(cycle)] for i in range(self.n_banks))

    def resolved_bank_sizes(self) -> tuple[int, ...]:
        """Return the number of borrowers of each bank.

        Returns
        -------
        tuple of int
            ``bank_sizes`` if given, else derived from ``bank_share`` and the profiles.
        """
        if self.bank_sizes is not None:
            return self.bank_sizes
        return tuple(
            round(self.bank_share * self.n_enterprises * BANK_PROFILES[p].size_weight)
            for p in self.resolved_profiles()
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as a JSON-ready dict (tuples as lists).

        Returns
        -------
        dict
            Field name to value.
        """
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        return out
