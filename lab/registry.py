"""The bank's model registry: MLflow model versions of vertical models.

A registered SecureBoost version holds the bank's part (tree structure, its own rules, leaf
weights) as an MLflow pyfunc model, plus, as version tags, the id and content hash of each
platform's part, which stays in the platform's domain. No key material is in either part.

The pyfunc scores a DataFrame with the bank's feature columns and either

- (embedded) for every platform split the model uses, a boolean column
  ``platform:<party>:<split_id>`` holding that platform's left/right decision, or
- (served) a string column ``enterprise_id``: the pyfunc then asks each platform's scoring
  endpoint for its decisions over HTTP (:mod:`lab.serving.client`; URL and credential from the
  serving process's environment, never from the registered model).

It returns default probabilities, not labels. The ``purpose`` parameter (default
``loan_approval``) is what the platform checks each enterprise's authorization for. With
``output="reasons"`` it returns a frame of ``probability``, ``margin``, ``base`` and the top
``reasons`` (default 4) reason codes ``reason_i`` / ``reason_i_value``: the bank's columns and the
platforms' feature groups that raised the risk most, with their signed log-odds contributions
(:mod:`models.secureboost.explain`).
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from lab import tracking
from models.secureboost.parts import BankPart

#: Model-version tag holding the platform parts' references (JSON).
TAG_PLATFORM_PARTS = "lab.platform_parts"
TAG_BANK_PART_HASH = "lab.bank_part_hash"
DECISION_PREFIX = "platform:"
#: Input column naming the enterprise when the model asks the platform's endpoint.
ID_COLUMN = "enterprise_id"
#: Purpose the platform checks authorizations for unless the caller passes ``params``.
DEFAULT_PURPOSE = "loan_approval"
#: What a registered vertical model returns unless the caller passes ``params["output"]``.
DEFAULT_OUTPUT = "probability"
#: The ``output`` that adds contributions and reason codes.
REASONS_OUTPUT = "reasons"

try:  # MLflow is heavy; import it only where the registry is used.
    import mlflow.pyfunc

    _PythonModel: Any = mlflow.pyfunc.PythonModel
except ImportError:  # pragma: no cover - mlflow is a hard dependency
    _PythonModel = object


def decision_column(party: str, split_id: str) -> str:
    """Input column carrying one platform split's decision."""
    return f"{DECISION_PREFIX}{party}:{split_id}"


class SecureBoostBankModel(_PythonModel):  # type: ignore[misc]
    """MLflow pyfunc around a :class:`~models.secureboost.parts.BankPart`."""

    def load_context(self, context: Any) -> None:
        """Read the bank part from the model's artifacts."""
        path = Path(context.artifacts["bank_part"])
        self.part = BankPart.from_dict(json.loads(path.read_text(encoding="utf-8")))
        self._clients: dict[str, Any] = {}

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        """Default probabilities for every row of ``model_input`` (or reason codes).

        ``params``: ``purpose``; ``output`` (``probability`` or ``reasons``); ``reasons``
        (how many reason codes, default :data:`models.explanations.DEFAULT_REASONS`).
        """
        del context
        params = params or {}
        purpose = str(params.get("purpose") or DEFAULT_PURPOSE)
        output, k = output_params(params)
        frame = model_input.reset_index(drop=True)
        decisions: dict[str, tuple[list[str], np.ndarray]] = {}
        for party, ids in self.part.platform_splits().items():
            columns = [decision_column(party, sid) for sid in ids]
            missing = [c for c in columns if c not in frame.columns]
            if not missing:
                decisions[party] = (ids, frame[columns].to_numpy(dtype=bool))
            elif ID_COLUMN in frame.columns and len(missing) == len(columns):
                decisions[party] = (ids, self._remote(party, ids, frame, purpose))
            else:
                raise ValueError(
                    f"input lacks platform decision columns {missing[:3]}"
                    f"{' ...' if len(missing) > 3 else ''}; pass them all, or pass "
                    f"'{ID_COLUMN}' and let the model ask the platform's scoring endpoint"
                )
        used = sorted({n.rule.feature for tree in self.part.trees for n in tree.values() if n.rule})
        absent = [c for c in used if c not in frame.columns]
        if absent:
            raise ValueError(
                f"input lacks the bank's columns {absent[:5]}; send them (null when missing)"
            )
        probability = self.part.predict_proba(frame, decisions)
        if output == DEFAULT_OUTPUT:
            return probability
        from models.explanations import explained_frame
        from models.secureboost.explain import saabas

        return explained_frame(probability, saabas(self.part, frame, decisions), k)

    def _remote(
        self, party: str, split_ids: list[str], frame: pd.DataFrame, purpose: str
    ) -> np.ndarray:
        from lab.serving.client import PlatformClient, platform_refusals

        ids = frame[ID_COLUMN]
        if ids.isna().any():
            raise ValueError(f"'{ID_COLUMN}' is empty in rows {ids[ids.isna()].index[:5].tolist()}")
        ref = self.part.platform_parts[party]
        with platform_refusals(party):  # the bank's caller sees the platform's reason
            client = self._clients.get(party)
            if client is None:
                client = self._clients[party] = PlatformClient.from_env(party)
            return client.decisions(
                model_id=ref["model_id"],
                content_hash=ref["content_hash"],
                purpose=purpose,
                enterprise_ids=[str(i) for i in ids.tolist()],
                split_ids=split_ids,
            )


def output_params(params: Any, others: tuple[str, ...] = ()) -> tuple[str, int]:
    """``output`` and the number of ``reasons`` a scoring call asks for, checked.

    ``others``: further outputs the model answers itself (named in the error).

    Raises
    ------
    ValueError
        Naming the bad value and the accepted ones.
    """
    from models.explanations import DEFAULT_REASONS, check_reasons

    output = str(params.get("output") or DEFAULT_OUTPUT)
    known = (DEFAULT_OUTPUT, REASONS_OUTPUT, *others)
    if output not in known:
        raise ValueError(f"unknown output {output!r}; use one of {', '.join(map(repr, known))}")
    raw = params.get("reasons")
    k = DEFAULT_REASONS if raw is None else raw
    return output, check_reasons(int(k) if isinstance(k, np.integer) else k)


def param_specs() -> list[Any]:
    """The scoring parameters every registered vertical model takes (with their defaults)."""
    from mlflow.types.schema import ParamSpec

    from models.explanations import DEFAULT_REASONS

    return [
        ParamSpec("purpose", "string", DEFAULT_PURPOSE),
        ParamSpec("output", "string", DEFAULT_OUTPUT),
        ParamSpec("reasons", "long", DEFAULT_REASONS),
    ]


def signature(part: BankPart) -> Any:
    """Input: bank columns, and ``enterprise_id`` or one boolean per platform split.

    Output: the default probability. Parameters (:func:`param_specs`): ``purpose``, what the
    platform checks authorizations for when the model asks its endpoint; ``output`` and
    ``reasons``, for reason codes.
    """
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, Schema

    inputs: list[Any] = [
        ColSpec("double" if spec.kind == "numeric" else "string", name, required=False)
        for name, spec in part.bins.items()
    ]
    inputs.append(ColSpec("string", ID_COLUMN, required=False))
    inputs += [
        ColSpec("boolean", decision_column(party, sid), required=False)
        for party, ids in part.platform_splits().items()
        for sid in ids
    ]
    return ModelSignature(
        inputs=Schema(inputs),
        outputs=Schema([ColSpec("double")]),
        params=ParamSchema(param_specs()),
    )


class _HashedPart(Protocol):
    @property
    def content_hash(self) -> str: ...


def register_secureboost(
    target: tracking.TrackingTarget,
    run: tracking.RunWriter,
    bank_part_path: Path,
    model_name: str,
    platform_parts: dict[str, dict[str, str]],
    alias: str = "challenger",
) -> dict[str, Any]:
    """Log the bank part as a pyfunc in ``run`` and register it as a new version.

    Returns the registered name, version, alias and the references recorded with it.
    """
    part = BankPart.from_dict(json.loads(bank_part_path.read_text(encoding="utf-8")))
    return log_and_register(
        target,
        run,
        part,
        model_name,
        platform_parts,
        alias,
        python_model=Path(__file__).with_name("pyfunc_secureboost.py"),
        artifacts={"bank_part": bank_part_path},
        signature=signature(part),
        lab_model="secureboost-bank-part",
    )


def log_and_register(
    target: tracking.TrackingTarget,
    run: tracking.RunWriter,
    part: _HashedPart,
    model_name: str,
    platform_parts: dict[str, dict[str, str]],
    alias: str,
    *,
    python_model: Path,
    artifacts: dict[str, Path],
    signature: Any,
    lab_model: str,
) -> dict[str, Any]:
    """Log a bank part as a "model from code" pyfunc in ``run``; register it as a new version.

    Nothing is pickled: ``python_model`` names the model class, ``artifacts`` are the files it
    loads. Returns the registered name, version, alias and the platform references.
    """
    import mlflow.pyfunc

    with tempfile.TemporaryDirectory(prefix="lab-model-") as tmp:
        model_dir = Path(tmp) / "model"
        with warnings.catch_warnings():
            # "no input example": the signature fully describes the input.
            warnings.simplefilter("ignore", UserWarning)
            mlflow.pyfunc.save_model(
                path=str(model_dir),
                python_model=str(python_model),
                artifacts={k: str(v) for k, v in artifacts.items()},
                signature=signature,
                metadata={"lab_model": lab_model, "platform_parts": platform_parts},
                pip_requirements=[],
            )
        run.log_artifacts(model_dir, "model")
    return _register(target, run, part, model_name, platform_parts, alias)


def _register(
    target: tracking.TrackingTarget,
    run: tracking.RunWriter,
    part: _HashedPart,
    model_name: str,
    platform_parts: dict[str, dict[str, str]],
    alias: str,
) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=target.uri, registry_uri=target.uri)
    if not client.search_registered_models(filter_string=f"name = '{model_name}'"):
        client.create_registered_model(
            model_name,
            description="Vertical SecureBoost: bank part here, platform parts by reference.",
        )
    version = client.create_model_version(
        model_name,
        source=f"{run.artifact_uri()}/model",
        run_id=run.run_id,
        tags={
            TAG_PLATFORM_PARTS: json.dumps(platform_parts, sort_keys=True),
            TAG_BANK_PART_HASH: part.content_hash,
        },
        await_creation_for=0,
    )
    client.set_registered_model_alias(model_name, alias, version.version)
    return {
        "name": model_name,
        "version": str(version.version),
        "alias": alias,
        "bank_part_hash": part.content_hash,
        "platform_parts": platform_parts,
    }


#: Model-version tag holding the content hash of a horizontal global model's arrays.
TAG_MODEL_HASH = "lab.model_hash"


class HorizontalGlobalModel(_PythonModel):  # type: ignore[misc]
    """MLflow pyfunc around a horizontal job's global torch model and its feature encoder.

    Scores a DataFrame with the banks' common raw columns (the encoder applies the job's merged
    schema) and returns default probabilities.
    """

    def load_context(self, context: Any) -> None:
        """Rebuild the network from the settings and load the weights (no pickle)."""
        from federated.horizontal_protocol import HorizontalSettings
        from models.horizontal import arrays_to_parameters

        settings_path = Path(context.artifacts["settings"])
        self.settings = HorizontalSettings.from_json(settings_path.read_text(encoding="utf-8"))
        self.encoder = self.settings.encoder()
        with np.load(context.artifacts["weights"], allow_pickle=False) as weights:
            arrays = [weights[f"arr_{i}"] for i in range(len(weights.files))]
        self.model = self.settings.new_model(self.encoder.n_outputs)
        arrays_to_parameters(self.model, arrays)

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        """Default probabilities for every row of ``model_input``."""
        from models.horizontal import predict_proba

        del context, params
        missing = [c for c in self.encoder.feature_names if c not in model_input.columns]
        if missing:
            raise ValueError(
                f"input lacks the model's columns {missing[:5]}{' ...' if len(missing) > 5 else ''}"
            )
        features = self.encoder.transform(model_input[self.encoder.feature_names])
        return predict_proba(self.model, features)


def horizontal_signature(settings_json: str) -> Any:
    """Input: the banks' common raw columns; output: the default probability."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    from federated.horizontal_protocol import HorizontalSettings

    encoder = HorizontalSettings.from_json(settings_json).encoder()
    kinds = {c["name"]: c["kind"] for c in encoder.to_schema()["columns"]}
    inputs: list[ColSpec | TensorSpec] = [
        ColSpec("double" if kinds.get(name) == "numeric" else "string", name, required=False)
        for name in encoder.feature_names
    ]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([ColSpec("double")]))


def register_horizontal(
    target: tracking.TrackingTarget,
    run: tracking.RunWriter,
    weights: Path,
    settings_json: str,
    model_name: str,
    alias: str = "challenger",
) -> dict[str, Any]:
    """Log a horizontal job's global model as a pyfunc in ``run`` and register a new version.

    The model holds weights (``.npz``, no pickle) and the job's settings (architecture and the
    merged feature schema); no key material and no party data.
    """
    import hashlib

    import mlflow.pyfunc
    from mlflow.tracking import MlflowClient

    digest = "sha256:" + hashlib.sha256(weights.read_bytes()).hexdigest()
    with tempfile.TemporaryDirectory(prefix="lab-model-") as tmp:
        settings_path = Path(tmp) / "settings.json"
        settings_path.write_text(settings_json, encoding="utf-8")
        model_dir = Path(tmp) / "model"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            mlflow.pyfunc.save_model(
                path=str(model_dir),
                python_model=str(Path(__file__).with_name("pyfunc_horizontal.py")),
                artifacts={"weights": str(weights), "settings": str(settings_path)},
                signature=horizontal_signature(settings_json),
                metadata={"lab_model": "horizontal-global", "model_hash": digest},
                pip_requirements=[],
            )
        run.log_artifacts(model_dir, "model")
    client = MlflowClient(tracking_uri=target.uri, registry_uri=target.uri)
    if not client.search_registered_models(filter_string=f"name = '{model_name}'"):
        client.create_registered_model(
            model_name, description="Horizontal federated model: the banks' global model."
        )
    version = client.create_model_version(
        model_name,
        source=f"{run.artifact_uri()}/model",
        run_id=run.run_id,
        tags={TAG_MODEL_HASH: digest},
        await_creation_for=0,
    )
    client.set_registered_model_alias(model_name, alias, version.version)
    return {
        "name": model_name,
        "version": str(version.version),
        "alias": alias,
        "model_hash": digest,
    }
