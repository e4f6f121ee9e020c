"""Small vectorised helpers shared by the generator modules."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


def sigmoid(x: FloatArray) -> FloatArray:
    """Return the logistic function of ``x``."""
    out: FloatArray = 0.5 * (1.0 + np.tanh(0.5 * x))
    return out


def bernoulli(rng: np.random.Generator, p: FloatArray) -> BoolArray:
    """Draw one Bernoulli variable per probability."""
    out: BoolArray = rng.random(p.shape[0]) < p
    return out


def poisson(rng: np.random.Generator, log_rate: FloatArray, cap: int | None = None) -> IntArray:
    """Draw Poisson counts with rate ``exp(log_rate)``, optionally capped."""
    counts = rng.poisson(np.exp(np.clip(log_rate, -20.0, 6.0))).astype(np.int64)
    if cap is not None:
        np.minimum(counts, cap, out=counts)
    return counts


def categorical(rng: np.random.Generator, probs: FloatArray) -> IntArray:
    """Draw one category per row of a row-stochastic matrix ``probs`` (n, k)."""
    cum: FloatArray = np.cumsum(probs, axis=1)
    cum /= cum[:, -1:]
    u: FloatArray = rng.random(size=len(probs))
    out: IntArray = (u[:, None] > cum).sum(axis=1).astype(np.int64)
    np.minimum(out, probs.shape[1] - 1, out=out)
    return out


def normal(rng: np.random.Generator, n: int) -> FloatArray:
    """Draw ``n`` standard normal variables."""
    out: FloatArray = rng.standard_normal(n)
    return out


def rounded(x: object, decimals: int) -> FloatArray:
    """Round to ``decimals`` and return a float64 array."""
    out: FloatArray = np.asarray(np.round(np.asarray(x, dtype=np.float64), decimals))
    return out
