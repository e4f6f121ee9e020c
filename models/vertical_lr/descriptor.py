"""Hetero LR as a model type: its settings, protocol, privacy and hooks (one registry entry)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from models.guard import NodeLimits, PolicyRefusalError
from models.model_type import ModelSettings, ModelType, PrivacyDescription, StartRequest, Trained
from models.protocol import Envelope
from models.vertical_lr.params import HE_SCHEMES
from models.vertical_lr.protocol import HeteroLRParams, HeteroLRParty, conclude, start_envelope
from models.vertical_lr.settings import HeteroLRSettings

PRIVACY = PrivacyDescription(
    bank_learns=(
        "per-bin row and bad counts of every platform column (anonymous ordered bins: WOE and "
        "IV), its own gradients (weighted sums of platform partial logits over batches of at "
        "least the platform's minimum size), one settled bit per platform and epoch, the "
        "platforms' final coefficients (of the kept epoch) and the coarse bins of its test "
        "enterprises; with validation rows (served by the platform's node under its "
        "validation.serve policy) each platform's partial logit of every validation row after "
        "every epoch, as scoring those rows would reveal"
    ),
    platform_learns=(
        "aligned ids, training mask, the coarse mapping and WOE of its own bins, its own "
        "gradients; with validation, which rows are validation rows and the kept epoch; no "
        "labels, no sample weights (encrypted under the bank's key)"
    ),
    coordinator_learns=(
        "ciphertexts, masked sums, sizes, timings, the evaluation report and per-epoch history "
        "(validation metrics included)"
    ),
    without_dp="exact per-bin label counts of platform columns and its own gradients",
    explanations=(
        "per scored enterprise one signed contribution (coefficient x WOE, summed) per platform "
        "feature group; nothing beyond what it holds (every platform coefficient and coarse-bin "
        "WOE) and what scoring answers (each enterprise's coarse bins), so no platform switch"
    ),
)


def _settings(value: ModelSettings) -> HeteroLRSettings:
    return cast(HeteroLRSettings, value)


def params(settings: ModelSettings, crypto: Mapping[str, Any]) -> HeteroLRParams:
    """The protocol's parameters from the settings and the job's crypto section."""
    return HeteroLRParams.from_spec(settings.model_dump(mode="json"), dict(crypto))


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
            "history": outcome.history,
            "converged": outcome.converged,
            "bank_part": outcome.bank_part,
            "platform_parts": outcome.platform_parts,
            "clock": outcome.clock,
            "validation": outcome.validation,
        },
    )


def _platform_checks(settings: ModelSettings, limits: NodeLimits) -> None:
    """A platform refuses, at ``hello``, more fine bins than its policy allows or a small batch.

    Its fine bins set the partitions of its rows the bank's WOE binning sees; per batch the
    bank learns sums of the platform's partial logits.
    """
    limits.check_bins(_settings(settings).max_bin, "model.max_bin")
    batch = _settings(settings).batch_size
    if 0 < batch < limits.min_batch_size:
        raise PolicyRefusalError(
            f"model.batch_size={batch} is below this node's policy hetero_lr.min_batch_size="
            f"{limits.min_batch_size}: per batch the bank learns sums of the platform's "
            "partial logits over the batch's rows; use a larger batch"
        )


def _job_model(settings: ModelSettings, groups: Mapping[str, str]) -> dict[str, Any]:
    """The model section for the parties: every column's reason-code group resolved.

    The settings' own ``scorecard.groups`` (group -> columns) win over the groups the lab
    knows from the parties' catalogs (``party:column -> group``); the result keeps the
    settings' form (group -> columns), so the parties parse it with the same settings.
    """
    s = _settings(settings)
    out: dict[str, Any] = s.model_dump(mode="json")
    resolved = dict(groups)
    for group, columns in s.scorecard.groups.items():
        for column in columns:
            resolved[column] = group
    by_group: dict[str, list[str]] = {}
    for column, group in resolved.items():
        by_group.setdefault(group, []).append(column)
    out["scorecard"]["groups"] = by_group
    return out


MODEL_TYPE = ModelType(
    name="hetero_lr",
    kind="vertical",
    settings=HeteroLRSettings,
    privacy=PRIVACY,
    party=HeteroLRParty,
    start=_start,
    conclude=_conclude,
    releases_statistics=lambda settings: True,
    platform_checks=_platform_checks,
    job_model=_job_model,
    reporting="lab.reporting.hetero_lr:REPORTING",
    serving="models.vertical_lr.serving:load",
    part_kind="hetero_lr.platform",
    he_schemes=HE_SCHEMES,
)
