"""``lab monitor``: post-loan monitoring of a registered joint model on a new window.

``lab monitor EXPERIMENT --model NAME[@ALIAS|/VERSION] --book BOOK.csv --window SET@VERSION``
runs a monitoring job (:mod:`federated.monitoring_protocol`) between the bank and the platform
of ``EXPERIMENT`` (the experiment the model was trained with):

* the bank's book (its current loans: its model columns, a vintage column ``YYYY-MM`` and the
  outcome, empty until matured) is aligned with the platform's published version ``--window``,
  served for the purpose :data:`PURPOSE` (only enterprises authorised for it, before
  alignment);
* the reference window is what the model was trained on: the platform's version named in the
  experiment, the bank's training file;
* the bank scores its book in both windows through the platform's split decisions, reports score
  PSI, CSI (its columns; the platform's per feature group), AUC/KS/bad rate by matured vintage
  and by score band, and writes its early-warning list in its own store.

Alerts (bank-set, :class:`models.monitoring.Thresholds`): score PSI above ``psi_max`` (of the
whole book, or of a segment of ``--segment-column``), a segment whose mean log-odds rose more
than ``segment_shift_max`` beyond the book's (and significantly), any CSI above ``csi_max``,
the AUC of the matured loans the model was not trained on (out of time) more than
``auc_drop_max`` below the model's test AUC. Each alert is audited (``monitoring_alert``) and
the command exits with :data:`EXIT_ALERT`, so a scheduler can act on it. The run is tracked in
MLflow, tagged with the monitored model version (which in turn is tagged with its latest
monitoring run and alert count), with plots of the score distributions, the PSI trend over the
model's monitoring runs and the vintage curves.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from federated.spec import GovernanceSpec, JobSpec, MonitoringSpec, PartyBinding
from lab.config import Experiment
from lab.errors import InputError, JobError, JobRefusedError
from lab.governance.audit import AuditLog
from lab.governance.node import settle_job
from lab.home import lab_home
from models.monitoring import SEGMENT_Z, Alert, Thresholds

logger = logging.getLogger(__name__)

#: The purpose a monitoring job is served for (authorizations and published purposes).
PURPOSE = "post_loan_monitoring"
#: Exit status of ``lab monitor`` when a threshold was crossed.
EXIT_ALERT = 4
#: Suffix of the MLflow experiment holding a model's monitoring runs.
EXPERIMENT_SUFFIX = "-monitoring"
#: Tags linking a monitoring run to the model version it monitors.
TAG_MODEL_NAME = "lab.monitored_model"
TAG_MODEL_VERSION = "lab.monitored_version"
#: Tags of the monitored model version naming its latest monitoring run and its alert count.
TAG_LAST_RUN = "lab.last_monitoring_run"
TAG_LAST_ALERTS = "lab.last_monitoring_alerts"


@dataclass(frozen=True)
class MonitorOptions:
    """What ``lab monitor`` was asked (see the module docstring)."""

    model: str
    book: Path
    window: str
    thresholds: Thresholds = field(default_factory=Thresholds)
    warning_threshold: float = MonitoringSpec.warning_threshold
    reasons: int = MonitoringSpec.reasons
    segment_column: str | None = MonitoringSpec.segment_column
    summary_json: Path | None = None
    tracking_uri: str | None = None


@dataclass(frozen=True)
class MonitoredModel:
    """The registered version being monitored and what the job needs of it."""

    name: str
    version: str
    parts: dict[str, dict[str, str]]
    bank_columns: tuple[str, ...]
    test_auc: float | None


def resolve_model(reference: str, bank: str, tracking_uri: str | None) -> MonitoredModel:
    """The registered version ``reference`` names, its parts and its test AUC.

    Raises
    ------
    InputError
        Unknown model, alias or version, or a version that is no SecureBoost joint model.
    """
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from lab.batch_scoring import model_uri, open_registry
    from lab.registry import SecureBoostBankModel

    store = open_registry(f"--model {reference}", tracking_uri)
    uri = model_uri(reference)
    client = MlflowClient(store, store)
    name = uri.removeprefix("models:/").split("@")[0].split("/")[0]
    try:
        if "@" in uri:
            version = client.get_model_version_by_alias(name, uri.split("@", 1)[1])
        else:
            version = client.get_model_version(name, uri.rsplit("/", 1)[1])
        model = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}")
    except MlflowException as exc:
        raise InputError(
            f"--model {reference}: {exc.message.splitlines()[0]}; lab models list shows the "
            "registered models"
        ) from exc
    python_model = model.unwrap_python_model()
    if not isinstance(python_model, SecureBoostBankModel):
        raise InputError(
            f"--model {reference}: version {version.version} is a "
            f"{type(python_model).__name__}; monitoring serves SecureBoost joint models"
        )
    part = python_model.part
    parts = {
        bank: {"model_id": part.model_id, "content_hash": part.content_hash},
        **{
            party: {"model_id": str(ref["model_id"]), "content_hash": str(ref["content_hash"])}
            for party, ref in part.platform_parts.items()
        },
    }
    used = sorted({n.rule.feature for tree in part.trees for n in tree.values() if n.rule})
    metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
    return MonitoredModel(
        name=name,
        version=str(version.version),
        parts=parts,
        bank_columns=tuple(used),
        test_auc=metrics.get("test_auc"),
    )


def monitoring_job(
    experiment: Experiment,
    model: MonitoredModel,
    options: MonitorOptions,
    *,
    home: Path | None = None,
) -> tuple[JobSpec, list[PartyBinding]]:
    """The monitoring job's spec and the parties' bindings (embedded runtime).

    ``home``: the lab home whose catalog names the window's file (default ``$LAB_HOME``).

    Raises
    ------
    InputError
        A book that is missing, an experiment without exactly one bank and one published
        platform feature set, or a window of another feature set.
    """
    from lab.governance.catalog import Catalog
    from lab.governance.errors import GovernanceError
    from lab.governance.vocabulary import parse_ref

    if not options.book.is_file():
        raise InputError(f"--book {options.book}: no such file; pass the bank's current book CSV")
    base = experiment.job_spec(task="align")
    banks = base.by_role("bank")
    platforms = base.by_role("platform")
    if len(banks) != 1 or len(platforms) != 1 or platforms[0].feature_set is None:
        raise InputError(
            f"{experiment.path}: monitoring needs one bank and one platform serving a published "
            "feature set (parties[].feature_set)"
        )
    bank, platform = banks[0], platforms[0]
    reference = platform.feature_set
    assert reference is not None
    try:
        if parse_ref(options.window)[0] != parse_ref(reference)[0]:
            raise InputError(
                f"--window {options.window}: the model was trained on {reference}; name a "
                f"version of {parse_ref(reference)[0]}"
            )
        entry = Catalog(None if home is None else home / "catalog").show(options.window)
    except GovernanceError as exc:
        raise InputError(f"--window {options.window}: {exc}") from exc
    parties = (
        replace(
            bank,
            label_column=None,
            weight_column=None,
            features=model.bank_columns,
            categorical=tuple(c for c in bank.categorical if c in model.bank_columns),
        ),
        replace(platform, feature_set=options.window),
    )
    spec = replace(
        base,
        parties=parties,
        task="monitor",
        model={k: v for k, v in base.model.items() if not k.startswith("dp_")},
        governance=GovernanceSpec(purpose=PURPOSE, require_authorization=True),
        monitoring=MonitoringSpec(
            parts=model.parts,
            reference={platform.name: reference},
            vintage_column="vintage",
            outcome_column=experiment.config.parties[0].label_column or "default_12m",
            warning_threshold=options.warning_threshold,
            reasons=options.reasons,
            model=model.name,
            segment_column=options.segment_column,
        ),
    )
    bindings = []
    for binding in experiment.bindings():
        if binding.name == bank.name:
            bindings.append(replace(binding, data=options.book, reference=binding.data))
        else:
            bindings.append(replace(binding, data=Path(entry.data_path)))
    return spec, bindings


def alerts(report: dict[str, Any], thresholds: Thresholds, test_auc: float | None) -> list[Alert]:
    """Every threshold the monitoring report crosses (see the module docstring)."""
    bank = report["bank"]
    out = []
    psi = float(bank["score_stability"]["index"])
    if psi > thresholds.psi_max:
        out.append(Alert("score_psi", "score", psi, thresholds.psi_max))
    for column in bank["bank_csi"]:
        if column["index"] > thresholds.csi_max:
            out.append(Alert("csi", f"bank:{column['name']}", column["index"], thresholds.csi_max))
    for party, csi in report["csi"].items():
        for group, values in csi["groups"].items():
            if values["csi_max"] > thresholds.csi_max:
                out.append(Alert("csi", f"{party}:{group}", values["csi_max"], thresholds.csi_max))
    for segment, values in bank["segments"].items():
        # Above the threshold and above what sampling noise gives a segment of its size.
        if values["index"] > max(thresholds.psi_max, values.get("noise_floor", 0.0)):
            out.append(Alert("segment_psi", segment, values["index"], thresholds.psi_max))
        if values["shift"] > thresholds.segment_shift_max and values["z"] > SEGMENT_Z:
            out.append(
                Alert("segment_shift", segment, values["shift"], thresholds.segment_shift_max)
            )
    oot = bank["out_of_time"]
    if test_auc is not None and oot["auc"] is not None:
        drop = test_auc - oot["auc"]
        if drop > thresholds.auc_drop_max:
            out.append(
                Alert("auc_drop", "matured out-of-time loans", drop, thresholds.auc_drop_max)
            )
    return out


def run_monitoring(experiment: Experiment, options: MonitorOptions) -> dict[str, Any]:
    """Run one monitoring cycle and return its summary (see the module docstring).

    Raises
    ------
    InputError
        Bad model reference, book or window (nothing started).
    JobError
        The job failed or a party refused it.
    """
    from federated.simulation import EmbeddedOptions, JobFailedError, run_embedded
    from lab import tracking
    from lab.job import INPUT_ERRORS, REFUSALS

    started = time.perf_counter()
    bank_name = experiment.job_spec(task="align").by_role("bank")[0].name
    model = resolve_model(options.model, bank_name, options.tracking_uri)
    spec, bindings = monitoring_job(experiment, model, options)
    audit = AuditLog(lab_home() / "audit" / "log.jsonl")
    with tempfile.TemporaryDirectory(prefix="lab-monitor-") as tmp:
        try:
            result = run_embedded(
                spec,
                bindings,
                Path(tmp),
                EmbeddedOptions(cpus_per_party=experiment.config.runtime.cpus_per_party),
            )
        except JobFailedError as exc:
            if exc.error_type in REFUSALS:
                raise JobRefusedError(f"monitoring job refused: {exc}") from exc
            if exc.error_type in INPUT_ERRORS:
                raise InputError(f"monitoring job: {exc}") from exc
            raise JobError(f"monitoring job failed: {exc}") from exc
        finally:
            # the embedded nodes share this home and have stopped: close what they left open
            homes = {b.governance_home for b in bindings if b.role == "platform"}
            for home in sorted(h for h in homes if h is not None):
                settle_job(spec.job_id, home)
    report = result.monitoring
    found = alerts(report, options.thresholds, model.test_auc)
    summary = {
        "job_id": spec.job_id,
        "model": {"name": model.name, "version": model.version, "test_auc": model.test_auc},
        "window": options.window,
        "reference": spec.monitoring.reference if spec.monitoring else {},
        "n_aligned": result.n_aligned,
        "thresholds": {
            "psi_max": options.thresholds.psi_max,
            "segment_shift_max": options.thresholds.segment_shift_max,
            "csi_max": options.thresholds.csi_max,
            "auc_drop_max": options.thresholds.auc_drop_max,
            "warning_threshold": options.warning_threshold,
        },
        "score_psi": report["bank"]["score_stability"]["index"],
        "platform_csi": {p: r["groups"] for p, r in report["csi"].items()},
        "bank_csi": {c["name"]: c["index"] for c in report["bank"]["bank_csi"]},
        "vintages": report["bank"]["vintages"],
        "bands": report["bank"]["bands"],
        "matured": report["bank"]["matured"],
        "out_of_time": report["bank"]["out_of_time"],
        "segments": report["bank"]["segments"],
        "early_warning": report["bank"]["early_warning"],
        "alerts": [a.to_dict() for a in found],
        "stage_seconds": result.stage_seconds,
    }
    for alert in found:
        audit.record(
            "monitoring_alert",
            {
                "job_id": spec.job_id,
                "model": model.name,
                "version": model.version,
                **alert.to_dict(),
            },
        )
    audit.record(
        "monitoring_run",
        {
            "job_id": spec.job_id,
            "model": model.name,
            "version": model.version,
            "window": options.window,
            "n_aligned": result.n_aligned,
            "n_warnings": report["bank"]["early_warning"]["n_warnings"],
            "score_psi": summary["score_psi"],
            "n_alerts": len(found),
        },
    )
    summary["wall_seconds"] = round(time.perf_counter() - started, 3)
    summary["mlflow_run_id"] = _track(experiment, model, summary, tracking)
    if options.summary_json is not None:
        _write_json(options.summary_json, summary)
    return summary


def _track(
    experiment: Experiment, model: MonitoredModel, summary: dict[str, Any], tracking: Any
) -> str:
    """Record the monitoring run in MLflow, linked to the model version, with its plots."""
    from lab.monitoring_plots import write_plots

    cfg = experiment.config
    name = f"{model.name}{EXPERIMENT_SUFFIX}"
    target = tracking.target_for(cfg.tracking.uri, name)
    tags = {
        tracking.TAG_TASK: "monitor",
        tracking.TAG_JOB_ID: summary["job_id"],
        TAG_MODEL_NAME: model.name,
        TAG_MODEL_VERSION: model.version,
        "lab.window": summary["window"],
        "lab.alerts": str(len(summary["alerts"])),
    }
    with tempfile.TemporaryDirectory(prefix="lab-monitor-art-") as tmp:
        folder = Path(tmp)
        with tracking.open_run(target, f"monitor-{summary['window']}", tags) as run:
            metrics = {
                "score_psi": float(summary["score_psi"]),
                "n_aligned": float(summary["n_aligned"] or 0),
                "n_warnings": float(summary["early_warning"]["n_warnings"]),
                "n_alerts": float(len(summary["alerts"])),
            }
            if summary["matured"].get("auc") is not None:
                metrics["matured_auc"] = float(summary["matured"]["auc"])
            run.log_metrics(metrics)
            path = folder / "monitoring.json"
            _write_json(path, summary)
            run.log_artifact(path)
            history = _psi_history(target, model, tracking)
            for plot in write_plots(folder, summary, history):
                run.log_artifact(plot, "plots")
            run_id = str(run.run_id)
    from mlflow.tracking import MlflowClient

    # and the version names its latest monitoring run (both ways linked)
    client = MlflowClient(target.uri, target.uri)
    client.set_model_version_tag(model.name, model.version, TAG_LAST_RUN, run_id)
    client.set_model_version_tag(
        model.name, model.version, TAG_LAST_ALERTS, str(len(summary["alerts"]))
    )
    return run_id


def _psi_history(target: Any, model: MonitoredModel, tracking: Any) -> list[tuple[str, float]]:
    """(window, score PSI) of the model's earlier monitoring runs, oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(target.uri)
    found = client.get_experiment_by_name(target.experiment)
    if found is None:
        return []
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{TAG_MODEL_NAME}` = '{model.name}'",
        order_by=["attributes.start_time ASC"],
    )
    return [
        (r.data.tags.get("lab.window", "?"), float(r.data.metrics["score_psi"]))
        for r in runs
        if "score_psi" in r.data.metrics
    ]


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
