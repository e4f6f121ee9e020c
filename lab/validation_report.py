"""The validation/approval report of one registered model version (one HTML file).

What a bank's model-risk function files before a model is approved: discrimination by split
(AUC, KS, Gini), calibration (reliability table and plot, Brier score), stability (the score's
PSI from training to test rows, each column's CSI against a recent window, information values),
importance by party and feature group, the privacy spend each node charged for the job, and the
data lineage (each party's data digest and published feature-set version, the config hash, the
audit head). Every figure is read from the job's own artifacts (``result.json``,
``summary.json``, ``joint/``): aggregates the bank's tracking server already holds, never a row.

The file is self-contained (inline CSS, matplotlib plots as inline PNG, no script, no CDN), so
it can be archived and mailed as it is. A job writes it for the version it registers and logs it
to that version's run (``validation/validation_report.html``); ``lab models report NAME VERSION
--out FILE`` fetches it (or rebuilds it from the run's artifacts for versions registered before).
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from federated.result import RESULT_FILE, JobResult
from lab import reports, screening
from lab.errors import InputError
from lab.home import lab_home
from models.evaluation import EvaluationReport

#: Where the report lives among a run's artifacts.
ARTIFACT_DIR = "validation"
ARTIFACT_NAME = "validation_report.html"

#: The artifacts the report is built from (relative to the run's artifact root).
SOURCES = (RESULT_FILE, "summary.json", "joint/feature_importance.csv")


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report shows, read from a run's artifacts (see :func:`inputs_from`).

    Attributes
    ----------
    model_name, version, run_id : str
        The registered version and its run.
    result : JobResult
        The job's result (evaluation reports, screening, node charges, parties).
    summary : dict
        The job summary.
    importance : DataFrame or None
        ``joint/feature_importance.csv`` (SecureBoost), when the model type writes it.
    ledger : list of dict
        The budget ledger's records of the job, where this home keeps the ledger.
    tags : dict
        The run's tags (config hash, audit head, data digests).
    """

    model_name: str
    version: str
    run_id: str
    result: JobResult
    summary: dict[str, Any]
    importance: pd.DataFrame | None = None
    ledger: list[dict[str, Any]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)


def locator(registered: Mapping[str, Any]) -> dict[str, str]:
    """Where a registered version's report is, and the command that fetches it."""
    name, version = registered["name"], registered["version"]
    return {
        "artifact": f"{ARTIFACT_DIR}/{ARTIFACT_NAME}",
        "command": f"lab models report {name} {version} --out {name}-v{version}-validation.html",
    }


def inputs_from(
    folder: Path,
    *,
    model_name: str,
    version: str,
    run_id: str,
    ledger: list[dict[str, Any]] | None = None,
    tags: Mapping[str, str] | None = None,
    summary: dict[str, Any] | None = None,
) -> ReportInputs:
    """Read a run's artifacts from ``folder`` (a job's artifact folder or a download of it)."""
    result = JobResult.from_json((folder / RESULT_FILE).read_text(encoding="utf-8"))
    if summary is None:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    importance_path = folder / "joint" / "feature_importance.csv"
    importance = pd.read_csv(importance_path) if importance_path.is_file() else None
    return ReportInputs(
        model_name=model_name,
        version=version,
        run_id=run_id,
        result=result,
        summary=summary,
        importance=importance,
        ledger=list(ledger or []),
        tags=dict(tags or {}),
    )


def ledger_records(job_id: str, home: Path) -> list[dict[str, Any]]:
    """The budget ledger's records of ``job_id`` in ``home`` (none without a ledger there)."""
    db = home / "governance.db"
    if not db.is_file():
        return []
    from lab.governance.ledger import BudgetLedger

    out = []
    with BudgetLedger(db) as ledger:
        for job in ledger.jobs():
            if not job.job_id.startswith(f"{job_id}/"):
                continue
            planned, spent = ledger.epsilon_of(job)
            out.append(
                {
                    "reservation": job.job_id,
                    "feature_set": job.feature_set,
                    "bank": job.bank,
                    "state": job.state,
                    "outcome": job.outcome,
                    "planned_epsilon": planned,
                    "spent_epsilon": spent,
                    "delta": job.job_delta,
                    "events": len(job.actual_events or job.planned_events),
                }
            )
    return out


class ReportNotFoundError(InputError):
    """No registered version, or no run artifacts to build its report from."""


def fetch(uri: str, name: str, version: str, out: Path) -> tuple[Path, bool]:
    """Write the validation report of ``name`` version ``version`` (registry ``uri``) to ``out``.

    The report the job logged to the version's run is copied; a version registered before
    reports existed gets one built now from its run's artifacts (``True`` in the result).

    Raises
    ------
    ReportNotFoundError
        Naming the known models or versions, or the missing artifacts.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        known = sorted(m.name for m in client.search_registered_models())
        raise ReportNotFoundError(
            f"no registered model {name!r} in {uri}; known models: {known or 'none'}"
        ) from exc
    try:
        model_version = client.get_model_version(name, version)
    except MlflowException as exc:
        versions = sorted(
            (str(v.version) for v in client.search_model_versions(f"name = '{name}'")), key=int
        )
        raise ReportNotFoundError(
            f"model {name!r} has no version {version!r}; versions: {versions}"
        ) from exc
    run_id = str(model_version.run_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lab-report-") as tmp:
        folder = Path(tmp)
        try:
            local = client.download_artifacts(run_id, f"{ARTIFACT_DIR}/{ARTIFACT_NAME}", tmp)
        except (MlflowException, OSError):
            local = None
        if local is not None:
            partial = out.with_name(out.name + ".tmp")
            partial.write_bytes(Path(local).read_bytes())
            partial.replace(out)
            return out, False
        for source in SOURCES:
            try:
                client.download_artifacts(run_id, source, tmp)
            except (MlflowException, OSError):
                continue
        if not (folder / RESULT_FILE).is_file() or not (folder / "summary.json").is_file():
            raise ReportNotFoundError(
                f"run {run_id} of {name} version {version} holds neither a validation report "
                f"nor the {RESULT_FILE} and summary.json to build one from; re-run its job"
            )
        run = client.get_run(run_id)
        result = JobResult.from_json((folder / RESULT_FILE).read_text(encoding="utf-8"))
        inputs = inputs_from(
            folder,
            model_name=name,
            version=version,
            run_id=run_id,
            ledger=ledger_records(result.job_id, lab_home()),
            tags=dict(run.data.tags),
        )
        return write(inputs, out), True


# ----------------------------------------------------------------------------------- sections


def split_reports(result: JobResult) -> dict[str, EvaluationReport]:
    """The joint model's evaluation by split: train, validation (if any), test."""
    details = result.joint.details
    out: dict[str, EvaluationReport] = {}
    for split in ("train", "validation"):
        raw = details.get(f"{split}_report")
        if raw:
            out[split] = EvaluationReport.from_dict(raw)
    if result.joint.report is not None:
        out["test"] = result.joint.report
    return out


def importance_by(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Splits, cover and share of exact gain summed by ``keys`` (``party``, ``group``)."""
    grouped = frame.groupby(list(keys), sort=True)[["splits", "cover", "gain"]].sum()
    total = grouped["gain"].sum()
    grouped["gain_share"] = grouped["gain"] / total if total else 0.0
    return grouped.reset_index().sort_values("gain", ascending=False, kind="stable")


def _discrimination(inputs: ReportInputs) -> str:
    splits = split_reports(inputs.result)
    if not splits:
        return "<p>No joint model evaluation was reported.</p>"
    rows = [
        [
            name,
            r.n,
            r.n_bad,
            _f(r.bad_rate),
            _f(r.auc),
            _f(r.ks),
            _f(r.gini),
            _f(r.brier),
            _f(r.log_loss),
        ]
        for name, r in splits.items()
    ]
    bank_only = next(iter(inputs.result.bank_only.values()), None)
    if bank_only is not None and inputs.result.kind == "vertical":
        rows.append(
            [
                "test: bank-only LightGBM (reference)",
                bank_only.n,
                bank_only.n_bad,
                _f(bank_only.bad_rate),
                _f(bank_only.auc),
                _f(bank_only.ks),
                _f(bank_only.gini),
                _f(bank_only.brier),
                _f(bank_only.log_loss),
            ]
        )
    note = "" if "validation" in splits else "<p>No validation split was used for this model.</p>"
    missing = (
        ""
        if "train" in splits
        else "<p>Training-row evaluation: not reported by this model type (the bank holds no "
        "joint training scores).</p>"
    )
    return (
        _table(["split", "rows", "bad", "bad rate", "AUC", "KS", "Gini", "Brier", "log-loss"], rows)
        + note
        + missing
    )


def _calibration(inputs: ReportInputs) -> str:
    test = inputs.result.joint.report
    if test is None:
        return "<p>No test evaluation: no calibration.</p>"
    table = _table(
        ["bin", "rows", "mean predicted", "observed bad rate", "difference"],
        [
            [
                c.bin,
                c.n,
                _f(c.mean_predicted),
                _f(c.observed_rate),
                _f(c.observed_rate - c.mean_predicted),
            ]
            for c in test.calibration
        ],
    )
    deciles = _table(
        [
            "decile (1 = riskiest)",
            "rows",
            "bad",
            "bad rate",
            "min score",
            "max score",
            "KS",
            "lift",
        ],
        [
            [
                d.decile,
                d.n,
                d.n_bad,
                _f(d.bad_rate),
                _f(d.min_score),
                _f(d.max_score),
                _f(d.ks),
                _f(d.lift),
            ]
            for d in test.deciles
        ],
    )
    with tempfile.TemporaryDirectory(prefix="lab-report-") as tmp:
        plot = reports.plot_calibration({"joint model (test)": test}, Path(tmp) / "cal.png")
        image = _png(plot)
    return (
        f"<p>Test rows: Brier score {_f(test.brier)}, expected calibration error "
        f"{_f(test.ece)}.</p>{image}<h3>Reliability table</h3>{table}"
        f"<h3>Gains by decile</h3>{deciles}"
    )


def _stability(inputs: ReportInputs) -> str:
    result = inputs.result
    parts = []
    score = screening.score_stability(result)
    if score is None:
        parts.append("<p>Score PSI train &rarr; test: not reported by this model type.</p>")
    else:
        parts.append(
            f"<p>Score PSI train &rarr; test: <b>{_f(score['index'])}</b> "
            f"({_flag(score['shift'])}); bins at the training scores' deciles.</p>"
        )
        parts.append(
            _table(
                ["bin", "train rows", "test rows"],
                [
                    [i + 1 if i < len(score["expected"]) - 1 else "missing", e, a]
                    for i, (e, a) in enumerate(zip(score["expected"], score["actual"], strict=True))
                ],
            )
        )
    csi = screening.csi_frame(result)
    if csi.empty:
        parts.append(
            "<p>Characteristic stability: no recent window was screened (experiment section "
            "<code>screening.recent</code>).</p>"
        )
    else:
        windows = _table(
            [
                "party",
                "training window",
                "recent window",
                "rows (training)",
                "rows (recent)",
                "shared",
            ],
            [
                [p, r["reference"], r["recent"], r["n_reference"], r["n_recent"], r["detail"]]
                for p, r in result.screening["csi"].items()
            ],
        )
        rows = [
            [r.party, r.level, r.name, r.group, _f(r.index), _flag(str(r.shift))]
            for r in csi.itertuples()
        ]
        parts.append(
            "<h3>Characteristic stability (CSI) against the recent window</h3>"
            + windows
            + "<p>Each party computed its own columns' indices on bins it fixed on its training "
            "window; a platform shares per column or only per feature group, as its own policy "
            "says.</p>" + _table(["party", "level", "name", "group", "CSI", "reading"], rows)
        )
    iv = screening.iv_frame(result)
    if not iv.empty:
        threshold = result.screening["iv"]["min_iv"]
        parts.append(
            f"<h3>Information value (screening, min_iv {threshold:g})</h3>"
            + _table(
                ["party", "feature", "IV", "strength", "used by the model"],
                [
                    [r.party, r.feature, _f(r.iv), r.strength, "yes" if r.used else "no"]
                    for r in iv.itertuples()
                ],
            )
        )
    return "".join(parts) + (
        "<p>Readings: below 0.1 stable, 0.1 to 0.25 moderate shift, from 0.25 significant "
        "shift.</p>"
    )


def _importance(inputs: ReportInputs) -> str:
    frame = inputs.importance
    if frame is None or frame.empty:
        return "<p>Importance by party and group: not reported by this model type.</p>"
    parties = importance_by(frame, ["party"])
    groups = importance_by(frame, ["party", "group"])
    dp = inputs.result.nodes and any(
        (n or {}).get("epsilon") is not None for n in inputs.result.nodes.values()
    )
    with tempfile.TemporaryDirectory(prefix="lab-report-") as tmp:
        chart = reports.importance_chart(frame, dp=bool(dp))
        image = _png(reports.plot_importance(chart, Path(tmp) / "importance.png"))
    return (
        image
        + "<h3>By party</h3>"
        + _table(
            ["party", "splits", "cover", "gain", "share of gain"],
            [
                [r.party, r.splits, _f(r.cover), _f(r.gain), _f(r.gain_share)]
                for r in parties.itertuples()
            ],
        )
        + "<h3>By party and feature group</h3>"
        + _table(
            ["party", "group", "splits", "cover", "gain", "share of gain"],
            [
                [r.party, r.group, r.splits, _f(r.cover), _f(r.gain), _f(r.gain_share)]
                for r in groups.itertuples()
            ],
        )
    )


def _privacy(inputs: ReportInputs) -> str:
    nodes = inputs.result.nodes
    rows = [
        [
            party,
            (n or {}).get("feature_set") or "-",
            "yes" if (n or {}).get("governed") else "no",
            json.dumps((n or {}).get("releases") or {}),
            _f((n or {}).get("epsilon")),
            _f((n or {}).get("delta")),
            (n or {}).get("ledger") or "-",
            (n or {}).get("reservation") or "-",
        ]
        for party, n in nodes.items()
    ]
    privacy = inputs.summary.get("privacy") or {}
    parts = [
        "<p>What each node charged for the job at its close (its own count of releases).</p>",
        _table(
            ["party", "feature set", "governed", "releases", "ε", "δ", "ledger", "reservation"],
            rows,
        ),
    ]
    if privacy.get("epsilon") is not None:
        parts.append(
            f"<p>Job: ε = {_f(privacy['epsilon'])}, δ = {privacy.get('delta')} "
            f"({html.escape(str(privacy.get('accountant')))}).</p>"
        )
    if inputs.ledger:
        parts.append(
            "<h3>Budget ledger entries of the job</h3>"
            + _table(
                [
                    "reservation",
                    "feature set",
                    "bank",
                    "state",
                    "outcome",
                    "planned ε",
                    "spent ε",
                    "δ",
                    "events",
                ],
                [
                    [
                        r["reservation"],
                        r["feature_set"],
                        r["bank"],
                        r["state"],
                        r["outcome"] or "-",
                        _f(r["planned_epsilon"]),
                        _f(r["spent_epsilon"]),
                        r["delta"] if r["delta"] is not None else "-",
                        r["events"],
                    ]
                    for r in inputs.ledger
                ],
            )
        )
    else:
        parts.append("<p>No budget ledger entry for this job in this home.</p>")
    return "".join(parts)


def _lineage(inputs: ReportInputs) -> str:
    result = inputs.result
    rows = [
        [
            p.name,
            p.role,
            p.n_rows,
            p.n_admitted,
            p.n_features,
            (p.governance or {}).get("feature_set") or "unpublished file",
            p.digest,
        ]
        for p in result.parties
    ]
    meta = [
        ["job id", result.job_id],
        ["config hash", inputs.summary.get("config_hash", "-")],
        ["aligned enterprises", result.n_aligned],
        ["train / test rows", f"{result.n_train} / {result.n_test}"],
        ["lab version", inputs.summary.get("lab_version", "-")],
        ["runtime", inputs.summary.get("runtime", "-")],
    ]
    meta += [[k, v] for k, v in sorted(inputs.tags.items()) if k.startswith("lab.audit")]
    recent = [[p, r["recent"]] for p, r in (result.screening.get("csi") or {}).items()]
    out = _table(["", ""], meta) + _table(
        ["party", "role", "rows", "admitted", "features", "feature set", "data digest"], rows
    )
    if recent:
        out += "<h3>Recent windows screened</h3>" + _table(["party", "recent window"], recent)
    return out


# -------------------------------------------------------------------------------------- page


def build(inputs: ReportInputs) -> str:
    """The report as one self-contained HTML document."""
    s = inputs.summary
    title = f"Validation report: {inputs.model_name} version {inputs.version}"
    sections = [
        ("Discrimination", _discrimination(inputs)),
        ("Calibration", _calibration(inputs)),
        ("Stability", _stability(inputs)),
        ("Importance by party and feature group", _importance(inputs)),
        ("Privacy spend", _privacy(inputs)),
        ("Data lineage", _lineage(inputs)),
    ]
    body = "".join(
        f'<h2 id="s{i}">{i}. {html.escape(name)}</h2>{content}'
        for i, (name, content) in enumerate(sections, 1)
    )
    generated = datetime.now().astimezone().isoformat(timespec="seconds")
    header = _table(
        ["", ""],
        [
            ["model", f"{inputs.model_name} version {inputs.version}"],
            [
                "type",
                f"{s.get('model', inputs.result.model_type)} ({s.get('kind', inputs.result.kind)})",
            ],
            ["experiment", s.get("name", inputs.result.name)],
            ["MLflow run", inputs.run_id],
        ],
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}
table{{border-collapse:collapse;margin:.5em 0 1em}}td,th{{border:1px solid #bbb;padding:.2em .5em;
font-size:90%;text-align:left}}th{{background:#eee}}img{{max-width:100%}}
.moderate{{background:#fff3c4}}.significant{{background:#ffd2cc}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Generated {html.escape(generated)} from the run's artifacts (aggregates only: no row, id or
platform value).</p>
{header}{body}
</body></html>
"""


def write(inputs: ReportInputs, path: Path) -> Path:
    """Write :func:`build`'s document to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(build(inputs), encoding="utf-8")
    tmp.replace(path)
    return path


def _f(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


class _Html(str):
    """Markup built here from escaped parts (a table cell shows it as it is)."""


def _flag(shift: str) -> _Html:
    return _Html(f'<span class="{html.escape(shift)}">{html.escape(shift)}</span>')


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    return value if isinstance(value, _Html) else html.escape(_f(value))


def _png(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'
