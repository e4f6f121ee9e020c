"""Per-party feature binning: each party bins its own columns; bin edges never leave it.

A :class:`BinSpec` maps one column to small integers. Numeric columns get quantile edges
(at most ``max_bin`` bins); categorical columns get one bin per frequent category and an
``other`` bin for the rest (and for categories first seen at prediction time). Every column has
one extra bin for missing values, so a split can learn which side missing values go to.

The same code bins the plaintext core and each party in the federated protocol, which is what
makes the federated model equal to the plaintext one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

BinKind = Literal["numeric", "categorical"]
BinIndex = npt.NDArray[np.int32]


class BinningError(ValueError):
    """A column cannot be binned as asked (too few bins, unknown kind)."""


@dataclass(frozen=True)
class BinSpec:
    """How one column maps to bins ``0 .. n_bins - 1``; bin ``n_bins`` holds missing values.

    Attributes
    ----------
    name : str
        Column name.
    kind : {"numeric", "categorical"}
        Numeric: ``bin = number of edges < x`` (so bins ``<= s`` means ``x <= edges[s]``).
        Categorical: ``bin = categories.index(x)``, or the last bin (``other``) if absent.
    edges : tuple of float
        Upper edges of all bins but the last (numeric).
    categories : tuple of str
        Categories with their own bin (categorical); the bin after them is ``other``.
    """

    name: str
    kind: BinKind
    edges: tuple[float, ...] = ()
    categories: tuple[str, ...] = ()
    _lookup: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind == "categorical":
            object.__setattr__(self, "_lookup", {c: i for i, c in enumerate(self.categories)})

    @property
    def n_bins(self) -> int:
        """Bins for non-missing values (the missing bin is ``n_bins``)."""
        if self.kind == "numeric":
            return len(self.edges) + 1
        return len(self.categories) + 1

    @property
    def missing_bin(self) -> int:
        """Index of the bin holding missing values."""
        return self.n_bins

    def transform(self, column: pd.Series) -> BinIndex:
        """Bin indices of a column (missing values get :attr:`missing_bin`)."""
        if self.kind == "numeric":
            values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            found = np.searchsorted(np.asarray(self.edges, dtype=float), values, side="left")
            bins: BinIndex = found.astype(np.int32)
            bins[np.isnan(values)] = self.missing_bin
            return bins
        text = column.astype("string")
        missing = text.isna().to_numpy()
        other = len(self.categories)
        codes = np.fromiter(
            (self._lookup.get(v, other) for v in text.fillna("").tolist()),
            dtype=np.int32,
            count=len(text),
        )
        codes[missing] = self.missing_bin
        return codes

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the party's private part of a model)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "edges": list(self.edges),
            "categories": list(self.categories),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BinSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(
            name=str(data["name"]),
            kind=data["kind"],
            edges=tuple(float(e) for e in data["edges"]),
            categories=tuple(str(c) for c in data["categories"]),
        )


def fit_bins(column: pd.Series, kind: BinKind, max_bin: int) -> BinSpec:
    """Choose bins for one column from its values.

    Numeric: if the column has at most ``max_bin`` distinct values, one bin each (edges at the
    distinct values but the largest); otherwise edges at the ``1/max_bin .. (max_bin-1)/max_bin``
    quantiles (duplicates dropped). Categorical: the ``max_bin - 1`` most frequent categories
    (ties broken by name) get a bin each; the rest share ``other``.
    """
    if max_bin < 2:
        raise BinningError(f"max_bin must be at least 2, got {max_bin}")
    name = str(column.name)
    if kind == "numeric":
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        values = values[~np.isnan(values)]
        distinct = np.unique(values)
        if distinct.size <= max_bin:
            edges = distinct[:-1]
        else:
            qs = np.linspace(0.0, 1.0, max_bin + 1)[1:-1]
            edges = np.unique(np.quantile(values, qs, method="linear"))
            edges = edges[edges < distinct[-1]]
        return BinSpec(name=name, kind="numeric", edges=tuple(float(e) for e in edges))
    if kind == "categorical":
        counts = column.astype("string").dropna().value_counts()
        ranked = sorted(counts.items(), key=lambda item: (-int(item[1]), str(item[0])))
        keep = tuple(str(cat) for cat, _ in ranked[: max_bin - 1])
        return BinSpec(name=name, kind="categorical", categories=keep)
    raise BinningError(f"unknown column kind {kind!r} for '{name}'")


@dataclass(frozen=True)
class BinnedTable:
    """A party's columns as bin indices, with the specs that produced them."""

    specs: tuple[BinSpec, ...]
    bins: npt.NDArray[np.int32]  # shape (n_rows, n_features)

    @property
    def n_bins(self) -> npt.NDArray[np.int64]:
        """Non-missing bins per feature."""
        return np.array([s.n_bins for s in self.specs], dtype=np.int64)


def fit_transform(frame: pd.DataFrame, kinds: Mapping[str, BinKind], max_bin: int) -> BinnedTable:
    """Fit bins on ``frame``'s columns and return the binned table."""
    specs = tuple(fit_bins(frame[c], kinds[c], max_bin) for c in frame.columns)
    return transform(frame, specs)


def transform(frame: pd.DataFrame, specs: tuple[BinSpec, ...]) -> BinnedTable:
    """Bin ``frame`` with existing specs (columns looked up by name)."""
    if not specs:
        return BinnedTable(specs=(), bins=np.zeros((len(frame), 0), dtype=np.int32))
    bins = np.column_stack([s.transform(frame[s.name]) for s in specs]).astype(np.int32)
    return BinnedTable(specs=specs, bins=bins)


#: Bin dtypes of :func:`transform_compact`, smallest first, with the most bins (missing
#: included) each holds.
COMPACT_DTYPES: tuple[tuple[type[np.integer[Any]], int], ...] = (
    (np.uint8, 1 << 8),
    (np.uint16, 1 << 16),
    (np.int32, 1 << 31),
)


def compact_dtype(specs: tuple[BinSpec, ...]) -> np.dtype[Any]:
    """The smallest dtype of :data:`COMPACT_DTYPES` that holds every spec's bins and missing bin."""
    width = max((s.n_bins + 1 for s in specs), default=1)
    for dtype, most in COMPACT_DTYPES:
        if width <= most:
            return np.dtype(dtype)
    raise BinningError(f"{width} bins do not fit 32-bit bin indices")


def transform_compact(
    frame: pd.DataFrame,
    specs: tuple[BinSpec, ...],
    rows: npt.NDArray[np.intp] | None = None,
    *,
    out: npt.NDArray[np.integer[Any]] | None = None,
) -> npt.NDArray[np.integer[Any]]:
    """:func:`transform` of ``rows`` of ``frame`` (all if None): a :func:`compact_dtype` matrix.

    Column by column, so no float copy of the selected rows is made (``frame.iloc[rows]``
    would copy 8 bytes per row x feature), and one byte per row x feature for up to 255 bins:
    what a party keeps of its training rows for a whole job (a quarter of :func:`transform`'s
    int32 matrix). The same bin indices as :func:`transform`. ``out``: the rows x features
    array to fill (a memory-mapped file, say); by default a new one.
    """
    n_rows = len(frame) if rows is None else len(rows)
    shape = (n_rows, len(specs))
    if out is None:
        out = np.empty(shape, dtype=compact_dtype(specs))
    elif out.shape != shape or out.dtype != compact_dtype(specs):
        raise ValueError(f"out is {out.shape} {out.dtype}, not {shape} {compact_dtype(specs)}")
    for j, spec in enumerate(specs):
        column = frame[spec.name]
        out[:, j] = spec.transform(column if rows is None else column.iloc[rows])
    return out
