"""What a job releases of a platform's data, and the DP grants a platform's node gives it.

Both are read from the job spec *by the node that holds the data*: the platform's node decides
its noise and counts its releases from these, never from what the bank sends during training.
The model type's descriptor (:mod:`models.model_type`) says what its training releases.
"""

from __future__ import annotations

from federated.spec import JobSpec
from models.guard import ReleaseGrant
from models.model_type import ModelSettings, ModelType, model_type


def job_model(spec: JobSpec) -> tuple[ModelType, ModelSettings]:
    """The job's model type and its settings."""
    described = model_type(spec.model_type)
    return described, described.parse(spec.model)


def releases_statistics(spec: JobSpec) -> bool:
    """Whether the job releases statistics of platform data to the bank (beyond alignment).

    Screening by information value releases exact per-bin label counts of platform columns
    (:mod:`federated.screening_protocol`), whatever the model releases.
    """
    if spec.task != "train" or spec.kind != "vertical":
        return False
    if spec.screening.min_iv is not None:
        return True
    described, settings = job_model(spec)
    return described.releases_statistics(settings)


def dp_grants(spec: JobSpec, role: str) -> tuple[ReleaseGrant, ...]:
    """The DP mechanisms a node of ``role`` applies in ``spec``, with their noise and counts."""
    if role != "platform" or spec.task != "train" or spec.kind != "vertical":
        return ()
    described, settings = job_model(spec)
    return described.release_grants(settings, spec.crypto, len(spec.by_role("platform")))
