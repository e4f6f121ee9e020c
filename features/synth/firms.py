"""The world of firms: latent health and everything the platform observes.

One vectorised pass draws, for every firm, its structure (industry, region,
legal form, age, size), three latent risk factors and the platform's
observables:

* ``health`` -- general financial health, seen by everybody (strongly through
  tax, social insurance and utilities; weakly through bank accounts);
* ``conduct`` -- compliance and governance, seen mostly by the platform
  (judicial, tax arrears, abnormal listings, key personnel);
* ``liquidity`` -- short-term cash stress, seen only by the banks (deposits,
  overdue days, credit-bureau queries).

The firm-level default logit combines them with structural tilts and an
unobservable shock; banks add their own offset and loan terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from features.synth import _common as c
from features.synth.divisions import DIVISION_LEVELS, DIVISIONS, PROVINCES
from features.synth.schema import INDUSTRIES, TAX_GRADES
from features.synth.uscc import build_uscc

__all__ = [
    "Latents",
    "Observation",
    "Structure",
    "World",
    "firm_logit",
    "observe",
    "simulate_world",
]

# Per-industry parameters (rows follow schema.INDUSTRIES):
# share of firms, default-logit tilt, log-size tilt, sales per employee (10k CNY),
# leased-premises tilt, trade tilt, quality tilt, technology tilt, kWh per employee
_INDUSTRY_TABLE: dict[str, tuple[float, ...]] = {
    "A": (0.040, 0.35, -0.2, 15, -1.5, 0.2, 0.3, -1.0, 6000),
    "C": (0.170, 0.00, 0.5, 45, -0.8, 1.6, 1.5, 0.6, 12000),
    "E": (0.070, 0.30, 0.4, 50, 0.0, -1.5, 0.8, -0.5, 3000),
    "F": (0.300, 0.10, -0.3, 80, 0.6, 1.1, -0.3, -1.5, 1500),
    "G": (0.040, 0.15, 0.1, 40, -0.3, 0.2, 0.0, -1.5, 4000),
    "H": (0.050, 0.40, -0.1, 15, 0.6, -2.5, -0.5, -2.5, 5000),
    "I": (0.060, -0.10, 0.1, 35, 1.0, 0.0, 0.3, 1.6, 1500),
    "K": (0.030, 0.45, 0.2, 80, 0.5, -2.5, -0.5, -2.0, 1000),
    "L": (0.110, 0.10, -0.2, 30, 0.9, 0.2, -0.5, -0.8, 800),
    "M": (0.050, -0.15, 0.0, 30, 0.9, 0.0, 0.5, 1.5, 1500),
    "O": (0.040, 0.20, -0.4, 12, 0.6, -2.0, -0.6, -2.5, 2500),
    "P": (0.015, 0.25, 0.0, 15, 0.5, -2.5, -0.5, -1.0, 1200),
    "Q": (0.010, -0.10, 0.1, 25, 0.2, -1.5, 0.3, -0.5, 3000),
    "R": (0.015, 0.30, -0.3, 20, 0.6, -1.0, -0.5, -1.0, 2000),
}
_IND = np.array([_INDUSTRY_TABLE[name[0]] for name in INDUSTRIES], dtype=np.float64).T
_IND_SHARE, _IND_RISK, _IND_SIZE, _IND_PROD, _IND_LEASE = _IND[:5]
_IND_TRADE, _IND_QUAL, _IND_TECH, _IND_ENERGY = _IND[5:]
_IND_PROD = np.log(_IND_PROD)
_IND_ENERGY = np.log(_IND_ENERGY)

# Legal-form mix (LLC, JSC, sole proprietorship, partnership, individual business, cooperative)
_ENT_DEFAULT = (0.80, 0.03, 0.03, 0.02, 0.12, 0.0)
_ENT_BY_INDUSTRY = {
    "A": (0.50, 0.01, 0.04, 0.02, 0.18, 0.25),
    "C": (0.86, 0.05, 0.03, 0.02, 0.04, 0.0),
    "F": (0.66, 0.01, 0.03, 0.01, 0.29, 0.0),
    "H": (0.60, 0.01, 0.03, 0.01, 0.35, 0.0),
    "O": (0.60, 0.01, 0.03, 0.01, 0.35, 0.0),
    "I": (0.88, 0.05, 0.01, 0.04, 0.02, 0.0),
    "M": (0.88, 0.05, 0.01, 0.04, 0.02, 0.0),
}
_ENT_RISK = np.array([0.0, -0.25, 0.15, 0.10, 0.20, 0.20])
_ENT_SIZE = np.array([0.0, 1.2, -0.3, -0.1, -1.3, -0.2])
_ENT_PREFIX = np.array(["91", "91", "91", "91", "92", "93"])

# Selection of the registering office by industry: log tilt per division level
_LEVEL_TILT_BY_INDUSTRY = {
    "A": (-1.0, -1.2, 0.7, 1.4),
    "C": (0.0, -0.2, 0.4, 0.4),
    "I": (0.4, 0.3, -0.5, -1.2),
    "M": (0.4, 0.3, -0.5, -1.2),
}

# Latent structure and default model, tuned so that LightGBM on 20k platform firms and one
# city bank gives AUC about 0.71 (bank columns), 0.75 (platform columns), 0.78 (joint)
_LOG_AGE_MU, _LOG_AGE_SD = 1.75, 0.80
_LOG_EMP_MU, _LOG_EMP_SD = 2.3, 1.0
COEF_HEALTH = 0.95
COEF_CONDUCT = 0.72
COEF_LIQUIDITY = 0.75
SHOCK_SD = 0.95
TAX_SCORE_MEAN = 77.5
TAX_SCORE_SD = 13.5
_REFORM_AGE = 9.75  # firms younger than this were registered after the 2015 reform (MA... codes)


@dataclass(frozen=True)
class Structure:
    """What a firm is, as opposed to how it is doing: fixed over the months of a timeline.

    Attributes
    ----------
    industry, province, entity : numpy.ndarray of int
        Industry, province and legal-form codes.
    age : numpy.ndarray of float
        Firm age in years (rounded to 0.1).
    z_age : numpy.ndarray of float
        Standardised log age.
    log_emp, z_size : numpy.ndarray of float
        Log employees and standardised size.
    employees : numpy.ndarray of int
        Head count.
    """

    industry: c.IntArray
    province: c.IntArray
    entity: c.IntArray
    age: c.FloatArray
    z_age: c.FloatArray
    log_emp: c.FloatArray
    z_size: c.FloatArray
    employees: c.IntArray


@dataclass(frozen=True)
class Latents:
    """How firms are doing: the latent factors the observables and the default risk follow.

    Attributes
    ----------
    health, conduct, liquidity : numpy.ndarray of float
        Latent risk factors (higher is better).
    log_rev : numpy.ndarray of float
        Latent log sales.
    """

    health: c.FloatArray
    conduct: c.FloatArray
    liquidity: c.FloatArray
    log_rev: c.FloatArray


@dataclass(frozen=True)
class Observation:
    """What the platform observes of firms in a given state, and what the default risk needs.

    Attributes
    ----------
    structure : Structure
        The firms.
    latents : Latents
        Their state.
    columns : dict of str to numpy.ndarray
        Platform observables (categoricals as integer codes, -1 = missing), without the
        structural columns (``firm_age_years``, ``industry``, ...).
    dormant : numpy.ndarray of bool
        No revenue over the last 12 months.
    leased : numpy.ndarray of bool
        Leased premises (drives missing utilities).
    kp_dishonest : numpy.ndarray of int
        The legal representative is a dishonest debtor.
    """

    structure: Structure
    latents: Latents
    columns: dict[str, NDArray[np.float64] | c.IntArray]
    dormant: c.BoolArray
    leased: c.BoolArray
    kp_dishonest: c.IntArray


def observe(
    rng: np.random.Generator, structure: Structure, latents: Latents, grade_shift: float = 0.0
) -> Observation:
    """Draw the platform's observables of firms in state ``latents``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the observation noise.
    structure : Structure
        The firms.
    latents : Latents
        Their state.
    grade_shift : float
        Points added to every tax-credit grade threshold (a stricter grading policy when
        positive); 0 is the published rule (A >= 90, B 70-89, C 40-69, D < 40).

    Returns
    -------
    Observation
        The observables and what :func:`firm_logit` needs.
    """
    s, lat = structure, latents
    n = s.age.shape[0]
    h, cd = lat.health, lat.conduct
    cols: dict[str, NDArray[np.float64] | c.IntArray] = {}
    flags = _registration(rng, n, cols, s.age, s.log_emp, h, cd)
    dormant = c.bernoulli(rng, c.sigmoid(-3.4 - 0.3 * h - 0.3 * cd - 0.4 * s.z_age))
    _tax(rng, cols, s.age, lat.log_rev, h, cd, dormant, flags, grade_shift)
    _social(rng, cols, s.employees, s.age, s.z_size, h, cd, s.entity)
    leased = _utilities(rng, cols, s.industry, s.log_emp, s.z_age, s.z_size, s.age, h, cd)
    coastal = np.array([p.coastal for p in PROVINCES])[s.province]
    _customs(rng, cols, s.industry, s.z_size, lat.log_rev, coastal, h, cd)
    _quality(rng, cols, s.industry, s.z_size, lat.log_rev, h, cd)
    kp_dishonest = _key_personnel(rng, cols, s.age, h, cd)
    return Observation(s, lat, cols, dormant, leased, kp_dishonest)


def firm_logit(obs: Observation, shock: c.FloatArray) -> c.FloatArray:
    """The firm-level 12-month default logit of observed firms, before any bank's offset.

    Parameters
    ----------
    obs : Observation
        Firms, their state and observables.
    shock : numpy.ndarray of float
        The unobservable part (``SHOCK_SD`` standard deviations).

    Returns
    -------
    numpy.ndarray of float
        One logit per firm.
    """
    s, lat, cols = obs.structure, obs.latents, obs.columns
    prov_risk = np.array([p.risk for p in PROVINCES])[s.province]
    # honeymoon: brand-new firms still live on their initial capital (their risk shows
    # through low health and leased premises instead); keeps grade M near 5 %
    young = np.select([s.age < 1.0, s.age < 2.0], [-0.30, -0.15], 0.0)
    logit: c.FloatArray = (
        -COEF_HEALTH * lat.health
        - COEF_CONDUCT * lat.conduct
        - COEF_LIQUIDITY * lat.liquidity
        + _IND_RISK[s.industry]
        + prov_risk
        + _ENT_RISK[s.entity]
        + young
        - 0.10 * s.z_size
        + 0.25 * obs.leased
        + 0.05 * obs.dormant
        + 1.6 * cols["dishonest_debtor"]
        + 0.8 * obs.kp_dishonest
        + 0.5 * cols["serious_violation_listed"]
        + 0.3 * cols["abnormal_operation_listed"]
        + shock
    )
    return logit


@dataclass(frozen=True)
class World:
    """Every simulated firm, on and off the platform.

    Attributes
    ----------
    n : int
        Number of firms.
    enterprise_id : numpy.ndarray of str
        Unified social credit codes (distinct).
    industry, division, province, level, entity : numpy.ndarray of int
        Structural codes (indices into the schema/division tables).
    age, log_emp, z_size, log_rev : numpy.ndarray of float
        Firm age (years), log employees, standardised size, latent log sales.
    health, conduct, liquidity : numpy.ndarray of float
        Latent risk factors (higher is better).
    dormant : numpy.ndarray of bool
        No revenue over the last 12 months.
    tax_grade : numpy.ndarray of int
        Index into :data:`~features.synth.schema.TAX_GRADES`.
    default_logit : numpy.ndarray of float
        Firm-level 12-month default logit before the bank's offset and loan terms.
    default_u : numpy.ndarray of float
        Uniform draw shared by all banks (a failing firm defaults at every bank).
    columns : dict of str to numpy.ndarray
        Platform observables; categoricals as integer codes (-1 = missing).
    """

    n: int
    enterprise_id: NDArray[np.str_]
    industry: c.IntArray
    division: c.IntArray
    province: c.IntArray
    level: c.IntArray
    entity: c.IntArray
    age: c.FloatArray
    log_emp: c.FloatArray
    z_size: c.FloatArray
    log_rev: c.FloatArray
    health: c.FloatArray
    conduct: c.FloatArray
    liquidity: c.FloatArray
    dormant: c.BoolArray
    tax_grade: c.IntArray
    default_logit: c.FloatArray
    default_u: c.FloatArray
    columns: dict[str, NDArray[np.float64] | c.IntArray]

    def structure(self) -> Structure:
        """The firms' :class:`Structure` (what stays fixed over a timeline)."""
        z_age = (np.log(self.age) - _LOG_AGE_MU) / _LOG_AGE_SD
        employees = np.maximum(1, np.round(np.exp(self.log_emp))).astype(np.int64)
        return Structure(
            self.industry,
            self.province,
            self.entity,
            self.age,
            z_age,
            self.log_emp,
            self.z_size,
            employees,
        )

    def latents(self) -> Latents:
        """The firms' :class:`Latents` (their state when the world was drawn)."""
        return Latents(self.health, self.conduct, self.liquidity, self.log_rev)


def _structure(
    rng: np.random.Generator, n: int
) -> tuple[c.IntArray, c.IntArray, c.IntArray, c.IntArray, c.IntArray]:
    """Draw industry, division, province, level and legal form."""
    industry = rng.choice(len(INDUSTRIES), size=n, p=_IND_SHARE / _IND_SHARE.sum())
    base_w = np.array([d.weight for d in DIVISIONS])
    div_level = np.array([DIVISION_LEVELS.index(d.level) for d in DIVISIONS])
    division = np.empty(n, dtype=np.int64)
    for k, name in enumerate(INDUSTRIES):
        rows = np.flatnonzero(industry == k)
        tilt = np.asarray(_LEVEL_TILT_BY_INDUSTRY.get(name[0], (0.0, 0.0, 0.0, 0.0)))
        w = base_w * np.exp(tilt[div_level])
        division[rows] = rng.choice(len(DIVISIONS), size=rows.size, p=w / w.sum())
    prov_index = {p.name: i for i, p in enumerate(PROVINCES)}
    province = np.array([prov_index[d.province] for d in DIVISIONS])[division]
    level = div_level[division]
    ent_p = np.array([_ENT_BY_INDUSTRY.get(name[0], _ENT_DEFAULT) for name in INDUSTRIES])
    entity = c.categorical(rng, ent_p[industry])
    return industry.astype(np.int64), division, province.astype(np.int64), level, entity


def simulate_world(n: int, rng: np.random.Generator) -> World:
    """Simulate ``n`` firms with latent risk and platform observables.

    Parameters
    ----------
    n : int
        Number of firms.
    rng : numpy.random.Generator
        The generator's only source of randomness.

    Returns
    -------
    World
        All firm-level arrays.
    """
    industry, division, province, level, entity = _structure(rng, n)
    log_age = _LOG_AGE_MU + _LOG_AGE_SD * c.normal(rng, n) - 0.3 * (entity == 4)
    age = np.round(np.clip(np.exp(log_age), 0.1, 40.0), 1)
    z_age = (np.log(age) - _LOG_AGE_MU) / _LOG_AGE_SD
    log_emp = (
        _LOG_EMP_MU
        + _IND_SIZE[industry]
        + _ENT_SIZE[entity]
        + 0.25 * z_age
        + 0.8 * c.normal(rng, n)
    )
    z_size = (log_emp - _LOG_EMP_MU) / _LOG_EMP_SD
    employees = np.maximum(1, np.round(np.exp(log_emp))).astype(np.int64)

    health = 0.15 * z_age + 0.10 * z_size + 0.98 * c.normal(rng, n)
    conduct = 0.25 * health + 0.97 * c.normal(rng, n)
    liquidity = 0.25 * health + 0.97 * c.normal(rng, n)
    log_rev = log_emp + _IND_PROD[industry] + 0.25 * health + 0.5 * c.normal(rng, n)

    obs = observe(
        rng,
        Structure(industry, province, entity, age, z_age, log_emp, z_size, employees),
        Latents(health, conduct, liquidity, log_rev),
    )
    cols = obs.columns
    dormant = obs.dormant
    logit = firm_logit(obs, SHOCK_SD * c.normal(rng, n))
    default_u = rng.random(n)

    cols["firm_age_years"] = age
    cols["entity_type"] = entity
    cols["industry"] = industry
    cols["region"] = province
    cols["division_level"] = level
    new_format = age < _REFORM_AGE
    ids = build_uscc(
        _ENT_PREFIX[entity], np.array([d.code for d in DIVISIONS])[division], new_format, rng
    )
    return World(
        n=n,
        enterprise_id=ids,
        industry=industry,
        division=division,
        province=province,
        level=level,
        entity=entity,
        age=age,
        log_emp=log_emp,
        z_size=z_size,
        log_rev=log_rev,
        health=health,
        conduct=conduct,
        liquidity=liquidity,
        dormant=dormant,
        tax_grade=np.asarray(cols["tax_credit_grade"], dtype=np.int64),
        default_logit=logit,
        default_u=default_u,
        columns=cols,
    )


def _registration(
    rng: np.random.Generator,
    n: int,
    cols: dict[str, NDArray[np.float64] | c.IntArray],
    age: c.FloatArray,
    log_emp: c.FloatArray,
    health: c.FloatArray,
    conduct: c.FloatArray,
) -> dict[str, c.IntArray]:
    """Draw the registration group; return the flags other groups depend on."""
    cols["registered_capital_10k_cny"] = c.rounded(
        np.exp(0.7 * log_emp + 3.0 + 1.0 * c.normal(rng, n)), 1
    )
    young = (age < 2.0).astype(np.float64)
    abnormal = c.bernoulli(rng, c.sigmoid(-3.4 - 0.7 * health - 0.8 * conduct + 0.4 * young))
    serious = c.bernoulli(rng, c.sigmoid(-6.3 - 0.8 * health - 1.2 * conduct))
    on_time = c.bernoulli(rng, c.sigmoid(2.6 + 0.5 * health + 0.8 * conduct - 1.5 * abnormal))
    cols["abnormal_operation_listed"] = abnormal.astype(np.int64)
    cols["serious_violation_listed"] = serious.astype(np.int64)
    cols["annual_report_on_time"] = on_time.astype(np.int64)
    cols["legal_rep_changes_3y"] = c.poisson(
        rng, -1.6 - 0.3 * health - 0.3 * conduct + 0.2 * np.log(age + 1.0), cap=6
    )
    return {
        "abnormal": abnormal.astype(np.int64),
        "serious": serious.astype(np.int64),
    }


def _tax(
    rng: np.random.Generator,
    cols: dict[str, NDArray[np.float64] | c.IntArray],
    age: c.FloatArray,
    log_rev: c.FloatArray,
    health: c.FloatArray,
    conduct: c.FloatArray,
    dormant: c.BoolArray,
    flags: dict[str, c.IntArray],
    grade_shift: float = 0.0,
) -> None:
    """Draw the tax and judicial groups (the tax grade reacts to judicial records)."""
    n = age.shape[0]
    # judicial first: the grade reacts to it
    distress = -0.6 * health - 0.9 * conduct + 0.45 * c.normal(rng, n)
    dishonest = distress > 2.30 * np.sqrt(0.36 + 0.81 + 2 * 0.6 * 0.9 * 0.25 + 0.2025)
    enforcement = c.poisson(rng, -2.7 - 0.7 * health - 0.9 * conduct, cap=20)
    enforcement = enforcement + dishonest * (1 + rng.poisson(1.0, n))
    cols["lawsuits_defendant_3y"] = c.poisson(
        rng, -1.5 + 0.25 * (log_rev - 5.0) - 0.4 * health - 0.6 * conduct, cap=40
    )
    cols["enforcement_cases_3y"] = enforcement.astype(np.int64)
    cols["dishonest_debtor"] = dishonest.astype(np.int64)
    cols["admin_penalties_3y"] = c.poisson(rng, -2.0 - 0.5 * conduct - 0.1 * health, cap=15)

    sales = np.where(dormant, 0.0, np.exp(log_rev) * np.exp(0.15 * c.normal(rng, n)))
    cols["vat_sales_12m_10k_cny"] = c.rounded(sales, 2)
    growth = 0.04 + 0.14 * health + 0.03 * conduct + 0.22 * c.normal(rng, n)
    growth = np.clip(growth, -0.95, 3.0)
    cols["vat_sales_growth_yoy"] = np.where((age < 2.0) | dormant, np.nan, np.round(growth, 4))
    zero = np.where(
        dormant,
        12,
        c.poisson(rng, -2.2 - 0.6 * health, cap=11),
    )
    cols["zero_declaration_months_12m"] = zero.astype(np.int64)
    arrears_flag = c.bernoulli(rng, c.sigmoid(-3.4 - 0.5 * health - 0.6 * conduct))
    arrears = np.where(arrears_flag, np.round(np.exp(log_rev - 4.0 + c.normal(rng, n)), 2), 0.0)
    cols["tax_arrears_10k_cny"] = np.maximum(arrears, 0.01 * arrears_flag)

    latent = (0.75 * health + 0.55 * conduct + 0.7 * c.normal(rng, n)) / 1.2
    score = (
        TAX_SCORE_MEAN
        + TAX_SCORE_SD * latent
        - 32.0 * arrears_flag
        - 20.0 * dishonest
        - 40.0 * flags["serious"]
        - 15.0 * flags["abnormal"]
        - 1.5 * np.minimum(zero, 11)
    )
    grade = np.select(
        [score >= 90 + grade_shift, score >= 70 + grade_shift, score >= 40 + grade_shift],
        [0, 1, 3],
        4,
    )
    grade = np.where((age < 1.5) | dormant, TAX_GRADES.index("M"), grade)
    cols["tax_credit_grade"] = grade.astype(np.int64)
    general = (sales > 500.0) | c.bernoulli(rng, np.full(n, 0.25))
    cols["taxpayer_type"] = np.where(general, 0, 1).astype(np.int64)


def _social(
    rng: np.random.Generator,
    cols: dict[str, NDArray[np.float64] | c.IntArray],
    employees: c.IntArray,
    age: c.FloatArray,
    z_size: c.FloatArray,
    health: c.FloatArray,
    conduct: c.FloatArray,
    entity: c.IntArray,
) -> None:
    """Draw social insurance and housing fund."""
    n = age.shape[0]
    coverage = c.sigmoid(0.8 + 0.5 * health + 0.5 * conduct - 1.0 * (entity == 4))
    cols["si_insured_headcount"] = rng.binomial(employees, coverage).astype(np.int64)
    change = np.clip(0.03 + 0.12 * health + 0.18 * c.normal(rng, n), -0.9, 2.0)
    cols["si_headcount_change_12m"] = np.where(age < 1.0, np.nan, np.round(change, 4))
    cols["si_arrears_months_12m"] = c.poisson(rng, -2.6 - 0.9 * health - 0.6 * conduct, cap=12)
    hf = c.sigmoid(-0.9 + 0.7 * z_size + 0.3 * health + 0.5 * conduct + 1.0 * (entity == 1))
    cols["housing_fund_contributor"] = c.bernoulli(rng, hf).astype(np.int64)


def _utilities(
    rng: np.random.Generator,
    cols: dict[str, NDArray[np.float64] | c.IntArray],
    industry: c.IntArray,
    log_emp: c.FloatArray,
    z_age: c.FloatArray,
    z_size: c.FloatArray,
    age: c.FloatArray,
    health: c.FloatArray,
    conduct: c.FloatArray,
) -> c.BoolArray:
    """Draw electricity and arrears, missing not at random through leased premises."""
    n = age.shape[0]
    leased = c.bernoulli(rng, c.sigmoid(0.0 - 0.7 * z_size - 0.4 * z_age + _IND_LEASE[industry]))
    absent = c.bernoulli(rng, np.where(leased, 0.75, 0.06))
    kwh = np.exp(log_emp + _IND_ENERGY[industry] + 0.2 * health + 0.5 * c.normal(rng, n))
    cols["elec_kwh_12m"] = np.where(absent, np.nan, np.round(kwh, 0))
    yoy = np.clip(0.03 + 0.12 * health + 0.2 * c.normal(rng, n), -0.95, 3.0)
    cols["elec_yoy_change"] = np.where(absent | (age < 2.0), np.nan, np.round(yoy, 4))
    arrears = c.poisson(rng, -2.4 - 0.7 * health - 0.5 * conduct, cap=12)
    cols["utility_arrears_count_12m"] = np.where(absent, np.nan, arrears.astype(np.float64))
    return leased


def _customs(
    rng: np.random.Generator,
    cols: dict[str, NDArray[np.float64] | c.IntArray],
    industry: c.IntArray,
    z_size: c.FloatArray,
    log_rev: c.FloatArray,
    coastal: c.BoolArray,
    health: c.FloatArray,
    conduct: c.FloatArray,
) -> None:
    """Draw customs data: values structurally missing for non-traders."""
    n = industry.shape[0]
    trader = c.bernoulli(rng, c.sigmoid(-3.0 + _IND_TRADE[industry] + 0.5 * z_size + 0.7 * coastal))
    import_only = c.bernoulli(rng, np.full(n, 0.25))
    export = np.exp(log_rev - 2.3 + 0.2 * health + 0.9 * c.normal(rng, n))  # 10k USD
    export = np.where(import_only, 0.0, np.round(export, 2))
    cols["customs_trader"] = trader.astype(np.int64)
    cols["customs_export_12m_10k_usd"] = np.where(trader, export, np.nan)
    adv = c.sigmoid(-3.0 + 0.9 * z_size + 0.5 * health + 0.4 * conduct)
    bad = c.sigmoid(-4.8 - 0.8 * health - 1.1 * conduct)
    u = rng.random(n)
    klass = np.where(u < adv, 0, np.where(u > 1.0 - bad, 2, 1))
    cols["customs_credit_class"] = np.where(trader, klass, -1).astype(np.int64)


def _quality(
    rng: np.random.Generator,
    cols: dict[str, NDArray[np.float64] | c.IntArray],
    industry: c.IntArray,
    z_size: c.FloatArray,
    log_rev: c.FloatArray,
    health: c.FloatArray,
    conduct: c.FloatArray,
) -> None:
    """Draw the five quality groups of the 2024 quality-financing notice."""
    n = industry.shape[0]
    q = _IND_QUAL[industry]
    t = _IND_TECH[industry]
    orient = 0.25 * health + 0.35 * conduct + 0.9 * c.normal(rng, n)  # quality orientation
    cols["qc_spot_check_failures_3y"] = c.poisson(
        rng, -3.4 + 0.8 * q - 0.5 * orient - 0.2 * health, cap=10
    )
    cols["qc_product_recalls_3y"] = c.poisson(rng, -5.0 + 0.8 * q - 0.4 * orient, cap=5)
    iso = -2.0 + q + 0.7 * z_size + 0.6 * orient
    cols["qm_iso9001"] = c.bernoulli(rng, c.sigmoid(iso)).astype(np.int64)
    cols["qm_iso14001"] = c.bernoulli(rng, c.sigmoid(iso - 1.0)).astype(np.int64)
    cols["qm_iso45001"] = c.bernoulli(rng, c.sigmoid(iso - 1.3)).astype(np.int64)
    cols["qm_product_certificates"] = c.poisson(rng, -1.5 + q + 0.4 * z_size, cap=50)
    cols["qb_quality_awards"] = c.poisson(rng, -4.5 + 0.5 * q + 0.6 * z_size + 0.6 * orient, cap=8)
    cols["qb_trademarks"] = c.poisson(rng, -0.6 + 0.3 * z_size + 0.2 * orient, cap=80)
    cols["qf_standards_drafted"] = c.poisson(
        rng, -4.5 + 0.5 * q + 0.4 * t + 0.8 * z_size + 0.4 * orient, cap=20
    )
    cols["qf_measurement_certified"] = c.bernoulli(
        rng, c.sigmoid(-3.2 + q + 0.6 * z_size + 0.4 * orient)
    ).astype(np.int64)
    cols["qf_accredited_lab"] = c.bernoulli(
        rng, c.sigmoid(-5.0 + q + 0.3 * t + 0.9 * z_size + 0.3 * orient)
    ).astype(np.int64)
    innov = t + 0.6 * z_size + 0.3 * health + 0.3 * orient
    cols["qi_invention_patents"] = c.poisson(rng, -2.3 + innov, cap=200)
    high_tech = c.bernoulli(rng, c.sigmoid(-3.3 + innov))
    cols["qi_high_tech_enterprise"] = high_tech.astype(np.int64)
    srdi_score = innov + 1.2 * high_tech + 0.5 * c.normal(rng, n)
    cols["qi_srdi_status"] = np.select(
        [srdi_score > 3.6, srdi_score > 2.7, srdi_score > 1.6], [3, 2, 1], 0
    ).astype(np.int64)
    rd = np.exp(-4.3 + 0.5 * t + 0.8 * high_tech + 0.6 * c.normal(rng, n))
    rd = np.where(c.bernoulli(rng, c.sigmoid(-0.5 + t + high_tech)), rd, 0.0)
    cols["qi_rd_expense_ratio"] = np.round(np.clip(rd, 0.0, 0.6), 4)
    del log_rev


def _key_personnel(
    rng: np.random.Generator,
    cols: dict[str, NDArray[np.float64] | c.IntArray],
    age: c.FloatArray,
    health: c.FloatArray,
    conduct: c.FloatArray,
) -> c.IntArray:
    """Draw the legal representative's data (personal information)."""
    n = age.shape[0]
    rep_age = np.clip(np.round(36.0 + 0.45 * age + 8.5 * c.normal(rng, n)), 20, 80)
    cols["kp_legal_rep_age"] = rep_age.astype(np.int64)
    tenure = np.minimum(age, age * rng.beta(3.0, 1.2, n)) - 0.2 * (cols["legal_rep_changes_3y"] > 0)
    cols["kp_legal_rep_tenure_years"] = np.round(np.clip(tenure, 0.1, None), 1)
    kp_dishonest = c.bernoulli(rng, c.sigmoid(-5.6 - 0.6 * health - 1.0 * conduct)).astype(np.int64)
    cols["kp_legal_rep_dishonest"] = kp_dishonest
    cols["kp_legal_rep_other_firms_abnormal"] = c.poisson(
        rng, -2.3 - 0.7 * conduct + 0.5 * kp_dishonest, cap=10
    )
    return kp_dishonest
