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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
    "READ_CELLS",
    "SUPPORTED_SUFFIXES",
    "FeatureKind",
    "PartyTable",
    "TableRows",
    "file_digest",
    "read_header",
    "read_party_columns",
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
    columns_dir : Path or None
        Where the table is kept column by column, memory-mapped (:mod:`features.columnar`);
        ``None``: held in memory.
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
    columns_dir: Path | None = None

    @property
    def n_rows(self) -> int:
        """Number of rows (enterprises) in the table."""
        return len(self.ids)

    @property
    def feature_names(self) -> list[str]:
        """Feature column names, in file order."""
        return list(self.features.columns)

    def kept_in(self, entry: Path) -> PartyTable:
        """This table, noted as kept column by column in ``entry`` (:mod:`features.columnar`)."""
        return replace(self, columns_dir=entry)

    def subset(self, rows: npt.NDArray[np.bool_]) -> PartyTable:
        """The same table restricted to ``rows`` (a boolean mask), in the same order.

        In memory (:func:`features.columnar.store_subset` keeps a subset on disk instead).
        """
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
            schema = pq.read_schema(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read the header ({_one_line(exc)})") from exc
        # A frame's index saved by pandas is not a column of the table (pandas reads it back
        # as the index).
        index = {
            c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)
        }
        return [str(c) for c in schema.names if c not in index]
    try:
        header = read_header_fields(path, text_format)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the header ({_one_line(exc)})") from exc
    if not header:
        raise DataError(f"{path}: the file is empty; export the data with a header row")
    return header


@dataclass(frozen=True)
class TableRows:
    """A validated table's rows without its features: ids, labels, weights, column names.

    What :func:`read_party_columns` gives before the feature columns, and with them a
    :class:`PartyTable` (:meth:`with_features`).
    """

    path: Path
    digest: str
    ids: npt.NDArray[np.str_]
    label: npt.NDArray[np.int8] | None
    id_column: str
    label_column: str | None
    feature_names: tuple[str, ...]
    weight: npt.NDArray[np.float64] | None = None
    weight_column: str | None = None

    def with_features(self, features: pd.DataFrame, kinds: Mapping[str, FeatureKind]) -> PartyTable:
        """The whole table, with ``features`` (this table's feature columns, parsed)."""
        return PartyTable(
            path=self.path,
            digest=self.digest,
            ids=self.ids,
            features=features,
            label=self.label,
            id_column=self.id_column,
            label_column=self.label_column,
            feature_kinds=dict(kinds),
            weight=self.weight,
            weight_column=self.weight_column,
        )


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
    rows, columns = read_party_columns(
        path,
        id_column=id_column,
        label_column=label_column,
        features=features,
        categorical=categorical,
        id_scheme=id_scheme,
        text_format=text_format,
        refuse_mixed=refuse_mixed,
        weight_column=weight_column,
    )
    frame: dict[str, pd.Series] = {}
    kinds: dict[str, FeatureKind] = {}
    for series, kind in columns:
        frame[str(series.name)] = series
        kinds[str(series.name)] = kind
    logger.debug("read %s: %d rows, %d features", rows.path, len(rows.ids), len(frame))
    return rows.with_features(pd.DataFrame(frame), kinds)


def read_party_columns(
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
    read_cells: int | None = None,
) -> tuple[TableRows, Iterator[tuple[pd.Series, FeatureKind]]]:
    """:func:`read_party_table`, its feature columns one at a time.

    The rows (ids, labels, weights) are read and validated at once; the feature columns are
    parsed and validated as the iterator is consumed, in file order. A table of more than
    ``read_cells`` cells (default :data:`READ_CELLS`) is read a group of columns at a time
    (Parquet: from the file's column chunks; CSV: one pass over the file per group), so the
    text or values of the whole table never sit in memory at once: a consumer that writes each
    column away (:mod:`features.columnar`) holds one group. Same parameters, errors and
    validation as :func:`read_party_table`; a feature column's error is raised when the
    iterator reaches it.
    """
    path = resolve_data_file(path)
    cells = READ_CELLS if read_cells is None else read_cells
    source = _RawSource.open(path, text_format, cells)
    columns = source.names
    _check_columns(path, columns, id_column, label_column, features)
    _check_weight_column(path, columns, weight_column, (id_column, label_column), features)
    keys = [c for c in (id_column, label_column, weight_column) if c is not None]
    raw = source.read(keys)
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
    del raw
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
    rows = TableRows(
        path=path,
        digest=file_digest(path),
        ids=ids,
        label=label,
        id_column=id_column,
        label_column=label_column,
        feature_names=tuple(wanted),
        weight=weight,
        weight_column=weight_column,
    )

    def parsed() -> Iterator[tuple[pd.Series, FeatureKind]]:
        for group in source.groups(wanted, len(ids)):
            raw_group = source.read(group)
            for name in group:
                yield parse_feature(
                    path,
                    raw_group[name],
                    name,
                    force_categorical=name in forced,
                    text_format=text_format,
                    refuse_mixed=refuse_mixed,
                )
            del raw_group

    return rows, parsed()


#: Most cells of a table read at once (source of truth); a bigger table is read a group of
#: columns at a time. 20 million cells: 160 MB as float64, a few hundred MB as CSV text.
READ_CELLS = 20_000_000

#: Bytes of CSV text a table may have to be read in one pass (a gzip or bz2 file counts
#: :data:`_COMPRESSION_RATIO` times its size).
_READ_CSV_BYTES = 256 * 2**20
_COMPRESSION_RATIO = 5


@dataclass
class _RawSource:
    """A table file read as raw columns: all at once when small, else by groups of columns."""

    path: Path
    text_format: TextFormat
    names: list[str]
    read_cells: int
    whole: pd.DataFrame | None

    @classmethod
    def open(cls, path: Path, text_format: TextFormat, read_cells: int) -> _RawSource:
        """Read the header (and the whole file, when it is small)."""
        if path.name.endswith(".parquet"):
            import pyarrow.parquet as pq

            try:
                meta = pq.ParquetFile(path).metadata
            except (OSError, ValueError) as exc:
                raise DataError(f"{path}: cannot parse the file ({_one_line(exc)})") from exc
            small = meta.num_rows * meta.num_columns <= read_cells
        else:
            size = path.stat().st_size
            if compression_of(path) is not None:
                size *= _COMPRESSION_RATIO
            small = size <= _READ_CSV_BYTES and read_cells >= READ_CELLS
        if small:
            whole = _read_raw(path, text_format)
            return cls(path, text_format, [str(c) for c in whole.columns], read_cells, whole)
        names = read_header(path, text_format)
        _check_duplicates(path, names)
        if not path.name.endswith(".parquet"):
            _check_row_lengths(path, text_format)  # a short row must not shift any group
        return cls(path, text_format, names, read_cells, None)

    def read(self, names: Sequence[str]) -> pd.DataFrame:
        """The raw values of ``names`` (every row)."""
        if self.whole is not None:
            return self.whole.loc[:, list(names)]
        if self.path.name.endswith(".parquet"):
            try:
                return pd.read_parquet(self.path, columns=list(names))
            except (OSError, ValueError) as exc:
                raise DataError(f"{self.path}: cannot parse the file ({_one_line(exc)})") from exc
        return _read_csv(self.path, self.text_format, list(names))

    def groups(self, names: Sequence[str], n_rows: int) -> Iterator[list[str]]:
        """``names`` in groups of at most ``read_cells`` cells (one group when read whole)."""
        if self.whole is not None:
            yield list(names)
            return
        size = max(1, self.read_cells // max(1, n_rows))
        for start in range(0, len(names), size):
            yield list(names[start : start + size])


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
    _check_duplicates(path, names)
    return frame


def _check_duplicates(path: Path, names: Sequence[str]) -> None:
    duplicated = sorted({c for c in names if names.count(c) > 1})
    if duplicated:
        raise DataError(f"{path}: duplicate column names {duplicated}; rename them")


def _read_csv(
    path: Path, text_format: TextFormat, usecols: Sequence[str] | None = None
) -> pd.DataFrame:
    """Cells of a CSV file as text (no NA conversion: :mod:`features.column_types` does it).

    ``usecols``: only these columns (every row); default every column.
    """
    try:
        return pd.read_csv(
            path,
            usecols=None if usecols is None else list(usecols),
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
