"""MLflow "model from code" entry point of a registered hetero LR bank part (a scorecard).

MLflow executes this file when it loads the model; it only names the model class, so nothing
is pickled into the registry.
"""

import mlflow

from lab.registry_lr import HeteroLRBankModel

mlflow.models.set_model(HeteroLRBankModel())
