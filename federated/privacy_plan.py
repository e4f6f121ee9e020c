"""What a job releases of a platform's data, and the DP grants a platform's node gives it.

Both are read from the job spec *by the node that holds the data*: the platform's node decides
its noise and counts its releases from these, never from what the bank sends during training.
"""

from __future__ import annotations

from federated.spec import JobSpec
from models import secureboost
from models.guard import ReleaseGrant


def releases_statistics(spec: JobSpec) -> bool:
    """Whether the job releases statistics of platform data to the bank (beyond alignment)."""
    if spec.task != "train" or spec.kind != "vertical":
        return False
    if spec.model_type == "hetero_lr":
        return True  # per-bin label counts of platform columns, gradients of their coefficients
    if spec.model_type != "secureboost":
        return False
    params = secureboost.SecureBoostParams.from_spec(dict(spec.model), dict(spec.crypto))
    return params.n_estimators > params.bank_only_trees


def dp_grants(spec: JobSpec, role: str) -> tuple[ReleaseGrant, ...]:
    """The DP mechanisms a node of ``role`` applies in ``spec``, with their noise and counts."""
    if role != "platform" or spec.task != "train" or spec.kind != "vertical":
        return ()
    if spec.model_type == "secureboost":
        params = secureboost.SecureBoostParams.from_spec(dict(spec.model), dict(spec.crypto))
        return secureboost.release_grants(params, len(spec.by_role("platform")))
    return ()
