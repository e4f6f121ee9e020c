"""Bank books: who borrows from a bank, on what terms, and who defaults.

A bank selects its borrowers (without replacement, so each enterprise appears
at most once per bank) with weights from its profile: industry and
division-level tilts, screening on latent health, size preference, and fewer
loans to dormant or brand-new firms. It then observes its own relationship
and credit-bureau data, which see the liquidity factor well and general
health only weakly. Labels share one uniform draw per firm across banks, so
a failing firm defaults at every bank that lends to it; each bank's offset is
calibrated to its target default rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.synth import _common as c
from features.synth.firms import World
from features.synth.profiles import ResolvedProfile

__all__ = ["BankBook", "select_borrowers", "simulate_book"]

_PRODUCT_RISK = np.array(
    [-0.10, 0.15, -0.25, 0.05]
)  # tax-credit, pure credit, mortgage, guaranteed
_PRODUCT_SPREAD = np.array([-0.3, 0.4, -0.5, 0.3])
_PRODUCT_SIZE = np.array([-0.2, -0.3, 0.6, 0.0])
_PRODUCT_CAP = np.array([300.0, 300.0, 3000.0, 1000.0])  # 10k CNY
_TERMS = (
    ((6, 12), (0.2, 0.8)),
    ((6, 12, 24), (0.2, 0.6, 0.2)),
    ((12, 24, 36, 60), (0.2, 0.3, 0.35, 0.15)),
    ((12, 24, 36), (0.5, 0.3, 0.2)),
)
_LEVERAGE_COEF = 0.25
_LEVERAGE_SD = 0.5


@dataclass(frozen=True)
class BankBook:
    """One bank's borrowers and their loan-level data.

    Attributes
    ----------
    rows : numpy.ndarray of int
        Indices of the borrowers in the world, in table order.
    columns : dict of str to numpy.ndarray
        Bank observables and the label; categoricals as integer codes.
    offset : float
        Calibrated default-logit offset of the bank.
    logit : numpy.ndarray of float
        Each loan's default logit before the offset (firm, product and leverage).
    """

    rows: c.IntArray
    columns: dict[str, c.FloatArray | c.IntArray]
    offset: float
    logit: c.FloatArray


def select_borrowers(
    world: World,
    candidates: c.IntArray,
    k: int,
    profile: ResolvedProfile,
    rng: np.random.Generator,
) -> c.IntArray:
    """Draw ``k`` distinct borrowers among ``candidates`` with profile weights.

    Uses exponential keys (Efraimidis-Spirakis): the ``k`` smallest
    ``log(E) - log(w)`` with ``E ~ Exp(1)`` are a weighted sample without
    replacement.

    Parameters
    ----------
    world : World
        All firms.
    candidates : numpy.ndarray of int
        World indices to choose from.
    k : int
        Number to choose (``<= len(candidates)``).
    profile : ResolvedProfile
        Selection tilts of the bank.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    numpy.ndarray of int
        Sorted world indices of the chosen borrowers.
    """
    if k == 0:
        return np.empty(0, dtype=np.int64)
    idx = candidates
    log_w = (
        profile.industry_log_tilt[world.industry[idx]]
        + profile.level_log_tilt[world.level[idx]]
        + profile.health_selection * world.health[idx]
        + profile.size_selection * world.z_size[idx]
        - 1.0 * world.dormant[idx]
        - 0.3 * (world.age[idx] < 1.0)
    )
    keys = np.log(rng.exponential(1.0, idx.shape[0])) - log_w
    chosen = np.argpartition(keys, k - 1)[:k] if k < idx.shape[0] else np.arange(idx.shape[0])
    return np.sort(idx[chosen])


def simulate_book(
    world: World,
    rows: c.IntArray,
    profile: ResolvedProfile,
    rng: np.random.Generator,
) -> BankBook:
    """Simulate a bank's observables and labels for its borrowers ``rows``.

    Parameters
    ----------
    world : World
        All firms.
    rows : numpy.ndarray of int
        World indices of the borrowers (any order; the table keeps it).
    profile : ResolvedProfile
        The bank's profile.
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    BankBook
        Columns in :data:`~features.synth.schema.BANK_COLUMNS` order.
    """
    n = rows.shape[0]
    h = world.health[rows]
    liq = world.liquidity[rows]
    cond = world.conduct[rows]
    z_size = world.z_size[rows]
    log_rev = world.log_rev[rows]
    grade = world.tax_grade[rows]
    cols: dict[str, c.FloatArray | c.IntArray] = {}

    # product choice: bank-tax interaction makes tax-credit loans an A/B/M product
    grade_adj = np.array([0.8, 0.0, -0.5, -np.inf, -np.inf])[grade]
    logits = np.log(profile.product_mix)[None, :] + np.column_stack(
        [
            grade_adj,
            0.2 * h,
            0.5 * z_size + 0.3 * (world.age[rows] > 5.0),
            0.7 * (world.industry[rows] == 0) - 0.3 * z_size,
        ]
    )
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    product = c.categorical(rng, probs)
    cols["loan_product"] = product

    noise = c.normal(rng, n)
    log_amount = log_rev - 1.6 + _PRODUCT_SIZE[product] + _LEVERAGE_SD * noise
    amount = np.clip(np.exp(log_amount), 1.0, _PRODUCT_CAP[product])
    cols["loan_amount_10k_cny"] = np.round(amount, 1)
    term = np.empty(n, dtype=np.int64)
    for p, (values, shares) in enumerate(_TERMS):
        sel = np.flatnonzero(product == p)
        term[sel] = rng.choice(np.asarray(values), size=sel.size, p=np.asarray(shares))
    cols["loan_term_months"] = term
    internal_risk = -(0.45 * liq + 0.2 * h) + 0.6 * c.normal(rng, n)
    rate = profile.base_rate_pct + 0.45 * internal_risk + _PRODUCT_SPREAD[product]
    cols["loan_rate_pct"] = np.round(np.clip(rate + 0.25 * c.normal(rng, n), 2.5, 15.0), 2)
    cols["borrower_industry"] = world.industry[rows]

    rel = rng.exponential(profile.relationship_months, n)
    cols["account_age_months"] = np.maximum(
        1, np.round(np.minimum(world.age[rows] * 12.0, rel + 1.0))
    ).astype(np.int64)
    cols["deposit_avg_6m_10k_cny"] = c.rounded(
        np.exp(log_rev - 2.2 + 0.12 * h + 0.55 * liq + 0.7 * c.normal(rng, n)), 2
    )
    cols["deposit_change_6m"] = c.rounded(
        np.clip(0.02 + 0.05 * h + 0.20 * liq + 0.25 * c.normal(rng, n), -0.95, 3.0), 4
    )
    cols["settlement_inflow_monthly_10k_cny"] = np.round(
        np.exp(log_rev - np.log(12.0) - 0.6 + 0.1 * h + 0.25 * liq + 0.5 * c.normal(rng, n))
        * np.where(world.dormant[rows], 0.05, 1.0),
        2,
    )
    cols["bureau_queries_6m"] = c.poisson(rng, 0.3 - 0.55 * liq - 0.1 * h + 0.2 * z_size, cap=30)
    late = c.bernoulli(rng, c.sigmoid(-2.4 - 1.0 * liq - 0.25 * h - 0.1 * cond))
    days = np.clip(np.round(np.exp(2.3 - 0.4 * liq + 0.9 * c.normal(rng, n))), 1, 360)
    cols["bureau_max_dpd_24m"] = np.where(late, days, 0).astype(np.int64)
    loans = c.poisson(rng, 0.1 + 0.35 * z_size - 0.2 * liq, cap=15)
    balance = np.exp(log_rev - 1.8 + 0.25 * loans - 0.2 * liq + 0.7 * c.normal(rng, n))
    cols["bureau_existing_loans"] = loans
    cols["bureau_existing_balance_10k_cny"] = np.where(loans > 0, np.round(balance, 2), 0.0)

    logit = world.default_logit[rows] + _PRODUCT_RISK[product] + _LEVERAGE_COEF * noise
    offset = _calibrate(logit, profile.default_rate)
    label = world.default_u[rows] < c.sigmoid(logit + offset)
    cols["default_12m"] = label.astype(np.int64)
    return BankBook(rows=rows, columns=cols, offset=offset, logit=logit)


def _calibrate(logit: c.FloatArray, target: float) -> float:
    """Find the offset whose mean default probability equals ``target``."""
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if float(np.mean(c.sigmoid(logit + mid))) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
