"""The bank's validation rows and sample weights, shared by the vertical protocols.

The bank takes its validation rows out of its training rows (stratified by label, seeded:
:func:`models.early_stopping.validation_mask`) before it bins anything, so bins, gradients and
every statistic a platform sees come from the remaining rows only, as in the plaintext cores.
Its sample weights (:mod:`models.sample_weights`) are computed on those rows and stay with it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from features.errors import DataError
from models.early_stopping import ValidationPlan, ValidationSplitError, validation_mask
from models.protocol import PartyContext
from models.sample_weights import ClassWeight, SampleWeightError, training_weights
from models.vertical.setup import BankRows


def hold_out(
    ctx: PartyContext, own: BankRows, plan: ValidationPlan
) -> tuple[BankRows, npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """The rows that fit the model, the validation mask over the aligned rows, its labels.

    Raises
    ------
    DataError
        If the training rows cannot give a validation part with both classes.
    """
    try:
        held = validation_mask(own.y, plan.fraction, plan.seed)
    except ValidationSplitError as exc:
        raise DataError(f"{ctx.table().path}: {exc}") from exc
    fit, valid = own.split(held)
    return fit, valid, own.y[held]


def weights(
    ctx: PartyContext, own: BankRows, class_weight: ClassWeight
) -> npt.NDArray[np.float64] | None:
    """The sample weights of the rows that fit the model (``None``: unweighted).

    Raises
    ------
    DataError
        If the weights of those rows cannot train (e.g. every one is 0).
    """
    try:
        return training_weights(own.y, class_weight, own.weight)
    except SampleWeightError as exc:
        raise DataError(
            f"{ctx.table().path}: {exc} (model.class_weight={class_weight!r}, weight column "
            f"{ctx.table().weight_column!r}); fix the weights or the setting"
        ) from exc
