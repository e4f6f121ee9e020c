"""Screening results in the job summary, MLflow metrics and artifacts.

What the coordinator learned from :mod:`federated.screening_protocol` (each party's stability
report, every column's information value and what each platform dropped) and the joint
model's score stability from training to test rows (:mod:`models.split_reports`), laid out
for a risk modeler: indices flagged by the usual thresholds (:data:`features.stability
.PSI_THRESHOLDS`: 0.1 moderate, 0.25 significant).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from features.safe_csv import write_csv
from features.stability import PSI_THRESHOLDS
from features.woe import iv_strength
from federated.result import JobResult

#: Columns of ``screening/csi.csv``: one row per shared column index or per feature group.
CSI_COLUMNS = ("party", "level", "name", "group", "index", "shift", "n_reference", "n_recent")
#: Columns of ``screening/iv.csv``.
IV_COLUMNS = ("party", "feature", "iv", "strength", "used")

_METRIC_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/ ]")


def csi_frame(result: JobResult) -> pd.DataFrame:
    """Every stability index the parties shared: per column where shared, per feature group."""
    rows: list[dict[str, Any]] = []
    for party, report in result.screening.get("csi", {}).items():
        sizes = {"n_reference": report["n_reference"], "n_recent": report["n_recent"]}
        for entry in report.get("features", []):
            rows.append(
                {
                    "party": party,
                    "level": "feature",
                    "name": entry["name"],
                    "group": entry.get("group") or "",
                    "index": entry["index"],
                    "shift": entry["shift"],
                    **sizes,
                }
            )
        groups = report["groups"]
        if report.get("features") and set(groups) <= {"other"}:
            continue  # every column is listed and none has a published group
        for group, summary in groups.items():
            rows.append(
                {
                    "party": party,
                    "level": "group (largest)",
                    "name": group,
                    "group": group,
                    "index": summary["csi_max"],
                    "shift": summary["shift"],
                    **sizes,
                }
            )
    return pd.DataFrame(rows, columns=list(CSI_COLUMNS))


def iv_frame(result: JobResult) -> pd.DataFrame:
    """Every column's information value, its strength and whether the model used it."""
    iv = result.screening.get("iv")
    if not iv:
        return pd.DataFrame(columns=list(IV_COLUMNS))
    dropped = {(p, n) for p, names in iv["dropped"].items() for n in names}
    rows = [
        {
            "party": party,
            "feature": name,
            "iv": value,
            "strength": iv_strength(value),
            "used": (party, name) not in dropped,
        }
        for party, values in iv["iv"].items()
        for name, value in values.items()
    ]
    frame = pd.DataFrame(rows, columns=list(IV_COLUMNS))
    return frame.sort_values(["party", "iv"], ascending=[True, False], kind="stable")


def score_stability(result: JobResult) -> dict[str, Any] | None:
    """The joint score's PSI from training to test rows, when the model type reports it."""
    found: dict[str, Any] | None = result.joint.details.get("score_stability")
    return found


def summary(result: JobResult) -> dict[str, Any]:
    """The ``screening`` section of a job summary (``{}`` when the job screened nothing)."""
    score = score_stability(result)
    if not result.screening and score is None:
        return {}
    out: dict[str, Any] = {
        "thresholds": {label: bound for bound, label in PSI_THRESHOLDS},
        "score_psi_train_test": None if score is None else score["index"],
        "score_shift_train_test": None if score is None else score["shift"],
    }
    if not result.screening:
        return out
    csi = csi_frame(result)
    flagged = csi[csi["shift"] != "stable"]
    out["bins"] = result.screening.get("bins")
    out["recent"] = {
        party: {
            "reference": report["reference"],
            "recent": report["recent"],
            "n_reference": report["n_reference"],
            "n_recent": report["n_recent"],
            "detail": report["detail"],
        }
        for party, report in result.screening.get("csi", {}).items()
    }
    out["flagged"] = [
        f"{r.party}:{r.name} ({r.level}) CSI {r.index:.4f} {r.shift}" for r in flagged.itertuples()
    ]
    iv = result.screening.get("iv")
    out["iv"] = (
        None
        if not iv
        else {"min_iv": iv["min_iv"], "dropped": iv["dropped"], "n_dropped": iv["n_dropped"]}
    )
    return out


def metrics(result: JobResult) -> dict[str, float]:
    """MLflow metrics: the score's PSI, every shared CSI (per column and group), IVs, drops."""
    out: dict[str, float] = {}
    score = score_stability(result)
    if score is not None:
        out["score_psi_train_test"] = float(score["index"])
    csi = csi_frame(result)
    for r in csi.itertuples():
        kind = "csi" if r.level == "feature" else "csi_group_max"
        out[_metric(f"{kind}_{r.party}.{r.name}")] = float(r.index)  # type: ignore[arg-type]
    if not csi.empty:
        out["csi_max"] = float(csi["index"].max())
        out["csi_n_moderate"] = float((csi["shift"] == "moderate").sum())
        out["csi_n_significant"] = float((csi["shift"] == "significant").sum())
    for r in iv_frame(result).itertuples():
        out[_metric(f"iv_{r.party}.{r.feature}")] = float(r.iv)  # type: ignore[arg-type]
    iv = result.screening.get("iv")
    if iv:
        for party, n in iv["n_dropped"].items():
            out[_metric(f"iv_n_dropped_{party}")] = float(n)
    return out


def write_artifacts(folder: Path, result: JobResult) -> list[tuple[str | None, Path]]:
    """``screening/stability.json`` (everything), ``csi.csv`` and ``iv.csv``; none if unused."""
    score = score_stability(result)
    if not result.screening and score is None:
        return []
    out_dir = folder / "screening"
    out_dir.mkdir(exist_ok=True)
    doc = {**result.screening, "score_train_test": score}
    path = out_dir / "stability.json"
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    files: list[tuple[str | None, Path]] = [("screening", path)]
    if result.screening.get("csi"):
        files.append(("screening", write_csv(csi_frame(result), out_dir / "csi.csv")))
    if result.screening.get("iv"):
        files.append(("screening", write_csv(iv_frame(result), out_dir / "iv.csv")))
    return files


def describe(section: dict[str, Any]) -> list[str]:
    """Lines printed after a job that screened: flagged shifts and dropped columns."""
    if not section:
        return []
    lines = []
    if section.get("score_psi_train_test") is not None:
        lines.append(
            f"stability: score PSI train->test {section['score_psi_train_test']:.4f} "
            f"({section['score_shift_train_test']})"
        )
    flagged = section.get("flagged") or []
    if "recent" in section:
        lines.append(
            f"stability: {len(flagged)} shifted (CSI >= 0.1) against the recent window"
            + (
                ": " + "; ".join(flagged[:5]) + (" ..." if len(flagged) > 5 else "")
                if flagged
                else ""
            )
        )
    iv = section.get("iv")
    if iv:
        dropped = {p: names for p, names in iv["dropped"].items() if names}
        lines.append(
            f"screening: min_iv {iv['min_iv']:g} dropped "
            + (", ".join(f"{p}: {len(n)} columns" for p, n in dropped.items()) or "nothing")
        )
    return lines


def _metric(name: str) -> str:
    return _METRIC_UNSAFE.sub("_", name)[:250]


__all__ = [
    "CSI_COLUMNS",
    "IV_COLUMNS",
    "csi_frame",
    "describe",
    "iv_frame",
    "metrics",
    "score_stability",
    "summary",
    "write_artifacts",
]
