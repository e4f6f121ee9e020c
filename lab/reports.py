"""Plots and tables a risk modeler reads: ROC, KS, calibration, gains table.

All of them are drawn from :class:`~models.evaluation.EvaluationReport` aggregates, so they can
be produced wherever the report is (the bank's tracking server), never from rows.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from features.safe_csv import write_csv
from models.evaluation import EvaluationReport
from models.explanations import UNGROUPED

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


#: Group of a column whose party published none (e.g. FATE's files): said, not guessed.
UNKNOWN_GROUP = UNGROUPED

#: One colour per party in the importance chart (matplotlib's tab10, in sorted party order;
#: distinct for up to ten parties, then repeated).
_PARTY_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


@dataclass(frozen=True)
class Bar:
    """One bar of the importance chart: its label, share of the total gain and party."""

    label: str
    value: float
    party: str


@dataclass(frozen=True)
class ImportanceChart:
    """What the importance plot draws, computed from ``joint/feature_importance.csv``.

    Attributes
    ----------
    features : tuple of Bar
        The top features, labelled ``party:column``, largest share first.
    groups : tuple of Bar
        Gain share per ``party:group`` (published feature groups), largest first.
    group_cover : dict
        ``party:group`` -> its share of the total cover (hessian sum at the splits), drawn
        beside its gain share (empty when the frame has no ``cover``).
    colours : dict
        Party -> colour, a different one per party (the legend).
    title, xlabel : str
        Chart text.
    notes : tuple of str
        Caption lines: what the gain is, DP, parties without published groups, truncation.
    """

    features: tuple[Bar, ...]
    groups: tuple[Bar, ...]
    colours: dict[str, str]
    title: str
    xlabel: str
    notes: tuple[str, ...]
    group_cover: dict[str, float] = field(default_factory=dict)


def importance_chart(frame: pd.DataFrame, *, dp: bool, top: int = 20) -> ImportanceChart:
    """What the importance plot of ``frame`` draws (bars, labels, colours, caption).

    Parameters
    ----------
    frame : DataFrame
        :func:`lab.reporting.secureboost.importance_frame`'s: ``party``, ``feature``,
        ``group`` and ``gain_share`` (the exact gain's share) are read.
    dp : bool
        Whether the job released DP-noised platform histograms (said in the caption: the split
        search saw noisy gains, the bars do not).
    top : int
        Features shown (every group is).
    """
    labels = [f"{p}:{f}" for p, f in zip(frame["party"], frame["feature"], strict=True)]
    rows = sorted(
        zip(labels, frame["gain_share"].astype(float), frame["party"], strict=True),
        key=lambda r: (-r[1], r[0]),
    )
    features = tuple(Bar(label, value, str(party)) for label, value, party in rows[:top])
    by_group = frame.groupby(["party", "group"], sort=True)["gain_share"].sum().reset_index()
    groups = tuple(
        sorted(
            (
                Bar(f"{p}:{g}", float(v), str(p))
                for p, g, v in by_group.itertuples(index=False, name=None)
            ),
            key=lambda b: (-b.value, b.label),
        )
    )
    group_cover: dict[str, float] = {}
    if "cover" in frame.columns:
        cover = frame.groupby(["party", "group"], sort=True)["cover"].sum().reset_index()
        total = float(cover["cover"].sum())
        group_cover = {
            f"{party}:{group}": float(value) / total if total else 0.0
            for party, group, value in cover.itertuples(index=False, name=None)
        }
    parties = sorted({str(p) for p in frame["party"]})
    colours = {p: _PARTY_COLOURS[i % len(_PARTY_COLOURS)] for i, p in enumerate(parties)}
    notes = [
        "Gain: each chosen split's reduction of the (second-order) training loss, computed "
        "exactly by the bank from its own gradients and the split's partition (XGBoost's "
        "total_gain)."
    ]
    if group_cover:
        notes.append(
            "Groups: gain share (solid) and cover share (hatched: the hessian sum at the "
            "group's splits, XGBoost's total_cover; how many enterprises, weighted by their "
            "uncertainty, its splits decided). Both in importance_by_group.csv."
        )
    if dp:
        notes.append(
            "DP job: the split search saw DP-noised platform gains; the bars are not those "
            "(they are in feature_importance.csv as search_gain)."
        )
    bare = sorted({str(p) for p in frame.loc[frame["group"] == UNKNOWN_GROUP, "party"]})
    if bare:
        notes.append(
            f"No published feature groups for {', '.join(bare)}: their columns are "
            f"'{UNKNOWN_GROUP}'."
        )
    if len(rows) > top:
        notes.append(f"Top {top} of {len(rows)} features that split.")
    return ImportanceChart(
        features=features,
        groups=groups,
        colours=colours,
        title="Feature importance: share of exact split gain, by party and feature group",
        xlabel="Share of total split gain",
        notes=tuple(notes),
        group_cover=group_cover,
    )


#: Columns of :func:`importance_by_group`.
GROUP_IMPORTANCE_COLUMNS = (
    "party",
    "group",
    "features",
    "splits",
    "gain",
    "gain_share",
    "cover",
    "cover_share",
)


def importance_by_group(frame: pd.DataFrame) -> pd.DataFrame:
    """Global importance per ``(party, group)``: splits, exact gain and cover, and their shares.

    Parameters
    ----------
    frame : DataFrame
        :func:`lab.reporting.secureboost.importance_frame`'s (``party``, ``feature``,
        ``group``, ``splits``, ``gain``, ``cover``).

    Returns
    -------
    DataFrame
        :data:`GROUP_IMPORTANCE_COLUMNS`, largest gain first. ``gain`` is the exact split gain
        (XGBoost's ``total_gain``), ``cover`` the hessian sum at those splits (XGBoost's
        ``total_cover``: how many, and how uncertain, the enterprises the group's splits
        decided); each share is over all parties' splits. ``features`` counts the group's
        columns that split somewhere.
    """
    if frame.empty:
        return pd.DataFrame(columns=list(GROUP_IMPORTANCE_COLUMNS))
    grouped = (
        frame.groupby(["party", "group"], sort=True)
        .agg(
            features=("feature", "nunique"),
            splits=("splits", "sum"),
            gain=("gain", "sum"),
            cover=("cover", "sum"),
        )
        .reset_index()
    )
    for measure in ("gain", "cover"):
        total = float(grouped[measure].sum())
        grouped[f"{measure}_share"] = grouped[measure] / total if total else 0.0
    grouped = grouped.sort_values(["gain", "party", "group"], ascending=[False, True, True])
    return grouped.loc[:, list(GROUP_IMPORTANCE_COLUMNS)].reset_index(drop=True)


def plot_importance(chart: ImportanceChart, path: Path) -> Path:
    """Draw ``chart``: features (left) and feature groups (right), coloured by party."""
    n = max(len(chart.features), len(chart.groups))
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(12, max(3.0, 0.3 * n + 2.2)), gridspec_kw={"width_ratios": [3, 2]}
    )
    for ax, bars, what in ((left, chart.features, "Features"), (right, chart.groups, "Groups")):
        paired = ax is right and bool(chart.group_cover)
        positions = np.arange(len(bars), dtype=float)
        ax.barh(
            positions - (0.2 if paired else 0.0),
            [b.value for b in bars],
            height=0.4 if paired else 0.8,
            color=[chart.colours[b.party] for b in bars],
        )
        if paired:
            ax.barh(
                positions + 0.2,
                [chart.group_cover.get(b.label, 0.0) for b in bars],
                height=0.4,
                color=[chart.colours[b.party] for b in bars],
                alpha=0.45,
                hatch="//",
            )
        ax.set_yticks(positions, [b.label for b in bars])
        ax.invert_yaxis()  # largest first
        ax.axvline(0.0, color="grey", linewidth=0.8)
        ax.set_xlabel("Share of total gain (solid) and cover (hatched)" if paired else chart.xlabel)
        ax.set_title(what, fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
    handles = [Patch(facecolor=c, label=p) for p, c in chart.colours.items()]
    right.legend(handles=handles, title="party", loc="lower right", fontsize=8)
    fig.suptitle(chart.title, fontsize=11)
    caption = "\n".join(textwrap.fill(note, 150) for note in chart.notes)
    fig.text(0.01, 0.01, caption, fontsize=7, va="bottom", ha="left")
    lines = caption.count("\n") + 1
    fig.tight_layout(rect=(0, (0.15 + 0.13 * lines) / fig.get_figheight(), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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


def write_gains(report: EvaluationReport, stem: Path, *, model: str, rows: str) -> list[Path]:
    """Write the gains table as ``<stem>.csv`` and a titled ``<stem>.html``.

    Parameters
    ----------
    report : EvaluationReport
        The evaluation whose deciles are tabled.
    stem : Path
        Output path without suffix.
    model : str
        Whose scores are ranked (the title), e.g. ``joint secureboost``.
    rows : str
        Which labelled rows were scored (the caption), e.g. the bank's held-out test rows and
        the split that drew them.
    """
    frame = gains_table(report)
    csv = stem.with_suffix(".csv")
    html = stem.with_suffix(".html")
    write_csv(frame, csv)
    title = f"Gains table: {model}"
    caption = (
        f"Score: the predicted default probability of {model}, ranked highest (riskiest) first "
        f"into {len(report.deciles)} equal groups; decile 1 is the riskiest. Rows: {rows}; "
        f"{report.n} rows, {report.n_bad} bad ({report.bad_rate:.1%}). "
        f"AUC {report.auc:.3f}, KS {report.ks:.3f}, Gini {report.gini:.3f}."
    )
    table = frame.to_html(index=False, float_format=lambda v: f"{v:.4f}", border=0)
    opening = table.index(">") + 1
    table = f"{table[:opening]}\n<caption>{escape(caption)}</caption>{table[opening:]}"
    html.write_text(
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title></head>\n<body>\n<h1>{escape(title)}</h1>\n"
        f"{table}\n</body></html>\n",
        encoding="utf-8",
    )
    return [csv, html]


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
