"""Validate a feature table against its spec with a pandera schema built from the spec.

The file is read by :func:`features.io.read_party_table`, the same reader every party's node
uses (ids stripped, unique and non-empty; the lab's missing-value tokens), then checked by a
:class:`pandera.DataFrameSchema` that :func:`build_schema` derives from the spec:

=============  ==========================================================================
spec           pandera
=============  ==========================================================================
numeric        ``float64`` (coerced: a value that is not a number fails ``coerce_dtype``)
integer        ``float64`` + check ``integer`` (whole numbers)
boolean        ``float64`` + ``isin([0, 1])``
categorical    ``str`` + ``isin(categories)`` when categories are listed
range          ``in_range`` / ``greater_than_or_equal_to`` / ``less_than_or_equal_to``
nullable       ``nullable``
(columns)      ``strict=True``: every spec column present, no other column
=============  ==========================================================================

Errors name the column and the rule, with up to five offending values and their lines; they
are for the platform's own operator (who owns the data) and are never written to the audit log.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from features.errors import DataError
from features.io import PartyTable, read_header, read_party_table, resolve_data_file
from lab.governance.errors import SpecViolationError
from lab.governance.spec import ColumnSpec, FeatureSetSpec

logger = logging.getLogger(__name__)

_SHOWN = 5

#: pandera's schema-level check names, in words.
_SCHEMA_RULES = {
    "column_in_dataframe": "declared in the spec but missing from the data",
    "column_in_schema": "present in the data but not declared in the spec",
}


def _is_integer(series: pd.Series) -> pd.Series:
    return series.isna() | (series % 1 == 0)


def build_schema(spec: FeatureSetSpec) -> pa.DataFrameSchema:
    """Return the pandera schema that data published under ``spec`` must satisfy."""
    columns = {name: _column(name, col) for name, col in spec.columns.items()}
    return pa.DataFrameSchema(columns, strict=True, name=spec.ref)


def _column(name: str, col: ColumnSpec) -> pa.Column:
    checks: list[pa.Check] = []
    if col.type == "integer":
        checks.append(pa.Check(_is_integer, name="integer", error="integer"))
    if col.type == "boolean":
        checks.append(pa.Check.isin([0.0, 1.0]))
    if col.range is not None:
        low, high = col.range.min, col.range.max
        if low is not None and high is not None:
            checks.append(pa.Check.in_range(low, high))
        elif low is not None:
            checks.append(pa.Check.greater_than_or_equal_to(low))
        elif high is not None:
            checks.append(pa.Check.less_than_or_equal_to(high))
    if col.type == "categorical":
        if col.categories is not None:
            checks.append(pa.Check.isin(list(col.categories)))
        return pa.Column(str, checks=checks, nullable=col.nullable, coerce=True, name=name)
    return pa.Column("float64", checks=checks, nullable=col.nullable, coerce=True, name=name)


def read_and_validate(spec: FeatureSetSpec, data_path: Path) -> tuple[PartyTable, pd.DataFrame]:
    """Read a table and check it against its spec.

    Returns
    -------
    tuple of (PartyTable, pandas.DataFrame)
        The table as read, and its features as coerced by the schema (numeric columns
        ``float64``, categorical columns strings).

    Raises
    ------
    SpecViolationError
        Naming the column and the rule (several if several are broken).
    """
    try:
        path = resolve_data_file(data_path)
        header = read_header(path)
    except DataError as exc:
        raise SpecViolationError(str(exc), ()) from exc
    if spec.id_column not in header:
        raise SpecViolationError(
            f"{path}: column '{spec.id_column}' breaks rule 'id column present' of "
            f"{spec.ref}; add the id column or set id_column in the spec",
            ((spec.id_column, "id column present"),),
        )
    categorical = [n for n, c in spec.columns.items() if c.type == "categorical" and n in header]
    try:
        # The spec declares each column's type: a numeric column holding text is read as it
        # is, and the schema below names the values that break its type.
        table = read_party_table(
            path,
            id_column=spec.id_column,
            categorical=categorical,
            id_scheme=spec.id_scheme,
            refuse_mixed=False,
        )
    except DataError as exc:
        raise SpecViolationError(f"{spec.ref}: {exc}", ()) from exc
    schema = build_schema(spec)
    try:
        valid = schema.validate(table.features, lazy=True)
    except SchemaErrors as exc:
        violations = _violations(exc.failure_cases, path, spec)
        pairs = tuple((column, rule) for column, rule, _ in violations)
        details = "; ".join(text for _, _, text in violations)
        raise SpecViolationError(
            f"{path}: data violates {spec.ref}: {details}; fix the data or publish a new spec "
            "version",
            pairs,
        ) from exc
    logger.info("%s: %d rows satisfy %s", path, table.n_rows, spec.ref)
    return table, valid


def _violations(
    cases: pd.DataFrame, path: Path, spec: FeatureSetSpec
) -> list[tuple[str, str, str]]:
    """Group pandera's failure cases into (column, rule, sentence), one per column and rule."""
    out: list[tuple[str, str, str]] = []
    coerce_failed: set[str] = set()
    rows: list[dict[str, Any]] = [
        {str(k): v for k, v in r.items()} for r in cases.to_dict("records")
    ]
    for row in rows:
        if str(row["check"]).startswith("coerce_dtype") and isinstance(row["column"], str):
            coerce_failed.add(row["column"])
    seen: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        check = str(row["check"])
        if row["schema_context"] == "DataFrameSchema" and check in _SCHEMA_RULES:
            column = str(row["failure_case"])
            seen.setdefault((column, check), [])
            continue
        column = str(row["column"])
        # A column whose values are not of its type fails every later check too: keep the first.
        if column in coerce_failed and not check.startswith("coerce_dtype"):
            continue
        seen.setdefault((column, check), []).append(row)
    for (column, check), failures in seen.items():
        if check in _SCHEMA_RULES:
            out.append((column, check, f"column '{column}' is {_SCHEMA_RULES[check]}"))
            continue
        rule = _rule(check, spec.columns[column]) if column in spec.columns else check
        values = [f["failure_case"] for f in failures]
        positions = [f["index"] for f in failures if _is_position(f["index"])]
        text = f"column '{column}' breaks rule {rule}: {len(failures)} value(s)"
        shown = [v for v in dict.fromkeys(_show(v) for v in values)][:_SHOWN]
        if shown and rule != "not_nullable":
            text += f", e.g. [{', '.join(shown)}]"
        if positions:
            text += f" at {_lines(positions, path)}"
        out.append((column, rule, text))
    return out


def _rule(check: str, col: ColumnSpec) -> str:
    if check.startswith(("coerce_dtype", "dtype")):
        return f"type {col.type} ({check})"
    return check


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    return repr(value) if isinstance(value, str) else str(value)


def _is_position(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _lines(positions: list[Any], path: Path) -> str:
    ordered = sorted({int(p) for p in positions})
    if path.name.endswith(".parquet"):
        shown = [p + 1 for p in ordered[:_SHOWN]]
        label = "rows"
    else:
        shown = [p + 2 for p in ordered[:_SHOWN]]  # header is line 1
        label = "lines"
    more = f" (and {len(ordered) - _SHOWN} more)" if len(ordered) > _SHOWN else ""
    return f"{label} {shown}{more}"
