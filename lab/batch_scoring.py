"""Batch scoring at the bank: a registered vertical model over a file of enterprises.

``lab score NAME[@ALIAS] --input FILE --out FILE`` loads the registered version (the bank's
part, from its MLflow registry) and scores every row of the input, a CSV with the bank's columns
and ``enterprise_id``: the model asks each platform's scoring endpoint for its half (URL and
token from the environment, :mod:`lab.serving.client`), exactly as the served model does. The
output CSV has, per input row in order, ``enterprise_id``, ``probability``, ``margin``, ``base``
and the top ``--reasons`` (default 4) reason codes ``reason_i`` / ``reason_i_value``: the bank's
columns and the platforms' feature groups that raised the risk most, with their signed
log-odds contributions. ``--reasons 0`` writes probabilities only.

Nothing partial is left behind: the output is written to a temporary file beside it and moved
into place only when every row was scored.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.safe_csv import write_csv
from lab.errors import InputError, JobError
from lab.registry import DEFAULT_PURPOSE, ID_COLUMN, REASONS_OUTPUT
from models.explanations import (
    DEFAULT_REASONS,
    AttributionRefusedError,
    ExplanationUnavailableError,
    check_reasons,
)

#: Alias scored when the model reference names none.
DEFAULT_ALIAS = "champion"


@dataclass(frozen=True)
class ScoredFile:
    """What :func:`score_file` wrote."""

    path: Path
    model_uri: str
    n_rows: int
    reasons: int


def model_uri(reference: str) -> str:
    """``models:/NAME@ALIAS`` of ``NAME``, ``NAME@ALIAS`` or ``NAME/VERSION``; a URI as is."""
    if reference.startswith("models:/"):
        return reference
    if "@" in reference or "/" in reference:
        return f"models:/{reference}"
    return f"models:/{reference}@{DEFAULT_ALIAS}"


def open_registry(label: str, tracking_uri: str | None = None) -> str:
    """Point MLflow at the bank's registry (``tracking_uri`` or this home's) and return it.

    Raises
    ------
    InputError
        If this home's sqlite registry does not exist (nothing was trained here), naming
        ``label`` (the model asked for) and the fix.
    """
    import mlflow

    from lab.tracking import default_tracking_uri

    store = tracking_uri or default_tracking_uri()
    if store.startswith("sqlite:///") and not Path(store.removeprefix("sqlite:///")).is_file():
        raise InputError(
            f"{label}: no registry at {store.removeprefix('sqlite:///')} (nothing was trained in "
            "this home); set LAB_HOME, MLFLOW_TRACKING_URI or --tracking-uri to the bank's registry"
        )
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    return store


def read_input(path: Path) -> pd.DataFrame:
    """The enterprises to score: a CSV with ``enterprise_id`` and the bank's columns.

    Raises
    ------
    InputError
        If the file is missing, unreadable, empty or lacks ``enterprise_id`` (or has empty ids).
    """
    if not path.is_file():
        raise InputError(f"{path}: no such file; pass the CSV of enterprises to score")
    try:
        frame = pd.read_csv(path, dtype={ID_COLUMN: str})
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable CSV ({exc}); save it as UTF-8 CSV") from exc
    if ID_COLUMN not in frame.columns:
        raise InputError(
            f"{path}: no '{ID_COLUMN}' column (line 1 has {list(frame.columns)[:6]}); add the "
            "enterprise ids the platform scores"
        )
    if frame.empty:
        raise InputError(f"{path}: no rows to score")
    empty = frame.index[frame[ID_COLUMN].isna()]
    if len(empty):
        raise InputError(
            f"{path}:{int(empty[0]) + 2}: '{ID_COLUMN}' is empty; fill it or drop the row"
        )
    numeric = frame.columns.drop(ID_COLUMN)
    for column in numeric:
        if pd.api.types.is_integer_dtype(frame[column]):
            frame[column] = frame[column].astype(float)  # the signature's doubles
    return frame


def score_file(
    reference: str,
    source: Path,
    target: Path,
    *,
    purpose: str | None = None,
    reasons: int | None = None,
    tracking_uri: str | None = None,
) -> ScoredFile:
    """Score ``source`` with the registered model ``reference`` into ``target`` (see module).

    Raises
    ------
    InputError
        Bad input file, model reference or number of reasons; a model that cannot explain
        (e.g. a platform withheld its feature groups), naming the fix.
    JobError
        A platform refused or could not be asked (its reason), or the model failed.
    """
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    purpose = purpose or DEFAULT_PURPOSE
    try:
        k = check_reasons(DEFAULT_REASONS if reasons is None else reasons)
    except ValueError as exc:
        raise InputError(f"--reasons: {exc}") from exc
    frame = read_input(source)
    if target.exists() and target.is_dir():
        raise InputError(f"{target}: is a folder; name the output CSV file")
    if not target.parent.is_dir():
        raise InputError(f"{target.parent}: no such folder; create it or choose another --out")
    uri = model_uri(reference)
    open_registry(uri, tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(uri)
    except MlflowException as exc:
        raise InputError(
            f"{uri}: {exc.message.splitlines()[0]}; lab models list shows the registered models"
        ) from exc
    params: dict[str, str | int] = {"purpose": purpose}
    if k:
        params |= {"output": REASONS_OUTPUT, "reasons": k}
    try:
        result = model.predict(frame, params=params)
    except (AttributionRefusedError, ExplanationUnavailableError) as exc:
        raise InputError(f"{uri}: {exc}") from exc
    except MlflowException as exc:
        raise JobError(f"{uri}: {exc.message}") from exc
    except ValueError as exc:
        raise InputError(f"{source}: {exc}") from exc
    if k and not isinstance(result, pd.DataFrame):
        raise InputError(
            f"{uri}: this version was registered before reason codes (its signature has no "
            "'output' parameter); score it with --reasons 0, or retrain"
        )
    scored = (
        result.reset_index(drop=True)
        if isinstance(result, pd.DataFrame)
        else pd.DataFrame({"probability": list(result)})
    )
    scored.insert(0, ID_COLUMN, frame[ID_COLUMN].to_numpy())
    handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    try:
        write_csv(scored, Path(tmp))
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return ScoredFile(path=target, model_uri=uri, n_rows=len(scored), reasons=k)
