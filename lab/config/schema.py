"""The experiment config's schema: every section, its keys, defaults and bounds.

The ``model`` section is the registered model types' settings (:func:`config_class`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    create_model,
    field_validator,
)

from features.stability import DEFAULT_BINS
from features.text_format import DEFAULT_FORMAT, TextFormat, delimiter_problem, encoding_problem
from lab.governance.vocabulary import PURPOSES
from lab.paths import NAME_PATTERN, NAME_RULE
from models.model_type import ModelSettings, model_types
from secure_agg.paillier import DEFAULT_KEY_BITS
from secure_agg.schemes import DEFAULT_SCHEME, SchemeName

_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"

#: Key of the horizontal hold-out file among an experiment's data paths (not a party name:
#: party names cannot contain ':').
HOLDOUT_KEY = "holdout:"

#: Prefix of a party's recent-window file among an experiment's data paths (``recent:NAME``).
RECENT_KEY = "recent:"

#: What runs and artifacts record instead of a party's data location.
DATA_REDACTED = "(kept in the party's own domain)"

#: The governance policy every party's node applies in the embedded runtime.
NODE_POLICY = "lab.governance.node:LabNodePolicy"

#: Smallest Paillier modulus accepted without ``insecure_test_keys`` (NIST SP 800-57: 2048-bit
#: RSA-type moduli give 112-bit security, acceptable through 2030).
MIN_SECURE_KEY_BITS = DEFAULT_KEY_BITS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class PartyConfig(_Strict):
    r"""One party of an experiment: who it is, where its data is and how the file is written.

    ``id_column``, ``label_column`` (the bank's 0/1 outcome), ``weight_column`` (the bank's
    nonnegative sample weights, optional; see :mod:`models.sample_weights`), ``features``
    (default: every other column) and ``categorical`` (columns read as categories even if they
    look numeric: codes) name the file's columns.

    How a CSV file is written (:class:`features.text_format.TextFormat`; Parquet files need
    none of it, except ``na_values``):

    ``delimiter``
        The one character between fields: ``','`` (default), ``';'``, ``'|'``, or ``"\t"``
        (a tab; double quotes in YAML).
    ``encoding``
        The text encoding (default ``utf-8``; ``latin-1``, ``cp1252`` for older Windows
        exports ...).
    ``decimal``
        The decimal mark, ``'.'`` (default) or ``','`` (then ``12,5`` is 12.5, and a number
        holding ``'.'`` is refused).
    ``na_values``
        Cell values read as missing in feature and label columns besides the built-in ones
        (empty, ``NA``, ``N/A``, ``NaN``, ``NULL``, ``None``, ``-``), e.g. ``['?', 'n.a.']``.
    """

    name: Annotated[str, Field(pattern=_NAME)]
    role: Literal["bank", "platform"]
    data: Annotated[str, Field(min_length=1)]
    id_column: Annotated[str, Field(min_length=1)] = "id"
    label_column: Annotated[str, Field(min_length=1)] | None = None
    weight_column: Annotated[str, Field(min_length=1)] | None = None
    features: list[Annotated[str, Field(min_length=1)]] | None = None
    categorical: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    feature_set: (
        Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*@[A-Za-z0-9][A-Za-z0-9._-]*$")] | None
    ) = None
    delimiter: str = DEFAULT_FORMAT.delimiter
    encoding: str = DEFAULT_FORMAT.encoding
    decimal: Literal[".", ","] = DEFAULT_FORMAT.decimal
    na_values: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=lambda: list(DEFAULT_FORMAT.na_values)
    )

    @field_validator("delimiter")
    @classmethod
    def _one_delimiter(cls, value: str) -> str:
        problem = delimiter_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        problem = encoding_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @property
    def text_format(self) -> TextFormat:
        """How this party's CSV file is written."""
        return TextFormat(
            delimiter=self.delimiter,
            encoding=self.encoding,
            decimal=self.decimal,
            na_values=tuple(v.strip() for v in self.na_values),
        )

    @field_validator("features")
    @classmethod
    def _features_unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("must list at least one column (or be omitted for all)")
            dupes = sorted({v for v in value if value.count(v) > 1})
            if dupes:
                raise ValueError(f"lists {dupes} more than once")
        return value


class SecureAggregationConfig(_Strict):
    """Pairwise-masked secure aggregation of the banks' updates (horizontal jobs).

    ``min_survivors``: how many banks must stay to the end of a round (default: two thirds,
    at least 2); up to ``n - min_survivors`` may drop. ``neighbours``: SecAgg+ sparse graph
    (default: all pairs). Updates are clipped to ``[-clipping_range, clipping_range]`` and
    quantised to ``quantization_bits``.
    """

    enabled: bool = True
    min_survivors: Annotated[int, Field(ge=2)] | None = None
    neighbours: Annotated[int, Field(ge=2)] | None = None
    clipping_range: Annotated[float, Field(gt=0.0)] = 8.0
    quantization_bits: Annotated[int, Field(ge=8, le=30)] = 24


class HoldoutConfig(_Strict):
    """A held-out labelled file one bank keeps for the global evaluation of a horizontal job."""

    party: Annotated[str, Field(pattern=_NAME)]
    data: Annotated[str, Field(min_length=1)]
    id_column: Annotated[str, Field(min_length=1)] = "id"
    label_column: Annotated[str, Field(min_length=1)] = "y"


class CryptoConfig(_Strict):
    """Key sizes and the homomorphic scheme.

    Keys below 2048 bits need ``insecure_test_keys: true`` (tests only). ``scheme`` names one of
    :data:`secure_agg.schemes.SCHEMES` (default :data:`~secure_agg.schemes.DEFAULT_SCHEME`); each
    node refuses a scheme its policy does not allow (``crypto.allowed_schemes``).
    """

    key_bits: Annotated[int, Field(ge=512, le=8192, multiple_of=256)] = DEFAULT_KEY_BITS
    insecure_test_keys: bool = False
    scheme: SchemeName = DEFAULT_SCHEME


class BaselineConfig(_Strict):
    """LightGBM budget of the bank-only and pooled references (default: the joint model's)."""

    n_estimators: Annotated[int, Field(ge=1, le=5000)] | None = None
    max_depth: Annotated[int, Field(ge=1, le=16)] | None = None
    max_bin: Annotated[int, Field(ge=2, le=1024)] | None = None
    learning_rate: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    min_child_samples: Annotated[int, Field(ge=1)] | None = None


class EvaluationConfig(_Strict):
    """Held-out evaluation at the bank, and the references reported beside the joint model."""

    test_size: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2
    random_state: Annotated[int, Field(ge=0, le=2**32 - 1)] = 42
    stratify: bool = True
    pooled_reference: bool = False
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    holdout: HoldoutConfig | None = None


class AlignmentConfig(_Strict):
    """Private set intersection before every vertical job.

    ``reveal``: who learns the intersection: ``both`` (needed to train), ``bank`` (only the
    bank), ``size`` (the platform learns only how many). ``id_scheme``: how ids are normalised
    on every side (``text``: strip; ``casefold``: strip and case-fold; ``uscc``: unified social
    credit codes, upper-cased and checked). ``min_intersection``: smaller intersections are
    refused.
    """

    reveal: Literal["both", "bank", "size"] = "both"
    id_scheme: Literal["text", "casefold", "uscc"] = "text"
    min_intersection: Annotated[int, Field(ge=1)] = 100


class GovernanceConfig(_Strict):
    """Governance of the job: its purpose, and whether platforms serve only authorised rows.

    Parties that name a published ``feature_set`` (``name@version``) serve only its columns,
    for a purpose they allow, from unchanged data; such jobs also spend privacy budget against
    the platform's cap for (feature set, bank), checked before any data is read.
    """

    purpose: str = "credit_risk_modeling"
    require_authorization: bool = False

    @field_validator("purpose")
    @classmethod
    def _purpose_is_known(cls, value: str) -> str:
        if value not in PURPOSES:
            raise ValueError(f"unknown purpose; use one of {', '.join(PURPOSES)}")
        return value


class ScreeningConfig(_Strict):
    """Screening before training: stability of each column, and IV-based selection.

    ``recent`` names, per party, its recent window: for a platform serving a published
    feature set, a later published version of it (``name@version``, served by the platform's
    node from its own catalog); for any other party, a file of the same columns (resolved
    like ``data``; it stays in the party's domain). Each party bins its columns on its training
    window (``bins`` bins) and shares only the stability indices (a platform: per feature group
    unless its own policy shares more). ``min_iv``: platform columns whose information value,
    computed by the bank from encrypted WOE counts, is below it are not used by the model.
    """

    recent: dict[Annotated[str, Field(pattern=_NAME)], Annotated[str, Field(min_length=1)]] = Field(
        default_factory=dict
    )
    bins: Annotated[int, Field(ge=2, le=100)] = DEFAULT_BINS
    min_iv: Annotated[float, Field(ge=0.0)] | None = None


class RegistryConfig(_Strict):
    """Where the bank registers a trained joint model (name default: the experiment's)."""

    model_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")] | None = None
    alias: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")] = "challenger"


class TrackingConfig(_Strict):
    """Where MLflow records the job (default: sqlite in the lab's home folder).

    ``experiment`` also names the job's artifact folder under ``$LAB_HOME/mlartifacts``, so it
    is a plain name (:data:`lab.paths.NAME_PATTERN`), never a path.
    """

    uri: Annotated[str, Field(min_length=1)] | None = None
    experiment: Annotated[str, Field(min_length=1)] | None = None

    @field_validator("experiment")
    @classmethod
    def _experiment_is_a_name(cls, value: str | None) -> str | None:
        if value is not None and (not NAME_PATTERN.fullmatch(value) or ".." in value):
            raise ValueError(
                f"an experiment name becomes a folder under $LAB_HOME/mlartifacts; use "
                f"{NAME_RULE} (no '/', no '..')"
            )
        return value


class RuntimeConfig(_Strict):
    """How the job runs. ``embedded``: Flower's simulation runtime on this machine."""

    mode: Literal["embedded"] = "embedded"
    message_timeout: Annotated[float, Field(gt=0.0)] = 3600.0
    cpus_per_party: Annotated[float, Field(gt=0.0, le=64.0)] = 1.0


class ExperimentConfig(_Strict):
    """A whole experiment config file."""

    name: Annotated[str, Field(pattern=_NAME)]
    kind: Literal["vertical", "horizontal"]
    description: str | None = None
    parties: Annotated[list[PartyConfig], Field(min_length=2)]
    #: Validated against the settings of the model type ``model.type`` names (the registry,
    #: :mod:`models.model_type`), see :func:`config_class`.
    model: ModelSettings
    crypto: CryptoConfig = Field(default_factory=CryptoConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    alignment: AlignmentConfig = Field(default_factory=AlignmentConfig)
    secure_aggregation: SecureAggregationConfig = Field(default_factory=SecureAggregationConfig)
    governance: GovernanceConfig = Field(default_factory=GovernanceConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    screening: ScreeningConfig = Field(default_factory=ScreeningConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)


def config_class() -> type[ExperimentConfig]:
    """:class:`ExperimentConfig` whose ``model`` is the registered model types' settings.

    The union is built from the registry (:func:`models.model_type.model_types`), so a model
    type added there is a valid ``model.type`` here with nothing else to edit.
    """
    settings = tuple(dict.fromkeys(t.settings for t in model_types()))
    return _config_class(settings)


@lru_cache(maxsize=8)
def _config_class(settings: tuple[type[ModelSettings], ...]) -> type[ExperimentConfig]:
    union: Any = settings[0] if len(settings) == 1 else Union[settings]  # noqa: UP007
    model: Any = Annotated[union, Field(discriminator="type")]
    return create_model("ExperimentConfig", __base__=ExperimentConfig, model=(model, ...))
