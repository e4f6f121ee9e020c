"""Plots of a monitoring run (PNG files logged to its MLflow run).

* ``score_bands.png``: the share of the book in each score band (bands fixed on the reference
  window's deciles), reference window against the new one;
* ``psi_trend.png``: the score PSI of the model's monitoring runs over time, with the
  thresholds 0.1 and 0.25;
* ``vintages.png``: per vintage, the mean predicted default probability and the matured bad
  rate.

Built with matplotlib's object API (no global state, no display).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from features.stability import PSI_THRESHOLDS


def write_plots(
    folder: Path, summary: dict[str, Any], history: Sequence[tuple[str, float]]
) -> list[Path]:
    """Write the three plots of ``summary`` into ``folder`` and return their paths.

    ``history``: (window, score PSI) of earlier runs of the same model, oldest first.
    """
    return [
        _bands(folder / "score_bands.png", summary["bands"]),
        _trend(folder / "psi_trend.png", [*history, (summary["window"], summary["score_psi"])]),
        _vintages(folder / "vintages.png", summary["vintages"]),
    ]


def _bands(path: Path, bands: list[dict[str, Any]]) -> Path:
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    x = [b["band"] for b in bands]
    ax.bar([v - 0.2 for v in x], [b["reference_share"] for b in bands], 0.4, label="reference")
    ax.bar([v + 0.2 for v in x], [b["current_share"] for b in bands], 0.4, label="current")
    ax.set_xlabel("score band (reference deciles, 1 = lowest risk)")
    ax.set_ylabel("share of the book")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path


def _trend(path: Path, points: Sequence[tuple[str, float]]) -> Path:
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
    for bound, _label in PSI_THRESHOLDS:
        ax.axhline(bound, linestyle="--", linewidth=0.8, color="grey")
    ax.set_xlabel("window")
    ax.set_ylabel("score PSI")
    fig.tight_layout()
    fig.savefig(path)
    return path


def _vintages(path: Path, vintages: list[dict[str, Any]]) -> Path:
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    names = [v["vintage"] for v in vintages]
    ax.plot(names, [v["mean_probability"] for v in vintages], label="mean predicted")
    matured = [(v["vintage"], v["bad_rate"]) for v in vintages if v["bad_rate"] is not None]
    if matured:
        ax.plot([m[0] for m in matured], [m[1] for m in matured], marker="o", label="bad rate")
    ax.set_xlabel("vintage")
    ax.set_ylabel("default rate")
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path
