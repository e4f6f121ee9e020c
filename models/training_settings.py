"""Settings every iterative vertical model shares: validation, early stopping, class weights.

SecureBoost (one iteration = one tree) and hetero LR (one iteration = one epoch) both derive
their settings from :class:`IterativeSettings`, so the names, defaults and bounds of these
settings live here once (:mod:`models.early_stopping`, :mod:`models.sample_weights`).
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from models.early_stopping import (
    MAX_EARLY_STOPPING_ROUNDS,
    MAX_VALIDATION_FRACTION,
    Metric,
    ValidationPlan,
)
from models.model_type import ModelSettings
from models.sample_weights import ClassWeight


class IterativeSettings(ModelSettings):
    """Validation split, early stopping and class weights of an iterative vertical model.

    ``validation_fraction``: share of the bank's training rows held out (stratified by label,
    seeded by ``validation_seed``) and scored after every iteration (AUC, KS, log-loss); unset,
    it is :data:`~models.early_stopping.DEFAULT_VALIDATION_FRACTION` when early stopping is on
    and 0 (no validation rows) otherwise. ``early_stopping_rounds``: stop when
    ``early_stopping_metric`` has not improved on the validation rows for that many iterations
    and keep the best iteration (off by default). ``class_weight``: ``balanced`` or a weight per
    label (``{0: 1.0, 1: 4.0}``), multiplied by the bank's weight column if it has one
    (``parties.<bank>.weight_column``).
    """

    validation_fraction: Annotated[float, Field(ge=0.0, le=MAX_VALIDATION_FRACTION)] | None = None
    validation_seed: Annotated[int, Field(ge=0)] = 0
    early_stopping_rounds: Annotated[int, Field(ge=1, le=MAX_EARLY_STOPPING_ROUNDS)] | None = None
    early_stopping_metric: Metric = "auc"
    class_weight: Literal["balanced"] | dict[int, Annotated[float, Field(ge=0.0)]] | None = None

    @model_validator(mode="after")
    def _validation_for_stopping(self) -> Self:
        self.validation_plan()
        if isinstance(self.class_weight, dict) and not set(self.class_weight) <= {0, 1}:
            raise ValueError(
                f"class_weight names labels {sorted(self.class_weight)}; labels are 0 and 1 "
                "(e.g. {0: 1.0, 1: 4.0})"
            )
        return self

    def validation_plan(self) -> ValidationPlan:
        """The resolved validation split and stopping rule."""
        return ValidationPlan.resolve(
            self.validation_fraction,
            self.validation_seed,
            self.early_stopping_rounds,
            self.early_stopping_metric,
        )


class IterativeParams:
    """The protocol-side form of :class:`IterativeSettings`: a mixin of the params dataclasses.

    Each params dataclass declares these fields last (so its estimator's keyword arguments keep
    their order), with the defaults of :class:`IterativeSettings`::

        validation_fraction: float | None = None
        validation_seed: int = DEFAULT_VALIDATION_SEED
        early_stopping_rounds: int | None = None
        early_stopping_metric: Metric = DEFAULT_METRIC
        class_weight: ClassWeight = None

    ``class_weight`` arrives from a job spec's JSON, so label keys may be strings (``"1"``).
    """

    validation_fraction: float | None
    validation_seed: int
    early_stopping_rounds: int | None
    early_stopping_metric: Metric
    class_weight: ClassWeight

    @property
    def validation(self) -> ValidationPlan:
        """The resolved validation split and stopping rule."""
        return ValidationPlan.resolve(
            self.validation_fraction,
            self.validation_seed,
            self.early_stopping_rounds,
            self.early_stopping_metric,
        )
