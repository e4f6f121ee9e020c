"""Reading an experiment config: YAML, ``--set`` overrides, validation and readable errors."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from features.errors import DataError
from features.io import read_header, resolve_data_file
from lab import yaml_strict
from lab.config.experiment import Experiment
from lab.config.schema import (
    HOLDOUT_KEY,
    MIN_SECURE_KEY_BITS,
    RECENT_KEY,
    ExperimentConfig,
    HoldoutConfig,
    PartyConfig,
    SecureAggregationConfig,
    config_class,
)
from lab.errors import ConfigError
from models.model_type import ModelTypeError, model_type, model_types


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
    data_paths.update(_recent_paths(where, config, folder))
    if check_data:
        for index, party in enumerate(config.parties):
            _check_data(where, index, party, data_paths[party.name])
        if holdout is not None:
            _check_holdout(where, holdout, data_paths[HOLDOUT_KEY])
        _check_recent_files(where, config, data_paths)
    return Experiment(config, source, data_paths, local_files=check_data)


def _recent_paths(where: str, config: ExperimentConfig, folder: Path) -> dict[str, Path]:
    """Check ``screening`` against the parties; resolve the recent files (not versions)."""
    screening = config.screening
    if (screening.recent or screening.min_iv is not None) and config.kind != "vertical":
        raise ConfigError(
            f"{where}: screening is for vertical jobs (a platform's columns beside a bank's); "
            "remove the screening section from this horizontal job"
        )
    parties = {p.name: p for p in config.parties}
    paths: dict[str, Path] = {}
    for name, value in screening.recent.items():
        key = f"screening.recent.{name}"
        party = parties.get(name)
        if party is None:
            raise ConfigError(
                f"{where}: {key}: no party is named '{name}'; parties: {', '.join(parties)}"
            )
        if party.feature_set is not None:
            _check_recent_version(where, key, party.feature_set, value)
            continue
        if "@" in value and not (folder / value).exists():
            raise ConfigError(
                f"{where}: {key}: '{value}' looks like a feature-set version, but party '{name}' "
                "serves no published feature set (its feature_set is unset), so its recent "
                "window is a file of the same columns; name that file"
            )
        paths[RECENT_KEY + name] = _resolve(folder, value)
    return paths


def _check_recent_version(where: str, key: str, training: str, value: str) -> None:
    """A platform's recent window: a later published version of its training feature set."""
    from lab.governance.catalog import Catalog, version_key
    from lab.governance.errors import GovernanceError

    name, _, version = training.partition("@")
    asked, sep, asked_version = value.partition("@")
    if not sep or asked != name:
        raise ConfigError(
            f"{where}: {key}: '{value}' is not a version of {name}, the feature set the party "
            f"is served from; name a later version, e.g. {name}@<version>"
        )
    if version_key(asked_version) <= version_key(version):
        raise ConfigError(
            f"{where}: {key}: {value} is not later than the training window {training}; name "
            "a later published version"
        )
    try:
        published = [e.version for e in Catalog().list_sets() if e.name == name]
    except GovernanceError:
        return  # the platform's node checks its own catalog
    if published and asked_version not in published:
        raise ConfigError(
            f"{where}: {key}: {value} is not published (versions of {name}: "
            f"{', '.join(published)}); publish it first (lab features publish SPEC --data FILE)"
        )


def _check_recent_files(where: str, config: ExperimentConfig, paths: dict[str, Path]) -> None:
    for party in config.parties:
        path = paths.get(RECENT_KEY + party.name)
        if path is None:
            continue
        key = f"screening.recent.{party.name}"
        try:
            columns = read_header(resolve_data_file(path), party.text_format)
        except DataError as exc:
            raise ConfigError(f"{where}: {key}: {exc}") from exc
        training = read_header(resolve_data_file(paths[party.name]), party.text_format)
        wanted = [party.id_column, *(party.features or training)]
        missing = [c for c in wanted if c not in columns and c != party.label_column]
        if missing:
            raise ConfigError(
                f"{where}: {key}: {path} has no columns {missing}; the recent window needs the "
                "training file's id and feature columns"
            )


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
            lines.append(f"'{loc}': {err['msg'].removeprefix('Value error, ')}{shown}")
    head = f"{where}: invalid experiment config"
    return head + ": " + "; ".join(lines)


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
            if p.weight_column is not None:
                raise ConfigError(
                    f"{where}: platform '{p.name}' sets 'weight_column'; sample weights are the "
                    "bank's (set it on the bank's party, or use model.class_weight)"
                )
            if p.label_column is not None:
                raise ConfigError(
                    f"{where}: platform '{p.name}' sets 'label_column'; only the bank holds "
                    "labels in a vertical job"
                )
        _check_model_kind(where, config)
        schemes = model_type(config.model.type).he_schemes
        if config.crypto.scheme not in schemes:
            raise ConfigError(
                f"{where}: crypto.scheme={config.crypto.scheme!r}: model.type "
                f"'{config.model.type}' runs with {', '.join(schemes)} only"
            )
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
        if bank.weight_column is not None:
            raise ConfigError(
                f"{where}: parties[{index}].weight_column: sample weights train the vertical "
                "models (secureboost, hetero_lr); a horizontal job does not use them, remove it"
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
        columns = read_header(resolved, party.text_format)
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
    if party.weight_column is not None and party.weight_column not in columns:
        raise ConfigError(
            f"{where}: parties[{index}].weight_column '{party.weight_column}' is not a column of "
            f"{resolved}; set weight_column to the file's column of sample weights, or remove it"
        )
    for key_name, listed in (("features", party.features), ("categorical", party.categorical)):
        missing = [c for c in (listed or []) if c not in columns]
        if missing:
            raise ConfigError(
                f"{where}: parties[{index}].{key_name} names {missing}, not columns of {resolved}"
            )
