"""What a party's table holds, column by column: type, missing rate, distinct values.

:func:`profile_columns` describes a validated :class:`~features.io.PartyTable` (what ``lab
check`` prints per party file), so a column read as categorical, or mostly missing, is seen
before any job runs. :func:`format_profile` lays it out as plain fixed-width text: full
column names whatever the output is (a terminal, a file, a pipe), never cut or wrapped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from features.io import PartyTable

ColumnType = Literal["id", "label", "numeric", "categorical"]


@dataclass(frozen=True)
class ColumnProfile:
    """One column of a party's table as the job will use it.

    Attributes
    ----------
    name : str
        The column's name in the file.
    type : {"id", "label", "numeric", "categorical"}
        What the reader made of it.
    missing : float
        Share of rows without a value (ids and labels are never missing: they are refused).
    distinct : int
        Number of distinct non-missing values (categories, for a categorical column).
    """

    name: str
    type: ColumnType
    missing: float
    distinct: int


def profile_columns(table: PartyTable) -> tuple[ColumnProfile, ...]:
    """The id, the label (if any) and every feature column of ``table``, in that order."""
    n = max(table.n_rows, 1)
    out = [ColumnProfile(table.id_column, "id", 0.0, int(np.unique(table.ids).size))]
    if table.label is not None and table.label_column is not None:
        out.append(
            ColumnProfile(table.label_column, "label", 0.0, int(np.unique(table.label).size))
        )
    for name in table.feature_names:
        column = table.features[name]
        out.append(
            ColumnProfile(
                name=name,
                type=table.feature_kinds.get(name, "numeric"),
                missing=float(column.isna().sum()) / n,
                distinct=int(column.nunique(dropna=True)),
            )
        )
    return tuple(out)


def format_profile(profiles: Sequence[ColumnProfile], indent: str = "  ") -> list[str]:
    """Plain text lines: a header and one line per column, aligned, nothing truncated."""
    rows = [("column", "type", "missing", "distinct")] + [
        (p.name, p.type, _percent(p.missing), str(p.distinct)) for p in profiles
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return [
        f"{indent}{name:<{widths[0]}}  {kind:<{widths[1]}}  {missing:>{widths[2]}}  "
        f"{distinct:>{widths[3]}}".rstrip()
        for name, kind, missing, distinct in rows
    ]


def _percent(share: float) -> str:
    if 0.0 < share < 0.001:
        return "<0.1%"
    return f"{share:.1%}"
