"""SecureBoost's DP release plan: Gaussian noise on every level's platform histograms.

A platform's node decides its own noise. At ``hello`` it computes, from the job spec itself,
how many histogram releases the job makes of its data (:func:`releases_per_platform`) and the
noise multiplier that keeps all of them (ε, δ)-DP (:func:`noise_multiplier`, Opacus's RDP
accountant), checks them against its own policy and reserves the privacy events in its own
ledger (:func:`release_grants`, :func:`planned_privacy_events`). During training it adds that
noise, under encryption, to every (G, H, count) sum it releases (:func:`own_noise`), and counts
every release itself.
"""

from __future__ import annotations

import numpy as np

from models.guard import ReleaseGrant
from models.privacy import PrivacyEvent
from models.protocol import PartyContext
from models.secureboost import crypto
from models.secureboost.params import SecureBoostParams

#: The DP mechanism of SecureBoost: Gaussian noise on each level's platform histograms.
DP_MECHANISM = "secureboost-histogram-noise"


def releases_per_platform(params: SecureBoostParams) -> int:
    """Noisy histogram releases of one platform: one per level of every platform-using tree."""
    return max(1, (params.n_estimators - params.bank_only_trees) * params.max_depth)


def noise_multiplier(params: SecureBoostParams, n_platforms: int) -> float:
    """Noise multiplier making all histogram releases of a job (ε, δ)-DP (RDP accountant).

    Calibrated over every platform's releases together, so each platform's own releases
    (fewer) stay within (ε, δ) on its data.
    """
    from opacus.accountants.utils import get_noise_multiplier

    if params.dp_epsilon is None:
        raise ValueError("dp_epsilon is not set")
    return float(
        get_noise_multiplier(
            target_epsilon=params.dp_epsilon,
            target_delta=params.dp_delta,
            sample_rate=1.0,
            steps=releases_per_platform(params) * max(1, n_platforms),
            accountant="rdp",
        )
    )


def release_grants(params: SecureBoostParams, n_platforms: int) -> tuple[ReleaseGrant, ...]:
    """What a platform's node grants a job with these settings (nothing without DP).

    The node computes this from the job spec itself and reserves its events in its own ledger;
    its protocol step then adds this noise and counts every release.
    """
    if params.dp_epsilon is None:
        return ()
    return (
        ReleaseGrant(
            mechanism=DP_MECHANISM,
            noise_multiplier=noise_multiplier(params, n_platforms),
            max_releases=releases_per_platform(params),
            delta=params.dp_delta,
        ),
    )


def planned_privacy_events(params: SecureBoostParams, n_platforms: int) -> list[PrivacyEvent]:
    """The privacy events one platform's data will undergo at most (none without DP)."""
    return [e for g in release_grants(params, n_platforms) for e in g.events(g.max_releases)]


def own_noise(ctx: PartyContext, n_features: int) -> dict[str, float] | None:
    """The Gaussian noise this platform adds to each level's histograms, from its own grant.

    One record moves (g, h, 1) into one bin per feature: the L2 sensitivity of a level's
    release is ``sqrt(F * (1 + 1/16 + 1))`` in (gradient, hessian, count) units, with
    ``|g| <= 1`` and ``h <= 1/4`` (the bank encrypts gradients of the logistic loss, which the
    platform cannot check under encryption: the honest-but-curious assumption).
    """
    grant = ctx.guard.grant(DP_MECHANISM)
    if grant is None:
        return None
    sensitivity = float(np.sqrt(n_features * (1.0 + 1.0 / 16.0 + 1.0)))
    return {
        "sigma_gh": grant.noise_multiplier * sensitivity * crypto.scale(),
        "sigma_count": grant.noise_multiplier * sensitivity,
    }
