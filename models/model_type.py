"""What a model type is, in one place: a descriptor per type, and the registry of them.

A model type (``secureboost``, ``hetero_lr``, ``logreg`` ...) is one :class:`ModelType`, defined
by its own package (``models/<type>/descriptor.py``). The descriptor owns everything the rest
of the lab needs to know about the type:

- its settings (:class:`ModelSettings` subclass: the one place names, defaults and bounds live;
  an experiment's ``model`` section is validated against it);
- for vertical types, the party protocol and the coordinator's first envelope and conclusion,
  and what the job releases of platform data (the DP grants a platform's node gives it, the
  checks a platform's node applies at ``hello``);
- what each party learns (:class:`PrivacyDescription`), as auditors and job summaries show it;
- the lab-side hooks that report, log and register a trained model, and serve a platform's
  part, named by ``module:attribute`` so this package imports nothing above it.

The lab, the driver, the node policy and serving iterate over :func:`model_types` and look
types up with :func:`model_type`; no other module tests a model-type string. Adding a type is a
new package plus one line in :data:`BUILTIN`; a type defined elsewhere (a test, a plug-in) is
listed in the environment variable :data:`EXTRA_ENV` (``module:attribute,...``), which every
process of a job (Ray workers, deployment nodes) inherits.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from models.guard import NodeLimits, ReleaseGrant
from models.protocol import Envelope, PartyProtocol
from secure_agg.schemes import DEFAULT_SCHEME

Kind = Literal["vertical", "horizontal"]

#: Model types shipped with the lab (``module:attribute`` of each :class:`ModelType`).
BUILTIN: tuple[str, ...] = (
    "models.secureboost.descriptor:MODEL_TYPE",
    "models.vertical_lr.descriptor:MODEL_TYPE",
    "models.horizontal.descriptor:LOGREG",
    "models.horizontal.descriptor:MLP",
)

#: Environment variable listing further model types (``module:attribute``, comma-separated).
EXTRA_ENV = "LAB_MODEL_TYPES"


class ModelTypeError(ValueError):
    """A model type is unknown, defined twice, or its descriptor cannot be loaded."""


class ModelSettings(BaseModel):
    """Base of every model type's settings: the ``model`` section of an experiment config.

    Subclasses declare ``type`` as a ``Literal`` of their type name(s) and every setting with
    its default and bounds; nothing else in the lab repeats them.
    """

    model_config: ClassVar[ConfigDict] = ConfigDict(extra="forbid", strict=True, frozen=True)

    type: str


@dataclass(frozen=True)
class PrivacyDescription:
    """What each party learns in a job of this type (documented, audited, summarised).

    ``without_dp`` says what the bank sees when the job runs without differential privacy.
    """

    bank_learns: str
    platform_learns: str
    coordinator_learns: str
    without_dp: str = "nothing beyond the model"
    with_dp: str = ""
    #: Settings that limit what the bank learns, shown to auditors (e.g. bank-only trees).
    controls: tuple[str, ...] = ()
    #: What per-enterprise explanations (contributions, reason codes) reveal to the bank.
    explanations: str = "no per-enterprise explanations"


@dataclass(frozen=True)
class StartRequest:
    """What the coordinator knows when it starts a vertical model's protocol."""

    settings: ModelSettings
    crypto: Mapping[str, Any]
    bank: str
    platforms: list[str]
    order: list[str]
    job_id: str


@dataclass(frozen=True)
class Trained:
    """A vertical protocol's conclusion as the coordinator reports it.

    ``report``: the evaluation report on the bank's test rows (or ``None``); ``details``:
    aggregates for the lab's reporting hook, including ``bank_part`` (``path``, ``model_id``,
    ``content_hash``) and ``platform_parts`` (references) when the type keeps model parts.
    """

    report: dict[str, Any] | None
    details: dict[str, Any]


def _no_grants(settings: ModelSettings, crypto: Mapping[str, Any], n: int) -> tuple[()]:
    del settings, crypto, n
    return ()


def _no_checks(settings: ModelSettings, limits: NodeLimits) -> None:
    del settings, limits


def _as_is(settings: ModelSettings, groups: Mapping[str, str]) -> dict[str, Any]:
    del groups
    out: dict[str, Any] = settings.model_dump(mode="json")
    return out


@dataclass(frozen=True)
class ModelType:
    """One model type (see the module docstring).

    Attributes
    ----------
    name : str
        The ``model.type`` value.
    kind : {"vertical", "horizontal"}
        The job kind that trains it.
    settings : type of ModelSettings
        Its settings class.
    privacy : PrivacyDescription
        What each party learns.
    party : callable, optional
        Vertical: a fresh party-side protocol handler (its ``name`` is the protocol's).
    start : callable, optional
        Vertical: the coordinator's first envelope.
    conclude : callable, optional
        Vertical: the coordinator's reading of the replies that reached it.
    releases_statistics : callable
        Whether a training job releases statistics of platform data to the bank.
    release_grants : callable
        The DP mechanisms a platform's node applies (noise, number of releases), from the
        job's settings alone.
    platform_checks : callable
        Checks a platform's node applies at ``hello`` against its own limits (raise
        :class:`~models.guard.PolicyRefusalError` naming the setting).
    job_model : callable
        The ``model`` section sent to the parties, given the feature groups the lab knows
        (``party:column -> group``).
    baseline : callable, optional
        The LightGBM budget of the bank-only and pooled references mirroring this model.
    reporting : str, optional
        ``module:attribute`` of the lab-side :class:`Reporting` hooks.
    serving : str, optional
        ``module:attribute`` of the platform-side serving handler of its model parts.
    part_kind : str, optional
        The ``kind`` a platform's saved model part carries (how serving recognises it).
    he_schemes : tuple of str
        Vertical: the homomorphic schemes (:data:`secure_agg.schemes.SCHEMES`) its protocol runs
        with; a job's ``crypto.scheme`` outside them is refused when the config is loaded.
    """

    name: str
    kind: Kind
    settings: type[ModelSettings]
    privacy: PrivacyDescription
    party: Callable[[], PartyProtocol] | None = None
    start: Callable[[StartRequest], Envelope] | None = None
    conclude: Callable[[Sequence[Envelope]], Trained] | None = None
    releases_statistics: Callable[[ModelSettings], bool] = field(default=lambda s: False)
    release_grants: Callable[[ModelSettings, Mapping[str, Any], int], tuple[ReleaseGrant, ...]] = (
        _no_grants
    )
    platform_checks: Callable[[ModelSettings, NodeLimits], None] = _no_checks
    job_model: Callable[[ModelSettings, Mapping[str, str]], dict[str, Any]] = _as_is
    baseline: Callable[[ModelSettings], dict[str, Any]] | None = None
    reporting: str | None = None
    serving: str | None = None
    part_kind: str | None = None
    he_schemes: tuple[str, ...] = (DEFAULT_SCHEME,)

    def parse(self, raw: Mapping[str, Any]) -> ModelSettings:
        """This type's settings from a job spec's ``model`` section (already validated)."""
        return self.settings.model_validate({**raw, "type": self.name}, strict=False)


_TYPES: dict[str, ModelType] = {}
_LOADED: set[str] = set()


def register(model: ModelType) -> ModelType:
    """Add ``model`` to the registry (idempotent for the same descriptor).

    Raises
    ------
    ModelTypeError
        If another descriptor already has its name.
    """
    known = _TYPES.get(model.name)
    if known is not None and known is not model:
        raise ModelTypeError(f"model type {model.name!r} is defined twice")
    _TYPES[model.name] = model
    return model


def _load(ref: str) -> None:
    if ref in _LOADED:
        return
    module_name, _, attribute = ref.strip().partition(":")
    if not module_name or not attribute:
        raise ModelTypeError(f"model type {ref!r} must look like 'package.module:ATTRIBUTE'")
    try:
        value = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ModelTypeError(f"cannot load model type {ref!r}: {exc}") from exc
    if not isinstance(value, ModelType):
        raise ModelTypeError(f"{ref!r} is a {type(value).__name__}, not a ModelType")
    register(value)
    _LOADED.add(ref)


def _ensure_loaded() -> None:
    extra = [r for r in os.environ.get(EXTRA_ENV, "").split(",") if r.strip()]
    for ref in (*BUILTIN, *extra):
        _load(ref)


def model_types(kind: Kind | None = None) -> tuple[ModelType, ...]:
    """Every registered model type (of one kind), in registration order."""
    _ensure_loaded()
    return tuple(t for t in _TYPES.values() if kind is None or t.kind == kind)


def model_type(name: str) -> ModelType:
    """The model type called ``name``.

    Raises
    ------
    ModelTypeError
        Naming the known types.
    """
    _ensure_loaded()
    found = _TYPES.get(name)
    if found is None:
        known = ", ".join(repr(t) for t in _TYPES)
        raise ModelTypeError(f"unknown model type {name!r}; use one of {known}")
    return found


def load_attribute(ref: str) -> Any:
    """The object named ``module:attribute`` (a descriptor's lab-side hook)."""
    module_name, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module_name), attribute)
