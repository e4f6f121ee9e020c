"""MLflow "model from code" entry point of a registered horizontal global model.

MLflow executes this file when it loads the model; it only names the model class, so nothing
is pickled into the registry.
"""

import mlflow

from lab.registry import HorizontalGlobalModel

mlflow.models.set_model(HorizontalGlobalModel())
