"""Settings of a hetero LR job: the one place their names and defaults are written."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy.typing as npt

from features.binning import BinSpec
from features.woe import WoeTable
from models.early_stopping import DEFAULT_METRIC, DEFAULT_VALIDATION_SEED, Metric
from models.protocol import ProtocolError
from models.sample_weights import ClassWeight
from models.training_settings import IterativeParams
from models.vertical.keys import CRYPTO_FIELDS, check_scheme_supported, crypto_fields
from models.vertical_lr.core import LRParams
from models.vertical_lr.settings import DEFAULTS
from secure_agg.paillier import DEFAULT_KEY_BITS
from secure_agg.schemes import DEFAULT_SCHEME

#: Homomorphic schemes hetero LR runs with: Paillier only (its messages use Paillier directly).
HE_SCHEMES: tuple[str, ...] = (DEFAULT_SCHEME,)


@dataclass(frozen=True)
class HeteroLRParams(IterativeParams):
    """Settings of a hetero LR job (validated by the experiment config)."""

    learning_rate: float = DEFAULTS.learning_rate
    decay: float = DEFAULTS.decay
    l2: float = DEFAULTS.l2
    batch_size: int = DEFAULTS.batch_size
    max_epochs: int = DEFAULTS.max_epochs
    tol: float = DEFAULTS.tol
    max_bin: int = DEFAULTS.max_bin
    binning: Literal["monotone", "quantile"] = DEFAULTS.binning
    min_bin_share: float = DEFAULTS.min_bin_share
    max_woe_bins: int = DEFAULTS.max_woe_bins
    woe_alpha: float = DEFAULTS.woe_alpha
    base_points: float = DEFAULTS.scorecard.base_points
    base_odds: float = DEFAULTS.scorecard.base_odds
    pdo: float = DEFAULTS.scorecard.pdo
    groups: dict[str, str] = field(default_factory=dict)
    key_bits: int = DEFAULT_KEY_BITS
    insecure_test_keys: bool = False
    scheme: str = DEFAULT_SCHEME
    validation_fraction: float | None = None
    validation_seed: int = DEFAULT_VALIDATION_SEED
    early_stopping_rounds: int | None = None
    early_stopping_metric: Metric = DEFAULT_METRIC
    class_weight: ClassWeight = None

    def __post_init__(self) -> None:
        check_scheme_supported(self.scheme, HE_SCHEMES, "crypto.scheme")

    def lr(self) -> LRParams:
        """The descent settings: always the Taylor residual (:mod:`models.vertical_lr.protocol`)."""
        return LRParams(
            learning_rate=self.learning_rate,
            decay=self.decay,
            l2=self.l2,
            batch_size=self.batch_size,
            max_epochs=self.max_epochs,
            tol=self.tol,
            gradient="taylor",
        )

    def woe_table(
        self,
        name: str,
        party: str,
        kind: str,
        total: npt.ArrayLike,
        bad: npt.ArrayLike,
        spec: BinSpec | None = None,
    ) -> WoeTable:
        """Coarse bins, WOE and IV of one column from its fine-bin counts, with these settings."""
        if kind not in ("numeric", "categorical"):
            raise ProtocolError(f"column '{name}' has unknown kind {kind!r}")
        return WoeTable.fit(
            name,
            party,
            "numeric" if kind == "numeric" else "categorical",
            total,
            bad,
            spec=spec,
            method=self.binning,
            min_bin_share=self.min_bin_share,
            max_bins=self.max_woe_bins,
            alpha=self.woe_alpha,
        )

    @classmethod
    def from_spec(cls, model: dict[str, Any], crypto_cfg: dict[str, Any]) -> HeteroLRParams:
        """Build from the experiment's ``model`` and ``crypto`` sections."""
        names = set(cls.__dataclass_fields__) - set(CRYPTO_FIELDS)
        values = {k: v for k, v in model.items() if k in names}
        scorecard = model.get("scorecard") or {}
        for key in ("base_points", "base_odds", "pdo"):
            if key in scorecard:
                values[key] = scorecard[key]
        if "groups" in scorecard:  # the settings' form, group -> columns
            values["groups"] = {
                column: group
                for group, columns in scorecard["groups"].items()
                for column in columns
            }
        return cls(**values, **crypto_fields(crypto_cfg, HE_SCHEMES))
