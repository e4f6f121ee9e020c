"""Horizontal joint modeling: banks with the same features about different enterprises.

The bank-side library the Flower integration calls: models (:mod:`~models.horizontal.nets`),
a schema-defined feature encoder every bank builds identically
(:mod:`~models.horizontal.encoding`), one local training round with FedProx and record-level
DP-SGD (:mod:`~models.horizontal.local`, :mod:`~models.horizontal.dp`).

The DP guarantee protects one loan record (row) of one bank, not an enterprise across banks
and not a bank; see :mod:`models.horizontal.dp`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.horizontal.dp import (
        DPConfig,
        DPPlan,
        DPState,
        plan_noise,
        secure_rng_available,
    )
    from models.horizontal.encoding import (
        CategoricalColumn,
        FeatureEncoder,
        NumericColumn,
        merge_schemas,
        numeric_schema,
        schema_from_table,
    )
    from models.horizontal.errors import (
        DPConfigError,
        DPPlanMismatchError,
        ModelSpecError,
        ParameterMismatchError,
        PrivacyBudgetExhaustedError,
        PrivacyBudgetTooSmallError,
        SchemaError,
        SchemaMismatchError,
        SecureRNGUnavailableError,
        TrainingConfigError,
        TrainingDataError,
    )
    from models.horizontal.local import (
        LocalResult,
        LocalTrainingConfig,
        evaluate_local,
        predict_proba,
        train_local,
    )
    from models.horizontal.nets import (
        arrays_to_parameters,
        build_model,
        n_parameters,
        parameter_names,
        parameters_to_arrays,
    )

# Loaded on first use (PEP 562): the package imports torch, which costs every node about a
# second at its first message, and a vertical job never needs it (the model-type registry
# imports :mod:`models.horizontal.descriptor`, hence this package, on every node).
_LAZY: dict[str, str] = {
    "CategoricalColumn": "models.horizontal.encoding",
    "DPConfig": "models.horizontal.dp",
    "DPConfigError": "models.horizontal.errors",
    "DPPlan": "models.horizontal.dp",
    "DPPlanMismatchError": "models.horizontal.errors",
    "DPState": "models.horizontal.dp",
    "FeatureEncoder": "models.horizontal.encoding",
    "LocalResult": "models.horizontal.local",
    "LocalTrainingConfig": "models.horizontal.local",
    "ModelSpecError": "models.horizontal.errors",
    "NumericColumn": "models.horizontal.encoding",
    "ParameterMismatchError": "models.horizontal.errors",
    "PrivacyBudgetExhaustedError": "models.horizontal.errors",
    "PrivacyBudgetTooSmallError": "models.horizontal.errors",
    "SchemaError": "models.horizontal.errors",
    "SchemaMismatchError": "models.horizontal.errors",
    "SecureRNGUnavailableError": "models.horizontal.errors",
    "TrainingConfigError": "models.horizontal.errors",
    "TrainingDataError": "models.horizontal.errors",
    "arrays_to_parameters": "models.horizontal.nets",
    "build_model": "models.horizontal.nets",
    "evaluate_local": "models.horizontal.local",
    "merge_schemas": "models.horizontal.encoding",
    "n_parameters": "models.horizontal.nets",
    "numeric_schema": "models.horizontal.encoding",
    "parameter_names": "models.horizontal.nets",
    "parameters_to_arrays": "models.horizontal.nets",
    "plan_noise": "models.horizontal.dp",
    "predict_proba": "models.horizontal.local",
    "schema_from_table": "models.horizontal.encoding",
    "secure_rng_available": "models.horizontal.dp",
    "train_local": "models.horizontal.local",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "CategoricalColumn",
    "DPConfig",
    "DPConfigError",
    "DPPlan",
    "DPPlanMismatchError",
    "DPState",
    "FeatureEncoder",
    "LocalResult",
    "LocalTrainingConfig",
    "ModelSpecError",
    "NumericColumn",
    "ParameterMismatchError",
    "PrivacyBudgetExhaustedError",
    "PrivacyBudgetTooSmallError",
    "SchemaError",
    "SchemaMismatchError",
    "SecureRNGUnavailableError",
    "TrainingConfigError",
    "TrainingDataError",
    "arrays_to_parameters",
    "build_model",
    "evaluate_local",
    "merge_schemas",
    "n_parameters",
    "numeric_schema",
    "parameter_names",
    "parameters_to_arrays",
    "plan_noise",
    "predict_proba",
    "schema_from_table",
    "secure_rng_available",
    "train_local",
]
