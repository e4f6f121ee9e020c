"""The saved halves of a hetero LR model: the bank's scorecard part and each platform's binning.

The bank's part holds its own bins and WOE tables, every coefficient (the platforms release
theirs at the end of training), the platforms' anonymous WOE tables (WOE per coarse bin, no
edges) and the scorecard. A platform's part holds only its fine-bin edges and the fine -> coarse
mapping of each column: at scoring time it turns an enterprise's values into anonymous coarse
bin indices, the only thing the bank's part needs from it. No key material is in either part.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.binning import BinSpec
from features.woe import WoeTable
from models.vertical.parts import canonical_hash, model_file, write_part
from models.vertical_lr.core import sigmoid


def _write(folder: Path, model_id: str, payload: Mapping[str, Any]) -> Path:
    return write_part(folder, model_id, payload)


@dataclass(frozen=True)
class PlatformLRPart:
    """A platform's half: its bins (edges stay here) and the coarse-bin mapping per column.

    ``bank`` is the label holder that trained the model: the platform's endpoint answers for
    this part to that bank only (hashed with the rest; absent in parts written before binding).
    """

    party: str
    model_id: str
    specs: tuple[BinSpec, ...]
    mappings: tuple[tuple[int, ...], ...]
    bank: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        out: dict[str, Any] = {
            "kind": "hetero_lr.platform",
            "party": self.party,
            "model_id": self.model_id,
            "specs": [s.to_dict() for s in self.specs],
            "mappings": [list(m) for m in self.mappings],
        }
        if self.bank is not None:
            out["bank"] = self.bank
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlatformLRPart:
        """Inverse of :meth:`to_dict`."""
        return cls(
            party=str(data["party"]),
            model_id=str(data["model_id"]),
            specs=tuple(BinSpec.from_dict(s) for s in data["specs"]),
            mappings=tuple(tuple(int(v) for v in m) for m in data["mappings"]),
            bank=None if data.get("bank") is None else str(data["bank"]),
        )

    @property
    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON form."""
        return canonical_hash(self.to_dict())

    @property
    def features(self) -> list[str]:
        """Column names, in the order of :meth:`coarse_bins`' columns."""
        return [s.name for s in self.specs]

    def coarse_bins(self, frame: pd.DataFrame) -> npt.NDArray[np.int16]:
        """Anonymous coarse bin of every row for every column (what the bank's part needs)."""
        out = np.empty((len(frame), len(self.specs)), dtype=np.int16)
        for j, (spec, mapping) in enumerate(zip(self.specs, self.mappings, strict=True)):
            out[:, j] = np.asarray(mapping, dtype=np.int16)[spec.transform(frame[spec.name])]
        return out

    def save(self, folder: Path) -> Path:
        """Write ``<model_id>.json`` into the platform's own model store."""
        return _write(folder, self.model_id, self.to_dict())

    @classmethod
    def load(cls, folder: Path, model_id: str) -> PlatformLRPart:
        """Read a part saved by :meth:`save`."""
        return cls.from_dict(json.loads(model_file(folder, model_id).read_text("utf-8")))


@dataclass(frozen=True)
class BankLRPart:
    """The bank's half: bins, WOE tables and coefficients of every feature, and the scorecard.

    Attributes
    ----------
    specs : bank column -> fine bins (the bank's own edges)
    tables : WOE tables of every feature, bank columns first, then each platform's in order
    coefficients : feature key -> coefficient (keys ``party:column``)
    intercept : float
    scorecard : the :class:`models.scorecard.Scorecard` in dict form
    platform_parts : party -> {"model_id", "content_hash"}
    """

    party: str
    model_id: str
    specs: tuple[BinSpec, ...]
    tables: tuple[WoeTable, ...]
    coefficients: dict[str, float]
    intercept: float
    scorecard: dict[str, Any]
    platform_parts: dict[str, dict[str, str]]
    params: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "kind": "hetero_lr.bank",
            "party": self.party,
            "model_id": self.model_id,
            "specs": [s.to_dict() for s in self.specs],
            "tables": [t.to_dict() for t in self.tables],
            "coefficients": dict(self.coefficients),
            "intercept": self.intercept,
            "scorecard": self.scorecard,
            "platform_parts": self.platform_parts,
            "params": self.params,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BankLRPart:
        """Inverse of :meth:`to_dict`."""
        return cls(
            party=str(data["party"]),
            model_id=str(data["model_id"]),
            specs=tuple(BinSpec.from_dict(s) for s in data["specs"]),
            tables=tuple(WoeTable.from_dict(t) for t in data["tables"]),
            coefficients={str(k): float(v) for k, v in data["coefficients"].items()},
            intercept=float(data["intercept"]),
            scorecard=dict(data["scorecard"]),
            platform_parts={str(k): dict(v) for k, v in data["platform_parts"].items()},
            params=dict(data["params"]),
        )

    @property
    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON form."""
        return canonical_hash(self.to_dict())

    def table_key(self, table: WoeTable) -> str:
        """``party:column`` of a WOE table (the key of its coefficient)."""
        return f"{table.party}:{table.name}"

    def coarse_bins(
        self, frame: pd.DataFrame, platform_bins: Mapping[str, npt.NDArray[Any]]
    ) -> dict[str, npt.NDArray[np.int32]]:
        """Coarse bin of every row per feature key, from bank columns and platform bins.

        ``platform_bins`` maps ``party:column`` to the platform's coarse bin indices.
        """
        specs = {s.name: s for s in self.specs}
        out: dict[str, npt.NDArray[np.int32]] = {}
        for table in self.tables:
            key = self.table_key(table)
            if table.party == self.party:
                out[key] = table.coarse(specs[table.name].transform(frame[table.name]))
            else:
                if key not in platform_bins:
                    raise KeyError(f"no coarse bins for platform feature '{key}'")
                bins = np.asarray(platform_bins[key]).astype(np.int32)
                if bins.size and (bins.min() < 0 or bins.max() >= len(table.woe)):
                    raise ValueError(f"coarse bins of '{key}' outside 0..{len(table.woe) - 1}")
                out[key] = bins
        return out

    def logits(
        self, frame: pd.DataFrame, platform_bins: Mapping[str, npt.NDArray[Any]]
    ) -> npt.NDArray[np.float64]:
        """``intercept + Σ coef · WOE`` per row."""
        bins = self.coarse_bins(frame, platform_bins)
        z = np.full(len(frame), self.intercept, dtype=np.float64)
        for table in self.tables:
            key = self.table_key(table)
            z += self.coefficients[key] * np.asarray(table.woe, dtype=np.float64)[bins[key]]
        return z

    def predict_proba(
        self, frame: pd.DataFrame, platform_bins: Mapping[str, npt.NDArray[Any]]
    ) -> npt.NDArray[np.float64]:
        """Probability of default per row."""
        return sigmoid(self.logits(frame, platform_bins))

    def save(self, folder: Path) -> Path:
        """Write ``<model_id>.json`` into the bank's own model store."""
        return _write(folder, self.model_id, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> BankLRPart:
        """Read a part saved by :meth:`save`."""
        return cls.from_dict(json.loads(path.read_text("utf-8")))
