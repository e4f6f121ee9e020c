"""Read and validate one party's data table.

Code acting for a party calls :func:`read_party_table` on that party's own file and nothing
else. The same function runs in the party's Flower node and, in the embedded runtime, in the
lab's preflight check, so a bad file is refused before any job, run or record is created.

Conventions
-----------
- Ids are strings, normalised by stripping surrounding whitespace. Empty and duplicate ids are
  errors (one enterprise appears at most once per party table: the privacy unit).
- A feature column is numeric when every non-missing value parses as a finite number, and
  categorical (strings) when listed in ``categorical`` or when most of its values are text; a
  mostly numeric column with some text is refused with the tokens, their lines and the fixes
  (:mod:`features.column_types`).
- How a CSV is written (delimiter, encoding, decimal mark, extra missing tokens) is the party's
  :class:`~features.text_format.TextFormat`; gzip and bz2 files are read transparently, and a
  wrong delimiter or encoding is named with the setting that fixes it.
- Every CSV row has the header's number of fields: a short row is refused with its line
  number (pandas would silently fill it with missing values).
- Missing values are empty cells, the usual NA spellings (:data:`MISSING_TOKENS`) and the
  party's ``na_values``.
- Labels are binary: 0 (good) or 1 (bad, e.g. default within 12 months), both present.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.column_types import (
    MAX_SHOWN,
    MISSING_TOKENS,
    FeatureKind,
    missing_mask,
    parse_feature,
    preview,
    rows_text,
)
from features.errors import DataError
from features.ids import IdScheme, invalid_positions, normalise
from features.text_format import (
    DEFAULT_FORMAT,
    TextFormat,
    compression_of,
    encoding_error,
    open_text,
    read_header_fields,
)

__all__ = [
    "MISSING_TOKENS",
    "SUPPORTED_SUFFIXES",
    "FeatureKind",
    "PartyTable",
    "file_digest",
    "read_header",
    "read_party_table",
    "resolve_data_file",
]

logger = logging.getLogger(__name__)

#: File suffixes a party table may have (compression is read from the bytes, not the name).
SUPPORTED_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".parquet")


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
    weight : numpy.ndarray or None
        ``float64`` nonnegative sample weights of a label holder's weight column, else ``None``.
    weight_column : str or None
        Its name in the file.
    """

    path: Path
    digest: str
    ids: npt.NDArray[np.str_]
    features: pd.DataFrame
    label: npt.NDArray[np.int8] | None
    id_column: str
    label_column: str | None
    feature_kinds: Mapping[str, FeatureKind] = field(default_factory=dict)
    weight: npt.NDArray[np.float64] | None = None
    weight_column: str | None = None

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
            weight=None if self.weight is None else self.weight[rows],
            weight_column=self.weight_column,
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


def read_header(path: Path, text_format: TextFormat = DEFAULT_FORMAT) -> list[str]:
    """Return the column names of a table file without reading its rows.

    Raises
    ------
    DataError
        If the file is empty or unreadable, or (CSV) its encoding, delimiter or compression
        is not what ``text_format`` says, naming the setting that fixes it.
    """
    path = resolve_data_file(path)
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            return [str(c) for c in pq.read_schema(path).names]
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read the header ({_one_line(exc)})") from exc
    try:
        header = read_header_fields(path, text_format)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the header ({_one_line(exc)})") from exc
    if not header:
        raise DataError(f"{path}: the file is empty; export the data with a header row")
    return header


def read_party_table(
    path: Path,
    *,
    id_column: str,
    label_column: str | None = None,
    features: Sequence[str] | None = None,
    categorical: Iterable[str] = (),
    id_scheme: IdScheme = "text",
    text_format: TextFormat = DEFAULT_FORMAT,
    refuse_mixed: bool = True,
    weight_column: str | None = None,
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
    text_format : TextFormat
        How the CSV is written: delimiter, encoding, decimal mark, extra missing tokens.
    refuse_mixed : bool
        Refuse a mostly numeric column holding some text (default). ``False`` reads it as
        categorical, for a caller whose declared schema then names the values that break
        its type (:func:`features.column_types.parse_feature`).
    weight_column : str, optional
        Column holding nonnegative sample weights (the bank's; never a feature).

    Returns
    -------
    PartyTable

    Raises
    ------
    DataError
        With the file, column, rows and values at fault and how to fix it.
    """
    path = resolve_data_file(path)
    raw = _read_raw(path, text_format)
    columns = [str(c) for c in raw.columns]
    _check_columns(path, columns, id_column, label_column, features)
    _check_weight_column(path, columns, weight_column, (id_column, label_column), features)
    if raw.empty:
        raise DataError(f"{path}: the table has a header but no rows; export the data again")

    ids = _normalise_ids(path, raw[id_column], id_column, id_scheme)
    label = (
        _parse_label(path, raw[label_column], label_column, text_format.na_values)
        if label_column
        else None
    )

    wanted = (
        list(features)
        if features is not None
        else [c for c in columns if c not in (id_column, label_column, weight_column)]
    )
    weight = (
        _parse_weight(path, raw[weight_column], weight_column, text_format)
        if weight_column
        else None
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
            f"this table; feature columns are {preview(wanted)}"
        )
    frame = {}
    kinds: dict[str, FeatureKind] = {}
    for name in wanted:
        series, kind = parse_feature(
            path,
            raw[name],
            name,
            force_categorical=name in forced,
            text_format=text_format,
            refuse_mixed=refuse_mixed,
        )
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
        weight=weight,
        weight_column=weight_column,
    )


def _has_supported_suffix(path: Path) -> bool:
    return any(path.name.endswith(s) for s in SUPPORTED_SUFFIXES)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _read_raw(path: Path, text_format: TextFormat) -> pd.DataFrame:
    if path.name.endswith(".parquet"):
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot parse the file ({_one_line(exc)})") from exc
        names = [str(c) for c in frame.columns]
    else:
        # The header first: it names a wrong compression, encoding or delimiter precisely.
        names = read_header(path, text_format)  # pandas renames duplicates ("a" -> "a.1")
        frame = _read_csv(path, text_format)
        if len(frame.columns) and (frame.iloc[:, -1] == "").any():
            _check_row_lengths(path, text_format)  # a short row looks like empty trailing cells
    duplicated = sorted({c for c in names if names.count(c) > 1})
    if duplicated:
        raise DataError(f"{path}: duplicate column names {duplicated}; rename them")
    return frame


def _read_csv(path: Path, text_format: TextFormat) -> pd.DataFrame:
    """Every cell of a CSV file as text (no NA conversion: :mod:`features.column_types` does it)."""
    try:
        return pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skipinitialspace=False,
            sep=text_format.delimiter,
            encoding=text_format.python_encoding,
            compression=compression_of(path),
        )
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file is empty; export the data with a header row") from exc
    except UnicodeDecodeError as exc:
        raise encoding_error(path, text_format) from exc
    except pd.errors.ParserError as exc:
        _check_row_lengths(path, text_format)  # names the lines; pandas names only the first
        raise DataError(f"{path}: cannot parse the file ({_one_line(exc)})") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot parse the file ({_one_line(exc)})") from exc


def _check_row_lengths(path: Path, text_format: TextFormat) -> None:
    """Refuse a CSV whose rows do not all have the header's number of fields.

    Raises
    ------
    DataError
        Naming the lines (as a text editor counts them) and their field counts.
    """
    bad: list[tuple[int, int]] = []
    n_bad = 0
    try:
        with open_text(path, text_format) as fh:
            reader = csv.reader(fh, delimiter=text_format.delimiter)
            header = next(reader, [])
            start = reader.line_num + 1
            for row in reader:
                if row and len(row) != len(header):
                    n_bad += 1
                    if len(bad) < MAX_SHOWN:
                        bad.append((start, len(row)))
                start = reader.line_num + 1
    except UnicodeDecodeError as exc:
        raise encoding_error(path, text_format) from exc
    if not n_bad:
        return
    shown = ", ".join(f"line {line} has {n}" for line, n in bad)
    more = f" (and {n_bad - len(bad)} more)" if n_bad > len(bad) else ""
    raise DataError(
        f"{path}: {n_bad} row(s) do not have the header's {len(header)} fields: {shown}{more}; "
        "fix those rows (a missing or extra separator, or a value with a "
        f"{_delimiter_name(text_format)} that is not quoted) so no value shifts into another "
        "column or goes missing"
    )


def _delimiter_name(text_format: TextFormat) -> str:
    return {",": "comma", ";": "semicolon", "\t": "tab"}.get(
        text_format.delimiter, repr(text_format.delimiter)
    )


def _check_columns(
    path: Path,
    columns: list[str],
    id_column: str,
    label_column: str | None,
    features: Sequence[str] | None,
) -> None:
    if id_column not in columns:
        raise DataError(
            f"{path}: id column '{id_column}' not found; columns are {preview(columns)}; "
            "set the party's 'id_column'"
        )
    if label_column is not None and label_column not in columns:
        raise DataError(
            f"{path}: label column '{label_column}' not found; columns are {preview(columns)}; "
            "set the party's 'label_column'"
        )
    if features is not None:
        missing = [f for f in features if f not in columns]
        if missing:
            raise DataError(
                f"{path}: feature columns {missing} not found; columns are {preview(columns)}"
            )
        clash = [f for f in features if f in (id_column, label_column)]
        if clash:
            raise DataError(f"{path}: {clash} is the id or label column and cannot be a feature")


def _check_weight_column(
    path: Path,
    columns: list[str],
    weight_column: str | None,
    reserved: tuple[str | None, ...],
    features: Sequence[str] | None,
) -> None:
    if weight_column is None:
        return
    if weight_column not in columns:
        raise DataError(
            f"{path}: weight column '{weight_column}' not found; columns are {preview(columns)}; "
            "set the party's 'weight_column' to the column of sample weights, or remove it"
        )
    if weight_column in reserved or (features is not None and weight_column in features):
        raise DataError(
            f"{path}: weight column '{weight_column}' is also the id, label or a feature column; "
            "a column of sample weights must be a column of its own"
        )


def _parse_weight(
    path: Path, series: pd.Series, column: str, text_format: TextFormat
) -> npt.NDArray[np.float64]:
    """Nonnegative finite weights; refuse missing, text, negative or infinite values by row."""
    fix = "fix those rows (a weight is a number >= 0) or remove the party's 'weight_column'"
    missing = missing_mask(series, text_format.na_values)
    if missing.any():
        where = np.flatnonzero(missing)
        raise DataError(
            f"{path}: {where.size} missing weight(s) in column '{column}' at "
            f"{rows_text(where, path)}; {fix}"
        )
    text = series.astype("string").str.strip()
    if text_format.decimal == ",":
        text = text.str.replace(",", ".", regex=False)
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(values) | (np.nan_to_num(values, nan=-1.0) < 0.0)
    if bad.any():
        head = f"{path}: weight column '{column}' must hold finite numbers >= 0, found"
        raise _bad_values(series, bad, head, path, f"; {fix}")
    if not (values > 0).any():
        raise DataError(f"{path}: weight column '{column}' holds only zeros; {fix}")
    return values.astype(np.float64)


def _bad_values(
    series: pd.Series, bad: npt.NDArray[np.bool_], head: str, path: Path, tail: str = ""
) -> DataError:
    """The error naming a column's ``bad`` values and rows (only a count when redacted)."""
    where = np.flatnonzero(bad)
    shown = list(dict.fromkeys(series.iloc[where].astype(str).tolist()))
    return DataError(
        f"{head} {preview(shown)} at {rows_text(where, path)}{tail}",
        redacted=f"{head} {len(shown)} other value(s) at {rows_text(where, path)}{tail}",
    )


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
            f"{path}: {empty.size} empty id(s) in column '{column}' at {rows_text(empty, path)}; "
            "every row needs an id"
        )
    ids = np.asarray(normalise(stripped, scheme).to_numpy(dtype=str), dtype=np.str_)
    invalid = invalid_positions(ids, scheme)
    if invalid.size:
        where = rows_text(invalid, path)
        head = f"{path}: {invalid.size} id(s) in column '{column}' are not valid {scheme} codes"
        raise DataError(
            f"{head}, e.g. {preview(ids[invalid].tolist())} at {where}; correct them or drop "
            "those rows",
            redacted=f"{head} at {where}; correct them or drop those rows",
        )
    dup_mask = pd.Series(ids).duplicated(keep=False).to_numpy()
    if dup_mask.any():
        dup_values = list(dict.fromkeys(ids[dup_mask].tolist()))
        where = rows_text(np.flatnonzero(dup_mask), path)
        fix = "each enterprise may appear once per table"
        raise DataError(
            f"{path}: {len(dup_values)} duplicate id(s) in column '{column}', e.g. "
            f"{preview(dup_values)} at {where}; {fix}",
            redacted=f"{path}: {len(dup_values)} duplicate id(s) in column '{column}' at "
            f"{where}; {fix}",
        )
    return ids


def _parse_label(
    path: Path, series: pd.Series, column: str, na_values: Sequence[str]
) -> npt.NDArray[np.int8]:
    missing = missing_mask(series, na_values)
    if missing.any():
        where = np.flatnonzero(missing)
        raise DataError(
            f"{path}: {where.size} missing label(s) in column '{column}' at "
            f"{rows_text(where, path)}; drop those rows or fill in 0/1"
        )
    numeric = pd.to_numeric(series.astype("string").str.strip(), errors="coerce")
    values = numeric.to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        head = f"{path}: label column '{column}' must hold 0 (good) or 1 (bad), found"
        raise _bad_values(series, bad, head, path)
    label = values.astype(np.int8)
    classes = np.unique(label)
    if classes.size < 2:
        raise DataError(
            f"{path}: label column '{column}' holds only the class {int(classes[0])}; a credit "
            "model needs both good (0) and bad (1) outcomes"
        )
    return label
