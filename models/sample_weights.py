"""Sample weights of the bank's training rows: class weights or a weight column, scaled to max 1.

Weights are the bank's data. In the vertical protocols they only scale each row's gradient and
hessian (SecureBoost) or residual (hetero LR) before the bank encrypts them, so they reach no
platform in the clear, and the plaintext cores apply them the same way (lossless).

Weights are scaled so that the largest is 1 (:func:`training_weights`). Every per-row bound the
protocols rely on then holds as without weights: the fixed-point range of an encrypted
gradient, the curvature bound of hetero LR's step and, above all, the L2 sensitivity a
platform's node calibrates its DP noise to (a row's contribution can only shrink). Scaling all
weights by one factor is the same model as the unscaled weights with ``reg_lambda`` and
``min_child_weight`` (SecureBoost) or the learning rate and ``l2`` (hetero LR) scaled by it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import numpy.typing as npt

#: ``class_weight`` values: ``"balanced"`` (``n / (2 n_c)`` per class ``c``, as scikit-learn),
#: or a weight per label (``{0: 1.0, 1: 5.0}``; a missing label weighs 1).
ClassWeight = Literal["balanced"] | Mapping[int, float] | Mapping[str, float] | None


class SampleWeightError(ValueError):
    """Weights that cannot train a model (all zero, negative, not finite)."""


def class_weights(y: npt.ArrayLike, class_weight: ClassWeight) -> npt.NDArray[np.float64]:
    """Per-row weights of ``class_weight`` for labels ``y`` (all 1 for ``None``), unscaled."""
    labels = np.asarray(y).astype(np.int64)
    if class_weight is None:
        return np.ones(labels.size)
    if class_weight == "balanced":
        counts = np.bincount(labels, minlength=2).astype(np.float64)
        per_class = np.where(counts > 0, labels.size / (2.0 * np.maximum(counts, 1.0)), 0.0)
        return np.asarray(per_class[labels], dtype=np.float64)
    if isinstance(class_weight, str):
        raise SampleWeightError(f"class_weight={class_weight!r}; use 'balanced' or {{0: w, 1: w}}")
    table = {int(k): float(v) for k, v in class_weight.items()}
    unknown = sorted(set(table) - {0, 1})
    if unknown:
        raise SampleWeightError(f"class_weight names labels {unknown}; labels are 0 and 1")
    return np.array([table.get(0, 1.0), table.get(1, 1.0)])[labels]


def training_weights(
    y: npt.ArrayLike,
    class_weight: ClassWeight = None,
    column: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float64] | None:
    """The weights training uses: class weights times the weight column, scaled to max 1.

    ``None`` when neither is given (unweighted training, bit for bit the former behaviour).

    Raises
    ------
    SampleWeightError
        If a weight is negative or not finite, or every weight is zero.
    """
    if class_weight is None and column is None:
        return None
    weights = class_weights(y, class_weight)
    if column is not None:
        weights = weights * np.asarray(column, dtype=np.float64)
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise SampleWeightError("sample weights must be finite and nonnegative")
    top = float(weights.max()) if weights.size else 0.0
    if top <= 0.0:
        raise SampleWeightError("every sample weight is 0: nothing would train")
    return np.asarray(weights / top, dtype=np.float64)
