"""Several parties' tables must have the same feature columns (a horizontal job's banks).

One model is averaged over every bank's updates, so every bank feeds it the same columns,
of the same kinds, in the same order. :func:`check_same_features` compares the banks' tables
before any runtime starts and names, for each bank that differs from the first, the columns
it lacks, has extra, or reads as another kind.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from features.errors import DataError
from features.io import PartyTable

#: What a bank can do about a difference.
_FIX = (
    "every bank of a horizontal job needs the same feature columns; rename or add them, or "
    "list the shared ones under each bank's 'features'"
)


def check_same_features(tables: Mapping[str, PartyTable]) -> None:
    """Refuse tables whose feature columns differ, comparing each with the first one's.

    Parameters
    ----------
    tables : Mapping[str, PartyTable]
        Party name to its validated table, in config order.

    Raises
    ------
    DataError
        One message naming each differing party, its file, and the columns at fault.
    """
    if len(tables) < 2:
        return
    (first_name, first), *rest = tables.items()
    reference = f"{first_name} ({first.path})"
    problems: list[str] = []
    differ = False
    for name, table in rest:
        who = f"{name} ({table.path})"
        lacks = [c for c in first.feature_names if c not in table.feature_kinds]
        extra = [c for c in table.feature_names if c not in first.feature_kinds]
        if lacks or extra:
            parts = ([f"lacks {json.dumps(lacks)}"] if lacks else []) + (
                [f"has extra {json.dumps(extra)}"] if extra else []
            )
            problems.append(f"{who} {' and '.join(parts)} compared with {reference}")
            differ = True
            continue
        kinds = [
            f"'{c}' is {table.feature_kinds[c]} (at {reference}: {first.feature_kinds[c]})"
            for c in first.feature_names
            if table.feature_kinds[c] != first.feature_kinds[c]
        ]
        if kinds:
            problems.append(
                f"{who} reads {', '.join(kinds)}; list such a column under 'categorical' at "
                "every bank, or fix its values"
            )
        elif table.feature_names != first.feature_names:
            problems.append(
                f"{who} has the columns of {reference} in another order; list them under "
                "'features' in one order at every bank"
            )
    if problems:
        fix = f"; {_FIX}" if differ else ""
        raise DataError(f"the banks' feature columns differ: {'; '.join(problems)}{fix}")
