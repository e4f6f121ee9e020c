"""Plaintext core of vertical logistic regression: the arithmetic every protocol run must equal.

Mini-batch gradient descent on the L2-regularised logistic loss

    L(w, b) = (1/n) Σ_i [log(1 + e^{z_i}) - y_i z_i] + (λ/2) ||w||²,   z_i = x_i·w + b,

(the intercept ``b`` is not penalised, as in scikit-learn). With ``gradient="exact"`` the residual
is ``σ(z) - y``; with ``gradient="taylor"`` it is its first-order expansion at 0,
``0.25 z + 0.5 - y``, the form an additively homomorphic protocol can evaluate without anyone
seeing ``z`` (Hardy et al. 2017, "Private federated learning on vertically partitioned data via
entity resolution and additively homomorphic encryption"; FATE's hetero LR does the same).

The batch schedule is a pure function of ``(n_rows, batch_size, epoch, seed)`` so that the bank,
every platform and this core visit the same rows in the same order: the protocol's coefficients
equal this core's (up to fixed-point rounding) when both run the same schedule.

Sample weights ``w_i`` (:mod:`models.sample_weights`, at most 1) weight each row's residual:
the batch gradient is ``Σ_i w_i d_i x_i / |B|``. With validation rows, :func:`fit` scores them
after every epoch (:mod:`models.early_stopping`) and, with ``early_stopping_rounds``, stops and
returns the coefficients of the best epoch, as the protocol does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from models.early_stopping import StoppingState, ValidationPlan, observe, validation_metrics
from models.vertical_lr.settings import DEFAULTS

FloatArray = npt.NDArray[np.float64]
Gradient = Literal["taylor", "exact"]


@dataclass(frozen=True)
class LRParams:
    """Settings of the gradient descent (the ``hetero_lr`` model config maps onto these).

    Attributes
    ----------
    learning_rate : float
        Step size as a fraction of the safe step ``1 / L`` (with ``normalize``), divided by
        ``sqrt(1 + decay * epoch)``. ``L = 0.25 (1 + Σ_j mean(x_j²))`` bounds the curvature
        of the loss (the Taylor loss's Hessian is ``0.25 XᵀX / n``, whose largest eigenvalue
        is at most its trace), so steps up to ``2 / L`` never diverge, whatever the scale and
        the correlation of the features.
    normalize : bool
        Divide the step by ``L`` (default); ``False`` uses ``learning_rate`` as is.
    decay : float
        Learning-rate decay per epoch.
    l2 : float
        λ of the penalty ``(λ/2) ||w||²`` (intercept excluded).
    batch_size : int
        Rows per mini-batch (the last batch of an epoch takes the remainder, so no batch is
        smaller than ``batch_size``); ``0`` = full batch.
    max_epochs : int
        Upper bound on passes over the training rows.
    tol : float
        Convergence: stop after an epoch in which every party's relative weight change
        ``||Δw_p||₂ / max(1, ||w_p||₂)`` (the intercept counted with the first party's block)
        is below ``tol``; with one block, the change of the whole ``(w, b)``.
    gradient : {"taylor", "exact"}
        Residual used in the gradient (see the module docstring).
    """

    learning_rate: float = DEFAULTS.learning_rate
    decay: float = DEFAULTS.decay
    l2: float = DEFAULTS.l2
    batch_size: int = DEFAULTS.batch_size
    max_epochs: int = DEFAULTS.max_epochs
    tol: float = DEFAULTS.tol
    gradient: Gradient = "taylor"
    normalize: bool = True

    def rate(self, epoch: int, curvature: float = 1.0) -> float:
        """Step size of an epoch, given the curvature bound ``L`` (see ``learning_rate``)."""
        scale = curvature if self.normalize else 1.0
        return self.learning_rate / scale / float(np.sqrt(1.0 + self.decay * epoch))


def curvature_bound(second_moments: npt.ArrayLike) -> float:
    """``L = 0.25 (1 + Σ_j mean(x_j²))`` from each column's mean square (intercept included).

    Each party can compute its columns' share; the bank computes every column's from the
    per-bin counts and WOE values it holds.
    """
    return 0.25 * (1.0 + float(np.sum(np.asarray(second_moments, dtype=np.float64))))


def batch_schedule(
    n_rows: int, batch_size: int, epoch: int, seed: int
) -> list[npt.NDArray[np.intp]]:
    """Row indices of every mini-batch of one epoch (a seeded permutation, then chunks).

    In a job the seed is drawn jointly by the bank and the platforms
    (:mod:`models.vertical_lr.batch_seed`), so no party chooses it; the order reveals nothing
    about any party's data. The last batch takes the remainder, so every
    batch holds at least ``min(batch_size, n_rows)`` rows: a protocol summing a party's values
    per batch never sums over fewer.
    """
    if n_rows <= 0:
        raise ValueError("no training rows")
    rng = np.random.Generator(np.random.PCG64([int(seed) & (2**63 - 1), int(epoch)]))
    order = rng.permutation(n_rows).astype(np.intp)
    count = batch_count(n_rows, batch_size)
    size = n_rows if batch_size <= 0 else int(batch_size)
    bounds = [k * size for k in range(count)] + [n_rows]
    return [order[bounds[k] : bounds[k + 1]] for k in range(count)]


def batch_count(n_rows: int, batch_size: int) -> int:
    """Mini-batches per epoch of :func:`batch_schedule` (the remainder joins the last batch)."""
    if n_rows <= 0:
        raise ValueError("no training rows")
    return 1 if batch_size <= 0 else max(1, n_rows // int(batch_size))


def residual(
    z: FloatArray, y: npt.NDArray[np.integer] | FloatArray, gradient: Gradient
) -> FloatArray:
    """``σ(z) - y`` (exact) or ``0.25 z + 0.5 - y`` (taylor)."""
    if gradient == "taylor":
        return 0.25 * z + 0.5 - y
    return 1.0 / (1.0 + np.exp(-z)) - y


def sigmoid(z: FloatArray) -> FloatArray:
    """The logistic function, stable for large ``|z|``."""
    return np.exp(-np.logaddexp(0.0, -z))


def log_loss(z: FloatArray, y: npt.NDArray[np.integer] | FloatArray) -> float:
    """Mean logistic loss of logits ``z``."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


@dataclass
class LRFit:
    """Result of :func:`fit`.

    ``best_epoch``: the epoch early stopping kept (``coef`` and ``intercept`` are its), else
    ``None``; ``history`` holds each epoch's validation metrics (``valid_auc`` ...) when the
    fit had validation rows.
    """

    coef: FloatArray
    intercept: float
    epochs: int
    converged: bool
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None

    def decision_function(self, x: FloatArray) -> FloatArray:
        """Logits ``x·w + b``."""
        return np.asarray(x, dtype=np.float64) @ self.coef + self.intercept

    def predict_proba(self, x: FloatArray) -> FloatArray:
        """Probability of the positive class (default)."""
        return sigmoid(self.decision_function(x))


def fit(
    x: FloatArray,
    y: npt.NDArray[np.integer] | FloatArray,
    params: LRParams,
    *,
    seed: int = 0,
    blocks: Sequence[int] | None = None,
    weights: FloatArray | None = None,
    x_valid: FloatArray | None = None,
    y_valid: npt.NDArray[np.integer] | FloatArray | None = None,
    plan: ValidationPlan | None = None,
) -> LRFit:
    """Train by mini-batch gradient descent on the schedule of :func:`batch_schedule`.

    Parameters
    ----------
    x : ndarray, shape (n_rows, n_features)
    y : ndarray, shape (n_rows,)
        0/1 labels.
    params : LRParams
    seed : int
        Seed of the batch schedule.
    blocks : sequence of int, optional
        Columns of each party, in order (the first holds the intercept): convergence asks
        every party's own change to be below ``tol``, as the vertical protocol does, where no
        party sees another's coefficients. Default: one block.
    weights : ndarray, shape (n_rows,), optional
        Sample weights (at most 1; :mod:`models.sample_weights`).
    x_valid, y_valid : ndarray, optional
        Validation rows, scored after every epoch.
    plan : ValidationPlan, optional
        The stopping rule (``rounds``, ``metric``); without ``rounds`` the last epoch is kept.

    Returns
    -------
    LRFit
    """
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != labels.shape[0]:
        raise ValueError(f"x has shape {x.shape} but y has {labels.shape[0]} rows")
    widths = list(blocks) if blocks is not None else [x.shape[1]]
    if sum(widths) != x.shape[1]:
        raise ValueError(f"blocks {widths} do not add up to {x.shape[1]} columns")
    coef = np.zeros(x.shape[1])
    intercept = 0.0
    history: list[dict[str, float]] = []
    converged = False
    epoch = 0
    curvature = curvature_bound(np.mean(np.square(x), axis=0))
    stopping = StoppingState()
    best: tuple[FloatArray, float] = (coef, intercept)
    for epoch in range(params.max_epochs):
        start_coef, start_intercept = coef.copy(), intercept
        rate = params.rate(epoch, curvature)
        for rows in batch_schedule(x.shape[0], params.batch_size, epoch, seed):
            xb = x[rows]
            d = residual(xb @ coef + intercept, labels[rows], params.gradient)
            if weights is not None:
                d = weights[rows] * d
            grad = xb.T @ d / rows.size + params.l2 * coef
            grad_b = float(d.sum()) / rows.size
            coef = coef - rate * grad
            intercept -= rate * grad_b
        changes = block_changes(coef, start_coef, intercept, start_intercept, widths)
        change = changes[0] if len(changes) == 1 else max(changes)
        entry = {
            "epoch": float(epoch),
            "change": change,
            "loss": log_loss(x @ coef + intercept, labels),
        }
        history.append(entry)
        if x_valid is not None and y_valid is not None:
            metrics = validation_metrics(y_valid, np.asarray(x_valid) @ coef + intercept)
            entry.update({f"valid_{k}": v for k, v in metrics.items()})
            stopping = observe(stopping, epoch, metrics, plan or ValidationPlan(fraction=1.0))
            if stopping.best_iteration == epoch:
                best = (coef.copy(), intercept)
            if stopping.stopped:
                break
        if change < params.tol:
            converged = True
            break
    best_epoch = None
    if plan is not None and plan.rounds is not None and stopping.best_iteration >= 0:
        best_epoch = stopping.best_iteration
        coef, intercept = best
    return LRFit(
        coef=coef,
        intercept=intercept,
        epochs=epoch + 1,
        converged=converged,
        history=history,
        best_epoch=best_epoch,
    )


def block_changes(
    coef: FloatArray,
    start_coef: FloatArray,
    intercept: float,
    start_intercept: float,
    widths: Sequence[int],
) -> list[float]:
    """Each party's relative change over an epoch (the intercept with the first block)."""
    moved = split_columns(coef - start_coef, widths)
    sizes = split_columns(coef, widths)
    out = []
    for k, (delta, now) in enumerate(zip(moved, sizes, strict=True)):
        b_delta, b_now = (intercept - start_intercept, intercept) if k == 0 else (0.0, 0.0)
        out.append(relative_change(delta, b_delta, now, b_now))
    return out


def relative_change(
    delta_coef: FloatArray, delta_intercept: float, coef: FloatArray, intercept: float
) -> float:
    """``||Δ(w, b)||₂ / max(1, ||(w, b)||₂)``: the convergence measure of an epoch."""
    moved = float(np.sum(np.square(delta_coef))) + delta_intercept**2
    size = float(np.sum(np.square(coef))) + intercept**2
    return float(np.sqrt(moved) / max(1.0, np.sqrt(size)))


def penalised_objective(
    x: FloatArray,
    y: npt.NDArray[np.integer] | FloatArray,
    coef: FloatArray,
    intercept: float,
    l2: float,
) -> float:
    """``L(w, b)`` of the module docstring (for checks against other solvers)."""
    z = np.asarray(x, dtype=np.float64) @ coef + intercept
    return log_loss(z, np.asarray(y, dtype=np.float64)) + 0.5 * l2 * float(coef @ coef)


def split_columns(coef: FloatArray, widths: Sequence[int]) -> list[FloatArray]:
    """Cut a coefficient vector into consecutive blocks (one per party)."""
    if sum(widths) != coef.size:
        raise ValueError(f"widths {list(widths)} do not add up to {coef.size} coefficients")
    out, start = [], 0
    for width in widths:
        out.append(coef[start : start + width])
        start += width
    return out
