"""Registered hetero LR models: the bank's scorecard part as an MLflow pyfunc.

The pyfunc scores a DataFrame with the bank's columns and, for every platform column of the
model, an integer column ``platform:<party>:<column>`` holding the enterprise's anonymous coarse
bin (what the platform's part answers), or ``enterprise_id`` instead, and then asks each
platform's scoring endpoint for those bins (:mod:`lab.serving`). It returns default
probabilities; with the parameter ``output="scorecard"`` a frame of probability, points and the
top reason-code groups (points lost); with ``output="reasons"`` probability, margin, base and the
top ``reasons`` signed contributions (:mod:`models.vertical_lr.explain`), as SecureBoost models
answer. The scorecard (CSV and HTML) is logged with the model. No key material
and no platform bin edge is in the registry.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lab import registry, tracking
from models.explanations import DEFAULT_REASONS, explained_frame
from models.scorecard import Scorecard
from models.vertical_lr.explain import contributions
from models.vertical_lr.parts import BankLRPart

BIN_PREFIX = registry.DECISION_PREFIX
#: The ``output`` that returns the scorecard view (points and points-lost reason groups).
SCORECARD_OUTPUT = "scorecard"


def bin_column(key: str) -> str:
    """Input column of a platform feature ``party:column`` (its coarse bin index)."""
    return f"{BIN_PREFIX}{key}"


class HeteroLRBankModel(registry._PythonModel):  # type: ignore[misc]
    """MLflow pyfunc around a :class:`~models.vertical_lr.parts.BankLRPart`."""

    def load_context(self, context: Any) -> None:
        """Read the bank part from the model's artifacts."""
        self.part = BankLRPart.load(Path(context.artifacts["bank_part"]))
        self.card = Scorecard.from_dict(self.part.scorecard)
        self._clients: dict[str, Any] = {}

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        """Default probabilities (or the scorecard view) for every row of ``model_input``.

        Platform columns come as ``platform:<party>:<column>`` coarse bins, or, with
        ``enterprise_id`` and none of them, from each platform's scoring endpoint
        (``LAB_PLATFORM_URL`` / ``LAB_PLATFORM_TOKEN``, see :mod:`lab.serving.client`).
        """
        del context
        params = params or {}
        output = str(params.get("output") or registry.DEFAULT_OUTPUT)
        purpose = str(params.get("purpose") or registry.DEFAULT_PURPOSE)
        k = DEFAULT_REASONS
        if output != SCORECARD_OUTPUT:
            output, k = registry.output_params(params, others=(SCORECARD_OUTPUT,))
        frame = model_input.reset_index(drop=True)
        platform_keys = [
            self.part.table_key(t) for t in self.part.tables if t.party != self.part.party
        ]
        missing = [bin_column(k) for k in platform_keys if bin_column(k) not in frame.columns]
        if missing and registry.ID_COLUMN in frame.columns and len(missing) == len(platform_keys):
            frame = self._remote(frame, purpose)
        elif missing:
            raise ValueError(
                f"input lacks platform bin columns {missing[:3]}; pass them all, or pass "
                f"'{registry.ID_COLUMN}' and let the model ask the platform's scoring endpoint"
            )
        own = [s.name for s in self.part.specs]
        absent = [c for c in own if c not in frame.columns]
        if absent:
            raise ValueError(
                f"input lacks the bank's columns {absent[:5]}; send them (null when missing)"
            )
        bins = {k: frame[bin_column(k)].to_numpy(dtype=np.int64) for k in platform_keys}
        probability = self.part.predict_proba(frame, bins)
        if output == registry.DEFAULT_OUTPUT:
            return probability
        if output == registry.REASONS_OUTPUT:
            return explained_frame(probability, contributions(self.part, frame, bins), k)
        coarse = self.part.coarse_bins(frame, bins)
        reasons = self.card.reason_codes(coarse, top_k=3)
        return pd.DataFrame(
            {
                "probability": probability,
                "score": self.card.score(coarse),
                "reason_codes": [", ".join(r) for r in reasons],
            }
        )

    def _remote(self, frame: pd.DataFrame, purpose: str) -> pd.DataFrame:
        """Add every platform's coarse-bin columns from its scoring endpoint."""
        from lab.serving.client import PlatformClient, platform_refusals

        ids = frame[registry.ID_COLUMN]
        if ids.isna().any():
            raise ValueError(
                f"'{registry.ID_COLUMN}' is empty in rows {ids[ids.isna()].index[:5].tolist()}"
            )
        out = frame.copy()
        for party, ref in self.part.platform_parts.items():
            features = [t.name for t in self.part.tables if t.party == party]
            with platform_refusals(party):  # the bank's caller sees the platform's reason
                client = self._clients.get(party)
                if client is None:
                    client = self._clients[party] = PlatformClient.from_env(party)
                bins = client.coarse_bins(
                    model_id=ref["model_id"],
                    content_hash=ref["content_hash"],
                    purpose=purpose,
                    enterprise_ids=[str(i) for i in ids.tolist()],
                    features=features,
                )
            for j, name in enumerate(features):
                out[bin_column(f"{party}:{name}")] = bins[:, j]
        return out


def signature(part: BankLRPart) -> Any:
    """Input: bank columns and one integer coarse bin per platform column; output: probability."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, Schema

    inputs: list[Any] = [
        ColSpec("double" if spec.kind == "numeric" else "string", spec.name, required=False)
        for spec in part.specs
    ]
    inputs.append(ColSpec("string", registry.ID_COLUMN, required=False))
    inputs += [
        ColSpec("long", bin_column(part.table_key(t)), required=False)
        for t in part.tables
        if t.party != part.party
    ]
    return ModelSignature(
        inputs=Schema(inputs),
        outputs=Schema([ColSpec("double")]),
        params=ParamSchema(registry.param_specs()),
    )


def register_hetero_lr(
    target: tracking.TrackingTarget,
    run: tracking.RunWriter,
    bank_part_path: Path,
    model_name: str,
    platform_parts: dict[str, dict[str, str]],
    alias: str = "challenger",
) -> dict[str, Any]:
    """Log the bank part (with its scorecard) as a pyfunc in ``run``; register a new version."""
    part = BankLRPart.load(bank_part_path)
    card = Scorecard.from_dict(part.scorecard)
    with tempfile.TemporaryDirectory(prefix="lab-scorecard-") as tmp:
        folder = Path(tmp)
        return registry.log_and_register(
            target,
            run,
            part,
            model_name,
            platform_parts,
            alias,
            python_model=Path(__file__).with_name("pyfunc_hetero_lr.py"),
            artifacts={
                "bank_part": bank_part_path,
                "scorecard_csv": card.to_csv(folder / "scorecard.csv"),
                "scorecard_html": card.to_html(folder / "scorecard.html"),
            },
            signature=signature(part),
            lab_model="hetero-lr-bank-part",
        )
