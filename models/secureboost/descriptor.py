"""SecureBoost as a model type: its settings, protocol, privacy and hooks (one registry entry)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from models.guard import NodeLimits
from models.model_type import ModelSettings, ModelType, PrivacyDescription, StartRequest, Trained
from models.protocol import Envelope
from models.secureboost.params import HE_SCHEMES
from models.secureboost.protocol import (
    SecureBoostParams,
    SecureBoostParty,
    conclude,
    release_grants,
    start_envelope,
)
from models.secureboost.settings import SecureBoostSettings

PRIVACY = PrivacyDescription(
    bank_learns=(
        "per-bin gradient sums of platform features (with Gaussian noise from the platform's "
        "own DP grant when dp_epsilon is set, else exact) and the instance partition of "
        "platform splits; with validation rows (validation_fraction, early stopping, served by "
        "the platform's node under its validation.serve policy) the side of every validation "
        "row at every platform split of every trained tree, as scoring those rows would reveal"
    ),
    platform_learns=(
        "aligned ids, training mask, instance partition; with validation, which rows are "
        "validation rows and how many trees are kept; no labels, no sample weights"
    ),
    coordinator_learns=(
        "ciphertexts, sizes, timings, the evaluation report, per-tree metrics (validation "
        "AUC/KS/log-loss included), gain per feature name, each node's privacy charge, the "
        "feature group of each platform split"
    ),
    without_dp="exact platform histogram sums",
    controls=("bank_only_trees",),
    explanations=(
        "per platform split its published feature group (released by the platform's node "
        "unless its policy explanations.group_attribution=refuse), hence per scored enterprise "
        "one signed Saabas contribution per platform group; never a platform column, "
        "threshold, bin edge or value. Not new to a bank that keeps its training transcript "
        "(it chose each platform split and saw its column); the policy governs the labels in "
        "its model and reason codes"
    ),
    with_dp=(
        "covers the platform's histogram releases; the left/right directions of platform "
        "splits (the instance partition) are not protected"
    ),
)


def _settings(value: ModelSettings) -> SecureBoostSettings:
    return cast(SecureBoostSettings, value)


def params(settings: ModelSettings, crypto: Mapping[str, Any]) -> SecureBoostParams:
    """The protocol's parameters from the settings and the job's crypto section."""
    return SecureBoostParams.from_spec(settings.model_dump(mode="json"), dict(crypto))


def _start(request: StartRequest) -> Envelope:
    return start_envelope(
        request.bank,
        request.platforms,
        request.order,
        params(request.settings, request.crypto),
        request.job_id,
    )


def _conclude(replies: Sequence[Envelope]) -> Trained:
    outcome = conclude(replies)
    return Trained(
        report=outcome.report,
        details={
            "per_tree": outcome.per_tree,
            "bank_part": outcome.bank_part,
            "platform_parts": outcome.platform_parts,
            "clock": outcome.clock,
            "importance": outcome.importance,
            "validation": outcome.validation,
            **outcome.splits,
        },
    )


def _releases(settings: ModelSettings) -> bool:
    s = _settings(settings)
    return s.n_estimators > s.bank_only_trees


def _grants(settings: ModelSettings, crypto: Mapping[str, Any], n_platforms: int) -> Any:
    return release_grants(params(settings, crypto), n_platforms)


def _baseline(settings: ModelSettings) -> dict[str, Any]:
    s = _settings(settings)
    return {
        "n_estimators": s.n_estimators,
        "max_depth": s.max_depth,
        "max_bin": s.max_bin,
        "learning_rate": s.learning_rate,
        "min_child_samples": s.min_child_samples,
    }


def _check_bins(settings: ModelSettings, limits: NodeLimits) -> None:
    """A platform refuses, at ``hello``, more bins per column than its own policy allows.

    Its histograms' bins set what the bank learns: per-bin gradient sums and the partitions of
    the platform's rows at its split thresholds.
    """
    limits.check_bins(cast(SecureBoostSettings, settings).max_bin, "model.max_bin")


MODEL_TYPE = ModelType(
    name="secureboost",
    kind="vertical",
    settings=SecureBoostSettings,
    privacy=PRIVACY,
    party=SecureBoostParty,
    start=_start,
    conclude=_conclude,
    releases_statistics=_releases,
    release_grants=_grants,
    platform_checks=_check_bins,
    baseline=_baseline,
    reporting="lab.reporting.secureboost:REPORTING",
    serving="models.secureboost.serving:load",
    part_kind="secureboost-platform-part",
    he_schemes=HE_SCHEMES,
)
