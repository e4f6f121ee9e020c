"""Read and validate one party's data table.

Code acting for a party calls :func:`read_party_table` on that party's own file and nothing
else. The same function runs in the party's Flower node and, in the embedded runtime, in the
lab's preflight check, so a bad file is refused before any job, run or record is created.

Conventions
-----------
- Ids are strings, normalised by stripping surrounding whitespace. Empty and duplicate ids are
  errors (one enterprise appears at most once per party table: the privacy unit).
- A feature column is numeric when every non-missing value parses as a finite number, and
  categorical (strings) otherwise or when listed in ``categorical``. A column whose only
  non-numbers are numbers written with a comma (``1,5``, ``1,500``) is refused rather than
  silently made categorical.
- Every CSV row has the header's number of fields: a short row is refused with its line
  number (pandas would silently fill it with missing values).
- Missing values are empty cells and the usual NA spellings (:data:`MISSING_TOKENS`).
- Labels are binary: 0 (good) or 1 (bad, e.g. default within 12 months), both present.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.errors import DataError
from features.ids import IdScheme, invalid_positions, normalise

logger = logging.getLogger(__name__)

FeatureKind = Literal["numeric", "categorical"]

#: Cell values read as missing in text files (compared after stripping whitespace).
MISSING_TOKENS = frozenset({"", "NA", "N/A", "NaN", "nan", "NULL", "null", "None", "none", "-"})

#: File suffixes a party table may have.
SUPPORTED_SUFFIXES = (".csv", ".csv.gz", ".parquet")

_MAX_SHOWN = 5

#: A number written with a decimal comma or thousands separators: ``1,5``, ``-0,25``, ``1,500``.
_COMMA_NUMBER = r"[+-]?(?:\d+,\d*|\d*,\d+)(?:,\d+)*(?:\.\d+)?"


@dataclass(frozen=True)
class PartyTable:
    """One party's validated table: ids, features and (for a label holder) labels.

    Attributes
    ----------
    path : Path
        The file the table was read from.
    digest : str
        ``sha256:<hex>`` of the file's bytes; names the exact data a job used.
    ids : numpy.ndarray
        Normalised ids, unicode dtype, one per row, unique.
    features : pandas.DataFrame
        Feature columns; numeric columns are ``float64`` (NaN = missing), categorical columns
        are pandas ``category`` (NaN = missing).
    label : numpy.ndarray or None
        ``int8`` 0/1 labels for a label holder, else ``None``.
    id_column, label_column : str, str or None
        Column names in the file.
    feature_kinds : Mapping[str, FeatureKind]
        ``numeric`` or ``categorical`` per feature column.
    """

    path: Path
    digest: str
    ids: npt.NDArray[np.str_]
    features: pd.DataFrame
    label: npt.NDArray[np.int8] | None
    id_column: str
    label_column: str | None
    feature_kinds: Mapping[str, FeatureKind] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        """Number of rows (enterprises) in the table."""
        return len(self.ids)

    @property
    def feature_names(self) -> list[str]:
        """Feature column names, in file order."""
        return list(self.features.columns)

    def subset(self, rows: npt.NDArray[np.bool_]) -> PartyTable:
        """The same table restricted to ``rows`` (a boolean mask), in the same order."""
        return PartyTable(
            path=self.path,
            digest=self.digest,
            ids=self.ids[rows],
            features=self.features.loc[rows].reset_index(drop=True),
            label=None if self.label is None else self.label[rows],
            id_column=self.id_column,
            label_column=self.label_column,
            feature_kinds=self.feature_kinds,
        )


def file_digest(path: Path) -> str:
    """Return ``sha256:<hex>`` of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def resolve_data_file(path: Path) -> Path:
    """Return the table file a party's ``data`` setting points to.

    Parameters
    ----------
    path : Path
        A table file, or a directory holding exactly one table file.

    Raises
    ------
    DataError
        If the path does not exist, has an unsupported suffix, or is a directory without exactly
        one table file.
    """
    if not path.exists():
        raise DataError(f"{path}: no such file or directory; check the party's 'data' path")
    if path.is_dir():
        candidates = sorted(p for p in path.iterdir() if p.is_file() and _has_supported_suffix(p))
        if len(candidates) != 1:
            found = ", ".join(p.name for p in candidates) or "none"
            raise DataError(
                f"{path}: a party data directory must hold exactly one table "
                f"({'/'.join(SUPPORTED_SUFFIXES)}), found {found}; point 'data' at the file"
            )
        return candidates[0]
    if not _has_supported_suffix(path):
        raise DataError(
            f"{path}: unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    return path


def read_header(path: Path) -> list[str]:
    """Return the column names of a table file without reading its rows."""
    path = resolve_data_file(path)
    try:
        if path.name.endswith(".parquet"):
            import pyarrow.parquet as pq

            return [str(c) for c in pq.read_schema(path).names]
        frame = pd.read_csv(path, nrows=0, dtype=str)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file is empty; export the data with a header row") from exc
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read the header ({_one_line(exc)})") from exc
    return [str(c) for c in frame.columns]


def read_party_table(
    path: Path,
    *,
    id_column: str,
    label_column: str | None = None,
    features: Sequence[str] | None = None,
    categorical: Iterable[str] = (),
    id_scheme: IdScheme = "text",
) -> PartyTable:
    """Read and validate one party's table.

    Parameters
    ----------
    path : Path
        The party's table file, or a directory holding exactly one.
    id_column : str
        Column holding the enterprise id.
    label_column : str, optional
        Column holding the 0/1 label; only the label holder (the bank) has one.
    features : sequence of str, optional
        Feature columns to use; by default every column except the id and label.
    categorical : iterable of str
        Columns to treat as categorical even if their values look numeric (codes).
    id_scheme : {"text", "casefold", "uscc"}
        How ids are normalised (see :mod:`features.ids`); every party of a job uses the same.

    Returns
    -------
    PartyTable

    Raises
    ------
    DataError
        With the file, column, rows and values at fault and how to fix it.
    """
    path = resolve_data_file(path)
    raw = _read_raw(path)
    columns = [str(c) for c in raw.columns]
    _check_columns(path, columns, id_column, label_column, features)
    if raw.empty:
        raise DataError(f"{path}: the table has a header but no rows; export the data again")

    ids = _normalise_ids(path, raw[id_column], id_column, id_scheme)
    label = _parse_label(path, raw[label_column], label_column) if label_column else None

    wanted = (
        list(features)
        if features is not None
        else [c for c in columns if c not in (id_column, label_column)]
    )
    if not wanted:
        raise DataError(
            f"{path}: no feature columns besides '{id_column}'"
            + (f" and '{label_column}'" if label_column else "")
            + "; a party must contribute at least one feature"
        )
    forced = set(categorical)
    unknown_forced = sorted(forced - set(wanted))
    if unknown_forced:
        raise DataError(
            f"{path}: 'categorical' names {unknown_forced} which are not feature columns of "
            f"this table; feature columns are {_preview(wanted)}"
        )
    frame = {}
    kinds: dict[str, FeatureKind] = {}
    for name in wanted:
        series, kind = _parse_feature(path, raw[name], name, force_categorical=name in forced)
        frame[name] = series
        kinds[name] = kind
    features_df = pd.DataFrame(frame)
    logger.debug("read %s: %d rows, %d features", path, len(ids), len(wanted))
    return PartyTable(
        path=path,
        digest=file_digest(path),
        ids=ids,
        features=features_df,
        label=label,
        id_column=id_column,
        label_column=label_column,
        feature_kinds=kinds,
    )


def _has_supported_suffix(path: Path) -> bool:
    return any(path.name.endswith(s) for s in SUPPORTED_SUFFIXES)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _preview(values: Sequence[object]) -> str:
    shown = ", ".join(repr(v) for v in values[:_MAX_SHOWN])
    more = f" (and {len(values) - _MAX_SHOWN} more)" if len(values) > _MAX_SHOWN else ""
    return f"[{shown}]{more}"


def _rows(positions: npt.NDArray[np.intp], path: Path) -> str:
    """Describe row positions as file lines (CSV) or row numbers (parquet)."""
    if path.name.endswith(".parquet"):
        return "rows " + _preview([int(p) + 1 for p in positions])
    return "lines " + _preview([int(p) + 2 for p in positions])


def _read_raw(path: Path) -> pd.DataFrame:
    try:
        if path.name.endswith(".parquet"):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(
                path,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                skipinitialspace=False,
            )
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file is empty; export the data with a header row") from exc
    except pd.errors.ParserError as exc:
        _check_row_lengths(path)  # names the lines; pandas' message names only the first
        raise DataError(f"{path}: cannot parse the file ({_one_line(exc)})") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot parse the file ({_one_line(exc)})") from exc
    names = [str(c) for c in frame.columns]
    if not path.name.endswith(".parquet"):
        names = _csv_header(path)  # pandas renames duplicates ("a" -> "a.1"): look at the file
        if len(frame.columns) and (frame.iloc[:, -1] == "").any():
            _check_row_lengths(path)  # a short row looks like empty trailing cells
    duplicated = sorted({c for c in names if names.count(c) > 1})
    if duplicated:
        raise DataError(f"{path}: duplicate column names {duplicated}; rename them")
    return frame


def _check_row_lengths(path: Path) -> None:
    """Refuse a CSV whose rows do not all have the header's number of fields.

    Raises
    ------
    DataError
        Naming the lines (as a text editor counts them) and their field counts.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    bad: list[tuple[int, int]] = []
    n_bad = 0
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        start = reader.line_num + 1
        for row in reader:
            if row and len(row) != len(header):
                n_bad += 1
                if len(bad) < _MAX_SHOWN:
                    bad.append((start, len(row)))
            start = reader.line_num + 1
    if not n_bad:
        return
    shown = ", ".join(f"line {line} has {n}" for line, n in bad)
    more = f" (and {n_bad - len(bad)} more)" if n_bad > len(bad) else ""
    raise DataError(
        f"{path}: {n_bad} row(s) do not have the header's {len(header)} fields: {shown}{more}; "
        "fix those rows (a missing or extra separator, or a value with a comma that is not "
        "quoted) so no value shifts into another column or goes missing"
    )


def _csv_header(path: Path) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as fh:
        return next(csv.reader(fh), [])


def _check_columns(
    path: Path,
    columns: list[str],
    id_column: str,
    label_column: str | None,
    features: Sequence[str] | None,
) -> None:
    if id_column not in columns:
        raise DataError(
            f"{path}: id column '{id_column}' not found; columns are {_preview(columns)}; "
            "set the party's 'id_column'"
        )
    if label_column is not None and label_column not in columns:
        raise DataError(
            f"{path}: label column '{label_column}' not found; columns are {_preview(columns)}; "
            "set the party's 'label_column'"
        )
    if features is not None:
        missing = [f for f in features if f not in columns]
        if missing:
            raise DataError(
                f"{path}: feature columns {missing} not found; columns are {_preview(columns)}"
            )
        clash = [f for f in features if f in (id_column, label_column)]
        if clash:
            raise DataError(f"{path}: {clash} is the id or label column and cannot be a feature")


def _missing_mask(series: pd.Series) -> npt.NDArray[np.bool_]:
    if series.dtype.kind in "fc":
        return np.asarray(series.isna())
    as_str = series.astype("string").str.strip()
    return np.asarray(as_str.isna() | as_str.isin(MISSING_TOKENS))


def _normalise_ids(
    path: Path, series: pd.Series, column: str, scheme: IdScheme
) -> npt.NDArray[np.str_]:
    if series.dtype.kind == "f":
        raise DataError(
            f"{path}: id column '{column}' is stored as floating point; store ids as text or "
            "integers so they are not rounded"
        )
    stripped = series.astype("string").str.strip()
    empty = np.flatnonzero(np.asarray(stripped.isna() | (stripped == "")))
    if empty.size:
        raise DataError(
            f"{path}: {empty.size} empty id(s) in column '{column}' at {_rows(empty, path)}; "
            "every row needs an id"
        )
    ids = np.asarray(normalise(stripped, scheme).to_numpy(dtype=str), dtype=np.str_)
    invalid = invalid_positions(ids, scheme)
    if invalid.size:
        where = _rows(invalid, path)
        head = f"{path}: {invalid.size} id(s) in column '{column}' are not valid {scheme} codes"
        raise DataError(
            f"{head}, e.g. {_preview(ids[invalid].tolist())} at {where}; correct them or drop "
            "those rows",
            redacted=f"{head} at {where}; correct them or drop those rows",
        )
    dup_mask = pd.Series(ids).duplicated(keep=False).to_numpy()
    if dup_mask.any():
        dup_values = list(dict.fromkeys(ids[dup_mask].tolist()))
        where = _rows(np.flatnonzero(dup_mask), path)
        fix = "each enterprise may appear once per table"
        raise DataError(
            f"{path}: {len(dup_values)} duplicate id(s) in column '{column}', e.g. "
            f"{_preview(dup_values)} at {where}; {fix}",
            redacted=f"{path}: {len(dup_values)} duplicate id(s) in column '{column}' at "
            f"{where}; {fix}",
        )
    return ids


def _parse_label(path: Path, series: pd.Series, column: str) -> npt.NDArray[np.int8]:
    missing = _missing_mask(series)
    if missing.any():
        where = np.flatnonzero(missing)
        raise DataError(
            f"{path}: {where.size} missing label(s) in column '{column}' at "
            f"{_rows(where, path)}; drop those rows or fill in 0/1"
        )
    numeric = pd.to_numeric(series.astype("string").str.strip(), errors="coerce")
    values = numeric.to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        where = np.flatnonzero(bad)
        shown = list(dict.fromkeys(series.iloc[where].astype(str).tolist()))
        head = f"{path}: label column '{column}' must hold 0 (good) or 1 (bad), found"
        raise DataError(
            f"{head} {_preview(shown)} at {_rows(where, path)}",
            redacted=f"{head} {len(shown)} other value(s) at {_rows(where, path)}",
        )
    label = values.astype(np.int8)
    classes = np.unique(label)
    if classes.size < 2:
        raise DataError(
            f"{path}: label column '{column}' holds only the class {int(classes[0])}; a credit "
            "model needs both good (0) and bad (1) outcomes"
        )
    return label


def _refuse_comma_numbers(
    path: Path, name: str, text: pd.Series, parsed: pd.Series, missing: npt.NDArray[np.bool_]
) -> None:
    """Refuse a column whose only non-numbers are numbers written with a comma.

    Such a column (``1,5`` for 1.5, or ``1,500``) would otherwise become categorical without a
    word, and every value would be a level of its own.
    """
    failed = np.flatnonzero(parsed.isna().to_numpy() & ~missing)
    if not failed.size:
        return
    values = text.iloc[failed]
    if not bool(values.str.fullmatch(_COMMA_NUMBER).all()):
        return
    shown = list(dict.fromkeys(values.astype(str).tolist()))
    raise DataError(
        f"{path}: feature column '{name}' holds {failed.size} number(s) written with a comma, "
        f"e.g. {_preview(shown)} at {_rows(failed, path)}; write decimals with '.' and no "
        "thousands separators (1.5, 1500), or list the column under the party's 'categorical' "
        "if it is a code",
        redacted=f"{path}: feature column '{name}' holds {failed.size} number(s) written with a "
        f"comma at {_rows(failed, path)}; write decimals with '.' and no thousands separators",
    )


def _parse_feature(
    path: Path, series: pd.Series, name: str, *, force_categorical: bool
) -> tuple[pd.Series, FeatureKind]:
    missing = _missing_mask(series)
    if missing.all():
        raise DataError(
            f"{path}: feature column '{name}' has no values (all missing); drop it from the "
            "file or from the party's 'features'"
        )
    if series.dtype.kind in "biuf" and not force_categorical:
        values = series.to_numpy(dtype=float, na_value=np.nan)
    else:
        text = series.astype("string").str.strip().mask(missing)
        parsed = None if force_categorical else pd.to_numeric(text, errors="coerce")
        if parsed is not None:
            _refuse_comma_numbers(path, name, text, parsed, missing)
        if parsed is None or parsed.isna().to_numpy()[~missing].any():
            return text.astype("category").rename(name), "categorical"
        values = parsed.to_numpy(dtype=float, na_value=np.nan)
    infinite = np.flatnonzero(np.isinf(values))
    if infinite.size:
        raise DataError(
            f"{path}: feature column '{name}' holds infinite values at "
            f"{_rows(infinite, path)}; replace them with a finite value or leave them empty"
        )
    return pd.Series(values, name=name, dtype="float64"), "numeric"
