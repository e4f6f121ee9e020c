"""The two halves of a vertical SecureBoost model, each kept in its owner's domain.

:class:`BankPart` (at the bank, registered in its MLflow registry): the tree structure, the
bank's own split rules, every leaf weight, the base score, and for each platform split only a
reference ``(party, split_id)`` plus the id and content hash of that platform's part.

:class:`PlatformPart` (at the platform, served by its scoring endpoint): the platform's split
rules (feature, bins going left, missing side) and the bin specs that turn values into bins.
Its thresholds never leave the platform; to score, it answers "left or right" per split.
Neither part holds key material.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.binning import BinSpec
from models.secureboost.core import sigmoid
from models.vertical.parts import (
    MODEL_ID_PATTERN,
    ModelIdError,
    canonical_hash,
    model_file,
    write_part,
)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class RuleSplit:
    """A split rule in the owner's own terms: a column, the bins going left, missing side."""

    feature: str
    left_bins: tuple[int, ...]
    missing_left: bool

    def goes_left(self, spec: BinSpec, column: pd.Series) -> npt.NDArray[np.bool_]:
        """Decide left/right for every value of ``column``."""
        bins = spec.transform(column)
        left = np.isin(bins, np.asarray(self.left_bins, dtype=np.int32))
        return np.where(bins == spec.missing_bin, self.missing_left, left)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "feature": self.feature,
            "left_bins": list(self.left_bins),
            "missing_left": self.missing_left,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RuleSplit:
        """Inverse of :meth:`to_dict`."""
        return cls(
            feature=str(data["feature"]),
            left_bins=tuple(int(b) for b in data["left_bins"]),
            missing_left=bool(data["missing_left"]),
        )


@dataclass(frozen=True)
class PlatformPart:
    """A platform's half: split rules by id, the bin specs they use, and the bank it serves.

    ``bank`` is the label holder that trained the model with this platform: the platform's
    scoring endpoint answers for this part to that bank only. It is part of the content hash
    (parts written before binding have none, and keep their hash).
    """

    party: str
    model_id: str
    splits: dict[str, RuleSplit]
    bins: dict[str, BinSpec]
    bank: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        out: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "kind": "secureboost-platform-part",
            "party": self.party,
            "model_id": self.model_id,
            "splits": {k: v.to_dict() for k, v in sorted(self.splits.items())},
            "bins": {k: v.to_dict() for k, v in sorted(self.bins.items())},
        }
        if self.bank is not None:
            out["bank"] = self.bank
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlatformPart:
        """Inverse of :meth:`to_dict`."""
        return cls(
            party=str(data["party"]),
            model_id=str(data["model_id"]),
            splits={k: RuleSplit.from_dict(v) for k, v in data["splits"].items()},
            bins={k: BinSpec.from_dict(v) for k, v in data["bins"].items()},
            bank=None if data.get("bank") is None else str(data["bank"]),
        )

    @property
    def content_hash(self) -> str:
        """Hash the bank's registry records to pin this exact part."""
        return canonical_hash(self.to_dict())

    def decisions(
        self, frame: pd.DataFrame, split_ids: list[str] | None = None
    ) -> npt.NDArray[np.bool_]:
        """Left (True) / right decisions of the requested splits for every row of ``frame``.

        Returns an array of shape (rows, splits) in ``split_ids`` order (all splits, sorted, if
        ``None``). This is all the platform reveals to score: one bit per split per row.
        """
        ids = sorted(self.splits) if split_ids is None else split_ids
        out = np.zeros((len(frame), len(ids)), dtype=bool)
        for j, split_id in enumerate(ids):
            rule = self.splits[split_id]
            out[:, j] = rule.goes_left(self.bins[rule.feature], frame[rule.feature])
        return out

    def save(self, folder: Path) -> Path:
        """Write ``<model_id>.json`` into the platform's own model store.

        Raises
        ------
        ModelIdError
            If the model id is not a plain file name.
        """
        return write_part(folder, self.model_id, self.to_dict())


@dataclass(frozen=True)
class BankNode:
    """A node of the bank's view of a tree."""

    node_id: int
    weight: float | None = None
    owner: str | None = None  # party owning the split
    rule: RuleSplit | None = None  # the bank's own splits
    split_id: str | None = None  # reference to a platform's split
    #: Hessian sum of the training rows that reached the node (what a path attribution
    #: weighs children by); ``None`` in parts saved before explanations existed.
    cover: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``cover`` only when known: older parts keep their hash)."""
        out: dict[str, Any] = {
            "node_id": self.node_id,
            "weight": self.weight,
            "owner": self.owner,
            "rule": None if self.rule is None else self.rule.to_dict(),
            "split_id": self.split_id,
        }
        if self.cover is not None:
            out["cover"] = self.cover
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BankNode:
        """Inverse of :meth:`to_dict`."""
        return cls(
            node_id=int(data["node_id"]),
            weight=data["weight"],
            owner=data["owner"],
            rule=None if data["rule"] is None else RuleSplit.from_dict(data["rule"]),
            split_id=data["split_id"],
            cover=None if data.get("cover") is None else float(data["cover"]),
        )


@dataclass(frozen=True)
class BankPart:
    """The bank's half: structure, its own rules, leaf weights, references to platform parts.

    ``platform_groups[party][split_id]`` is the published feature group of a platform split's
    column, as that platform's node released it at the end of training (its policy
    ``explanations.group_attribution``); ``groups_withheld[party]`` is the platform's reason
    when it released none. Neither names a column, a threshold or a value.
    """

    party: str
    model_id: str
    base_score: float
    trees: list[dict[int, BankNode]]
    bins: dict[str, BinSpec]
    platform_parts: dict[str, dict[str, str]]  # party -> {"model_id", "content_hash"}
    params: dict[str, Any] = field(default_factory=dict)
    platform_groups: dict[str, dict[str, str]] = field(default_factory=dict)
    groups_withheld: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the explanation fields only when set: older hashes hold)."""
        out: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "kind": "secureboost-bank-part",
            "party": self.party,
            "model_id": self.model_id,
            "base_score": self.base_score,
            "trees": [[tree[n].to_dict() for n in sorted(tree)] for tree in self.trees],
            "bins": {k: v.to_dict() for k, v in sorted(self.bins.items())},
            "platform_parts": self.platform_parts,
            "params": self.params,
        }
        if self.platform_groups:
            out["platform_groups"] = {
                p: dict(sorted(g.items())) for p, g in sorted(self.platform_groups.items())
            }
        if self.groups_withheld:
            out["groups_withheld"] = dict(sorted(self.groups_withheld.items()))
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BankPart:
        """Inverse of :meth:`to_dict`."""
        return cls(
            party=str(data["party"]),
            model_id=str(data["model_id"]),
            base_score=float(data["base_score"]),
            trees=[
                {int(n["node_id"]): BankNode.from_dict(n) for n in tree} for tree in data["trees"]
            ],
            bins={k: BinSpec.from_dict(v) for k, v in data["bins"].items()},
            platform_parts={k: dict(v) for k, v in data["platform_parts"].items()},
            params=dict(data.get("params", {})),
            platform_groups={
                str(p): {str(k): str(v) for k, v in g.items()}
                for p, g in data.get("platform_groups", {}).items()
            },
            groups_withheld={str(k): str(v) for k, v in data.get("groups_withheld", {}).items()},
        )

    @property
    def content_hash(self) -> str:
        """Hash of the canonical JSON form."""
        return canonical_hash(self.to_dict())

    def platform_splits(self) -> dict[str, list[str]]:
        """Split ids each platform must decide, sorted."""
        out: dict[str, set[str]] = {}
        for tree in self.trees:
            for node in tree.values():
                if node.split_id is not None and node.owner is not None:
                    out.setdefault(node.owner, set()).add(node.split_id)
        return {party: sorted(ids) for party, ids in out.items()}

    def goes_left(
        self,
        node: BankNode,
        rows: npt.NDArray[np.intp],
        bank_frame: pd.DataFrame,
        platform_decisions: Mapping[str, tuple[list[str], npt.NDArray[np.bool_]]],
        columns: Mapping[str, Mapping[str, int]],
    ) -> npt.NDArray[np.bool_]:
        """Which of ``rows`` go left at the internal ``node``.

        The bank's own rule decides at a bank split; at a platform split, the owning platform's
        decision bits (``columns[party][split_id]`` is the split's column in its ``bits``).
        """
        if node.rule is not None:
            column = bank_frame[node.rule.feature].iloc[rows]
            return np.asarray(node.rule.goes_left(self.bins[node.rule.feature], column), dtype=bool)
        party = str(node.owner)
        _ids, bits = platform_decisions[party]
        return np.asarray(bits[rows, columns[party][str(node.split_id)]], dtype=bool)

    def raw_scores(
        self,
        bank_frame: pd.DataFrame,
        platform_decisions: Mapping[str, tuple[list[str], npt.NDArray[np.bool_]]],
        *,
        staged: bool = False,
    ) -> npt.NDArray[np.float64]:
        """Log-odds per row from the bank's features and the platforms' split decisions.

        ``platform_decisions[party] = (split_ids, bits)`` with ``bits`` of shape (rows, len(ids)).
        With ``staged`` the result has one column per tree (cumulative scores).
        """
        n = len(bank_frame)
        columns = {
            party: {sid: j for j, sid in enumerate(ids)}
            for party, (ids, _) in platform_decisions.items()
        }
        raw = np.full(n, self.base_score)
        stages = np.zeros((n, len(self.trees))) if staged else np.zeros((0, 0))
        for t, tree in enumerate(self.trees):
            position = np.zeros(n, dtype=np.int64)
            active = np.ones(n, dtype=bool)
            while active.any():
                for node_id in np.unique(position[active]).tolist():
                    node = tree[int(node_id)]
                    rows = np.flatnonzero(active & (position == node_id))
                    if node.weight is not None:
                        raw[rows] += node.weight
                        active[rows] = False
                        continue
                    left = self.goes_left(node, rows, bank_frame, platform_decisions, columns)
                    position[rows] = np.where(left, 2 * node_id + 1, 2 * node_id + 2)
            if staged:
                stages[:, t] = raw
        return stages if staged else raw

    def predict_proba(
        self,
        bank_frame: pd.DataFrame,
        platform_decisions: Mapping[str, tuple[list[str], npt.NDArray[np.bool_]]],
    ) -> npt.NDArray[np.float64]:
        """Default probabilities per row."""
        return sigmoid(self.raw_scores(bank_frame, platform_decisions))

    def save(self, folder: Path) -> Path:
        """Write ``<model_id>.json`` into the bank's own model store.

        Raises
        ------
        ModelIdError
            If the model id is not a plain file name.
        """
        return write_part(folder, self.model_id, self.to_dict())


# The file-name checks moved to :mod:`models.vertical.parts`; the platform's scoring endpoint
# (``lab/serving/platform_scorer.py``) still imports them from here.
__all__ = [
    "FORMAT_VERSION",
    "MODEL_ID_PATTERN",
    "BankNode",
    "BankPart",
    "ModelIdError",
    "PlatformPart",
    "RuleSplit",
    "model_file",
]
