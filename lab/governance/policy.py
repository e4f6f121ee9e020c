"""A node's own policy: what it serves and under which conditions (``$LAB_HOME/policy.yaml``).

The file belongs to the party whose data the node serves and lives in that party's governance
home, beside its catalog, authorizations, ledger and audit log. Its node applies it to every
job, whatever the job spec says; a job may ask for more protection, never less. Without a file
every setting has its secure default::

    unpublished: auto          # serve files that are no published version? auto|serve|refuse
    authorization: required    # rows of published sets need a valid authorization
    crypto: {min_key_bits: 2048, max_key_bits: 8192, allow_insecure_test_keys: false,
             allowed_schemes: [paillier]}
    psi: {reveal: [both, size], max_bank_ratio: 20.0, alert_bank_ratio: 5.0,
          alert_min_hit_rate: 0.05}
    hetero_lr: {min_batch_size: 256, rows_per_cross_term: 8}
    validation: {serve: true, max_share: 0.5}
    dp: {require: true, max_epsilon_per_job: null}
    explanations: {group_attribution: allow}
    stability: {csi_detail: group}
    binning: {max_bins: 64}
    compute: {backend: local, address: null, cpus: null}

``unpublished: auto`` serves a file that is not a published feature-set version as it is only
while the home governs nothing (no published set, no imported authorization): a platform that
has published or imported anything serves only published, authorized data unless its owner
sets ``unpublished: serve`` on purpose (e.g. for public benchmark files).

``lab policy show`` prints the effective policy; ``lab policy set KEY=VALUE ...`` changes it
(validated, written atomically, audited as ``policy_set``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lab.config import apply_override, format_validation_error
from lab.errors import ConfigError
from lab.governance._common import atomic_replace, default_actor
from lab.governance.audit import AuditLog
from lab.governance.errors import PolicyFileError
from lab.home import lab_home
from models.guard import NodeLimits
from secure_agg.compute import BackendName, ComputeBackendError, ComputeSettings
from secure_agg.schemes import SchemeName

#: The policy file in a governance home.
POLICY_FILE = "policy.yaml"

#: Defaults of the protocol-facing limits: one source of truth (models.guard.NodeLimits).
_LIMITS = NodeLimits()

RevealMode = Literal["both", "size", "bank"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CryptoPolicy(_Strict):
    """Key sizes this node accepts from peers and generates itself, and the schemes it runs.

    ``allowed_schemes``: the homomorphic schemes (:data:`secure_agg.schemes.SCHEMES`) this node
    takes part in; Paillier only by default, so a node opts in to Okamoto–Uchiyama (faster,
    stronger assumptions: see :mod:`secure_agg.ou`) by adding ``ou``. ``max_key_bits``: the
    longest peer key it computes with (at least ``min_key_bits``), so that a peer cannot make
    it build tables of gigabytes.
    """

    min_key_bits: Annotated[int, Field(ge=512, le=8192)] = _LIMITS.min_key_bits
    max_key_bits: Annotated[int, Field(ge=512, le=16384)] = _LIMITS.max_key_bits
    allow_insecure_test_keys: bool = _LIMITS.allow_insecure_test_keys
    allowed_schemes: Annotated[list[SchemeName], Field(min_length=1)] = Field(
        default_factory=lambda: [cast(SchemeName, name) for name in _LIMITS.allowed_schemes]
    )

    @model_validator(mode="after")
    def _key_range(self) -> CryptoPolicy:
        if self.max_key_bits < self.min_key_bits:
            raise ValueError(
                f"crypto.max_key_bits={self.max_key_bits} is below crypto.min_key_bits="
                f"{self.min_key_bits}: no key would be accepted"
            )
        return self


class PSIPolicy(_Strict):
    """Limits of the private set intersection on this node's (served) set."""

    reveal: Annotated[list[RevealMode], Field(min_length=1)] = Field(
        default_factory=lambda: [cast(RevealMode, mode) for mode in _LIMITS.psi_reveal]
    )
    max_bank_ratio: Annotated[float, Field(gt=0.0)] = _LIMITS.psi_max_bank_ratio
    alert_bank_ratio: Annotated[float, Field(gt=0.0)] = _LIMITS.psi_alert_bank_ratio
    alert_min_hit_rate: Annotated[float, Field(ge=0.0, le=1.0)] = _LIMITS.psi_alert_hit_rate


class HeteroLRPolicy(_Strict):
    """Hetero LR: how small a mini-batch the platform's partial logits may be summed over."""

    min_batch_size: Annotated[int, Field(ge=1)] = _LIMITS.min_batch_size
    rows_per_cross_term: Annotated[int, Field(ge=1)] = _LIMITS.rows_per_cross_term


class ValidationPolicy(_Strict):
    """The bank's validation rows (early stopping): whether this node serves them, how many.

    With ``serve`` the node routes (SecureBoost: one left/right bit per split of each tree) or
    scores (hetero LR: its partial logit after each epoch) the validation rows the bank holds
    out of training, after every iteration: what scoring those rows with each iteration's model
    would reveal. ``max_share``: the largest share of validation rows among the rows the bank
    trains and validates on. Every job's validation rows go to this node's audit log
    (``validation_rows``).
    """

    serve: bool = _LIMITS.validation_serve
    max_share: Annotated[float, Field(gt=0.0, le=1.0)] = _LIMITS.validation_max_share


class DPPolicy(_Strict):
    """Differential privacy on this node's releases (beyond the budget caps of the ledger).

    ``require``: a job that releases statistics of a published set must use DP and fit a
    budget cap of its bank. A set with a cap for the bank always requires it; ``false`` lets
    this node serve exact statistics of published sets that have *no* cap for the bank (its
    owner's decision, e.g. for non-personal data). ``max_epsilon_per_job``: the largest ε one
    job may ask for.
    """

    require: bool = True
    max_epsilon_per_job: Annotated[float, Field(gt=0.0)] | None = None


class ExplanationsPolicy(_Strict):
    """What this node releases so that a bank can explain its scores.

    ``group_attribution``: at the end of a SecureBoost job, release the published feature group
    of each of this node's splits (never the column, threshold or a value), so the bank's
    reason codes can say "tax" or "judicial"; ``refuse`` withholds them, and the bank's model
    then refuses to explain scores by this node's groups, naming this setting. What it reveals
    beyond training is set out in docs/secureboost.md ("Explanations").
    """

    group_attribution: Literal["allow", "refuse"] = (
        "allow" if _LIMITS.group_attribution else "refuse"
    )


class StabilityPolicy(_Strict):
    """What this node shares of its columns' stability when a job screens a recent window.

    ``csi_detail``: ``group`` (default) shares, per feature group of the published set, how
    many columns it holds, their mean and largest characteristic stability index and how many
    shifted, never which column or any bin count; ``feature`` shares each column's index and its
    per-bin counts (bins this node fixed on the training window; never their edges).
    """

    csi_detail: Literal["group", "feature"] = cast(Literal["group", "feature"], _LIMITS.csi_detail)


class BinningPolicy(_Strict):
    """How finely this node bins its columns when their statistics leave its domain.

    ``max_bins``: most bins per column of a platform's SecureBoost histograms
    (``model.max_bin``), hetero LR fine bins (``model.max_bin``), screening
    (``screening.bins``) and monitoring (``monitoring.bins``). The bank chooses the number in
    its job; finer bins show it per-bin gradient sums, label counts and partitions of fewer
    rows each, so a job asking for more is refused before any data is read.
    """

    max_bins: Annotated[int, Field(ge=2, le=1024)] = _LIMITS.max_bins


class ComputePolicy(_Strict):
    """Where this node's Paillier batches and PSI blinding run (:mod:`secure_agg.compute`).

    ``backend``: ``local`` (this machine's threads and worker processes) or ``ray`` (a Ray
    cluster this party operates in its own domain, whose head is at ``address``, ``host:port``).
    ``cpus``: the most parts of one batch that run at once (default: every CPU of this machine
    or of the cluster). Only the node's owner sets these: no job spec or peer can choose them,
    and a key holder's private key goes only to its own cluster.
    """

    backend: BackendName = _LIMITS.compute.backend
    address: str | None = _LIMITS.compute.address
    cpus: Annotated[int, Field(ge=1)] | None = _LIMITS.compute.cpus

    @model_validator(mode="after")
    def _settings(self) -> ComputePolicy:
        self.settings()
        return self

    def settings(self) -> ComputeSettings:
        """The backend's settings.

        Raises
        ------
        ValueError
            Naming the setting and the fix (a ``ray`` backend without an address, ...).
        """
        try:
            return ComputeSettings(backend=self.backend, address=self.address, cpus=self.cpus)
        except ComputeBackendError as exc:
            raise ValueError(str(exc)) from exc


class NodePolicyConfig(_Strict):
    """The whole policy file (see the module docstring)."""

    unpublished: Literal["auto", "serve", "refuse"] = "auto"
    authorization: Literal["required", "not_required"] = "required"
    crypto: CryptoPolicy = Field(default_factory=CryptoPolicy)
    psi: PSIPolicy = Field(default_factory=PSIPolicy)
    hetero_lr: HeteroLRPolicy = Field(default_factory=HeteroLRPolicy)
    validation: ValidationPolicy = Field(default_factory=ValidationPolicy)
    dp: DPPolicy = Field(default_factory=DPPolicy)
    explanations: ExplanationsPolicy = Field(default_factory=ExplanationsPolicy)
    stability: StabilityPolicy = Field(default_factory=StabilityPolicy)
    binning: BinningPolicy = Field(default_factory=BinningPolicy)
    compute: ComputePolicy = Field(default_factory=ComputePolicy)

    def limits(self) -> NodeLimits:
        """The limits protocol steps enforce (:class:`models.guard.NodeLimits`)."""
        return NodeLimits(
            min_key_bits=self.crypto.min_key_bits,
            max_key_bits=self.crypto.max_key_bits,
            allow_insecure_test_keys=self.crypto.allow_insecure_test_keys,
            allowed_schemes=tuple(self.crypto.allowed_schemes),
            psi_reveal=tuple(self.psi.reveal),
            psi_max_bank_ratio=self.psi.max_bank_ratio,
            psi_alert_bank_ratio=self.psi.alert_bank_ratio,
            psi_alert_hit_rate=self.psi.alert_min_hit_rate,
            min_batch_size=self.hetero_lr.min_batch_size,
            rows_per_cross_term=self.hetero_lr.rows_per_cross_term,
            validation_serve=self.validation.serve,
            validation_max_share=self.validation.max_share,
            group_attribution=self.explanations.group_attribution == "allow",
            csi_detail=self.stability.csi_detail,
            max_bins=self.binning.max_bins,
            compute=self.compute.settings(),
        )


def policy_path(home: Path | None = None) -> Path:
    """Where the policy of ``home`` (default the lab home) lives."""
    return (home or lab_home()) / POLICY_FILE


def read_policy(home: Path | None = None) -> NodePolicyConfig:
    """The policy of ``home``: its file, or every secure default when there is none.

    Raises
    ------
    PolicyFileError
        If the file is unreadable or invalid, naming the file, the key and the fix.
    """
    path = policy_path(home)
    if not path.is_file():
        return NodePolicyConfig()
    return _validate(_load(path), str(path))


def set_policy(
    assignments: Sequence[str], home: Path | None = None, *, actor: str | None = None
) -> NodePolicyConfig:
    """Apply ``KEY=VALUE`` settings to the policy of ``home`` and save it (all or nothing).

    Raises
    ------
    PolicyFileError
        If an assignment is malformed or the result is invalid; the file is left unchanged.
    """
    if not assignments:
        raise PolicyFileError("nothing to set; pass KEY=VALUE, e.g. crypto.min_key_bits=3072")
    path = policy_path(home)
    before = read_policy(home)
    raw = _load(path) if path.is_file() else {}
    where = str(path)
    try:
        for item in assignments:
            apply_override(raw, item, where=where)
    except ConfigError as exc:
        raise PolicyFileError(str(exc)) from exc
    after = _validate(raw, where)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        "# This node's own policy (lab policy show | set); see lab/governance/policy.py.\n"
        + yaml.safe_dump(after.model_dump(mode="json"), sort_keys=False)
    )
    atomic_replace(path, text.encode("utf-8"))
    os.chmod(path, 0o644)
    changes = _changes(before.model_dump(mode="json"), after.model_dump(mode="json"))
    AuditLog((home or lab_home()) / "audit" / "log.jsonl").record(
        "policy_set", {"changes": changes, "file": POLICY_FILE}, actor or default_actor()
    )
    return after


def _load(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyFileError(f"{path}: cannot read the policy file ({exc})") from exc
    except yaml.YAMLError as exc:
        raise PolicyFileError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise PolicyFileError(f"{path}: a policy file must be a mapping of settings")
    return raw


def _validate(raw: dict[str, Any], where: str) -> NodePolicyConfig:
    try:
        return NodePolicyConfig.model_validate(raw)
    except ValidationError as exc:
        message = format_validation_error(where, exc).replace("experiment config", "node policy")
        raise PolicyFileError(message) from exc


def _changes(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        name = f"{prefix}{key}"
        if isinstance(old, dict) and isinstance(new, dict):
            out.update(_changes(old, new, f"{name}."))
        elif old != new:
            out[name] = {"from": old, "to": new}
    return out
