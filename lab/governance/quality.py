"""Quality report of a published feature set: aggregates only, small cells suppressed.

The report travels with the catalog entry to banks and auditors, so it holds no row, id or
single enterprise's value unless the column is ``public`` or ``internal``:

- per column: non-missing count, missing count and rate;
- numeric/integer: mean and quantiles. A quantile ``q`` is shown only when at least
  :data:`SMALL_CELL` values lie on each side of it (``min(q, 1 - q) * n >= SMALL_CELL``), so
  p01 needs 1,000 values. ``min`` and ``max`` are single enterprises' values: shown for
  ``public`` and ``internal`` columns only (the largest VAT sales of a province can name a firm);
- categorical/boolean: count per level; levels with 1 to ``SMALL_CELL - 1`` enterprises are
  merged into one ``suppressed`` bucket, and if that bucket would itself be smaller than
  ``SMALL_CELL`` the next-smallest level joins it (secondary suppression), so no small count can
  be recovered by subtracting the shown ones from the total;
- columns with fewer than ``SMALL_CELL`` values show counts only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lab.governance.spec import FeatureSetSpec

#: Smallest count shown: the usual threshold of statistical-disclosure control for business
#: microdata (cells of fewer than 10 units are suppressed).
SMALL_CELL = 10

QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def quality_report(spec: FeatureSetSpec, features: pd.DataFrame) -> dict[str, Any]:
    """Return the quality report of a validated table (see the module docstring).

    Parameters
    ----------
    spec : FeatureSetSpec
        The spec the table satisfies.
    features : pandas.DataFrame
        Feature columns as returned by :func:`lab.governance.validation.read_and_validate`.

    Returns
    -------
    dict
        ``{"rows": n, "small_cell": 10, "columns": {name: {...}}}``, JSON-ready.
    """
    n = len(features)
    columns: dict[str, Any] = {}
    for name, col in spec.columns.items():
        series = features[name]
        present = int(series.notna().sum())
        entry: dict[str, Any] = {
            "type": col.type,
            "group": col.group,
            "sensitivity": col.sensitivity,
            "count": present,
            "missing": n - present,
            "missing_rate": round((n - present) / n, 6) if n else 0.0,
        }
        if present >= SMALL_CELL:
            if col.type in ("numeric", "integer"):
                entry.update(_numeric(series, extremes=col.sensitivity in ("public", "internal")))
            else:
                entry["levels"] = _levels(series, col.type)
        else:
            entry["suppressed"] = f"fewer than {SMALL_CELL} values"
        columns[name] = entry
    return {"rows": n, "small_cell": SMALL_CELL, "columns": columns}


def _numeric(series: pd.Series, *, extremes: bool) -> dict[str, Any]:
    values = series.dropna().to_numpy(dtype=float)
    n = values.size
    out: dict[str, Any] = {"mean": _round(np.mean(values))}
    if extremes:
        out["min"] = _round(values.min())
        out["max"] = _round(values.max())
    quantiles = {
        f"p{round(q * 100):02d}": _round(np.quantile(values, q))
        for q in QUANTILES
        if min(q, 1 - q) * n >= SMALL_CELL
    }
    if quantiles:
        out["quantiles"] = quantiles
    return out


def _round(value: Any) -> float:
    """Round to 6 significant digits: a report, not a computation."""
    return float(f"{float(value):.6g}")


def _levels(series: pd.Series, kind: str) -> dict[str, Any]:
    values = series.dropna()
    if kind == "boolean":
        values = values.astype(int).astype(str)
    counts = {str(k): int(v) for k, v in values.astype(str).value_counts().items()}
    small = {k: v for k, v in counts.items() if v < SMALL_CELL}
    shown = {k: v for k, v in counts.items() if v >= SMALL_CELL}
    if small and sum(small.values()) < SMALL_CELL and shown:
        smallest = min(shown, key=lambda k: (shown[k], k))
        small[smallest] = shown.pop(smallest)
    out: dict[str, Any] = {"counts": dict(sorted(shown.items(), key=lambda kv: (-kv[1], kv[0])))}
    if small:
        total = sum(small.values())
        out["suppressed"] = {
            "levels": len(small),
            "count": total if total >= SMALL_CELL else f"<{SMALL_CELL}",
        }
    return out
