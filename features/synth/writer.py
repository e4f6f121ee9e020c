"""Write a generated dataset to disk (CSV + JSON metadata + manifest) and read it back."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd

from features.safe_csv import write_csv
from features.synth.config import SMEConfig
from features.synth.generator import SMEDataset
from features.synth.schema import COLUMNS, ID_COLUMN, LABEL_COLUMN, ColumnInfo

__all__ = ["MANIFEST_VERSION", "build_manifest", "load", "write"]

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1
"""Version of the manifest layout."""

_BANK_FILE = re.compile(r"^bank_\d+\.csv$")
_OWN_FILES = ("platform.csv", "columns.json", "manifest.json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(dataset: SMEDataset, files: dict[str, Path] | None = None) -> dict[str, Any]:
    """Describe a dataset: config, row counts, default rates, overlap, file hashes.

    Parameters
    ----------
    dataset : SMEDataset
        Generated data.
    files : dict of str to Path, optional
        Files written, by name; their sha256 and size are recorded.

    Returns
    -------
    dict
        JSON-ready manifest.
    """
    platform_ids = pd.Index(dataset.platform[ID_COLUMN])
    banks: dict[str, Any] = {}
    for name, frame in dataset.banks.items():
        matched = int(platform_ids.isin(frame[ID_COLUMN]).sum())
        banks[name] = {
            "profile": dataset.bank_profiles[name],
            "rows": len(frame),
            "default_rate": float(frame[LABEL_COLUMN].mean()),
            "defaults": int(frame[LABEL_COLUMN].sum()),
            "matched_with_platform": matched,
            "unmatched": len(frame) - matched,
            "matched_fraction": matched / len(frame),
        }
    return {
        "manifest_version": MANIFEST_VERSION,
        "generator": "features.synth",
        "id_column": ID_COLUMN,
        "label_column": LABEL_COLUMN,
        "config": dataset.config.to_dict(),
        "platform": {"rows": len(dataset.platform), "columns": dataset.platform.shape[1]},
        "banks": banks,
        "files": {
            name: {"sha256": _sha256(path), "bytes": path.stat().st_size}
            for name, path in sorted((files or {}).items())
        },
    }


def write(dataset: SMEDataset, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``platform.csv``, ``bank_k.csv``, ``columns.json`` and ``manifest.json``.

    Parameters
    ----------
    dataset : SMEDataset
        Generated data.
    out_dir : str or Path
        Target directory, created if needed.
    overwrite : bool, optional
        Allow writing into a non-empty directory. Files this function writes
        are replaced and stale ``bank_k.csv`` files from an earlier run are
        removed; other files are left alone.

    Returns
    -------
    Path
        The manifest's path.

    Raises
    ------
    FileExistsError
        If ``out_dir`` is a file, or a non-empty directory and ``overwrite`` is false.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory; choose another out_dir")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out} is not empty; refusing to overwrite. Pass overwrite=True to "
                "replace the generated files, or choose an empty directory."
            )
        for old in out.iterdir():
            if old.is_file() and (old.name in _OWN_FILES or _BANK_FILE.match(old.name)):
                old.unlink()
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    tables = {"platform": dataset.platform, **dataset.banks}
    for name, frame in tables.items():
        path = out / f"{name}.csv"
        write_csv(frame, path, lineterminator="\n")
        files[path.name] = path
    meta = {name: info.to_dict() for name, info in dataset.columns.items()}
    path = out / "columns.json"
    path.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    files[path.name] = path
    manifest = build_manifest(dataset, files)
    manifest_path = out / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote %d files to %s", len(files) + 1, out)
    return manifest_path


def load(out_dir: str | Path, *, verify: bool = True) -> SMEDataset:
    """Read a dataset written by :func:`write`, restoring dtypes.

    Parameters
    ----------
    out_dir : str or Path
        Directory holding ``manifest.json``.
    verify : bool, optional
        Check every file's sha256 against the manifest.

    Returns
    -------
    SMEDataset
        Equal to the dataset that was written.

    Raises
    ------
    FileNotFoundError
        If the manifest or a listed file is missing.
    ValueError
        If a checksum does not match.
    """
    out = Path(out_dir)
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    if verify:
        for name, entry in manifest["files"].items():
            if _sha256(out / name) != entry["sha256"]:
                raise ValueError(f"{out / name} does not match its sha256 in manifest.json")
    raw = json.loads((out / "columns.json").read_text(encoding="utf-8"))
    columns = {name: _column_info(d) for name, d in raw.items()}
    config = _config(manifest["config"])
    platform = _read(out / "platform.csv", columns)
    banks = {name: _read(out / f"{name}.csv", columns) for name in manifest["banks"]}
    profiles = {name: str(entry["profile"]) for name, entry in manifest["banks"].items()}
    return SMEDataset(
        config=config, platform=platform, banks=banks, columns=columns, bank_profiles=profiles
    )


def _read(path: Path, columns: dict[str, ColumnInfo]) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={ID_COLUMN: "str"}, keep_default_na=False, na_values=[""])
    for name in frame.columns:
        info = columns.get(name, COLUMNS.get(name))
        if info is not None and info.dtype == "categorical":
            frame[name] = pd.Categorical(frame[name], categories=list(info.categories or ()))
    return frame


def _column_info(d: dict[str, Any]) -> ColumnInfo:
    cats = d.get("categories")
    return ColumnInfo(**{**d, "categories": None if cats is None else tuple(cats)})


def _config(d: dict[str, Any]) -> SMEConfig:
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return SMEConfig(**fields)
