"""SecureBoost's settings: the one place their names, defaults and bounds live."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from models.training_settings import IterativeSettings

#: Most gradient chunks a job may ask for (each one is a hop of the first exchange of a tree).
MAX_GRADIENT_CHUNKS = 64


class SecureBoostSettings(IterativeSettings):
    """Vertical SecureBoost (gradient-boosted trees over Paillier-encrypted gradients).

    ``bank_only_trees``: the first trees split on the bank's columns only and release nothing
    of the platforms'. ``dp_epsilon``: Gaussian noise on the platforms' histograms, calibrated
    by each platform's node so the whole job meets (ε, ``dp_delta``). Validation, early
    stopping (one iteration is one tree) and class weights:
    :class:`~models.training_settings.IterativeSettings`. ``gradient_chunks``: the bank streams
    each tree's encrypted gradients in this many pieces, encrypting the next while the platforms
    sum the last (:mod:`models.secureboost.stream`); 1 sends them in one message.
    """

    type: Literal["secureboost"]
    n_estimators: Annotated[int, Field(ge=1, le=2000)] = 30
    max_depth: Annotated[int, Field(ge=1, le=12)] = 3
    max_bin: Annotated[int, Field(ge=2, le=1024)] = 32
    learning_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 0.3
    reg_lambda: Annotated[float, Field(ge=0.0)] = 1.0
    min_child_weight: Annotated[float, Field(ge=0.0)] = 1.0
    min_child_samples: Annotated[int, Field(ge=1)] = 20
    min_split_gain: Annotated[float, Field(ge=0.0)] = 0.0
    bank_only_trees: Annotated[int, Field(ge=0)] = 0
    dp_epsilon: Annotated[float, Field(gt=0.0)] | None = None
    dp_delta: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-5
    #: Pieces of each tree's gradients the bank streams (:mod:`models.secureboost.stream`).
    gradient_chunks: Annotated[int, Field(ge=1, le=MAX_GRADIENT_CHUNKS)] = 1

    @model_validator(mode="after")
    def _bank_only_within_trees(self) -> Self:
        if self.bank_only_trees > self.n_estimators:
            raise ValueError(
                f"bank_only_trees={self.bank_only_trees} exceeds n_estimators={self.n_estimators}"
            )
        return self


#: Every default, for code that needs one without a config (estimators, protocol params).
DEFAULTS = SecureBoostSettings(type="secureboost")
