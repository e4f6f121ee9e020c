"""Serving a hetero LR platform part: each enterprise's anonymous coarse bin per column.

What the bank learns from an answered call: for each authorized enterprise and each platform
column of the model, the index of its coarse bin (the bank's part holds each bin's WOE and
coefficient, never its edges): what training revealed for the bank's own test enterprises, for
enterprises the bank names and that authorized it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from models.serving import PartLoader, PartView, Selection, SelectionError
from models.vertical_lr.parts import PlatformLRPart


@dataclass(frozen=True)
class CoarseBins:
    """Each enterprise's anonymous coarse bin per column, in request order."""

    features: tuple[str, ...]
    bins: npt.NDArray[np.int16]  # (enterprises, features)

    @property
    def n_items(self) -> int:
        """Columns answered per enterprise."""
        return len(self.features)

    def to_json(self) -> dict[str, Any]:
        """``features`` and one list of coarse bin indices per enterprise."""
        return {"features": list(self.features), "bins": self.bins.astype(int).tolist()}


@dataclass(frozen=True)
class ServedBins(PartView[PlatformLRPart]):
    """A hetero LR platform part as the scoring endpoint serves it."""

    def columns(self) -> list[str]:
        """The columns it bins."""
        return self.part.features

    def check(self, selection: Selection) -> None:
        """Refuse any selection: the part answers every column."""
        if not selection.is_everything:
            raise SelectionError(
                f"model {self.model_id!r} is a hetero LR part: it answers coarse bins of its "
                "columns; send no split_ids or trees"
            )

    def n_items(self, selection: Selection) -> int:
        """Every column, always (:meth:`check` refuses a selection)."""
        del selection
        return len(self.part.features)

    def answer(self, frame: pd.DataFrame, selection: Selection) -> CoarseBins:
        """Every row's coarse bins."""
        self.check(selection)
        return CoarseBins(tuple(self.part.features), self.part.coarse_bins(frame))


def load(raw: Mapping[str, Any]) -> ServedBins:
    """The served form of a saved hetero LR platform part."""
    return ServedBins(PlatformLRPart.from_dict(raw))


#: Checked against :class:`models.serving.ServedPart` by the type checker (the descriptor names
#: :func:`load` as this type's serving loader).
_LOADER: PartLoader = load
