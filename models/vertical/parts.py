"""Model part files of the vertical models: safe file names, atomic writes, content hashes.

Each party of a vertical job keeps its half of the model as one JSON file in its own model
store; the bank's registered model refers to a platform's half by model id and content hash.
A model id arrives in messages another party wrote, so it must name a plain file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: A model id names a file in a party's model store, and arrives in messages another party
#: wrote: letters, digits, ``_``, ``.``, ``-`` only (no ``/``), starting with a letter or digit.
MODEL_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")


class ModelIdError(ValueError):
    """A model id would not be a plain file name in the party's model store."""


def model_file(folder: Path, model_id: str) -> Path:
    """``<folder>/<model_id>.json``, refusing an id that could point outside ``folder``.

    Raises
    ------
    ModelIdError
        If ``model_id`` is not a plain name (see :data:`MODEL_ID_PATTERN`).
    """
    if not MODEL_ID_PATTERN.fullmatch(model_id) or ".." in model_id:
        raise ModelIdError(
            f"model id {model_id!r} is not a plain name (letters, digits, '_', '.', '-'); "
            "refusing to use it as a file name"
        )
    return folder / f"{model_id}.json"


#: Suffix of the file binding a part written before parts named their bank (``lab platform bind``).
BINDING_SUFFIX = ".bank"


def bound_bank(folder: Path, model_id: str, own: str | None) -> str | None:
    """The bank a part serves: its ``own`` bank, else its binding file in ``folder``, else None."""
    if own is not None:
        return own
    try:
        return (folder / f"{model_id}{BINDING_SUFFIX}").read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def write_part(folder: Path, model_id: str, payload: Mapping[str, Any]) -> Path:
    """Write a part as ``<folder>/<model_id>.json`` (temporary file, rename)."""
    path = model_file(folder, model_id)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return path


def canonical_hash(payload: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of a JSON document in canonical form."""
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return f"sha256:{hashlib.sha256(blob).hexdigest()}"
