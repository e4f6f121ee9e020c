"""What type a feature column is: numeric or categorical, and never by a silent flip.

A column is **numeric** when every non-missing value parses as a finite number (with the
party's decimal mark, :class:`~features.text_format.TextFormat`), and **categorical** when it
is listed under the party's ``categorical`` or when most of its values are text.

In between is refused: a column at least half of whose values are numbers but that holds some
text (``?``, ``n.a.``, ``12,5`` among ``12.5``) would otherwise become categorical without a
word, every number a level of its own. The error names the tokens with ``file:line`` and the
three fixes: ``na_values`` (the tokens mean missing), ``decimal`` (they are decimal-comma
numbers) or ``categorical`` (the column is a code). A column whose only non-numbers are numbers
written with a comma is refused the same way whatever its share.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.errors import DataError
from features.text_format import TextFormat

FeatureKind = Literal["numeric", "categorical"]

#: Cell values read as missing in text files (compared after stripping whitespace); a party
#: adds its own with ``na_values``.
MISSING_TOKENS = frozenset({"", "NA", "N/A", "NaN", "nan", "NULL", "null", "None", "none", "-"})

#: Share of a column's non-missing values that must be numbers for its text values to be
#: refused rather than the column made categorical. At half or more, the column was meant as
#: numbers (a stray token) or is a code (the party says so): either way the reader asks.
MOSTLY_NUMERIC = 0.5

#: Tokens and lines named in an error (the count of the rest is given).
MAX_SHOWN = 5

#: Where a party's reading settings go (the fix every message names).
WHERE = "in this party's section of the experiment config"

#: A number written with a decimal comma or thousands separators: ``1,5``, ``-0,25``, ``1,500``.
_COMMA_NUMBER = r"[+-]?(?:\d+,\d*|\d*,\d+)(?:,\d+)*(?:\.\d+)?"


def missing_mask(series: pd.Series, na_values: Iterable[str] = ()) -> npt.NDArray[np.bool_]:
    """Cells that are missing: NaN, or text in :data:`MISSING_TOKENS` or ``na_values``."""
    if series.dtype.kind in "fc":
        return np.asarray(series.isna())
    as_str = series.astype("string").str.strip()
    tokens = MISSING_TOKENS | frozenset(na_values)
    return np.asarray(as_str.isna() | as_str.isin(tokens))


def line_of(position: int, path: Path) -> str:
    """Where row ``position`` (0-based) is: ``file:line`` for a CSV, ``row n`` for Parquet."""
    if path.name.endswith(".parquet"):
        return f"row {position + 1}"
    return f"{path.name}:{position + 2}"


def rows_text(positions: npt.NDArray[np.intp], path: Path) -> str:
    """Row positions as file lines (CSV, as an editor counts them) or row numbers (Parquet)."""
    if path.name.endswith(".parquet"):
        return "rows " + preview([int(p) + 1 for p in positions])
    return "lines " + preview([int(p) + 2 for p in positions])


def preview(values: Sequence[object]) -> str:
    """The first :data:`MAX_SHOWN` values, and how many more."""
    shown = ", ".join(repr(v) for v in values[:MAX_SHOWN])
    more = f" (and {len(values) - MAX_SHOWN} more)" if len(values) > MAX_SHOWN else ""
    return f"[{shown}]{more}"


def parse_feature(
    path: Path,
    series: pd.Series,
    name: str,
    *,
    force_categorical: bool,
    text_format: TextFormat,
    refuse_mixed: bool = True,
) -> tuple[pd.Series, FeatureKind]:
    """Type one feature column: a ``float64`` series (numeric) or a ``category`` one.

    ``refuse_mixed=False`` reads a mostly numeric column with some text as categorical, for
    callers whose declared schema checks every column's type afterwards and names the values
    (a published feature set, :mod:`lab.governance.validation`).

    Raises
    ------
    DataError
        If the column is all missing, holds infinite values, or is mostly numbers with some
        text (see the module docstring).
    """
    missing = missing_mask(series, text_format.na_values)
    if missing.all():
        raise DataError(
            f"{path}: feature column '{name}' has no values (all missing); drop it from the "
            "file or from the party's 'features'"
        )
    if series.dtype.kind in "biuf" and not force_categorical:
        values = series.to_numpy(dtype=float, na_value=np.nan)
    else:
        text = series.astype("string").str.strip().mask(missing)
        if force_categorical:
            return text.astype("category").rename(name), "categorical"
        parsed = _to_numbers(text, text_format.decimal)
        failed = np.flatnonzero(parsed.isna().to_numpy() & ~missing)
        if failed.size:
            _refuse_comma_numbers(path, name, text, failed, text_format)
            if refuse_mixed:
                _refuse_stray_text(path, name, text, failed, int((~missing).sum()), text_format)
            return text.astype("category").rename(name), "categorical"
        values = parsed.to_numpy(dtype=float, na_value=np.nan)
    infinite = np.flatnonzero(np.isinf(values))
    if infinite.size:
        raise DataError(
            f"{path}: feature column '{name}' holds infinite values at "
            f"{rows_text(infinite, path)}; replace them with a finite value or leave them empty"
        )
    return pd.Series(values, name=name, dtype="float64"), "numeric"


def _to_numbers(text: pd.Series, decimal: str) -> pd.Series:
    """Parse text cells as numbers; unparseable cells become NaN.

    With a decimal comma, ``,`` is the decimal mark and a cell holding ``.`` is not a number
    (``1.500`` could be 1.5 or 1500).
    """
    if decimal == ",":
        dotted = text.str.contains(".", regex=False).fillna(False).astype(bool)
        text = text.str.replace(",", ".", regex=False).mask(dotted)
    return pd.to_numeric(text, errors="coerce")


def _refuse_comma_numbers(
    path: Path, name: str, text: pd.Series, failed: npt.NDArray[np.intp], fmt: TextFormat
) -> None:
    """Refuse a column whose only non-numbers are numbers written with a comma."""
    if fmt.decimal == ",":
        return
    values = text.iloc[failed]
    if not bool(values.str.fullmatch(_COMMA_NUMBER).all()):
        return
    shown = list(dict.fromkeys(values.astype(str).tolist()))
    where = rows_text(failed, path)
    raise DataError(
        f"{path}: feature column '{name}' holds {failed.size} number(s) written with a comma, "
        f"e.g. {preview(shown)} at {where}; if the comma is the decimal mark, set decimal: ',' "
        f"{WHERE}, or write decimals with '.' and no thousands separators (1.5, 1500); if the "
        f"column is a code, list it under categorical: {json.dumps([name])}",
        redacted=f"{path}: feature column '{name}' holds {failed.size} number(s) written with a "
        f"comma at {where}; set the party's decimal: ',' or write decimals with '.'",
    )


def _refuse_stray_text(
    path: Path,
    name: str,
    text: pd.Series,
    failed: npt.NDArray[np.intp],
    n_present: int,
    fmt: TextFormat,
) -> None:
    """Refuse a mostly numeric column holding some text, naming the tokens and their lines.

    Numbers written with the other decimal mark count as numbers here: a ``;``-delimited
    export with decimal commas and one ``?`` is a numeric column read with the wrong mark.
    """
    other_mark = _other_mark_numbers(text.iloc[failed], fmt.decimal)
    if (n_present - failed.size + int(other_mark.sum())) / n_present < MOSTLY_NUMERIC:
        return  # mostly text: a categorical column
    marked_at = failed[other_mark]
    stray_at = failed[~other_mark]
    where: dict[str, list[int]] = {}
    for position in stray_at.tolist():
        where.setdefault(str(text.iloc[position]), []).append(position)
    tokens = list(where)
    parts = [
        f"{token!r} at {', '.join(line_of(p, path) for p in where[token][:3])}"
        + (f" (+{len(where[token]) - 3} more)" if len(where[token]) > 3 else "")
        for token in tokens[:MAX_SHOWN]
    ]
    if len(tokens) > MAX_SHOWN:
        parts.append(f"and {len(tokens) - MAX_SHOWN} other token(s)")
    fixes = []
    if tokens:
        fixes.append(f"if {_they(tokens)} missing, set na_values: {json.dumps(tokens[:8])}")
    if marked_at.size:
        first = int(marked_at[0])
        mark, other = (",", "comma") if fmt.decimal == "." else (".", "point")
        parts.append(
            f"{marked_at.size} number(s) with a decimal {other}, e.g. "
            f"{str(text.iloc[first])!r} at {line_of(first, path)}"
        )
        fixes.append(
            f"if the {other} is the decimal mark, set decimal: '{mark}'"
            if mark == ","
            else "with decimal: ',' write numbers without '.' (1500, 12,5), or set decimal: '.'"
        )
    fixes.append(f"if the column is a code, list it under categorical: {json.dumps([name])}")
    head = (
        f"{path}: feature column '{name}' looks numeric, but {failed.size} of its {n_present} "
        f"values {'is not a number' if failed.size == 1 else 'are not numbers'} with decimal "
        f"mark '{fmt.decimal}'"
    )
    raise DataError(
        f"{head}: {'; '.join(parts)}; {'; '.join(fixes)} ({WHERE})",
        redacted=f"{head}, at {rows_text(failed, path)}; set the party's na_values or decimal, "
        "or list the column under its categorical",
    )


def _other_mark_numbers(values: pd.Series, decimal: str) -> npt.NDArray[np.bool_]:
    """Which text values are numbers written with the other decimal mark than ``decimal``."""
    if decimal == ".":
        return np.asarray(values.str.fullmatch(_COMMA_NUMBER).fillna(False), dtype=bool)
    return np.asarray(pd.to_numeric(values, errors="coerce").notna(), dtype=bool)


def _they(tokens: list[str]) -> str:
    return f"{tokens[0]!r} means" if len(tokens) == 1 else "these tokens mean"
