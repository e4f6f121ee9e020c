"""Feature encoding that every bank computes identically from a public schema, without sharing rows.

In a horizontal job the banks hold the same kind of table about different enterprises. A model
can only be averaged if every bank feeds it the same columns, in the same order, on the same
scale. Fitting a scaler or a one-hot encoder on each bank's own rows would give each bank a
different encoding, and fitting it on pooled rows would need the rows. So the encoding is
defined by a *schema*: a small JSON value the coordinator puts in the job spec (or that banks
publish with :func:`schema_from_table` and the coordinator combines with
:func:`merge_schemas`). :meth:`FeatureEncoder.from_schema` then builds the same encoder at every
bank, and :meth:`FeatureEncoder.transform` encodes each bank's own rows locally.

Schema (version 1)
------------------
::

    {
      "version": 1,
      "clip": 5.0,                                   # optional, default NUMERIC_CLIP
      "columns": [
        {"name": "x0", "kind": "numeric"},           # already on a unit scale
        {"name": "revenue", "kind": "numeric", "center": 1.2e6, "scale": 8.9e5,
         "scaling": "median-iqr", "missing_indicator": true},
        {"name": "industry", "kind": "categorical", "categories": ["C13", "F51"]}
      ]
    }

Encoding
--------
- **numeric**: ``z = clip((x - center) / scale, -clip, clip)``. ``center``/``scale`` are a mean
  and standard deviation, or a median and normal-consistent IQR (``IQR / 1.349``), as the schema
  says in ``scaling``. When they are absent the fixed constants ``center = 0``, ``scale = 1``
  apply: the schema asserts the column is already standardised (FATE's default_credit columns
  are z-scores), and the clip at :data:`NUMERIC_CLIP` still bounds outliers. A missing value
  (NaN) becomes 0 (the centre); if the schema sets ``missing_indicator`` an extra 0/1 column
  ``<name>__missing`` follows the value. Infinite values are clipped like any outlier.
- **categorical**: one-hot over the schema's ``categories`` (in schema order), plus a final
  ``<name>__other`` slot for any value not in the list. A missing value is all zeros. Values are
  compared as stripped text; integer codes are formatted without a decimal point.

Output columns follow the schema's column order, so the model's inputs are the same at every
bank; :attr:`FeatureEncoder.output_names` names them.

What each party learns
----------------------
The encoder itself holds only the schema. A schema from :func:`schema_from_table` reveals, per
column, its kind and, for the publishing bank: categories seen at least ``min_category_count``
times (so which kinds of enterprises it lends to, but not rare ones that could single out an
enterprise); whether a numeric column has missing values; and, unless
``numeric_scaling="none"``, a location and spread rounded to 2 significant digits (median and
IQR by default, e.g. "median revenue about 1.2 million"; mean and standard deviation only if the
caller opts in, since a mean moves with every single row). These are aggregates of the bank's
portfolio, not row values, but they are **not** differentially private; where even that is too
much, publish ``numeric_scaling="none"`` and let the coordinator send public constants (e.g.
from statistical yearbooks) in the job spec.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from models.horizontal.errors import SchemaError, SchemaMismatchError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1

#: Bound on standardised numeric values. Five standard deviations keeps every value a normal
#: column plausibly takes and stops a few extreme amounts (FATE's bill amounts reach z > 20)
#: from dominating a linear model's gradient.
NUMERIC_CLIP = 5.0

#: Default minimum count for a category to be published by :func:`schema_from_table`; rarer
#: values go to the ``other`` slot so a published category never points at a handful of rows.
MIN_CATEGORY_COUNT = 10

#: ``IQR / IQR_TO_STD`` estimates the standard deviation of a normal distribution.
IQR_TO_STD = 1.349

#: ``MEAN_ABS_DEV_TO_STD * mean(|x - median|)`` estimates a normal standard deviation
#: (``sqrt(pi / 2)``); the fallback spread when the IQR is 0 (e.g. a mostly-zero column).
MEAN_ABS_DEV_TO_STD = math.sqrt(math.pi / 2)

#: Significant digits kept of published scaling constants.
SIGNIFICANT_DIGITS = 2

Kind = Literal["numeric", "categorical"]
NumericScaling = Literal["median-iqr", "mean-std", "none"]

KINDS: tuple[Kind, ...] = ("numeric", "categorical")
SCALINGS: tuple[str, ...] = ("median-iqr", "mean-std", "none", "given")

_NUMERIC_KEYS = frozenset({"name", "kind", "center", "scale", "scaling", "missing_indicator"})
_CATEGORICAL_KEYS = frozenset({"name", "kind", "categories"})
_SCHEMA_KEYS = frozenset({"version", "clip", "columns"})


@dataclass(frozen=True)
class NumericColumn:
    """A numeric input: standardised, clipped, missing -> 0 (plus an optional indicator).

    Attributes
    ----------
    name : str
        Column name in every bank's table.
    center, scale : float
        ``z = (x - center) / scale``; ``scale > 0``.
    scaling : str
        Where the constants come from: ``median-iqr``, ``mean-std``, ``none`` (fixed 0/1) or
        ``given`` (set by the coordinator).
    missing_indicator : bool
        Whether a ``<name>__missing`` 0/1 column follows the value.
    """

    name: str
    center: float = 0.0
    scale: float = 1.0
    scaling: str = "none"
    missing_indicator: bool = False

    @property
    def width(self) -> int:
        """Number of output columns."""
        return 2 if self.missing_indicator else 1

    def output_names(self) -> list[str]:
        """Names of the output columns."""
        return [self.name, f"{self.name}__missing"] if self.missing_indicator else [self.name]

    def to_dict(self) -> dict[str, Any]:
        """Schema entry."""
        entry: dict[str, Any] = {"name": self.name, "kind": "numeric"}
        if self.scaling != "none":
            entry.update(center=self.center, scale=self.scale, scaling=self.scaling)
        if self.missing_indicator:
            entry["missing_indicator"] = True
        return entry


@dataclass(frozen=True)
class CategoricalColumn:
    """A categorical input: one-hot over ``categories`` plus an ``other`` slot; missing -> 0s.

    Attributes
    ----------
    name : str
        Column name in every bank's table.
    categories : tuple of str
        Known values, in output order.
    """

    name: str
    categories: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        """Number of output columns."""
        return len(self.categories) + 1

    def output_names(self) -> list[str]:
        """Names of the output columns."""
        return [f"{self.name}={c}" for c in self.categories] + [f"{self.name}__other"]

    def to_dict(self) -> dict[str, Any]:
        """Schema entry."""
        return {"name": self.name, "kind": "categorical", "categories": list(self.categories)}


Column = NumericColumn | CategoricalColumn


@dataclass(frozen=True)
class FeatureEncoder:
    """Encodes a bank's feature table into the model's float32 input matrix.

    Build it with :meth:`from_schema`; two banks given the same schema build equal encoders
    and encode equal rows to equal vectors. The encoder holds no data.

    Attributes
    ----------
    columns : tuple of NumericColumn or CategoricalColumn
        Inputs in output order.
    clip : float
        Bound on standardised numeric values.
    """

    columns: tuple[Column, ...]
    clip: float = NUMERIC_CLIP

    @classmethod
    def from_schema(cls, schema: Mapping[str, Any]) -> FeatureEncoder:
        """Build the encoder a schema (see the module docstring) describes.

        Raises
        ------
        SchemaError
            If the schema is malformed: wrong version, no columns, a duplicate or empty name,
            an unknown kind or key, a non-positive or non-finite scale, duplicate categories.
        """
        if not isinstance(schema, Mapping):
            raise SchemaError(f"a schema is a mapping with 'columns', got {type(schema).__name__}")
        unknown = sorted(set(schema) - _SCHEMA_KEYS)
        if unknown:
            raise SchemaError(f"unknown schema keys {unknown}; allowed: {sorted(_SCHEMA_KEYS)}")
        version = schema.get("version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise SchemaError(
                f"schema version {version!r} is not supported; this build reads version "
                f"{SCHEMA_VERSION}"
            )
        clip = _positive_float(schema.get("clip", NUMERIC_CLIP), "clip")
        entries = schema.get("columns")
        if not isinstance(entries, Sequence) or isinstance(entries, str) or not entries:
            raise SchemaError("a schema needs a non-empty list 'columns'; list every feature")
        columns = tuple(_column_from_dict(entry, i) for i, entry in enumerate(entries))
        names = [c.name for c in columns]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise SchemaError(f"duplicate column names {duplicated} in the schema; list each once")
        return cls(columns=columns, clip=clip)

    def to_schema(self) -> dict[str, Any]:
        """The schema this encoder was built from (JSON-serialisable)."""
        return {
            "version": SCHEMA_VERSION,
            "clip": self.clip,
            "columns": [c.to_dict() for c in self.columns],
        }

    @property
    def feature_names(self) -> list[str]:
        """Input column names, in schema order."""
        return [c.name for c in self.columns]

    @property
    def output_names(self) -> list[str]:
        """Names of the encoded columns (``n_outputs`` of them)."""
        return [name for c in self.columns for name in c.output_names()]

    @property
    def n_outputs(self) -> int:
        """Width of the encoded matrix: the model's ``n_inputs``."""
        return sum(c.width for c in self.columns)

    def transform(self, frame: pd.DataFrame) -> npt.NDArray[np.float32]:
        """Encode a bank's rows; columns not in the schema are ignored.

        Parameters
        ----------
        frame : pandas.DataFrame
            The bank's features (e.g. ``PartyTable.features``): numeric schema columns as a
            numeric dtype (NaN = missing), categorical ones as category, string, object or
            integer dtype.

        Returns
        -------
        numpy.ndarray of float32, shape (n_rows, n_outputs)

        Raises
        ------
        SchemaMismatchError
            If a schema column is absent or has a kind the schema does not allow.
        """
        missing = [name for name in self.feature_names if name not in frame.columns]
        if missing:
            raise SchemaMismatchError(
                f"the table lacks schema columns {missing}; every bank must provide all of "
                f"{self.feature_names} (columns it lacks entirely can be sent as empty = missing)"
            )
        blocks: list[npt.NDArray[np.float32]] = []
        for column in self.columns:
            series = frame[column.name]
            if isinstance(column, NumericColumn):
                blocks.append(self._numeric(column, series))
            else:
                blocks.append(self._categorical(column, series))
        out = np.concatenate(blocks, axis=1) if blocks else np.empty((len(frame), 0))
        return np.ascontiguousarray(out, dtype=np.float32)

    def _numeric(self, column: NumericColumn, series: pd.Series) -> npt.NDArray[np.float32]:
        if isinstance(series.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(
            series.dtype
        ):
            raise SchemaMismatchError(
                f"column {column.name!r} is numeric in the schema but has dtype {series.dtype} "
                "in the table; fix the values that are not numbers, or agree a categorical kind"
            )
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        is_missing = np.isnan(values)
        z = np.clip((values - column.center) / column.scale, -self.clip, self.clip)
        z[is_missing] = 0.0
        if is_missing.any():
            logger.debug("%s: %d missing value(s) set to 0", column.name, int(is_missing.sum()))
        if column.missing_indicator:
            return np.stack([z, is_missing.astype(np.float64)], axis=1).astype(np.float32)
        return z.astype(np.float32)[:, None]

    def _categorical(self, column: CategoricalColumn, series: pd.Series) -> npt.NDArray[np.float32]:
        text = _as_text(column.name, series)
        out = np.zeros((len(text), column.width), dtype=np.float32)
        is_missing = text.isna().to_numpy()
        codes = pd.Index(column.categories, dtype="string").get_indexer(pd.Index(text))
        known = codes >= 0
        rows = np.arange(len(text))
        out[rows[known], codes[known]] = 1.0
        unknown = ~known & ~is_missing
        out[rows[unknown], column.width - 1] = 1.0
        if unknown.any():
            logger.debug("%s: %d value(s) outside the schema -> other", column.name, unknown.sum())
        return out


def numeric_schema(names: Sequence[str], *, clip: float = NUMERIC_CLIP) -> dict[str, Any]:
    """Schema of already-standardised numeric columns (fixed constants 0/1, clipped).

    This is all FATE's default_credit horizontal split needs: its 23 columns are z-scores.
    """
    return {
        "version": SCHEMA_VERSION,
        "clip": clip,
        "columns": [{"name": str(n), "kind": "numeric"} for n in names],
    }


def schema_from_table(
    frame: pd.DataFrame,
    *,
    numeric_scaling: NumericScaling = "median-iqr",
    min_category_count: int = MIN_CATEGORY_COUNT,
) -> dict[str, Any]:
    """What one bank may publish about its table so that all banks encode alike.

    Parameters
    ----------
    frame : pandas.DataFrame
        The bank's features: numeric dtypes are numeric columns; category, string and object
        dtypes are categorical.
    numeric_scaling : {"median-iqr", "mean-std", "none"}
        Scaling constants to publish, rounded to 2 significant digits. ``median-iqr``
        (default): median and ``IQR / 1.349`` (if the IQR is 0, ``1.2533 * mean|x - median|``;
        a constant column gets scale 1). ``mean-std``: mean and standard deviation, only when
        the caller accepts publishing them. ``none``: no constants (the column must already be
        on a unit scale, or the coordinator adds constants).
    min_category_count : int
        Categories seen fewer times than this are left out (encoded as ``other``).

    Returns
    -------
    dict
        A schema (JSON-serialisable) that :meth:`FeatureEncoder.from_schema` accepts.

    Notes
    -----
    What this reveals is described in the module docstring: column kinds, common categories,
    whether a column has missing values, and rounded location/spread constants. No row value
    is published, but the constants are not differentially private.

    Raises
    ------
    SchemaError
        If ``numeric_scaling`` is unknown, ``min_category_count`` < 1, or the table has no
        columns.
    """
    if numeric_scaling not in ("median-iqr", "mean-std", "none"):
        raise SchemaError(
            f"unknown numeric_scaling {numeric_scaling!r}; use 'median-iqr', 'mean-std' or 'none'"
        )
    if isinstance(min_category_count, bool) or min_category_count < 1:
        raise SchemaError(f"min_category_count must be >= 1, got {min_category_count!r}")
    if frame.shape[1] == 0:
        raise SchemaError("the table has no feature columns; a schema needs at least one")
    columns: list[dict[str, Any]] = []
    for name in frame.columns:
        series = frame[name]
        if isinstance(series.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(
            series.dtype
        ):
            counts = _as_text(str(name), series).value_counts(dropna=True)
            kept = sorted(str(v) for v, n in counts.items() if n >= min_category_count)
            columns.append({"name": str(name), "kind": "categorical", "categories": kept})
            continue
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        finite = values[np.isfinite(values)]
        entry: dict[str, Any] = {"name": str(name), "kind": "numeric"}
        if numeric_scaling != "none" and finite.size:
            center, scale = _location_scale(finite, numeric_scaling)
            entry.update(center=center, scale=scale, scaling=numeric_scaling)
        if np.isnan(values).any():
            entry["missing_indicator"] = True
        columns.append(entry)
    return {"version": SCHEMA_VERSION, "clip": NUMERIC_CLIP, "columns": columns}


def merge_schemas(
    schemas: Sequence[Mapping[str, Any]], names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Combine the schemas several banks published into the one the job uses.

    ``names`` (the banks', in the same order) only make error messages say whose schema
    differs; by default schemas are named by position.

    Rules: the banks must list the same columns with the same kinds in the same order;
    categories are the sorted union; a missing indicator is kept if any bank needs it; numeric
    constants are the unweighted mean of the banks' centres and of their scales (rounded to 2
    significant digits), and must come from the same kind of scaling at every bank.

    Raises
    ------
    SchemaError
        If no schema is given, a schema is malformed, or the schemas disagree on columns,
        kinds, clip or scaling kind.
    """
    if not schemas:
        raise SchemaError("merge_schemas needs at least one schema")
    encoders = [FeatureEncoder.from_schema(s) for s in schemas]
    label = list(names) if names is not None else [f"schema {i}" for i in range(len(schemas))]
    first = encoders[0]
    for i, enc in enumerate(encoders[1:], start=1):
        difference = _column_difference(first, enc)
        if difference:
            raise SchemaError(
                f"{label[i]} {difference} compared with {label[0]}; the banks must agree on "
                "column names, kinds and order before training"
            )
        if enc.clip != first.clip:
            raise SchemaError(f"{label[i]} clips at {enc.clip}, {label[0]} at {first.clip}")
    merged: list[dict[str, Any]] = []
    for position, column in enumerate(first.columns):
        group = [enc.columns[position] for enc in encoders]
        if isinstance(column, CategoricalColumn):
            union = sorted(
                {c for col in group if isinstance(col, CategoricalColumn) for c in col.categories}
            )
            merged.append({"name": column.name, "kind": "categorical", "categories": union})
            continue
        numeric = [col for col in group if isinstance(col, NumericColumn)]
        scalings = {col.scaling for col in numeric}
        if len(scalings) > 1:
            raise SchemaError(
                f"column {column.name!r} is scaled by {sorted(scalings)} at different banks; "
                "publish every schema with the same numeric_scaling"
            )
        entry: dict[str, Any] = {"name": column.name, "kind": "numeric"}
        if column.scaling != "none":
            entry.update(
                center=_round_sig(float(np.mean([c.center for c in numeric]))),
                scale=_round_sig(float(np.mean([c.scale for c in numeric]))),
                scaling=column.scaling,
            )
        if any(col.missing_indicator for col in numeric):
            entry["missing_indicator"] = True
        merged.append(entry)
    return {"version": SCHEMA_VERSION, "clip": first.clip, "columns": merged}


def _column_difference(first: FeatureEncoder, other: FeatureEncoder) -> str:
    """How ``other``'s columns differ from ``first``'s, in words ('' if they agree)."""
    mine = {c.name: _kind(c) for c in first.columns}
    theirs = {c.name: _kind(c) for c in other.columns}
    lacks = [n for n in mine if n not in theirs]
    extra = [n for n in theirs if n not in mine]
    if lacks or extra:
        parts = ([f"lacks columns {lacks}"] if lacks else []) + (
            [f"has extra columns {extra}"] if extra else []
        )
        return " and ".join(parts)
    kinds = [f"'{n}' is {theirs[n]} (not {k})" for n, k in mine.items() if theirs[n] != k]
    if kinds:
        return "reads " + ", ".join(kinds)
    if list(theirs) != list(mine):
        return "lists the same columns in another order"
    return ""


def _kind(column: Column) -> str:
    return "numeric" if isinstance(column, NumericColumn) else "categorical"


def _column_from_dict(entry: object, index: int) -> Column:
    if not isinstance(entry, Mapping):
        raise SchemaError(f"schema column {index} must be a mapping, got {type(entry).__name__}")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise SchemaError(f"schema column {index} needs a non-empty string 'name', got {name!r}")
    kind = entry.get("kind")
    if kind == "numeric":
        unknown = sorted(set(entry) - _NUMERIC_KEYS)
        if unknown:
            raise SchemaError(
                f"column {name!r}: unknown keys {unknown}; allowed {sorted(_NUMERIC_KEYS)}"
            )
        has_center, has_scale = "center" in entry, "scale" in entry
        if has_center != has_scale:
            raise SchemaError(f"column {name!r}: give both 'center' and 'scale', or neither")
        scaling = entry.get("scaling", "given" if has_center else "none")
        if scaling not in SCALINGS:
            raise SchemaError(
                f"column {name!r}: unknown scaling {scaling!r}; use one of {SCALINGS}"
            )
        if scaling == "none" and has_center:
            raise SchemaError(f"column {name!r}: scaling 'none' cannot carry center/scale")
        if scaling != "none" and not has_center:
            raise SchemaError(f"column {name!r}: scaling {scaling!r} needs 'center' and 'scale'")
        indicator = entry.get("missing_indicator", False)
        if not isinstance(indicator, bool):
            raise SchemaError(f"column {name!r}: missing_indicator must be true or false")
        center = _finite_float(entry.get("center", 0.0), f"column {name!r} center")
        scale = _positive_float(entry.get("scale", 1.0), f"column {name!r} scale")
        return NumericColumn(name, center, scale, str(scaling), indicator)
    if kind == "categorical":
        unknown = sorted(set(entry) - _CATEGORICAL_KEYS)
        if unknown:
            raise SchemaError(
                f"column {name!r}: unknown keys {unknown}; allowed {sorted(_CATEGORICAL_KEYS)}"
            )
        categories = entry.get("categories", [])
        if (
            not isinstance(categories, Sequence)
            or isinstance(categories, str)
            or not all(isinstance(c, str) for c in categories)
        ):
            raise SchemaError(
                f"column {name!r}: 'categories' must be a list of strings (write codes as text, "
                f'e.g. "01"), got {categories!r}'
            )
        stripped = [c.strip() for c in categories]
        dup = sorted({c for c in stripped if stripped.count(c) > 1})
        if dup:
            raise SchemaError(f"column {name!r}: duplicate categories {dup}")
        return CategoricalColumn(name, tuple(stripped))
    raise SchemaError(f"column {name!r}: unknown kind {kind!r}; use one of {KINDS}")


def _as_text(name: str, series: pd.Series) -> pd.Series:
    """Categorical values as stripped text (NA kept); integer codes without a decimal point."""
    dtype = series.dtype
    if pd.api.types.is_object_dtype(dtype):
        text = series.map(_object_to_text).astype("string")
    elif isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(dtype):
        text = series.astype("string")
    elif pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        text = series.astype("Int64").astype("string")
    else:
        raise SchemaMismatchError(
            f"column {name!r} is categorical in the schema but has dtype {dtype} in the table; "
            f"read it as text (read_party_table(..., categorical=[{name!r}]))"
        )
    return text.str.strip()


def _object_to_text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _location_scale(values: npt.NDArray[np.float64], how: NumericScaling) -> tuple[float, float]:
    if how == "mean-std":
        center = float(values.mean())
        scale = float(values.std())
    else:
        center = float(np.median(values))
        q1, q3 = np.percentile(values, [25.0, 75.0])
        scale = float(q3 - q1) / IQR_TO_STD
        if scale == 0.0:
            scale = MEAN_ABS_DEV_TO_STD * float(np.mean(np.abs(values - center)))
    if not scale > 0.0 or not math.isfinite(scale):
        scale = 1.0  # a constant column: any positive scale encodes it as 0
    return _round_sig(center), _round_sig(scale) or 1.0


def _round_sig(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    return float(f"{value:.{digits}g}")


def _finite_float(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SchemaError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _positive_float(value: object, what: str) -> float:
    number = _finite_float(value, what)
    if number <= 0:
        raise SchemaError(f"{what} must be > 0, got {value!r}")
    return number
