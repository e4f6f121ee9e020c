"""Settings of the horizontal models (``logreg``, ``mlp``): names, defaults and bounds."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from models.model_type import ModelSettings


class HorizontalModelSettings(ModelSettings):
    """A torch model trained across banks with Flower strategies (horizontal jobs).

    ``logreg``: logistic regression; ``mlp``: a small multilayer perceptron (``hidden``).
    ``strategy``: FedAvg, or FedProx with ``proximal_mu > 0``. With ``dp_epsilon`` each bank
    trains with record-level DP-SGD (Opacus), the noise planned before training so the whole
    job meets (ε, δ) under ``accountant``.
    """

    type: Literal["logreg", "mlp"]
    hidden: Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(max_length=6)] = Field(
        default_factory=lambda: [32, 16]
    )
    rounds: Annotated[int, Field(ge=1, le=1000)] = 20
    local_epochs: Annotated[int, Field(ge=1, le=100)] = 1
    batch_size: Annotated[int, Field(ge=1, le=65536)] = 64
    learning_rate: Annotated[float, Field(gt=0.0, le=10.0)] = 0.05
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    strategy: Literal["fedavg", "fedprox"] = "fedavg"
    proximal_mu: Annotated[float, Field(ge=0.0)] = 0.0
    dp_epsilon: Annotated[float, Field(gt=0.0)] | None = None
    dp_delta: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-5
    max_grad_norm: Annotated[float, Field(gt=0.0)] = 1.0
    accountant: Literal["rdp", "prv"] = "rdp"
    seed: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _fedprox_needs_mu(self) -> Self:
        if self.strategy == "fedprox" and self.proximal_mu <= 0:
            raise ValueError("strategy 'fedprox' needs proximal_mu > 0 (e.g. 0.01)")
        if self.strategy == "fedavg" and self.proximal_mu > 0:
            raise ValueError("proximal_mu is a FedProx setting; set strategy: fedprox")
        return self

    def layers(self) -> tuple[int, ...]:
        """Hidden layer widths of the network (none for ``logreg``)."""
        return tuple(self.hidden) if self.type == "mlp" else ()
