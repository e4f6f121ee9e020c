"""Monthly snapshots of the same firms with realistic drift, and loan vintages that mature.

Post-loan monitoring needs *time*: the platform publishes a new snapshot of its feature sets
every month, a bank originates loans every month and learns whether a loan defaulted only
``outcome_months`` later. :func:`generate_timeline` evolves the world of
:mod:`features.synth.firms` month by month:

* **persistence**: each firm's latent health and conduct follow a monthly AR(1) around the
  firm's structural level (coefficient :attr:`DriftConfig.persistence`); liquidity moves faster
  (:data:`LIQUIDITY_PERSISTENCE`). The stationary spread equals the single-period world's, so
  without the events below the population does not drift.
* **seasonality**: a common swing of health with a trough in February (the Spring Festival)
  and a peak in August, amplitude :attr:`DriftConfig.seasonal_amplitude`.
* **a regional shock**: from :attr:`DriftConfig.shock_month` the firms of one province lose
  :attr:`DriftConfig.shock_size` of health and liquidity, recovering geometrically
  (:attr:`DriftConfig.shock_recovery` per month).
* **a tax-grading policy change**: grades are re-assessed once a year, in April
  (:data:`REGRADING_MONTH`, when the tax authority publishes them); from the first re-grading
  at or after :attr:`DriftConfig.policy_month` every grade threshold is
  :attr:`DriftConfig.policy_shift` points higher (stricter: fewer A's, and a B is a better firm
  than a B was before), so the grade's relation to default moves.

A platform's records do not all change every month. Each published group refreshes at its
own monthly rate (:data:`REFRESH_RATES`: filings and contributions monthly, certificates
rarely); a refreshed record is a fresh observation of the firm's current state, the others keep
last month's value; the tax grade changes only at a re-grading. Structural columns (age,
region, industry, legal form) do not move: the population is stationary, as a register's
entries and exits keep its age mix steady (firm births and exits are not simulated), so an
unchanged month is not mistaken for drift.

Each bank originates loans every month to firms it has not lent to before (one enterprise at
most once per bank, the privacy unit), selected by its profile on the firms' state at that
month; about ``unmatched_rate`` of them unknown to the platform. A loan's default within
``outcome_months`` follows the firm's *future* risk over those months, so a shock shows in the
vintages exposed to it, with the bank's offset calibrated once on its first vintage. The
outcome is known only once matured: ``default_12m`` is missing (``pd.NA``) for vintages younger
than ``outcome_months`` at the last month.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields, replace

import numpy as np
import pandas as pd

from features.synth import _common as c
from features.synth.banks import _calibrate, select_borrowers, simulate_book
from features.synth.config import SMEConfig
from features.synth.divisions import PROVINCES
from features.synth.firms import (
    SHOCK_SD,
    Latents,
    Observation,
    Structure,
    World,
    firm_logit,
    observe,
    simulate_world,
)
from features.synth.generator import _frame
from features.synth.profiles import BANK_PROFILES, resolve
from features.synth.schema import (
    BANK_COLUMNS,
    COLUMNS,
    LABEL_COLUMN,
    PLATFORM_COLUMNS,
    ColumnInfo,
)

__all__ = [
    "REFRESH_RATES",
    "VINTAGE_COLUMN",
    "DriftConfig",
    "SMETimeline",
    "generate_timeline",
]

logger = logging.getLogger(__name__)

#: Column of a bank's book naming the month a loan was originated (``YYYY-MM``).
VINTAGE_COLUMN = "vintage"

#: Monthly probability that a firm's records of a published group are refreshed.
REFRESH_RATES: dict[str, float] = {
    "registration": 0.05,
    "tax": 1.0,  # monthly VAT filings; the grade itself only at a re-grading
    "social_insurance": 1.0,
    "utilities": 1.0,
    "customs": 0.5,
    "judicial": 0.25,
    "quality_credit": 0.1,
    "quality_management": 0.05,
    "quality_brand": 0.05,
    "quality_foundation": 0.05,
    "quality_innovation": 0.05,
    "key_personnel": 0.05,
}

#: Month of the year (1-12) in which tax-credit grades are re-assessed and published.
REGRADING_MONTH = 4

#: Monthly AR(1) coefficient of liquidity (cash stress comes and goes faster than health).
LIQUIDITY_PERSISTENCE = 0.85

#: Columns that describe what a firm is; always current in a snapshot.
_STRUCTURAL = ("firm_age_years", "entity_type", "industry", "region", "division_level")
_GRADE = "tax_credit_grade"
_BANK_FEATURES = tuple(info for info in BANK_COLUMNS if info.name != LABEL_COLUMN)


@dataclass(frozen=True)
class DriftConfig:
    """How the world moves over the months of a timeline.

    Parameters
    ----------
    months : int
        Number of monthly snapshots, default 36.
    start : str
        First month, ``YYYY-MM``, default ``2024-01``.
    persistence : float
        Monthly AR(1) coefficient of health and conduct, in [0, 1), default 0.97.
    seasonal_amplitude : float
        Health swing of the seasons (trough in February), default 0.10.
    shock_province : str
        Province hit by the regional shock (a name in
        :data:`~features.synth.divisions.PROVINCES`), default ``Zhejiang``.
    shock_month : int or None
        Month index (0 = ``start``) the shock hits; ``None`` (or a month past the end) for
        no shock. Default 24.
    shock_size : float
        Health and liquidity lost at the shock, in standard deviations, default 0.8.
    shock_recovery : float
        Share of the shock left after each further month, in [0, 1], default 0.97.
    policy_month : int or None
        Month index from which re-gradings use the stricter thresholds; ``None`` (or a month
        past the end) for no policy change. Default 15.
    policy_shift : float
        Points added to every grade threshold by the policy change, default 6.
    outcome_months : int
        Default window of a loan and the lag before its outcome is known, default 12.

    Raises
    ------
    ValueError
        If a field is out of range; the message names the field and the fix.
    """

    months: int = 36
    start: str = "2024-01"
    persistence: float = 0.97
    seasonal_amplitude: float = 0.10
    shock_province: str = "Zhejiang"
    shock_month: int | None = 24
    shock_size: float = 0.8
    shock_recovery: float = 0.97
    policy_month: int | None = 15
    policy_shift: float = 6.0
    outcome_months: int = 12

    def __post_init__(self) -> None:
        if not isinstance(self.months, int) or isinstance(self.months, bool) or self.months < 1:
            raise ValueError(f"months must be an integer >= 1 (got {self.months!r})")
        try:
            first = pd.Period(self.start, freq="M")
        except (ValueError, TypeError):
            first = None
        if first is None or first.strftime("%Y-%m") != self.start:
            raise ValueError(
                f"start must be a month written YYYY-MM, e.g. 2024-01 (got {self.start!r})"
            )
        if not 0.0 <= self.persistence < 1.0:
            raise ValueError(f"persistence must be in [0, 1) (got {self.persistence!r})")
        if not 0.0 <= self.shock_recovery <= 1.0:
            raise ValueError(f"shock_recovery must be in [0, 1] (got {self.shock_recovery!r})")
        for name in ("seasonal_amplitude", "shock_size", "policy_shift"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0 (got {value!r})")
        names = [p.name for p in PROVINCES]
        if self.shock_province not in names:
            raise ValueError(
                f"shock_province must be one of {', '.join(names)} (got {self.shock_province!r})"
            )
        for name in ("shock_month", "policy_month"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 0
            ):
                raise ValueError(
                    f"{name} must be a month index >= 0 (0 = start) or None (got {value!r})"
                )
        if (
            not isinstance(self.outcome_months, int)
            or isinstance(self.outcome_months, bool)
            or self.outcome_months < 1
        ):
            raise ValueError(
                f"outcome_months must be an integer >= 1 (got {self.outcome_months!r})"
            )

    def month_labels(self) -> tuple[str, ...]:
        """The months of the timeline, ``YYYY-MM``."""
        first = pd.Period(self.start, freq="M")
        return tuple((first + t).strftime("%Y-%m") for t in range(self.months))

    def seasonal(self, t: int) -> float:
        """Health shift of the season of month ``t`` (lowest in February, highest in August)."""
        month_of_year = (pd.Period(self.start, freq="M") + t).month
        return float(-self.seasonal_amplitude * np.cos(2.0 * np.pi * (month_of_year - 2) / 12.0))

    def shock(self, t: int) -> float:
        """Latent loss of the shocked province in month ``t`` (0 before the shock)."""
        if self.shock_month is None or t < self.shock_month:
            return 0.0
        return float(self.shock_size * self.shock_recovery ** (t - self.shock_month))

    def regrades(self, t: int) -> bool:
        """Whether month ``t`` is an annual re-grading (the first month always grades)."""
        return t == 0 or (pd.Period(self.start, freq="M") + t).month == REGRADING_MONTH

    def grade_shift(self, t: int) -> float:
        """Threshold shift of the grading rule in force at month ``t``'s re-grading."""
        if self.policy_month is None or t < self.policy_month:
            return 0.0
        return float(self.policy_shift)

    def to_dict(self) -> dict[str, object]:
        """The configuration as a plain dict (for manifests)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, eq=False)
class SMETimeline:
    """Monthly platform snapshots and banks' loan books with vintages.

    Attributes
    ----------
    config : SMEConfig
        The universe and banks (``bank_sizes`` count loans over the whole timeline).
    drift : DriftConfig
        How the world moved.
    months : tuple of str
        The months, ``YYYY-MM``.
    platform : dict of str to pandas.DataFrame
        The platform's snapshot of each kept month: one row per enterprise it knows, in the
        same order every month, columns as in :func:`~features.synth.generator.generate`.
    banks : dict of str to pandas.DataFrame
        Each bank's loans over the timeline: ``enterprise_id``, :data:`VINTAGE_COLUMN`, the
        bank's columns at origination and ``default_12m`` (nullable ``Int64``; missing while
        the vintage is younger than ``outcome_months`` at the last month).
    columns : dict of str to ColumnInfo
        Metadata of every column except ``enterprise_id`` and the vintage.
    shocked : frozenset of str
        Enterprise ids of the shocked province (for tests and the demo's narrative).
    """

    config: SMEConfig
    drift: DriftConfig
    months: tuple[str, ...]
    platform: dict[str, pd.DataFrame]
    banks: dict[str, pd.DataFrame]
    columns: dict[str, ColumnInfo]
    shocked: frozenset[str]

    def matured(self, bank: str) -> pd.DataFrame:
        """A bank's loans whose outcome is known, label as ``int64``."""
        book = self.banks[bank]
        out = book[book[LABEL_COLUMN].notna()].copy()
        out[LABEL_COLUMN] = out[LABEL_COLUMN].astype(np.int64)
        return out


def generate_timeline(
    config: SMEConfig | None = None,
    drift: DriftConfig | None = None,
    keep: tuple[int, ...] | None = None,
) -> SMETimeline:
    """Generate monthly snapshots and loan vintages; fully deterministic given the seed.

    Parameters
    ----------
    config : SMEConfig, optional
        Universe and banks, default ``SMEConfig()``; each bank's size is its number of loans
        over the whole timeline, spread evenly over the months.
    drift : DriftConfig, optional
        Default ``DriftConfig()`` (36 months from 2024-01, a shock in month 24, stricter tax
        grading from month 15).
    keep : tuple of int, optional
        Month indices whose platform snapshot to keep (memory: a snapshot is a full platform
        table); ``None`` keeps all.

    Returns
    -------
    SMETimeline
        Snapshots and books.

    Raises
    ------
    ValueError
        If a bank would lend to fewer than one firm a month, or ``keep`` names a month
        outside the timeline.

    Examples
    --------
    >>> tl = generate_timeline(SMEConfig(n_enterprises=2000, seed=1), DriftConfig(months=3))
    >>> tl.months
    ('2024-01', '2024-02', '2024-03')
    """
    cfg = SMEConfig() if config is None else config
    dft = DriftConfig() if drift is None else drift
    kept = set(range(dft.months)) if keep is None else set(keep)
    if not kept <= set(range(dft.months)):
        bad = sorted(kept - set(range(dft.months)))
        raise ValueError(f"keep names months outside 0..{dft.months - 1}: {bad}")
    begin = time.perf_counter()
    seeds = np.random.SeedSequence(cfg.seed).spawn(3)
    rng = np.random.Generator(np.random.PCG64(seeds[0]))
    sizes = cfg.resolved_bank_sizes()
    if min(sizes) < dft.months:
        raise ValueError(
            f"a bank of {min(sizes)} loans cannot lend every one of {dft.months} months; "
            "raise bank_sizes (or n_enterprises) or shorten the timeline"
        )
    unmatched = [round(s * cfg.unmatched_rate) for s in sizes]
    pool = int(np.ceil(1.25 * max(unmatched, default=0))) + (1 if sum(unmatched) else 0)
    world = simulate_world(cfg.n_enterprises + pool, rng)
    states = _evolve(world, dft, np.random.Generator(np.random.PCG64(seeds[1])))
    snapshots = _snapshots(world, states, kept, cfg.n_enterprises)
    books = _books(world, states, dft, cfg, np.random.Generator(np.random.PCG64(seeds[2])))
    months = dft.month_labels()
    province = [p.name for p in PROVINCES].index(dft.shock_province)
    on_platform = world.province[: cfg.n_enterprises] == province
    shocked = frozenset(str(i) for i in world.enterprise_id[: cfg.n_enterprises][on_platform])
    logger.info(
        "generated %d months of %d platform firms and %d bank(s) in %.2fs",
        dft.months,
        cfg.n_enterprises,
        cfg.n_banks,
        time.perf_counter() - begin,
    )
    return SMETimeline(
        config=cfg,
        drift=dft,
        months=months,
        platform={months[t]: snapshots[t] for t in sorted(snapshots)},
        banks=books,
        columns=dict(COLUMNS),
        shocked=shocked,
    )


@dataclass(frozen=True)
class _Month:
    """The true state of every firm in one month, and what the platform has on record."""

    world: World  # the firms as a bank sees them at origination (state of the month)
    record: dict[str, c.FloatArray | c.IntArray]  # the platform's records (carried over)
    logit: c.FloatArray  # firm-level default logit of the month


def _evolve(world: World, drift: DriftConfig, rng: np.random.Generator) -> list[_Month]:
    """Move the latent factors month by month and observe the firms each month."""
    n = world.n
    base: Structure = world.structure()
    lat0: Latents = world.latents()
    # structural levels of the latent factors (simulate_world's means given age and size)
    level_h = 0.15 * base.z_age + 0.10 * base.z_size
    idio_h = lat0.health - level_h
    idio_c = lat0.conduct - 0.25 * lat0.health
    idio_l = lat0.liquidity - 0.25 * lat0.health
    rev_noise = lat0.log_rev - 0.25 * lat0.health
    province = [p.name for p in PROVINCES].index(drift.shock_province)
    hit = (world.province == province).astype(np.float64)
    shock_u = SHOCK_SD * c.normal(rng, n)  # the firm's unobservable risk, fixed
    rho, rho_l = drift.persistence, LIQUIDITY_PERSISTENCE
    groups = {info.name: info.group for info in PLATFORM_COLUMNS}
    record: dict[str, c.FloatArray | c.IntArray] = {}
    months: list[_Month] = []
    grade_rule = 0.0
    for t in range(drift.months):
        if t > 0:
            idio_h = rho * idio_h + np.sqrt(1.0 - rho**2) * 0.98 * c.normal(rng, n)
            idio_c = rho * idio_c + np.sqrt(1.0 - rho**2) * 0.97 * c.normal(rng, n)
            idio_l = rho_l * idio_l + np.sqrt(1.0 - rho_l**2) * 0.97 * c.normal(rng, n)
        loss = drift.shock(t) * hit
        structure = base  # a stationary population: see the module's notes
        health = (
            0.15 * structure.z_age + 0.10 * structure.z_size + idio_h + drift.seasonal(t) - loss
        )
        conduct = 0.25 * health + idio_c
        liquidity = 0.25 * health + idio_l - loss
        latents = Latents(health, conduct, liquidity, rev_noise + 0.25 * health)
        if drift.regrades(t):
            grade_rule = drift.grade_shift(t)
        obs_rng = np.random.Generator(np.random.PCG64(rng.integers(2**63)))
        obs: Observation = observe(obs_rng, structure, latents, grade_rule)
        fresh = obs.columns
        for name, values in fresh.items():
            if name == _GRADE:
                keep_old = not drift.regrades(t)
                record[name] = record[name] if keep_old else values
                continue
            if t == 0:
                record[name] = values
                continue
            refreshed = rng.random(n) < REFRESH_RATES[groups[name]]
            record[name] = np.where(refreshed, values, record[name])
        logit = firm_logit(obs, shock_u)
        record_now = dict(record)
        record_now["firm_age_years"] = structure.age
        record_now["entity_type"] = world.entity
        record_now["industry"] = world.industry
        record_now["region"] = world.province
        record_now["division_level"] = world.level
        state = replace(
            world,
            age=structure.age,
            health=health,
            conduct=conduct,
            liquidity=liquidity,
            log_rev=latents.log_rev,
            dormant=obs.dormant,
            tax_grade=np.asarray(record[_GRADE], dtype=np.int64),
            default_logit=logit,
            columns=record_now,
        )
        months.append(_Month(state, record_now, logit))
    return months


def _snapshots(
    world: World, months: list[_Month], kept: set[int], n_platform: int
) -> dict[int, pd.DataFrame]:
    """The platform's published table of each kept month."""
    rows = np.arange(n_platform, dtype=np.int64)
    ids = world.enterprise_id[rows]
    out: dict[int, pd.DataFrame] = {}
    for t in sorted(kept):
        out[t] = _frame(ids, months[t].record, rows, PLATFORM_COLUMNS)
    return out


def _books(
    world: World,
    months: list[_Month],
    drift: DriftConfig,
    cfg: SMEConfig,
    rng: np.random.Generator,
) -> dict[str, pd.DataFrame]:
    """Each bank's loans, month by month, with outcomes where matured."""
    labels = drift.month_labels()
    horizon = drift.outcome_months
    last = drift.months - 1
    logits = np.stack([m.logit for m in months])  # (months, firms)
    books: dict[str, pd.DataFrame] = {}
    on_platform = np.arange(cfg.n_enterprises, dtype=np.int64)
    off_platform = np.arange(cfg.n_enterprises, world.n, dtype=np.int64)
    names = cfg.resolved_profiles()
    for i, (bank, prof_name, size) in enumerate(
        zip(cfg.bank_names, names, cfg.resolved_bank_sizes(), strict=True)
    ):
        rate = None if cfg.default_rates is None else cfg.default_rates[i]
        profile = resolve(BANK_PROFILES[prof_name], cfg.heterogeneity, rate)
        per_month = np.full(drift.months, size // drift.months, dtype=np.int64)
        per_month[: size % drift.months] += 1
        lent = np.zeros(world.n, dtype=bool)
        frames: list[pd.DataFrame] = []
        offset: float | None = None
        for t in range(drift.months):
            state = months[t].world
            k_unknown = round(int(per_month[t]) * cfg.unmatched_rate)
            k_known = int(per_month[t]) - k_unknown
            free_on = on_platform[~lent[on_platform]]
            known = select_borrowers(state, free_on, min(k_known, free_on.size), profile, rng)
            free_off = off_platform[~lent[off_platform]]
            unknown = select_borrowers(state, free_off, min(k_unknown, free_off.size), profile, rng)
            rows = rng.permutation(np.concatenate([known, unknown]))
            lent[rows] = True
            book = simulate_book(state, rows, profile, rng)
            frame = _frame(world.enterprise_id[rows], book.columns, None, _BANK_FEATURES)
            label = pd.array([pd.NA] * rows.shape[0], dtype="Int64")
            if t + horizon <= last:  # matured: the outcome is known
                future = logits[t + 1 : t + 1 + horizon, rows].mean(axis=0)
                loan_logit = book.logit - state.default_logit[rows] + future
                if offset is None:  # calibrated once, on the first vintage
                    offset = _calibrate(loan_logit, profile.default_rate)
                defaulted = world.default_u[rows] < c.sigmoid(loan_logit + offset)
                label = pd.array(defaulted.astype(np.int64), dtype="Int64")
            frame[LABEL_COLUMN] = label
            frame.insert(1, VINTAGE_COLUMN, labels[t])
            frames.append(frame)
        books[bank] = pd.concat(frames, ignore_index=True)
    return books
