"""Settings of a SecureBoost job: the one place their names and defaults are written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.early_stopping import DEFAULT_METRIC, DEFAULT_VALIDATION_SEED, Metric
from models.sample_weights import ClassWeight
from models.secureboost.core import TreeParams
from models.secureboost.settings import DEFAULTS
from models.training_settings import IterativeParams
from models.vertical.keys import CRYPTO_FIELDS, check_scheme_supported, crypto_fields
from secure_agg.paillier import DEFAULT_KEY_BITS
from secure_agg.schemes import DEFAULT_SCHEME, SCHEMES

#: Homomorphic schemes SecureBoost runs with (every scheme of :mod:`secure_agg.schemes`).
HE_SCHEMES: tuple[str, ...] = tuple(SCHEMES)


@dataclass(frozen=True)
class SecureBoostParams(IterativeParams):
    """Settings of a SecureBoost job (validated by the experiment config)."""

    n_estimators: int = DEFAULTS.n_estimators
    max_depth: int = DEFAULTS.max_depth
    max_bin: int = DEFAULTS.max_bin
    learning_rate: float = DEFAULTS.learning_rate
    reg_lambda: float = DEFAULTS.reg_lambda
    min_child_weight: float = DEFAULTS.min_child_weight
    min_child_samples: int = DEFAULTS.min_child_samples
    min_split_gain: float = DEFAULTS.min_split_gain
    bank_only_trees: int = DEFAULTS.bank_only_trees
    key_bits: int = DEFAULT_KEY_BITS
    insecure_test_keys: bool = False
    scheme: str = DEFAULT_SCHEME
    dp_epsilon: float | None = None
    dp_delta: float = DEFAULTS.dp_delta
    gradient_chunks: int = DEFAULTS.gradient_chunks
    validation_fraction: float | None = None
    validation_seed: int = DEFAULT_VALIDATION_SEED
    early_stopping_rounds: int | None = None
    early_stopping_metric: Metric = DEFAULT_METRIC
    class_weight: ClassWeight = None

    def __post_init__(self) -> None:
        check_scheme_supported(self.scheme, HE_SCHEMES, "crypto.scheme")
        chunks = self.gradient_chunks
        if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
            raise ValueError(
                f"gradient_chunks={chunks!r}: set model.gradient_chunks to a whole number of "
                "pieces, at least 1 (1 sends each tree's gradients in one message)"
            )

    @property
    def tree(self) -> TreeParams:
        """The core's growth settings."""
        return TreeParams(
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            reg_lambda=self.reg_lambda,
            min_child_weight=self.min_child_weight,
            min_child_samples=self.min_child_samples,
            min_split_gain=self.min_split_gain,
        )

    @classmethod
    def from_spec(cls, model: dict[str, Any], crypto_cfg: dict[str, Any]) -> SecureBoostParams:
        """Build from a job spec's ``model`` and ``crypto`` sections."""
        fields = {
            k: v
            for k, v in model.items()
            if k in cls.__dataclass_fields__ and k not in CRYPTO_FIELDS
        }
        return cls(**fields, **crypto_fields(crypto_cfg, HE_SCHEMES))
