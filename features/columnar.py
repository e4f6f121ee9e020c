"""A party's validated table kept as columns on disk in its own store, memory-mapped.

A platform's table grows with enterprises x features: a million enterprises and 300 features
are 2.4 GB as ``float64``, ten million 24 GB. Held in a node's process memory, the raw
features alone would outgrow the machine before any model is trained. Instead, a node with a
store (its own folder, in its own domain) keeps each validated table once as one file per
column and maps them into memory: the operating system pages columns in as a step reads them
and drops them again under pressure, so what a process holds in its own memory grows with the
rows (ids, labels, a column at a time), not with rows x features.

- **Built column by column.** :func:`load_columnar` reads and validates the file with
  :func:`features.io.read_party_columns` (a large table a group of columns at a time) and
  writes each parsed column as it comes; the same validation, the same errors. A file that
  fails validation leaves nothing behind.
- **Keyed by content.** An entry is named by the file's SHA-256 digest (computed once per
  version of the file: its path, inode, size and modification time) and the options it was
  read with; a changed file is a new entry, and building it removes this store's entries of
  the same file's other versions, whatever options they were read with (an enterprise removed
  from the file does not stay in a copy).
- **Admitted rows and derived matrices.** :func:`store_subset` writes a subset of rows (what a
  node's governance policy admitted for a job) the same way, column by column, beside its
  table; :func:`kept_matrix` keeps a matrix derived from it (a job's binned training rows, one
  byte per row x feature) as a mapped file there too, built once for every process of the
  party.
- **In the party's domain only.** Folders are created ``0700`` and files ``0600``; entries are
  written under a temporary name and renamed, so a reader never sees half an entry.

Numeric columns are stored as ``float64`` (``NaN`` = missing); a categorical column as
``int32`` codes (``-1`` = missing) with its categories in the entry's ``meta.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.column_types import FeatureKind
from features.errors import DataError
from features.io import PartyTable, TableRows, file_digest, read_party_columns, resolve_data_file

__all__ = [
    "COLUMNAR_FORMAT",
    "KEPT_DERIVED",
    "KEPT_SUBSETS",
    "kept_matrix",
    "load_columnar",
    "open_columnar",
    "store_subset",
]

logger = logging.getLogger(__name__)

#: Version of the on-disk layout; an entry of another version is rebuilt.
COLUMNAR_FORMAT = 1

#: Admitted-row subsets kept beside one table (most recently used first); older ones go.
KEPT_SUBSETS = 4

#: Matrices derived from one table (a job's binned rows) kept beside it; older ones go.
KEPT_DERIVED = 4

_META = "meta.json"
_SUBSETS = "subsets"
_DERIVED = "derived"
#: Folder of notes of each file version's digest (by path, inode, size and time).
_DIGESTS = ".digests"
#: A temporary entry older than this is a crashed writer's and is removed.
_STALE_SECONDS = 3600.0


def load_columnar(path: Path, root: Path, **options: Any) -> PartyTable:
    """The validated table of ``path``, from (or built into) the columnar store ``root``.

    Parameters
    ----------
    path : Path
        The party's table file (or a directory holding exactly one).
    root : Path
        The store's folder for columnar tables (in the party's own domain).
    **options
        Keyword arguments of :func:`features.io.read_party_columns` (id column, features,
        text format, ...); part of the entry's key.

    Returns
    -------
    PartyTable
        Its ``features`` are memory-mapped columns (read-only); ``columns_dir`` names the
        entry.

    Raises
    ------
    DataError
        As :func:`features.io.read_party_table`; nothing is written then.
    """
    path = resolve_data_file(path)
    before = _identity(path)
    remembered = _remembered_digest(root, path, before)
    digest = remembered or file_digest(path)
    entry = root / _entry_name(digest, options)
    if not _complete(entry):
        rows, columns = read_party_columns(path, **options)
        n_columns = _write_entry(entry, rows, columns, source=path)
        if rows.digest != digest or _identity(path) != before:
            shutil.rmtree(entry, ignore_errors=True)
            raise DataError(
                f"{path}: the file changed while it was read; read it again once it is stable"
            )
        logger.info("kept %s as %d columns in %s", path, n_columns, entry)
        _remove_older_versions(root, path, digest)
    if remembered is None:
        _remember_digest(root, path, before, digest)
    return replace(open_columnar(entry), path=path)  # the same bytes may sit at another path


def _identity(path: Path) -> tuple[int, int, int]:
    """Inode, size and modification time: what changes when a file is rewritten or replaced."""
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _digest_note(root: Path, path: Path, identity: tuple[int, int, int]) -> Path:
    name = hashlib.sha256(json.dumps([str(path), *identity]).encode()).hexdigest()[:32]
    return root / _DIGESTS / name


def _remembered_digest(root: Path, path: Path, identity: tuple[int, int, int]) -> str | None:
    """The digest of this version of ``path`` (same inode, size and time), if computed before.

    A node that starts a process per message would otherwise hash its whole file on every
    message. The table's own digest check (``rows.digest``, on every build) still reads it.
    """
    try:
        note = json.loads(_digest_note(root, path, identity).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    digest = note.get("digest") if note.get("source") == str(path) else None
    return digest if isinstance(digest, str) else None


def _remember_digest(root: Path, path: Path, identity: tuple[int, int, int], digest: str) -> None:
    """Note ``digest`` for this version of ``path``, forgetting its other versions' notes."""
    folder = root / _DIGESTS
    folder.mkdir(exist_ok=True, mode=0o700)  # root exists: it holds the version's entry
    note = _digest_note(root, path, identity)
    for other in folder.iterdir():
        if other == note or other.name.endswith(".tmp"):
            continue
        with contextlib.suppress(OSError, ValueError):
            if json.loads(other.read_text(encoding="utf-8")).get("source") == str(path):
                other.unlink()
    temporary = folder / f".{note.name}.{secrets.token_hex(6)}.tmp"
    _write_private(temporary, json.dumps({"source": str(path), "digest": digest}).encode())
    temporary.rename(note)


def open_columnar(entry: Path) -> PartyTable:
    """The table kept in ``entry`` (its features memory-mapped, read-only).

    Raises
    ------
    DataError
        If the entry is incomplete or of another layout version.
    """
    if not _complete(entry):
        raise DataError(
            f"{entry}: not a complete columnar table; remove it and read the file again"
        )
    meta = json.loads((entry / _META).read_text(encoding="utf-8"))
    frame: dict[str, pd.Series] = {}
    kinds: dict[str, FeatureKind] = {}
    for i, column in enumerate(meta["features"]):
        name = column["name"]
        values = np.load(entry / f"{i}.npy", mmap_mode="r").view(np.ndarray)
        if column["kind"] == "numeric":
            frame[name] = pd.Series(values, name=name, dtype="float64", copy=False)
        else:
            categories = pd.Index(column["categories"], dtype="string")
            frame[name] = pd.Series(
                pd.Categorical.from_codes(values, categories=categories), name=name
            )
        kinds[name] = column["kind"]
    rows = TableRows(
        path=Path(meta["source"]),
        digest=meta["digest"],
        ids=np.load(entry / "ids.npy"),
        label=_optional(entry / "label.npy"),
        id_column=meta["id_column"],
        label_column=meta["label_column"],
        feature_names=tuple(frame),
        weight=_optional(entry / "weight.npy"),
        weight_column=meta["weight_column"],
    )
    table = rows.with_features(pd.DataFrame(frame, copy=False), kinds)
    return table.kept_in(entry)


def store_subset(table: PartyTable, mask: npt.NDArray[np.bool_]) -> PartyTable:
    """``table.subset(mask)``, written column by column beside the table's entry and mapped.

    For a table kept in a columnar store (``table.columns_dir``); any other table gives its
    in-memory subset. The :data:`KEPT_SUBSETS` most recently used subsets of a table are kept.
    """
    if table.columns_dir is None:
        return table.subset(mask)
    key = hashlib.blake2b(digest_size=16)
    key.update(np.packbits(mask).tobytes())
    key.update(str(mask.size).encode())
    key.update(json.dumps(table.feature_names).encode())
    folder = table.columns_dir / _SUBSETS
    entry = folder / key.hexdigest()
    if not _complete(entry):
        rows = TableRows(
            path=table.path,
            digest=table.digest,
            ids=table.ids[mask],
            label=None if table.label is None else table.label[mask],
            id_column=table.id_column,
            label_column=table.label_column,
            feature_names=tuple(table.feature_names),
            weight=None if table.weight is None else table.weight[mask],
            weight_column=table.weight_column,
        )
        columns = (
            (_take(table.features[name], mask), table.feature_kinds[name])
            for name in table.feature_names
        )
        _write_entry(entry, rows, columns, source=table.path)
    with contextlib.suppress(FileNotFoundError):
        os.utime(entry / _META)  # most recently used
    _keep_newest(folder, KEPT_SUBSETS, keep_path=entry)
    return open_columnar(entry)


def kept_matrix(
    table: PartyTable,
    key: str,
    shape: tuple[int, int],
    dtype: npt.DTypeLike,
    build: Callable[[npt.NDArray[Any]], object],
) -> npt.NDArray[Any]:
    """A matrix derived from ``table`` (a job's binned rows), kept beside it and mapped.

    ``build`` fills a writable ``shape`` x ``dtype`` array once (a memory-mapped file of the
    entry, written under a temporary name and renamed); every later call, in this process or
    another, maps the same file read-only. ``key`` names the matrix (a digest of what it is
    derived from). The :data:`KEPT_DERIVED` most recently used matrices of a table are kept.
    A table not kept in a store (no ``columns_dir``) gets its matrix built in memory.
    """
    if table.columns_dir is None:
        out = np.empty(shape, dtype=dtype)
        build(out)
        return out
    folder = table.columns_dir / _DERIVED
    path = folder / f"{key}.npy"
    if not path.is_file():
        folder.mkdir(mode=0o700, exist_ok=True)
        _remove_stale(folder)
        temporary = folder / f".{key}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            out = np.lib.format.open_memmap(temporary, mode="w+", dtype=dtype, shape=shape)
            build(out)
            out.flush()
            del out
            temporary.rename(path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    with contextlib.suppress(FileNotFoundError):
        os.utime(path)  # most recently used
    _keep_newest_files(folder, KEPT_DERIVED, keep_path=path)
    loaded: npt.NDArray[Any] = np.load(path, mmap_mode="r").view(np.ndarray)
    if loaded.shape != shape or loaded.dtype != np.dtype(dtype):
        raise DataError(f"{path}: holds {loaded.shape} {loaded.dtype}, not {shape}; remove it")
    return loaded


def _take(series: pd.Series, mask: npt.NDArray[np.bool_]) -> pd.Series:
    return series.loc[mask].reset_index(drop=True)


def _entry_name(digest: str, options: Mapping[str, Any]) -> str:
    key = json.dumps(
        {"format": COLUMNAR_FORMAT, "digest": digest, "options": _plain(options)},
        sort_keys=True,
    )
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _plain(value: Any) -> Any:
    """JSON-able form of a read option (text formats and tuples included)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_plain(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


def _write_entry(
    entry: Path,
    rows: TableRows,
    columns: Iterable[tuple[pd.Series, FeatureKind]],
    *,
    source: Path,
) -> int:
    """Write ``rows`` and each column as it comes, then rename the entry into place.

    Returns the number of columns. On any error the partial entry is removed.
    """
    entry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _remove_stale(entry.parent)
    temporary = entry.with_name(f".{entry.name}.{secrets.token_hex(6)}.tmp")
    temporary.mkdir(mode=0o700)
    try:
        _save(temporary / "ids.npy", rows.ids)
        if rows.label is not None:
            _save(temporary / "label.npy", rows.label)
        if rows.weight is not None:
            _save(temporary / "weight.npy", rows.weight)
        described: list[dict[str, Any]] = []
        for i, (series, kind) in enumerate(columns):
            if len(series) != len(rows.ids):
                raise DataError(
                    f"{source}: column '{series.name}' has {len(series)} rows, the ids "
                    f"{len(rows.ids)}; read the file again"
                )
            described.append(_save_column(temporary / f"{i}.npy", series, kind))
        meta = {
            "format": COLUMNAR_FORMAT,
            "source": str(source),
            "digest": rows.digest,
            "id_column": rows.id_column,
            "label_column": rows.label_column,
            "weight_column": rows.weight_column,
            "n_rows": len(rows.ids),
            "features": described,
        }
        _write_private(temporary / _META, json.dumps(meta).encode())
        if entry.exists() and not _complete(entry):
            shutil.rmtree(entry, ignore_errors=True)  # a crashed writer's, or an older layout
        try:
            temporary.rename(entry)
        except OSError:
            if not _complete(entry):  # another writer's complete entry is as good as ours
                raise
            shutil.rmtree(temporary, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return len(described)


def _save_column(path: Path, series: pd.Series, kind: FeatureKind) -> dict[str, Any]:
    described: dict[str, Any] = {"name": str(series.name), "kind": kind}
    if kind == "numeric":
        _save(path, series.to_numpy(dtype=np.float64, na_value=np.nan))
    else:
        categorical = series.astype("category")
        described["categories"] = [str(c) for c in categorical.cat.categories]
        _save(path, categorical.cat.codes.to_numpy().astype(np.int32))
    return described


def _save(path: Path, values: npt.NDArray[Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        np.save(fh, np.ascontiguousarray(values), allow_pickle=False)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _optional(path: Path) -> Any:
    return np.load(path) if path.is_file() else None


def _complete(entry: Path) -> bool:
    meta = entry / _META
    if not meta.is_file():
        return False
    try:
        return bool(json.loads(meta.read_text(encoding="utf-8")).get("format") == COLUMNAR_FORMAT)
    except (OSError, ValueError):
        return False


def _remove_older_versions(root: Path, source: Path, digest: str) -> None:
    """Remove ``root``'s entries of ``source`` kept from another version (digest) of it.

    Entries of this version read with other options (other columns, say) stay.
    """
    for entry in root.iterdir():
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        try:
            meta = json.loads((entry / _META).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if meta.get("source") == str(source) and meta.get("digest") != digest:
            shutil.rmtree(entry, ignore_errors=True)
            logger.info("removed %s, a columnar copy of an older version of %s", entry, source)


def _keep_newest(folder: Path, keep: int, *, keep_path: Path) -> None:
    entries = [e for e in folder.iterdir() if e.is_dir() and not e.name.startswith(".")]
    entries.sort(key=lambda e: (e == keep_path, _mtime(e / _META)), reverse=True)
    for entry in entries[keep:]:
        shutil.rmtree(entry, ignore_errors=True)


def _keep_newest_files(folder: Path, keep: int, *, keep_path: Path) -> None:
    files = [f for f in folder.iterdir() if f.suffix == ".npy" and not f.name.startswith(".")]
    files.sort(key=lambda f: (f == keep_path, _mtime(f)), reverse=True)
    for file in files[keep:]:
        file.unlink(missing_ok=True)


def _remove_stale(folder: Path) -> None:
    now = time.time()
    for entry in folder.iterdir():
        if entry.name.endswith(".tmp") and now - _mtime(entry) > _STALE_SECONDS:
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
