"""Validation split, per-iteration validation metrics and early stopping of iterative models.

Shared by every vertical model type (SecureBoost trees, hetero LR epochs) and their plaintext
cores, so a protocol stops exactly where its core does:

- :func:`validation_mask` takes the bank's validation rows from its training rows, stratified
  by label and seeded, so the split is a function of the labels and the settings alone;
- :func:`validation_metrics` scores one iteration's validation logits (AUC, KS, log-loss);
- :func:`observe` is one step of early stopping: it keeps the best iteration so far and says
  when ``rounds`` iterations in a row did not improve it. Its state (:class:`StoppingState`) is
  a small JSON document the bank keeps per iteration, so a job resumed from a completed
  iteration continues with the same decision.

Everything here runs at the bank: labels never leave it, and the platform's only part in
validation is the one it has in scoring (see the model types' privacy descriptions).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

#: Share of the bank's training rows held out for validation when early stopping is on and
#: ``validation_fraction`` is not set (20 %, as scikit-learn's ``HistGradientBoosting`` does
#: when it stops early on a held-out part; ``0.1`` there, but credit default rates are low and
#: a validation AUC needs bads).
DEFAULT_VALIDATION_FRACTION = 0.2
#: Largest validation share: more would leave the model less than half its training rows.
MAX_VALIDATION_FRACTION = 0.5
#: Most rounds without improvement a job may wait for.
MAX_EARLY_STOPPING_ROUNDS = 1000
#: Fewest bad (and good) rows the validation part must hold (AUC and KS need both classes).
MIN_VALIDATION_OUTCOMES = 3

Metric = Literal["auc", "ks", "logloss"]
#: The metric early stopping watches unless a job names another.
DEFAULT_METRIC: Metric = "auc"
#: Seed of the validation split unless a job names another.
DEFAULT_VALIDATION_SEED = 0
#: Metrics computed on the validation rows each iteration, and whether higher is better.
METRICS: dict[str, bool] = {"auc": True, "ks": True, "logloss": False}


class ValidationSplitError(ValueError):
    """The validation split cannot be made (too few rows or outcomes); the message says why."""


@dataclass(frozen=True)
class ValidationPlan:
    """What a job validates on and when it stops (resolved from a model's settings).

    Attributes
    ----------
    fraction : float
        Share of the training rows held out for validation (``0``: none).
    seed : int
        Seed of the stratified split.
    rounds : int or None
        Stop after this many iterations without improvement of ``metric`` (``None``: never).
    metric : {"auc", "ks", "logloss"}
        The validation metric early stopping watches.
    """

    fraction: float = 0.0
    seed: int = 0
    rounds: int | None = None
    metric: Metric = "auc"

    @property
    def enabled(self) -> bool:
        """Whether the job holds out validation rows."""
        return self.fraction > 0.0

    @classmethod
    def resolve(
        cls, fraction: float | None, seed: int, rounds: int | None, metric: Metric
    ) -> ValidationPlan:
        """The plan of settings where ``fraction=None`` means "default if stopping early"."""
        if fraction is None:
            fraction = DEFAULT_VALIDATION_FRACTION if rounds is not None else 0.0
        if rounds is not None and fraction <= 0.0:
            raise ValueError(
                f"model.early_stopping_rounds={rounds} needs validation rows; set "
                f"model.validation_fraction above 0 (default {DEFAULT_VALIDATION_FRACTION} "
                "when early stopping is on)"
            )
        return cls(fraction=float(fraction), seed=int(seed), rounds=rounds, metric=metric)


def validation_mask(y: npt.ArrayLike, fraction: float, seed: int) -> npt.NDArray[np.bool_]:
    """Which of the training rows (labels ``y``, in order) are held out for validation.

    Stratified by label and seeded: ``train_test_split(positions, test_size=fraction,
    random_state=seed, stratify=y)``. All ``False`` when ``fraction`` is 0.

    Raises
    ------
    ValidationSplitError
        If either part would hold fewer than :data:`MIN_VALIDATION_OUTCOMES` bad or good rows.
    """
    labels = np.asarray(y).astype(np.int64)
    mask = np.zeros(labels.size, dtype=bool)
    if fraction <= 0.0:
        return mask
    counts = np.bincount(labels, minlength=2)
    n_valid = math.ceil(fraction * labels.size)
    expected = [math.floor(c * fraction) for c in counts]
    if min(expected) < MIN_VALIDATION_OUTCOMES or min(counts - np.array(expected)) < 2:
        raise ValidationSplitError(
            f"model.validation_fraction={fraction:g} of {labels.size} training rows "
            f"({int(counts[1])} bad, {int(counts[0])} good) leaves fewer than "
            f"{MIN_VALIDATION_OUTCOMES} bad or good rows in a part; raise the fraction or "
            "add training rows"
        )
    from sklearn.model_selection import train_test_split  # seconds to import: lazily

    _, held = train_test_split(
        np.arange(labels.size), test_size=n_valid, random_state=int(seed), stratify=labels
    )
    mask[np.asarray(held)] = True
    return mask


def validation_metrics(y: npt.ArrayLike, logits: npt.ArrayLike) -> dict[str, float]:
    """AUC, KS and mean log-loss of validation ``logits`` (log-odds) against labels ``y``.

    Unweighted: the metrics describe the model on the validation population as it is, whatever
    sample weights training used.
    """
    labels = np.asarray(y, dtype=np.float64)
    z = np.asarray(logits, dtype=np.float64)
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(labels, z)
    logloss = float(np.mean(np.logaddexp(0.0, z) - labels * z))
    return {
        "auc": float(roc_auc_score(labels, z)),
        "ks": float(np.max(tpr - fpr)),
        "logloss": logloss,
    }


@dataclass(frozen=True)
class StoppingState:
    """Early stopping so far: the best iteration, its score, and whether to stop.

    Kept by the bank after every iteration (JSON, :meth:`to_dict`), so that a job resumed from a
    completed iteration takes the same decisions as an uninterrupted one.
    """

    best_iteration: int = -1
    best_score: float | None = None
    iterations: int = 0
    stopped: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> StoppingState:
        """Inverse of :meth:`to_dict` (the initial state for ``None``)."""
        return cls() if not raw else cls(**raw)


def observe(
    state: StoppingState, iteration: int, metrics: dict[str, float], plan: ValidationPlan
) -> StoppingState:
    """One iteration's validation ``metrics`` seen: the new best, and whether to stop now.

    An iteration is better only if its ``plan.metric`` is strictly better than the best so far
    (ties keep the earlier, smaller model). ``stopped`` once ``plan.rounds`` iterations in a row
    did not improve it (never without ``rounds``).
    """
    score = float(metrics[plan.metric])
    higher = METRICS[plan.metric]
    best = state.best_score
    improved = best is None or (score > best if higher else score < best)
    if improved:
        state = StoppingState(iteration, score, state.iterations + 1, False)
    else:
        state = StoppingState(state.best_iteration, best, state.iterations + 1, False)
    if plan.rounds is not None and iteration - state.best_iteration >= plan.rounds:
        state = StoppingState(state.best_iteration, state.best_score, state.iterations, True)
    return state
