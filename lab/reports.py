"""Plots and tables a risk modeler reads: ROC, KS, calibration, gains table.

All of them are drawn from :class:`~models.evaluation.EvaluationReport` aggregates, so they can
be produced wherever the report is (the bank's tracking server), never from rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from features.safe_csv import write_csv
from models.evaluation import EvaluationReport

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def plot_roc(reports: Mapping[str, EvaluationReport], path: Path) -> Path:
    """ROC curves of several models on one chart, AUC in the legend."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for colour, (label, report) in zip(_COLOURS, reports.items(), strict=False):
        ax.plot(
            report.roc_fpr, report.roc_tpr, color=colour, label=f"{label} (AUC {report.auc:.3f})"
        )
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="False positive rate (goods flagged)", ylabel="True positive rate (bads caught)")
    ax.set_title("ROC, held-out test set")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def ks_curves(report: EvaluationReport) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Population share (riskiest first), cumulative bad share and cumulative good share."""
    tpr = np.asarray(report.roc_tpr)
    fpr = np.asarray(report.roc_fpr)
    n_good = report.n - report.n_bad
    population = (tpr * report.n_bad + fpr * n_good) / report.n
    return population, tpr, fpr


def plot_ks(reports: Mapping[str, EvaluationReport], path: Path) -> Path:
    """KS chart: cumulative bad and good shares against population share, per model."""
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for colour, (label, report) in zip(_COLOURS, reports.items(), strict=False):
        population, bads, goods = ks_curves(report)
        ax.plot(population, bads, color=colour, label=f"{label}: bads (KS {report.ks:.3f})")
        ax.plot(population, goods, color=colour, linestyle="--", label=f"{label}: goods")
        best = int(np.argmax(bads - goods))
        ax.vlines(population[best], goods[best], bads[best], color=colour, linewidth=1)
    ax.set(xlabel="Share of population, riskiest first", ylabel="Cumulative share")
    ax.set_title("Kolmogorov-Smirnov")
    ax.legend(loc="lower right", fontsize=7)
    return _save(fig, path)


def plot_calibration(reports: Mapping[str, EvaluationReport], path: Path) -> Path:
    """Reliability diagram: mean predicted probability against observed bad rate."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    top = 0.0
    for colour, (label, report) in zip(_COLOURS, reports.items(), strict=False):
        pred = [b.mean_predicted for b in report.calibration]
        obs = [b.observed_rate for b in report.calibration]
        top = max(top, *pred, *obs)
        ax.plot(pred, obs, marker="o", color=colour, label=f"{label} (ECE {report.ece:.3f})")
    ax.plot([0, top], [0, top], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="Mean predicted default probability", ylabel="Observed default rate")
    ax.set_title("Calibration by score decile")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_importance(frame: pd.DataFrame, path: Path, top: int = 20) -> Path:
    """Horizontal bars of total split gain per feature, coloured by party, top features."""
    head = frame.head(top).iloc[::-1]
    parties = list(dict.fromkeys(frame["party"]))
    colour = {p: _COLOURS[i % len(_COLOURS)] for i, p in enumerate(parties)}
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.3 * len(head) + 1)))
    labels = [f"{f} [{g}]" for f, g in zip(head["feature"], head["group"], strict=True)]
    ax.barh(labels, head["gain_share"], color=[colour[p] for p in head["party"]])
    for party in parties:
        ax.barh([], [], color=colour[party], label=party)
    ax.set_xlabel("Share of total split gain")
    ax.set_title("Feature importance by party and feature group")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def gains_table(report: EvaluationReport) -> pd.DataFrame:
    """The decile gains / lift table as a data frame."""
    frame = pd.DataFrame([row.__dict__ for row in report.deciles])
    return frame.rename(
        columns={
            "n": "accounts",
            "n_bad": "bads",
            "cum_bad_share": "cum_bads_captured",
            "cum_good_share": "cum_goods",
        }
    )


def write_gains(report: EvaluationReport, stem: Path) -> list[Path]:
    """Write the gains table as ``<stem>.csv`` and ``<stem>.html``."""
    frame = gains_table(report)
    csv = stem.with_suffix(".csv")
    html = stem.with_suffix(".html")
    write_csv(frame, csv)
    html.write_text(
        frame.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0), encoding="utf-8"
    )
    return [csv, html]


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
