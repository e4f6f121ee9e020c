"""Experiment configs: YAML files in ``experiments/``, validated on load.

Minimum form (outside automation relies on these keys; later versions extend, never rename)::

    name: default-credit-secureboost
    kind: vertical            # or horizontal
    parties:
      - {name: bank, role: bank, data: ../data/default_credit/bank.csv, id_column: id,
         label_column: y}
      - {name: platform, role: platform, data: ../data/default_credit/platform.csv,
         id_column: id}
    model: {type: secureboost, n_estimators: 30, max_depth: 3, max_bin: 32, learning_rate: 0.3}
    crypto: {key_bits: 2048}
    evaluation: {test_size: 0.2, random_state: 42, stratify: true}

Relative ``data`` paths resolve against the config file's folder. Every problem is reported as
a :class:`~lab.errors.ConfigError` naming the file, the key and the fix: unknown keys, wrong
types, missing files, a label column absent from the data, duplicate party names.
"""

from lab.config.experiment import Experiment
from lab.config.load import (
    apply_override,
    experiment_from_dict,
    format_validation_error,
    load_experiment,
)
from lab.config.schema import (
    DATA_REDACTED,
    HOLDOUT_KEY,
    MIN_SECURE_KEY_BITS,
    NODE_POLICY,
    AlignmentConfig,
    BaselineConfig,
    CryptoConfig,
    EvaluationConfig,
    ExperimentConfig,
    GovernanceConfig,
    HoldoutConfig,
    PartyConfig,
    RegistryConfig,
    RuntimeConfig,
    SecureAggregationConfig,
    TrackingConfig,
    config_class,
)

__all__ = [
    "DATA_REDACTED",
    "HOLDOUT_KEY",
    "MIN_SECURE_KEY_BITS",
    "NODE_POLICY",
    "AlignmentConfig",
    "BaselineConfig",
    "CryptoConfig",
    "EvaluationConfig",
    "Experiment",
    "ExperimentConfig",
    "GovernanceConfig",
    "HoldoutConfig",
    "PartyConfig",
    "RegistryConfig",
    "RuntimeConfig",
    "SecureAggregationConfig",
    "TrackingConfig",
    "apply_override",
    "config_class",
    "experiment_from_dict",
    "format_validation_error",
    "load_experiment",
]
