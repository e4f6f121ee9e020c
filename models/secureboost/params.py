"""Settings of a SecureBoost job: the one place their names and defaults are written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.secureboost.core import TreeParams
from secure_agg.paillier import DEFAULT_KEY_BITS


@dataclass(frozen=True)
class SecureBoostParams:
    """Settings of a SecureBoost job (validated by the experiment config)."""

    n_estimators: int = 30
    max_depth: int = 3
    max_bin: int = 32
    learning_rate: float = 0.3
    reg_lambda: float = 1.0
    min_child_weight: float = 1.0
    min_child_samples: int = 20
    min_split_gain: float = 0.0
    bank_only_trees: int = 0
    key_bits: int = DEFAULT_KEY_BITS
    insecure_test_keys: bool = False
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5

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
        crypto_keys = ("key_bits", "insecure_test_keys")
        fields = {
            k: v for k, v in model.items() if k in cls.__dataclass_fields__ and k not in crypto_keys
        }
        return cls(
            **fields,
            key_bits=int(crypto_cfg.get("key_bits", DEFAULT_KEY_BITS)),
            insecure_test_keys=bool(crypto_cfg.get("insecure_test_keys", False)),
        )
