"""MLflow "model from code" entry point of a registered SecureBoost bank part.

MLflow executes this file when it loads the model; it only names the model class, so nothing
is pickled into the registry.
"""

import mlflow

from lab.registry import SecureBoostBankModel

mlflow.models.set_model(SecureBoostBankModel())
