"""Feature-set specs: what a platform publishes about a table before any bank may use it.

A spec is a YAML file::

    name: sme_platform
    version: "1"
    owner: platform-data-team
    description: Enterprise features of the provincial credit platform.
    id_column: enterprise_id        # default
    id_scheme: text                 # text | casefold | uscc, as in experiment configs
    columns:
      firm_age_years:
        type: numeric               # numeric | integer | boolean | categorical
        description: Years since establishment.
        group: registration         # see lab.governance.vocabulary.GROUPS
        sensitivity: public         # public | internal | trade_secret | personal
        purposes: [credit_risk_modeling, pre_loan_screening]
        range: {min: 0, max: 200}   # optional, numeric and integer columns
        nullable: false             # default false
      tax_credit_grade:
        type: categorical
        categories: [A, B, M, C, D] # optional; other values are refused
        ...

``boolean`` columns hold 0/1. The spec's digest (SHA-256 of its canonical JSON) is part of a
published entry, so any change to a published spec needs a new version.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from features.ids import IdScheme
from lab import yaml_strict
from lab.governance._common import canonical_json, sha256_hex
from lab.governance.errors import SpecError, VocabularyError
from lab.governance.vocabulary import (
    PURPOSES,
    ColumnType,
    Sensitivity,
    check_group,
    check_name,
    check_purpose,
    format_ref,
)


class ValueRange(BaseModel):
    """Inclusive bounds of a numeric column (either may be omitted)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ValueRange:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class ColumnSpec(BaseModel):
    """What the platform promises about one column."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: ColumnType
    description: str = Field(min_length=1)
    group: str
    sensitivity: Sensitivity
    purposes: tuple[str, ...] = Field(min_length=1)
    range: ValueRange | None = None
    categories: tuple[str, ...] | None = None
    nullable: bool = False

    @field_validator("group")
    @classmethod
    def _group(cls, value: str) -> str:
        try:
            return check_group(value)
        except VocabularyError as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("purposes")
    @classmethod
    def _purposes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:
            for purpose in value:
                check_purpose(purpose)
        except VocabularyError as exc:
            raise ValueError(str(exc)) from exc
        if len(set(value)) != len(value):
            raise ValueError(f"purposes {list(value)} repeat a value")
        return value

    @field_validator("categories")
    @classmethod
    def _categories(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("categories is empty; list the allowed values or omit the key")
        if any(not str(c).strip() for c in value) or len(set(value)) != len(value):
            raise ValueError("categories must be distinct, non-empty strings")
        return value

    @model_validator(mode="after")
    def _fits_type(self) -> ColumnSpec:
        if self.range is not None and self.type not in ("numeric", "integer"):
            raise ValueError(f"range applies to numeric and integer columns, not {self.type}")
        if self.categories is not None and self.type != "categorical":
            raise ValueError(f"categories apply to categorical columns, not {self.type}")
        return self


class FeatureSetSpec(BaseModel):
    """A versioned feature set: identity, ownership and per-column contract."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: str
    owner: str = Field(min_length=1)
    description: str = Field(min_length=1)
    id_column: str = "enterprise_id"
    id_scheme: IdScheme = "text"
    columns: dict[str, ColumnSpec] = Field(min_length=1)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            raise ValueError(f"version {value!r} was read as a number; quote it, e.g. '{value}'")
        return value

    @field_validator("name", "version")
    @classmethod
    def _names(cls, value: str) -> str:
        try:
            return check_name(value, "feature-set name or version")
        except VocabularyError as exc:
            raise ValueError(str(exc)) from exc

    @model_validator(mode="after")
    def _id_not_a_column(self) -> FeatureSetSpec:
        if self.id_column in self.columns:
            raise ValueError(f"id column {self.id_column!r} must not be listed under columns")
        return self

    @property
    def ref(self) -> str:
        """``name@version``."""
        return format_ref(self.name, self.version)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``None`` fields omitted, as in the YAML)."""
        data: dict[str, Any] = self.model_dump(mode="json", exclude_none=True)
        return data

    def digest(self) -> str:
        """``sha256:<hex>`` of the canonical JSON of the spec."""
        return f"sha256:{sha256_hex(canonical_json(self.to_dict()))}"

    def groups_of(self, columns: Iterable[str]) -> frozenset[str]:
        """Feature groups the given columns belong to."""
        return frozenset(self.columns[c].group for c in columns)

    def needs_personal_consent(self, columns: Iterable[str]) -> bool:
        """Whether any of the columns holds personal data."""
        return any(self.columns[c].sensitivity == "personal" for c in columns)


def load_spec(path: Path) -> FeatureSetSpec:
    """Read and validate a spec file.

    Raises
    ------
    SpecError
        Naming the file, the key and what is wrong.
    """
    try:
        raw = yaml_strict.load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec ({exc.strerror}); check the path") from exc
    except yaml_strict.DuplicateKeyError as exc:
        raise SpecError(f"{path}: {exc.describe()}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec is a mapping with name, version, owner, ... columns")
    return spec_from_dict(raw, source=str(path))


def spec_from_dict(data: Mapping[str, Any], *, source: str = "spec") -> FeatureSetSpec:
    """Validate a spec given as a mapping (see :func:`load_spec`)."""
    try:
        return FeatureSetSpec.model_validate(dict(data))
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:10]:
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            message = err["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
        more = f" (and {exc.error_count() - 10} more)" if exc.error_count() > 10 else ""
        raise SpecError(f"{source}: invalid spec: {'; '.join(problems)}{more}") from exc


def write_spec(spec: FeatureSetSpec, path: Path) -> Path:
    """Write a spec as YAML (keys in spec order) and return the path."""
    text = yaml.safe_dump(spec.to_dict(), sort_keys=False, allow_unicode=True, width=100)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def spec_from_synth_columns(
    columns: Mapping[str, Any] | Iterable[Any] | Path,
    *,
    name: str,
    version: str,
    owner: str,
    description: str,
    party: str = "platform",
    purposes: Sequence[str] = PURPOSES,
    data: pd.DataFrame | None = None,
) -> FeatureSetSpec:
    """Write a spec from the synthetic generator's column metadata.

    Parameters
    ----------
    columns : mapping, iterable of ColumnInfo, or Path
        :data:`features.synth.COLUMNS`, a sequence of :class:`features.synth.ColumnInfo`, or
        a ``columns.json`` written by :func:`features.synth.write`.
    name, version, owner, description : str
        The feature set's identity.
    party : str
        Keep the columns this party holds (``platform`` or ``bank``); labels are never kept.
    purposes : sequence of str
        Allowed purposes of every column (edit the spec to narrow them per column).
    data : pandas.DataFrame, optional
        A sample of the table: numeric columns whose values are all 0/1 become ``boolean``,
        all whole numbers ``integer``, and non-negative ones get ``range: {min: 0}``.

    Returns
    -------
    FeatureSetSpec
    """
    from features.synth.schema import ColumnInfo

    candidates: list[object]
    if isinstance(columns, Path):
        raw = json.loads(columns.read_text(encoding="utf-8"))
        candidates = [
            ColumnInfo(**{**d, "categories": _tuple_or_none(d["categories"])}) for d in raw.values()
        ]
    elif isinstance(columns, Mapping):
        candidates = list(columns.values())
    else:
        candidates = list(columns)
    infos = [c for c in candidates if isinstance(c, ColumnInfo)]
    if len(infos) != len(candidates):
        strays = sorted({type(c).__name__ for c in candidates if not isinstance(c, ColumnInfo)})
        raise SpecError(f"column metadata must be features.synth.ColumnInfo values, got {strays}")
    specs: dict[str, dict[str, Any]] = {}
    for info in infos:
        if info.party != party or info.role != "feature":
            continue
        entry: dict[str, Any] = {
            "type": info.dtype,
            "description": info.description,
            "group": info.group,
            "sensitivity": info.sensitivity,
            "purposes": list(purposes),
            "nullable": info.missing != "none",
        }
        if info.dtype == "categorical" and info.categories is not None:
            entry["categories"] = list(info.categories)
        if data is not None and info.dtype == "numeric" and info.name in data.columns:
            entry.update(_refine_numeric(data[info.name]))
        specs[info.name] = entry
    if not specs:
        raise SpecError(f"no feature columns of party {party!r} in the column metadata")
    return spec_from_dict(
        {
            "name": name,
            "version": version,
            "owner": owner,
            "description": description,
            "columns": specs,
        },
        source="synthetic column metadata",
    )


def _tuple_or_none(value: list[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def _refine_numeric(series: pd.Series) -> dict[str, Any]:
    values = pd.to_numeric(series, errors="coerce").dropna()
    if values.empty:
        return {}
    if values.isin([0, 1]).all():
        return {"type": "boolean"}
    out: dict[str, Any] = {}
    if (values % 1 == 0).all():
        out["type"] = "integer"
    if (values >= 0).all():
        out["range"] = {"min": 0}
    return out
