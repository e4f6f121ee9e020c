"""Hetero LR's settings: the one place their names, defaults and bounds live."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.training_settings import IterativeSettings


class ScorecardSettings(BaseModel):
    """Points scaling of a scorecard and the feature groups of its reason codes.

    ``base_points`` at good:bad odds of ``base_odds`` to 1; ``pdo`` points double the odds.
    ``groups`` maps a reason-code group to its columns (``column`` or ``party:column``); columns
    not listed take the group their party publishes in ``columns.json``, else their own name.
    """

    model_config: ClassVar[ConfigDict] = ConfigDict(extra="forbid", strict=True, frozen=True)

    base_points: float = 600.0
    base_odds: Annotated[float, Field(gt=0.0)] = 50.0
    pdo: Annotated[float, Field(gt=0.0)] = 20.0
    groups: dict[Annotated[str, Field(min_length=1)], list[Annotated[str, Field(min_length=1)]]] = (
        Field(default_factory=dict)
    )


class HeteroLRSettings(IterativeSettings):
    """Vertical WOE logistic regression over Paillier encryption, and its scorecard.

    Fine quantile bins (``max_bin``) per column, merged by the bank from (encrypted, for platform
    columns) per-bin label counts into at most ``max_woe_bins`` coarse bins (``monotone``:
    monotone bad rate; ``quantile``: size only), WOE-encoded; then mini-batch gradient descent
    with L2 (``l2``), step ``learning_rate / (L sqrt(1 + decay * epoch))`` where ``L`` bounds the
    loss's curvature (so defaults work whatever the features' scale), until every party's
    relative weight change in an epoch is below ``tol`` or after ``max_epochs``.
    ``batch_size: 0`` is full batch. Validation, early stopping (one iteration is one epoch) and
    class weights: :class:`~models.training_settings.IterativeSettings`.
    """

    type: Literal["hetero_lr"]
    learning_rate: Annotated[float, Field(gt=0.0, lt=2.0)] = 1.0
    decay: Annotated[float, Field(ge=0.0)] = 1.0
    l2: Annotated[float, Field(ge=0.0)] = 1e-3
    batch_size: Annotated[int, Field(ge=0, le=1_000_000)] = 2048
    max_epochs: Annotated[int, Field(ge=1, le=1000)] = 10
    tol: Annotated[float, Field(ge=0.0)] = 0.02
    max_bin: Annotated[int, Field(ge=2, le=256)] = 20
    binning: Literal["monotone", "quantile"] = "monotone"
    min_bin_share: Annotated[float, Field(gt=0.0, le=0.5)] = 0.05
    max_woe_bins: Annotated[int, Field(ge=2, le=64)] = 8
    woe_alpha: Annotated[float, Field(gt=0.0)] = 0.5
    scorecard: ScorecardSettings = Field(default_factory=ScorecardSettings)


#: Every default, for code that needs one without a config (estimators, protocol params).
DEFAULTS = HeteroLRSettings(type="hetero_lr")
