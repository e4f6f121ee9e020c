"""Serving a SecureBoost platform part: one left/right bit per enterprise and split.

What the bank learns from an answered call: for each authorized enterprise and each requested
platform split, whether it goes left; never a feature value, a threshold or a bin. It is the
instance partition training already revealed (``docs/secureboost.md``), for enterprises the bank
names and that authorized it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from models.secureboost.parts import PlatformPart
from models.serving import PartLoader, PartView, Selection, SelectionError

_TREE_OF_SPLIT = re.compile(r"^t(\d+)n\d+$")


@dataclass(frozen=True)
class SplitDecisions:
    """One left/right bit per (enterprise, split), in request order."""

    split_ids: tuple[str, ...]
    bits: npt.NDArray[np.bool_]  # (enterprises, splits), True = left

    @property
    def n_items(self) -> int:
        """Splits answered per enterprise."""
        return len(self.split_ids)

    def to_json(self) -> dict[str, Any]:
        """``split_ids`` and a string of ``0``/``1`` per enterprise (``1`` = left)."""
        rows = ["".join("1" if b else "0" for b in row) for row in self.bits.tolist()]
        return {"split_ids": list(self.split_ids), "bits": rows}


@dataclass(frozen=True)
class ServedSplits(PartView[PlatformPart]):
    """A SecureBoost platform part as the scoring endpoint serves it."""

    def columns(self) -> list[str]:
        """The columns its split rules read."""
        return [rule.feature for rule in self.part.splits.values()]

    def n_items(self, selection: Selection) -> int:
        """Splits a call asks (all of them by default); unknown split ids count too."""
        if selection.is_everything:
            return len(self.part.splits)
        trees = set(selection.trees or ())
        by_tree = sum(
            1
            for sid in self.part.splits
            if (m := _TREE_OF_SPLIT.fullmatch(sid)) and int(m[1]) in trees
        )
        return len(set(selection.split_ids or ())) + by_tree

    def split_ids(self, selection: Selection) -> tuple[str, ...]:
        """The split ids a selection names, sorted.

        Raises
        ------
        SelectionError
            If it names a split the part does not hold (a tree without platform splits is
            valid and adds nothing).
        """
        splits = self.part.splits
        if selection.is_everything:
            return tuple(sorted(splits))
        wanted: set[str] = set()
        if selection.split_ids is not None:
            unknown = sorted(set(selection.split_ids) - set(splits))
            if unknown:
                raise SelectionError(
                    f"model {self.model_id!r} has no platform splits {unknown[:10]}; ask for "
                    "the split ids of the bank part's platform nodes"
                )
            wanted |= set(selection.split_ids)
        for tree in selection.trees or ():
            wanted |= {
                sid
                for sid in splits
                if (m := _TREE_OF_SPLIT.fullmatch(sid)) and int(m.group(1)) == tree
            }
        return tuple(sorted(wanted))

    def check(self, selection: Selection) -> None:
        """Refuse split ids the part does not hold."""
        self.split_ids(selection)

    def answer(self, frame: pd.DataFrame, selection: Selection) -> SplitDecisions:
        """The requested splits' decisions for every row of ``frame``."""
        ids = self.split_ids(selection)
        return SplitDecisions(ids, self.part.decisions(frame, list(ids)))


def load(raw: Mapping[str, Any]) -> ServedSplits:
    """The served form of a saved SecureBoost platform part."""
    return ServedSplits(PlatformPart.from_dict(raw))


#: Checked against :class:`models.serving.ServedPart` by the type checker (the descriptor names
#: :func:`load` as this type's serving loader).
_LOADER: PartLoader = load
