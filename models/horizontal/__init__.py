"""Horizontal joint modeling: banks with the same features about different enterprises.

The bank-side library the Flower integration calls: models (:mod:`~models.horizontal.nets`),
a schema-defined feature encoder every bank builds identically
(:mod:`~models.horizontal.encoding`), one local training round with FedProx and record-level
DP-SGD (:mod:`~models.horizontal.local`, :mod:`~models.horizontal.dp`).

The DP guarantee protects one loan record (row) of one bank, not an enterprise across banks
and not a bank; see :mod:`models.horizontal.dp`.
"""

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
