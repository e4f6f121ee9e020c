"""The budgets' burn-down as an SVG data URI (matplotlib; no script, no request to anyone)."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import matplotlib
from matplotlib.figure import Figure

#: rc settings are global: one plot at a time (the server answers requests in threads).
_LOCK = threading.Lock()


def burn_down_svg(
    series: Sequence[tuple[str, float, Sequence[tuple[datetime, float]]]],
    *,
    title: str = "Privacy budget burn-down",
) -> str:
    """A ``data:`` URI of an SVG: cumulative ε spent over time per (label, cap, points).

    Caps are dashed. Starts at ε = 0 (a burn-down starts from nothing spent), as ``lab audit
    report``'s does.
    """
    with _LOCK, matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text
        fig = Figure(figsize=(7.5, 3.6))
        ax = fig.subplots()
        for label, cap, points in series:
            if points:
                xs: list[Any] = [p[0] for p in points]  # matplotlib's dates
                ys = [p[1] for p in points]
                many = len(points) > 60
                (line,) = ax.step(
                    xs, ys, where="post", marker=None if many else "o", label=f"{label}: spent"
                )
                ax.axhline(cap, color=line.get_color(), linestyle="--", linewidth=1)
            else:
                ax.axhline(cap, linestyle="--", linewidth=1, label=f"{label}: cap")
        days = {p[0] for _, _, points in series for p in points}
        if len(days) == 1:  # one spend: a week around it, not matplotlib's years
            (day,) = days
            ax.set_xlim(day - timedelta(days=3), day + timedelta(days=3))  # type: ignore[arg-type]
        ax.set_ylim(bottom=0)
        ax.set_ylabel("ε spent (dashed: cap)")
        ax.set_title(title)
        if series:
            ax.legend(fontsize=7)
        fig.autofmt_xdate()
        fig.tight_layout()
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg")
    # A data URI for an <img>: the page's policy forbids inline styles, and an SVG image
    # keeps its own (matplotlib styles every element) in isolation, with no script run.
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue().encode()).decode()
