"""Job orchestration: validate, run through the Flower runtime, evaluate, track, summarise.

Order matters for "bad input loses nothing": the config and every party's data are validated
before anything is created; the MLflow run is created only once the job has produced its
result (or has failed after touching data for a reason other than bad input).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from features.errors import DataError
from features.io import PartyTable
from features.same_columns import check_same_features
from federated.party import COLUMNS_FOLDER, read_kept_table
from federated.result import JobResult
from federated.server_app import INTERRUPTED
from federated.simulation import EmbeddedOptions, JobFailedError, run_embedded
from federated.spec import JobSpec
from lab import (
    __version__,
    horizontal,
    job_records,
    reports,
    results,
    screening,
    tracking,
    validation_report,
)
from lab.config import Experiment
from lab.errors import JobError, JobInterruptedError, JobRefusedError
from lab.governance import anchors as audit_anchors
from lab.governance import lifecycle
from lab.home import lab_home
from lab.pooled import NOTE as POOLED_NOTE
from lab.pooled import PooledReference, pooled_horizontal, pooled_reference
from lab.reporting import privacy_summary, reporting_for
from models.evaluation import EvaluationReport

logger = logging.getLogger(__name__)

#: Party-reported failures caused by bad input: they leave no MLflow run behind.
Task = Literal["train", "align"]

INPUT_ERRORS = frozenset(
    {"DataError", "SpecError", "EvaluationError", "ConfigError", "PolicyRefusalError"}
)

#: A party's node refused the job under its own policy: reported as bad input (exit code 2).
REFUSALS = frozenset({"PolicyRefusalError"})

RUNTIME_NAME = "embedded (Flower simulation runtime)"
DEPLOYED_RUNTIME_NAME = "deployment (SuperLink + SuperNodes, TLS, node auth)"


@dataclass(frozen=True)
class RunOptions:
    """How to run a job from the CLI or a notebook."""

    summary_json: Path | None = None
    capture: bool = False
    verbose: bool = False
    extra_tags: dict[str, str] = field(default_factory=dict)
    #: A deployment folder (``lab up``) to run the job on instead of the embedded runtime.
    deployment: Path | None = None
    #: The job's id (default: a fresh one); with ``resume`` the id of the job to continue.
    job_id: str | None = None
    #: Continue the interrupted job ``job_id`` from its parties' checkpoints.
    resume: bool = False
    #: Told the job's id once its input is validated, as it starts (the CLI prints it).
    announce: Callable[[str], None] | None = None


def preflight(experiment: Experiment, *, keep: bool = False) -> dict[str, PartyTable]:
    """Validate every party's data with the same reader its node uses.

    In the embedded runtime all files are on this machine, so bad data is refused here,
    before a runtime starts or anything is written.

    Parameters
    ----------
    experiment : Experiment
        The experiment whose parties' files are read.
    keep : bool
        Keep each table column by column in its party's store
        (:func:`federated.party.read_kept_table`): for a job about to run, whose nodes then
        open it there without reading the file again, and whose lab process does not hold it
        in memory. If any table is refused, what this call kept is removed again (with the
        folders it created). By default tables are read into memory and nothing is written
        (``lab check``).

    Raises
    ------
    features.errors.DataError
        Naming the party, file, column and fix.
    """
    tables = {}
    stores = {b.name: b.store if keep else None for b in experiment.bindings()}
    undo = _undo_kept([store for store in stores.values() if store is not None])
    try:
        for party in experiment.config.parties:
            try:
                tables[party.name] = read_kept_table(
                    experiment.data_paths[party.name],
                    stores[party.name],
                    id_column=party.id_column,
                    label_column=party.label_column,
                    features=party.features,
                    categorical=party.categorical,
                    id_scheme=experiment.config.alignment.id_scheme,
                    text_format=party.text_format,
                    weight_column=party.weight_column,
                )
            except DataError as exc:
                raise DataError(f"party '{party.name}': {exc}", redacted=exc.redacted) from exc
        if experiment.config.kind == "horizontal":
            check_same_features(tables)  # one model for every bank: the same columns
    except BaseException:
        undo()
        raise
    return tables


def _undo_kept(stores: list[Path]) -> Callable[[], None]:
    """A function removing what keeping tables in ``stores`` adds from now on.

    The outermost folder of each store's ``columns`` folder that does not exist yet (the lab
    home itself, on a first run) is removed whole; in a folder that exists, the entries added.
    """
    created: set[Path] = set()
    existing: dict[Path, set[str]] = {}
    for store in stores:
        folder = store / COLUMNS_FOLDER
        if folder.is_dir():
            existing[folder] = {e.name for e in folder.iterdir()}
            continue
        outermost = folder
        while not outermost.parent.exists():
            outermost = outermost.parent
        created.add(outermost)

    def undo() -> None:
        for path in created:
            shutil.rmtree(path, ignore_errors=True)
        for folder, names in existing.items():
            for entry in folder.iterdir():
                if entry.name not in names:
                    shutil.rmtree(entry, ignore_errors=True)

    return undo


def run_experiment(
    experiment: Experiment, options: RunOptions | None = None, *, task: Task = "train"
) -> dict[str, Any]:
    """Run one experiment end to end (or only its alignment) and return its summary.

    Raises
    ------
    lab.errors.ConfigError
        The experiment cannot run this task (nothing created).
    features.errors.DataError
        Bad party data (nothing created).
    lab.errors.JobError
        The job failed after it started.
    """
    options = options or RunOptions()
    started = time.perf_counter()
    spec = experiment.job_spec(job_id=options.job_id, task=task)
    runtime = "deployment" if options.deployment is not None else "embedded"
    resumed = _check_resume(spec, options, runtime) if options.resume else None
    # Embedded: every file is on this machine, so bad data is refused before the runtime starts
    # and before the audit log hears of the job, and so is what a node's governance would refuse
    # (nothing reserved, no MLflow run). A deployment's files are its nodes' own: the lab reads
    # none of them, and each node validates its file and checks governance itself.
    tables: dict[str, PartyTable] = {}
    if options.deployment is None:
        tables = preflight(experiment, keep=True)
        lifecycle.check_governance(experiment, spec, tables)
    recorded = spec.kind == "vertical" and task == "train"
    if recorded:
        job_records.write(spec, "running", runtime, resumes=resumed[1] if resumed else 0)
        if options.announce is not None:
            options.announce(spec.job_id)
    try:
        with lifecycle.governed(experiment, spec, resumed) as job:
            summary = _run(experiment, spec, tables, job, options, task, started)
    except BaseException as exc:
        if recorded:
            job_records.write(spec, lifecycle.ending(exc), runtime)
        raise
    if recorded:
        job_records.write(spec, "finished", runtime)
    if options.summary_json is not None:
        write_json(options.summary_json, summary)
    return summary


def _check_resume(spec: JobSpec, options: RunOptions, runtime: str) -> tuple[str, int]:
    """Refuse a resume before anything starts; return (how the job last ended, resume count).

    Raises
    ------
    lab.job_records.ResumeError
        Unknown or malformed id, a finished job, another experiment or runtime.
    """
    if options.job_id is None:
        raise job_records.ResumeError("--resume needs the id of the job to continue")
    record = job_records.read(options.job_id)
    if spec.kind != "vertical" or spec.task != "train":
        raise job_records.ResumeError(
            f"--resume {options.job_id}: only vertical training jobs checkpoint and resume"
        )
    job_records.check_resumable(record, spec, runtime)
    return record.status, record.resumes + 1


def _run(
    experiment: Experiment,
    spec: JobSpec,
    tables: dict[str, PartyTable],
    job: lifecycle.GovernedJob,
    options: RunOptions,
    task: Task,
    started: float,
) -> dict[str, Any]:
    cfg = experiment.config
    experiment_name = tracking.experiment_for(cfg.tracking.experiment or cfg.name, task)
    target = tracking.target_for(cfg.tracking.uri, experiment_name)
    with tempfile.TemporaryDirectory(prefix="lab-job-") as tmp:
        workdir = Path(tmp)
        job.touched_data()
        try:
            if options.deployment is not None:
                from lab.deploy.run import run_deployed

                result = run_deployed(
                    spec,
                    experiment,
                    options.deployment,
                    workdir,
                    capture=options.capture,
                    resume=options.resume,
                )
            else:
                result = run_embedded(
                    spec,
                    experiment.bindings(),
                    workdir,
                    EmbeddedOptions(
                        cpus_per_party=cfg.runtime.cpus_per_party,
                        capture=options.capture,
                        verbose=options.verbose,
                        resume=options.resume,
                    ),
                )
        except JobFailedError as exc:
            if exc.error_type == INTERRUPTED:
                raise JobInterruptedError(
                    f"job '{cfg.name}' interrupted: it stopped before it finished and "
                    "registered nothing"
                ) from exc
            if exc.error_type not in INPUT_ERRORS:
                _record_failure(target, experiment, spec.job_id, exc, options, started)
            if exc.error_type in REFUSALS:
                raise JobRefusedError(f"job '{cfg.name}' refused: {exc}") from exc
            raise JobError(f"job '{cfg.name}' failed: {exc}") from exc
        finally:
            if options.deployment is None:
                job.settle_open()  # the embedded nodes share this home and have stopped
        pooled = None
        if task == "train" and cfg.evaluation.pooled_reference and tables:
            if cfg.kind == "horizontal":
                pooled = pooled_horizontal(experiment, tables)
            else:
                pooled = pooled_reference(experiment, tables)
        summary = _summary(experiment, result, pooled, task)
        if options.deployment is not None:
            summary["runtime"] = DEPLOYED_RUNTIME_NAME
        artifacts = workdir / "artifacts"
        artifacts.mkdir()
        files = _write_artifacts(artifacts, experiment, result, pooled)
        tags = _tags(experiment, result) | {tracking.TAG_TASK: task} | options.extra_tags
        tags["lab.runtime"] = summary["runtime"]
        run_name = f"{cfg.name}-{spec.job_id[:8]}"
        with tracking.open_run(target, run_name, tags, start_ms=results.start_ms(started)) as run:
            run.log_params(_params(experiment))
            run.log_metrics(_metrics(summary, result))
            if result.joint.status == "trained":
                log = reporting_for(experiment.model_type).log
                summary["registered_model"] = log(run, target, artifacts, result, experiment)
            summary.update(results.locate(run, target))
            if summary.get("registered_model"):
                summary["validation_report"] = validation_report.locator(
                    summary["registered_model"]
                )
            summary["wall_seconds"] = round(time.perf_counter() - started, 3)
            summary_path = artifacts / "summary.json"
            summary_path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
            for folder, path in files:
                run.log_artifact(path, folder)
            run.log_artifact(summary_path)
            if summary.get("registered_model"):
                report = _validation_report(artifacts, summary, result, run.run_id)
                run.log_artifact(report, validation_report.ARTIFACT_DIR)
            if options.capture:
                run.log_artifact(workdir / "capture.jsonl", "capture")
            job.finished(result, summary.get("registered_model"))
    return summary


def _validation_report(
    artifacts: Path, summary: dict[str, Any], result: JobResult, run_id: str
) -> Path:
    """The registered version's validation report (:mod:`lab.validation_report`)."""
    registered = summary["registered_model"]
    inputs = validation_report.inputs_from(
        artifacts,
        model_name=str(registered["name"]),
        version=str(registered["version"]),
        run_id=run_id,
        ledger=validation_report.ledger_records(result.job_id, lab_home()),
        tags=audit_anchors.run_tags(),
        summary=summary,
    )
    folder = artifacts / validation_report.ARTIFACT_DIR
    return validation_report.write(inputs, folder / validation_report.ARTIFACT_NAME)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write a JSON file atomically (no partial file on failure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    tmp.replace(path)


def _no_pooled(experiment: Experiment) -> str:
    if experiment.config.evaluation.pooled_reference:
        return "pooled reference not computed: on a deployment the lab reads no party's file"
    return "pooled reference not requested"


def _bank_only(result: JobResult) -> EvaluationReport | None:
    return next(iter(result.bank_only.values()), None)


def _summary(
    experiment: Experiment, result: JobResult, pooled: PooledReference | None, task: Task
) -> dict[str, Any]:
    cfg = experiment.config
    served = lifecycle.served_counts(result)
    base: dict[str, Any] = {
        "name": cfg.name,
        "kind": cfg.kind,
        "task": task,
        "model": cfg.model.type,
        "job_id": result.job_id,
        "config_hash": experiment.config_hash,
        "n_aligned": result.n_aligned,
    }
    tail: dict[str, Any] = {
        "parties": [
            {
                "name": p.name,
                "role": p.role,
                **served[p.name],
                "n_features": p.n_features,
                "data_digest": p.digest,
            }
            for p in result.parties
        ],
        "alignment": result.alignment,
        "stage_seconds": {k: round(v, 3) for k, v in result.stage_seconds.items()},
        "traffic": result.traffic,
        "runtime": RUNTIME_NAME,
        "lab_version": __version__,
        "mlflow_run_id": None,
        "wall_seconds": None,
    }
    if task == "align":
        alignment = result.alignment
        return {
            **base,
            "n_bank": alignment["n_bank"],
            "n_platform": alignment["n_platform"],
            "reveal": alignment["reveal"],
            "bytes_sent": alignment["traffic"]["bytes_sent"],
            **tail,
        }
    if cfg.kind == "horizontal":
        return {**base, **_horizontal_summary(experiment, result, pooled), **tail}
    report = result.joint.report
    bank_only = _bank_only(result)
    trained = result.joint.status == "trained"
    return {
        **base,
        "model_params": cfg.model.model_dump(mode="json", exclude={"type"}),
        "n_train": result.n_train,
        "n_test": result.n_test,
        "joint_model": {"status": result.joint.status, "reason": result.joint.reason},
        "metrics": {
            "test_auc": report.auc if report else None,
            "test_ks": report.ks if report else None,
            "test_gini": report.gini if report else None,
        },
        "baselines": {
            "bank_only_auc": bank_only.auc if bank_only else None,
            "bank_only_ks": bank_only.ks if bank_only else None,
            "pooled_auc": pooled.report.auc if pooled else None,
            "pooled_ks": pooled.report.ks if pooled else None,
            "pooled_n_joined": pooled.n_joined if pooled else None,
            "pooled_note": POOLED_NOTE if pooled else _no_pooled(experiment),
        },
        "privacy": privacy_summary(result) if trained else {},
        "timing": reporting_for(experiment.model_type).timing(result) if trained else {},
        "validation": reporting_for(experiment.model_type).validation(result) if trained else None,
        "screening": screening.summary(result),
        "registered_model": None,
        **tail,
    }


def _horizontal_summary(
    experiment: Experiment, result: JobResult, pooled: PooledReference | None
) -> dict[str, Any]:
    """The summary of a horizontal job (global model on the held-out file when there is one)."""
    cfg = experiment.config
    report = result.joint.report
    per_bank = horizontal.baselines(result)
    holdout_bank = cfg.evaluation.holdout.party if cfg.evaluation.holdout else None
    alone = per_bank.get(holdout_bank, {}) if holdout_bank else {}
    return {
        "model_params": cfg.model.model_dump(mode="json", exclude={"type"}),
        "n_train": result.n_train,
        "n_test": result.n_test,
        "n_holdout": report.n if report else None,
        "joint_model": {"status": result.joint.status, "reason": result.joint.reason},
        "metrics": {
            "test_auc": report.auc if report else None,
            "test_ks": report.ks if report else None,
            "test_gini": report.gini if report else None,
            "evaluated_on": "held-out file" if report else "banks' own test rows only",
        },
        "baselines": {
            "bank_only_auc": alone.get("alone_holdout_auc"),
            "bank_only_party": holdout_bank,
            "per_bank": per_bank,
            "pooled_auc": pooled.report.auc if pooled else None,
            "pooled_ks": pooled.report.ks if pooled else None,
            "pooled_n_rows": pooled.n_joined if pooled else None,
            "pooled_note": horizontal.POOLED_NOTE if pooled else _no_pooled(experiment),
        },
        "privacy": horizontal.privacy_summary(result, experiment),
        "secure_aggregation": horizontal.secure_aggregation_summary(result),
        "timing": horizontal.timing_summary(result),
        "registered_model": None,
    }


def _params(experiment: Experiment) -> dict[str, str]:
    canonical = dict(experiment.shareable_config())
    canonical.pop("description", None)
    return tracking.flatten("", canonical)


def _metrics(summary: dict[str, Any], result: JobResult) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for key, value in summary.get("metrics", {}).items():
        if isinstance(value, int | float):
            metrics[key] = value
    for key in ("bank_only_auc", "bank_only_ks", "pooled_auc", "pooled_ks"):
        value = summary.get("baselines", {}).get(key)
        if value is not None:
            metrics[key] = value
    for bank, values in summary.get("baselines", {}).get("per_bank", {}).items():
        for key, value in values.items():
            if value is not None:
                metrics[f"{bank}_{key}"] = value
    privacy = summary.get("privacy") or {}
    if privacy.get("epsilon") is not None:
        metrics["dp_epsilon"] = privacy["epsilon"]
    for key, value in (summary.get("timing") or {}).items():
        if isinstance(value, int | float) and key.endswith("per_round"):
            metrics[key] = value
    for key in ("n_train", "n_test", "n_aligned"):
        if summary.get(key) is not None:
            metrics[key] = summary[key]
    alignment = result.alignment
    if alignment:
        metrics["align_n_bank"] = alignment["n_bank"]
        for platform, n in alignment["n_platform"].items():
            metrics[f"align_n_platform_{platform}"] = n
        metrics["align_seconds"] = alignment["seconds"]
        metrics["align_hops"] = alignment["traffic"]["hops"]
        for party, sent in alignment["traffic"]["bytes_sent"].items():
            metrics[f"align_bytes_sent_{party}"] = sent
    metrics.update(screening.metrics(result))
    for stage, seconds in result.stage_seconds.items():
        metrics[f"seconds_{stage}"] = seconds
    metrics["hops"] = float(result.traffic.get("hops", 0))
    for party, sent in dict(result.traffic.get("bytes_sent", {})).items():
        metrics[f"bytes_sent_{party}"] = float(sent)
    return metrics


def _tags(experiment: Experiment, result: JobResult) -> dict[str, str]:
    cfg = experiment.config
    tags = {
        tracking.TAG_CONFIG_HASH: experiment.config_hash,
        tracking.TAG_JOB_ID: result.job_id,
        tracking.TAG_KIND: cfg.kind,
        tracking.TAG_MODEL: cfg.model.type,
        tracking.TAG_JOINT_STATUS: result.joint.status,
        "lab.runtime": RUNTIME_NAME,
        "lab.version": __version__,
        "lab.key_bits": str(cfg.crypto.key_bits),
        "lab.he_scheme": cfg.crypto.scheme,
    }
    for party in result.parties:
        tags[tracking.TAG_DATA_DIGEST + party.name] = party.digest
    return tags | audit_anchors.run_tags()  # the audit head, anchored outside $LAB_HOME/audit


def _write_artifacts(
    folder: Path, experiment: Experiment, result: JobResult, pooled: PooledReference | None
) -> list[tuple[str | None, Path]]:
    models: dict[str, EvaluationReport] = {}
    if result.joint.report is not None:
        models[f"joint {result.model_type}"] = result.joint.report
    family = "LightGBM" if result.kind == "vertical" else f"{result.model_type}, own test rows"
    for party, report in result.bank_only.items():
        models[f"{party} only ({family})"] = report
    if pooled is not None:
        pooled_family = "LightGBM" if result.kind == "vertical" else result.model_type
        models[f"pooled reference ({pooled_family})"] = pooled.report
    files: list[tuple[str | None, Path]] = []
    plots = folder / "plots"
    plots.mkdir()
    if models:
        files.append(("plots", reports.plot_roc(models, plots / "roc.png")))
        files.append(("plots", reports.plot_ks(models, plots / "ks.png")))
        files.append(("plots", reports.plot_calibration(models, plots / "calibration.png")))
    tables = folder / "evaluation"
    tables.mkdir()
    for label, report in models.items():
        stem = label.split(" (")[0].replace(" ", "_")
        rows = _evaluated_on(experiment, label)
        for path in reports.write_gains(report, tables / f"gains_{stem}", model=label, rows=rows):
            files.append(("evaluation", path))
        report_path = tables / f"report_{stem}.json"
        report_path.write_text(json.dumps(report.to_dict(), indent=1), encoding="utf-8")
        files.append(("evaluation", report_path))
    files.extend(screening.write_artifacts(folder, result))
    config_path = folder / "experiment.yaml"
    config_path.write_text(
        yaml.safe_dump(experiment.shareable_config(), sort_keys=False), encoding="utf-8"
    )
    files.append((None, config_path))
    result_path = result.write(folder)
    files.append((None, result_path))
    return files


def _evaluated_on(experiment: Experiment, label: str) -> str:
    """Which labelled rows the report labelled ``label`` scored (a gains table's caption)."""
    cfg = experiment.config
    holdout = cfg.evaluation.holdout
    if cfg.kind == "horizontal" and holdout is not None and "own test rows" not in label:
        return f"the held-out file {holdout.party} keeps"
    ev = cfg.evaluation
    whose = "the bank's" if cfg.kind == "vertical" else "each bank's own"
    return (
        f"{whose} held-out test rows (test_size {ev.test_size:g}, random_state "
        f"{ev.random_state}{', stratified by label' if ev.stratify else ''})"
    )


def _record_failure(
    target: tracking.TrackingTarget,
    experiment: Experiment,
    job_id: str,
    exc: JobFailedError,
    options: RunOptions,
    started: float,
) -> None:
    """Keep a FAILED run for jobs that touched data and failed for a non-input reason."""
    tags = {
        tracking.TAG_CONFIG_HASH: experiment.config_hash,
        tracking.TAG_JOB_ID: job_id,
        tracking.TAG_KIND: experiment.config.kind,
        tracking.TAG_MODEL: experiment.config.model.type,
        tracking.TAG_ERROR: f"{exc.error_type}: {exc}"[:5000],
        **audit_anchors.run_tags(),
        **options.extra_tags,
    }
    run_name = f"{experiment.name}-{job_id[:8]}"
    with tracking.open_run(target, run_name, tags, start_ms=results.start_ms(started)) as run:
        run.log_params(_params(experiment))
        run.status = "FAILED"
