"""Experiment configs: YAML files in ``experiments/``, validated on load.

Minimum form (outside automation relies on these keys; later versions extend, never rename)::

    name: default-credit-secureboost
    kind: vertical            # or horizontal
    parties:
      - {name: bank, role: bank, data: ../data/default_credit/bank.csv, id_column: id,
         label_column: y}
      - {name: platform, role: platform, data: ../data/default_credit/platform.csv,
         id_column: id}
    model: {type: secureboost, n_estimators: 30, max_depth: 3, max_bin: 32, learning_rate: 0.3}
    crypto: {key_bits: 2048}
    evaluation: {test_size: 0.2, random_state: 42, stratify: true}

Relative ``data`` paths resolve against the config file's folder. Every problem is reported as
a :class:`~lab.errors.ConfigError` naming the file, the key and the fix: unknown keys, wrong
types, missing files, a label column absent from the data, duplicate party names.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
)

from features.errors import DataError
from features.io import read_header, resolve_data_file
from federated.spec import (
    AlignmentSpec,
    EvaluationSpec,
    GovernanceSpec,
    JobSpec,
    PartyBinding,
    PartySpec,
    RuntimeSpec,
)
from lab import yaml_strict
from lab.errors import ConfigError
from lab.home import lab_home
from lab.paths import NAME_PATTERN, NAME_RULE
from models.baselines import GBDTSettings
from models.model_type import ModelSettings, ModelType, ModelTypeError, model_type, model_types
from secure_agg.paillier import DEFAULT_KEY_BITS

_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"

#: Key of the horizontal hold-out file among an experiment's data paths (not a party name:
#: party names cannot contain ':').
HOLDOUT_KEY = "holdout:"

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
    """One party of an experiment: who it is and where its data is."""

    name: Annotated[str, Field(pattern=_NAME)]
    role: Literal["bank", "platform"]
    data: Annotated[str, Field(min_length=1)]
    id_column: Annotated[str, Field(min_length=1)] = "id"
    label_column: Annotated[str, Field(min_length=1)] | None = None
    features: list[Annotated[str, Field(min_length=1)]] | None = None
    categorical: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    feature_set: (
        Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*@[A-Za-z0-9][A-Za-z0-9._-]*$")] | None
    ) = None

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
    """Key sizes. Keys below 2048 bits need ``insecure_test_keys: true`` (tests only)."""

    key_bits: Annotated[int, Field(ge=512, le=8192, multiple_of=256)] = DEFAULT_KEY_BITS
    insecure_test_keys: bool = False


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

    purpose: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")] = "credit_risk_modeling"
    require_authorization: bool = False


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
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)


class Experiment:
    """A validated experiment: the config, where it came from, and resolved data paths.

    Attributes
    ----------
    config : ExperimentConfig
        The validated config.
    path : Path or None
        The config file (``None`` for a config built in code).
    data_paths : dict[str, Path]
        Each party's resolved data file.
    config_hash : str
        ``sha256:<hex>`` of the canonical validated config (data paths absolute).
    """

    def __init__(
        self,
        config: ExperimentConfig,
        path: Path | None,
        data_paths: dict[str, Path],
        *,
        local_files: bool = True,
    ) -> None:
        self.config = config
        self.path = path
        self.data_paths = data_paths
        self.local_files = local_files
        canonical = config.model_dump(mode="json")
        for party in canonical["parties"]:
            party["data"] = str(data_paths[party["name"]])
        if canonical["evaluation"].get("holdout"):
            canonical["evaluation"]["holdout"]["data"] = str(data_paths[HOLDOUT_KEY])
        self.canonical = canonical
        blob = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
        self.config_hash = f"sha256:{hashlib.sha256(blob).hexdigest()}"

    @property
    def name(self) -> str:
        """The experiment's name."""
        return self.config.name

    def shareable_config(self) -> dict[str, Any]:
        """The canonical config without any party's data location (what MLflow records).

        Where a party keeps its file is that party's business; runs record each party's data
        digest (tags) instead.
        """
        out: dict[str, Any] = json.loads(json.dumps(self.canonical))
        for party in out["parties"]:
            party["data"] = DATA_REDACTED
        if out["evaluation"].get("holdout"):
            out["evaluation"]["holdout"]["data"] = DATA_REDACTED
        return out

    @property
    def holdout_path(self) -> Path | None:
        """The resolved held-out file of a horizontal job, if it has one."""
        return self.data_paths.get(HOLDOUT_KEY)

    def _holds_holdout(self, party: str) -> bool:
        holdout = self.config.evaluation.holdout
        return holdout is not None and holdout.party == party

    def bindings(self) -> list[PartyBinding]:
        """Where each party's data and model store are, in config order (embedded runtime).

        Each party keeps what it owns after a job (its model part) under
        ``$LAB_HOME/parties/<name>/``, its own domain on this machine.
        """
        return [
            PartyBinding(
                name=p.name,
                role=p.role,
                data=self.data_paths[p.name],
                store=lab_home() / "parties" / p.name,
                policy=NODE_POLICY,
                governance_home=lab_home(),
                holdout=self.holdout_path if self._holds_holdout(p.name) else None,
            )
            for p in self.config.parties
        ]

    @property
    def model_type(self) -> ModelType:
        """The descriptor of the experiment's model type."""
        return model_type(self.config.model.type)

    def baseline_settings(self) -> GBDTSettings:
        """LightGBM budget of the references: the joint model's, overridden by the config."""
        mirror = self.model_type.baseline
        base = GBDTSettings(**mirror(self.config.model)) if mirror else GBDTSettings()
        overrides = self.config.evaluation.baseline.model_dump(exclude_none=True)
        return GBDTSettings(**{**base.__dict__, **overrides})

    def feature_groups(self) -> dict[tuple[str, str], str]:
        """Feature group of each (party, column) where the party publishes column metadata.

        Reads ``columns.json`` beside a party's data file (the synthetic generator writes one; a
        published feature-set spec carries the same information). Column metadata is public; no
        data is read. Nothing is read when the parties' files are not this machine's to read
        (``local_files`` false: a deployment).
        """
        groups: dict[tuple[str, str], str] = {}
        if not self.local_files:
            return groups
        for party in self.config.parties:
            meta = self.data_paths[party.name].parent / "columns.json"
            if not meta.is_file():
                continue
            raw = json.loads(meta.read_text(encoding="utf-8"))
            columns = raw.get("columns", raw) if isinstance(raw, dict) else {}
            if isinstance(columns, dict):
                for name, info in columns.items():
                    if isinstance(info, dict) and "group" in info:
                        groups[(party.name, str(name))] = str(info["group"])
        return groups

    def _model_spec(self) -> dict[str, Any]:
        """The model section as sent to the parties (the model type shapes it)."""
        groups = {f"{p}:{c}": g for (p, c), g in self.feature_groups().items()}
        return self.model_type.job_model(self.config.model, groups)

    def job_spec(
        self, job_id: str | None = None, task: Literal["train", "align"] = "train"
    ) -> JobSpec:
        """The job specification sent to the coordinator and the parties (no data paths).

        Raises
        ------
        ConfigError
            If a training job asks for an alignment the platform cannot train on.
        """
        cfg = self.config
        if task == "train" and cfg.kind == "vertical" and cfg.alignment.reveal != "both":
            raise ConfigError(
                f"{self.path or '<config>'}: alignment.reveal={cfg.alignment.reveal!r} hides the "
                "aligned enterprises from the platform, which then cannot compute its half of a "
                "model; use reveal: both to train, or run 'lab align' for a size-only study"
            )
        return JobSpec(
            job_id=job_id or secrets.token_hex(8),
            name=cfg.name,
            kind=cfg.kind,
            parties=tuple(
                PartySpec(
                    name=p.name,
                    role=p.role,
                    id_column=p.id_column,
                    label_column=p.label_column,
                    features=tuple(p.features) if p.features is not None else None,
                    categorical=tuple(p.categorical),
                    feature_set=p.feature_set,
                )
                for p in cfg.parties
            ),
            model=self._model_spec(),
            crypto=cfg.crypto.model_dump(mode="json"),
            evaluation=EvaluationSpec(
                test_size=cfg.evaluation.test_size,
                random_state=cfg.evaluation.random_state,
                stratify=cfg.evaluation.stratify,
            ),
            baseline=self.baseline_settings(),
            runtime=RuntimeSpec(message_timeout=cfg.runtime.message_timeout),
            alignment=AlignmentSpec(
                reveal=cfg.alignment.reveal,
                id_scheme=cfg.alignment.id_scheme,
                min_intersection=cfg.alignment.min_intersection,
            ),
            governance=GovernanceSpec(
                purpose=cfg.governance.purpose,
                require_authorization=cfg.governance.require_authorization,
            ),
            secure_aggregation=cfg.secure_aggregation.model_dump(mode="json"),
            holdout=(
                None
                if cfg.evaluation.holdout is None
                else cfg.evaluation.holdout.model_dump(mode="json", exclude={"data"})
            ),
            task=task,
            config_hash=self.config_hash,
        )


def load_experiment(
    path: Path | str,
    overrides: Sequence[str] = (),
    *,
    check_data: bool = True,
) -> Experiment:
    """Read, override, validate and resolve an experiment config file.

    Parameters
    ----------
    path : Path or str
        The YAML file.
    overrides : sequence of str
        ``key=value`` settings applied before validation (see :func:`apply_override`).
    check_data : bool
        Check that each party's data file exists and has the id, label and feature columns
        the config names (reads headers only). ``False`` when the files are the parties' own
        on other nodes (a deployment): then the lab reads nothing of them.

    Raises
    ------
    ConfigError
        On any problem, naming the file, the key and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: experiment config not found")
    try:
        raw = yaml_strict.load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc})") from exc
    except yaml_strict.DuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc.describe()}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    return experiment_from_dict(raw, source=path, overrides=overrides, check_data=check_data)


def experiment_from_dict(
    raw: Any,
    *,
    source: Path | None,
    base_dir: Path | None = None,
    overrides: Sequence[str] = (),
    check_data: bool = True,
) -> Experiment:
    """Validate an experiment given as a mapping (see :func:`load_experiment`)."""
    where = str(source) if source is not None else "<config>"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: an experiment config must be a mapping of keys to values")
    for item in overrides:
        apply_override(raw, item, where=where)
    try:
        config = config_class().model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(where, exc)) from exc
    except ModelTypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    _check_parties(where, config)
    folder = base_dir or (source.parent if source is not None else Path.cwd())
    data_paths = {p.name: _resolve(folder, p.data) for p in config.parties}
    holdout = config.evaluation.holdout
    if holdout is not None:
        data_paths[HOLDOUT_KEY] = _resolve(folder, holdout.data)
    if check_data:
        for index, party in enumerate(config.parties):
            _check_data(where, index, party, data_paths[party.name])
        if holdout is not None:
            _check_holdout(where, holdout, data_paths[HOLDOUT_KEY])
    return Experiment(config, source, data_paths, local_files=check_data)


def apply_override(raw: dict[str, Any], item: str, *, where: str = "<config>") -> None:
    """Apply one ``key=value`` override to a raw config mapping, in place.

    Keys are dotted paths; list items are addressed by index or, for ``parties``, by party
    name (``parties.bank.data=...``). Values are parsed as YAML scalars (``5``, ``0.1``,
    ``true``, ``text``).
    """
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set '{item}': expected KEY=VALUE, e.g. model.n_estimators=5")
    try:
        value = yaml_strict.load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set '{item}': value is not valid YAML") from exc
    parts = key.strip().split(".")
    node: Any = raw
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        here = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            index = _list_index(node, part)
            if index is None:
                raise ConfigError(f"{where}: --set {key}: no item '{part}' in '{here}'")
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"{where}: --set {key}: '{'.'.join(parts[:depth])}' is not a section")


def _list_index(items: list[Any], part: str) -> int | None:
    if re.fullmatch(r"\d+", part):
        index = int(part)
        return index if index < len(items) else None
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    return None


def format_validation_error(where: str, exc: ValidationError) -> str:
    """Turn pydantic's errors into one readable message naming each key."""
    lines = []
    for err in exc.errors():
        loc = _format_loc(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            section = _format_loc(err["loc"][:-1]) or "the top level"
            lines.append(f"unknown key '{loc}' in {section}; check its spelling")
        elif kind == "missing":
            lines.append(f"missing required key '{loc}'")
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            ctx = err.get("ctx") or {}
            key = f"{loc}.{str(ctx.get('discriminator', 'type')).strip(chr(39))}"
            tags = ctx.get("expected_tags") or ", ".join(repr(t.name) for t in model_types())
            got = f"unknown value {ctx['tag']!r}" if "tag" in ctx else "missing"
            lines.append(f"'{key}': {got}; use one of {tags}")
        else:
            got = err.get("input")
            shown = f" (got {got!r})" if not isinstance(got, dict | list) else ""
            lines.append(f"'{loc}': {err['msg']}{shown}")
    head = f"{where}: invalid experiment config"
    return head + ": " + "; ".join(lines)


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


def _format_loc(loc: tuple[int | str, ...]) -> str:
    names = {t.name for t in model_types()}
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in names:
            continue  # discriminator tags add nothing for the reader
        else:
            out += f".{part}" if out else str(part)
    return out


def _check_parties(where: str, config: ExperimentConfig) -> None:
    names = [p.name for p in config.parties]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(
            f"{where}: duplicate party name(s) {dupes}; every party needs its own name"
        )
    crypto = config.crypto
    if crypto.key_bits < MIN_SECURE_KEY_BITS and not crypto.insecure_test_keys:
        raise ConfigError(
            f"{where}: crypto.key_bits={crypto.key_bits} is below {MIN_SECURE_KEY_BITS}; use "
            f"{MIN_SECURE_KEY_BITS} or more (set crypto.insecure_test_keys: true only in tests)"
        )
    banks = [p for p in config.parties if p.role == "bank"]
    platforms = [p for p in config.parties if p.role == "platform"]
    if config.kind == "vertical":
        if len(banks) != 1:
            raise ConfigError(
                f"{where}: a vertical job has exactly one bank (the label holder), found "
                f"{len(banks)}"
            )
        if banks[0].label_column is None:
            raise ConfigError(
                f"{where}: parties[{config.parties.index(banks[0])}] ('{banks[0].name}') is the "
                "bank and must set 'label_column'"
            )
        if not platforms:
            raise ConfigError(f"{where}: a vertical job needs at least one platform party")
        for p in platforms:
            if p.label_column is not None:
                raise ConfigError(
                    f"{where}: platform '{p.name}' sets 'label_column'; only the bank holds "
                    "labels in a vertical job"
                )
        _check_model_kind(where, config)
        return
    _check_model_kind(where, config)
    if platforms:
        raise ConfigError(
            f"{where}: a horizontal job is between banks with the same columns; "
            f"{[p.name for p in platforms]} are platforms"
        )
    if len(banks) < 2:
        raise ConfigError(f"{where}: a horizontal job needs at least two banks, found {len(banks)}")
    for index, bank in enumerate(config.parties):
        if bank.label_column is None:
            raise ConfigError(
                f"{where}: parties[{index}] ('{bank.name}') must set 'label_column': every bank "
                "of a horizontal job trains on its own labels"
            )
        if bank.feature_set is not None:
            raise ConfigError(
                f"{where}: parties[{index}].feature_set: published feature sets are platform "
                "data; horizontal jobs use each bank's own records"
            )
    holdout = config.evaluation.holdout
    if holdout is not None and holdout.party not in names:
        raise ConfigError(
            f"{where}: evaluation.holdout.party '{holdout.party}' is not a party of this job"
        )
    _check_secure_aggregation(where, config.secure_aggregation, len(banks))


def _check_model_kind(where: str, config: ExperimentConfig) -> None:
    kind = model_type(config.model.type).kind
    if kind != config.kind:
        trains = " or ".join(repr(t.name) for t in model_types(config.kind))
        raise ConfigError(
            f"{where}: model.type '{config.model.type}' is a {kind} model; a {config.kind} job "
            f"trains {trains}"
        )


def _check_secure_aggregation(where: str, secagg: SecureAggregationConfig, n_banks: int) -> None:
    if not secagg.enabled:
        return
    if n_banks < 3:
        raise ConfigError(
            f"{where}: secure aggregation needs at least 3 banks (with 2, each bank learns the "
            "other's model as the sum minus its own); add a bank, or turn it off with "
            "secure_aggregation.enabled: false"
        )
    size = n_banks
    if secagg.neighbours is not None:
        if secagg.neighbours % 2:
            raise ConfigError(
                f"{where}: secure_aggregation.neighbours={secagg.neighbours} must be even"
            )
        if secagg.neighbours < n_banks - 1:
            size = secagg.neighbours + 1
    if secagg.min_survivors is not None and secagg.min_survivors > size:
        raise ConfigError(
            f"{where}: secure_aggregation.min_survivors={secagg.min_survivors} exceeds the "
            f"{size} banks of a neighbourhood"
        )


def _check_holdout(where: str, holdout: HoldoutConfig, path: Path) -> None:
    try:
        columns = read_header(resolve_data_file(path))
    except DataError as exc:
        raise ConfigError(f"{where}: evaluation.holdout.data: {exc}") from exc
    for key, column in (("id_column", holdout.id_column), ("label_column", holdout.label_column)):
        if column not in columns:
            raise ConfigError(
                f"{where}: evaluation.holdout.{key} '{column}' is not a column of {path}"
            )


def _resolve(folder: Path, data: str) -> Path:
    path = Path(data).expanduser()
    return (path if path.is_absolute() else folder / path).resolve()


def _check_data(where: str, index: int, party: PartyConfig, path: Path) -> None:
    key = f"parties[{index}].data"
    try:
        resolved = resolve_data_file(path)
        columns = read_header(resolved)
    except DataError as exc:
        raise ConfigError(f"{where}: {key} ('{party.name}'): {exc}") from exc
    if party.id_column not in columns:
        raise ConfigError(
            f"{where}: parties[{index}].id_column '{party.id_column}' is not a column of "
            f"{resolved} (columns: {', '.join(columns[:8])}{' ...' if len(columns) > 8 else ''})"
        )
    if party.label_column is not None and party.label_column not in columns:
        raise ConfigError(
            f"{where}: parties[{index}].label_column '{party.label_column}' is not a column of "
            f"{resolved}; set label_column to the file's 0/1 outcome column"
        )
    for key_name, listed in (("features", party.features), ("categorical", party.categorical)):
        missing = [c for c in (listed or []) if c not in columns]
        if missing:
            raise ConfigError(
                f"{where}: parties[{index}].{key_name} names {missing}, not columns of {resolved}"
            )
