"""The ``lab`` command line.

Every command has ``--help``; long steps show progress on stderr; any error ends the command
with one line ``error: ...`` on stderr and a non-zero exit code (2: bad input, 1: a job failed,
3: an internal error, with the traceback when ``LAB_DEBUG=1``).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from features.errors import DataError
from federated import progress
from lab import __version__
from lab.console import console
from lab.deploy.cli import DeploymentOpt
from lab.deploy.cli import register as register_deploy
from lab.errors import InputError, JobError
from lab.governance.cli import audit_app, authorizations_app, budget_app, features_app
from lab.governance.policy_cli import policy_app
from lab.monitoring_cli import register as register_monitor
from lab.serving.cli import add_serving_commands
from lab.webconsole.cli import register as register_console

EXIT_INPUT = 2
EXIT_JOB = 1
EXIT_INTERNAL = 3
#: Ctrl-C outside a running job (a job stopped by Ctrl-C fails with EXIT_JOB, see lab.job).
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="lab",
    help="Privacy-preserving joint modeling of SME credit risk (platform features x bank labels).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Generate and inspect data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
app.add_typer(budget_app, name="budget")
app.add_typer(audit_app, name="audit")
app.add_typer(authorizations_app, name="authorizations")
app.add_typer(policy_app, name="policy")
add_serving_commands(app)
register_console(app)
register_deploy(app)
register_monitor(app)

err = console(stderr=True)
out = console()

SummaryOpt = Annotated[
    Path | None,
    typer.Option(
        "--summary-json", help="Also write the job summary to this JSON file.", dir_okay=False
    ),
]
VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show Flower, Ray and lab log messages.")
]


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        for name in ("flwr", "ray", "alembic", "mlflow", "lightgbm"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # Third-party deprecation chatter (SQLAlchemy inside MLflow, Ray) is not for users.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*noload.*")


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[None]:
    """Show job progress events as bars on stderr."""
    if not enabled:
        yield
        return
    bar = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[stage]}[/] {task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )
    tasks: dict[str, Any] = {}

    def listener(event: progress.ProgressEvent) -> None:
        if event.stage not in tasks:
            tasks[event.stage] = bar.add_task(event.detail, total=event.total, stage=event.stage)
        bar.update(
            tasks[event.stage], completed=event.done, total=event.total, description=event.detail
        )

    progress.add_listener(listener)
    try:
        with bar:
            yield
    finally:
        progress.remove_listener(listener)


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title=f"{summary['name']} ({summary['kind']}, {summary['model']})")
    table.add_column("model")
    table.add_column("test AUC", justify="right")
    table.add_column("test KS", justify="right")
    metrics = summary["metrics"]
    base = summary["baselines"]

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    if summary["joint_model"]["status"] == "trained":
        table.add_row("joint (federated)", fmt(metrics["test_auc"]), fmt(metrics["test_ks"]))
    else:
        table.add_row("joint (federated)", "not trained", "")
    family = "LightGBM" if summary["kind"] == "vertical" else summary["model"]
    if summary["kind"] == "vertical":
        table.add_row("bank only (LightGBM)", fmt(base["bank_only_auc"]), fmt(base["bank_only_ks"]))
    else:
        for bank, row in base["per_bank"].items():
            table.add_row(
                f"{bank} alone ({family}; own test rows, global model: "
                f"{fmt(row['global_own_test_auc'])})",
                fmt(row["alone_own_test_auc"]),
                "",
            )
        if base["bank_only_auc"] is not None:
            table.add_row(
                f"{base['bank_only_party']} alone, held-out file", fmt(base["bank_only_auc"]), ""
            )
    if base["pooled_auc"] is not None:
        table.add_row(
            f"pooled reference ({family}, demo only)",
            fmt(base["pooled_auc"]),
            fmt(base["pooled_ks"]),
        )
    out.print(table)
    _print_validation(summary.get("validation"))
    secagg = summary.get("secure_aggregation")
    if secagg is not None:
        state = (
            f"on (threshold {secagg['threshold']}, tolerates {secagg['dropouts_tolerated']} "
            f"dropout(s) per round; dropouts seen: {secagg['dropouts'] or 'none'})"
            if secagg["enabled"]
            else "off (the coordinator sees every bank's update)"
        )
        out.print(f"secure aggregation: {state}")
    if summary["joint_model"]["status"] != "trained":
        out.print(f"[yellow]joint model:[/] {summary['joint_model']['reason']}")
    privacy = summary.get("privacy") or {}
    if privacy.get("epsilon") is not None:
        out.print(
            f"privacy: ε={privacy['epsilon']:.3f}, δ={privacy['delta']:g} "
            f"({privacy['accountant']}, per {privacy['unit']}; {privacy['note']})"
        )
    if summary.get("audit_report"):
        out.print(f"audit report: {summary['audit_report']}")
    from lab.screening import describe as describe_screening

    for line in describe_screening(summary.get("screening") or {}):
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    if summary.get("validation_report"):
        out.print(
            f"validation report: {summary['validation_report']['command']}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    out.print(
        f"n_aligned={summary['n_aligned']} n_train={summary['n_train']} "
        f"n_test={summary['n_test']} wall={summary['wall_seconds']} s"
    )
    _print_results(summary)


def _print_validation(section: dict[str, Any] | None) -> None:
    """The validation rows' best iteration and what the model kept (early stopping)."""
    if not section or section.get("best_iteration") is None:
        return
    best = int(section["best_iteration"])
    auc, ks = section.get("best_valid_auc"), section.get("best_valid_ks")
    rounds = section.get("early_stopping_rounds")
    stop = (
        f"stopped early: no better {section['metric']} for {rounds} iterations"
        if section["stopped_early"]
        else "ran every iteration"
    )
    out.print(
        f"validation: {section['n_validation']} rows; best iteration {best} (0-based) of "
        f"{section['iterations_trained']} trained: valid AUC "
        f"{'-' if auc is None else f'{auc:.4f}'}, KS {'-' if ks is None else f'{ks:.4f}'}; "
        f"model keeps {section['iterations_kept']} ({stop})"
    )


def _print_results(summary: dict[str, Any]) -> None:
    """Where the job's artifacts, model and run are, and how to browse them (never wrapped)."""
    from lab.results import describe

    for line in describe(summary):
        out.print(line, markup=False, highlight=False, soft_wrap=True)


def _print_version(value: bool) -> None:
    if value:
        out.print(f"lab {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """Privacy-preserving joint modeling of SME credit risk."""


@app.command()
def train(
    experiment: Annotated[
        Path, typer.Argument(help="Experiment config (YAML).", dir_okay=False, show_default=False)
    ],
    summary_json: SummaryOpt = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a config key, e.g. --set model.n_estimators=5 or "
            "--set parties.bank.data=other.csv (repeatable).",
        ),
    ] = None,
    capture: Annotated[
        bool,
        typer.Option(
            "--capture", help="Record every message that passed the coordinator (audit/debug)."
        ),
    ] = False,
    verbose: VerboseOpt = False,
    deployment: DeploymentOpt = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="JOB_ID",
            help="Continue the interrupted job JOB_ID (same config and --set options) from its "
            "parties' last checkpoint (each tree or epoch).",
        ),
    ] = None,
) -> None:
    """Run one experiment: validate, align, train, evaluate, track in MLflow."""
    _configure_logging(verbose)
    import secrets

    from lab.config import load_experiment
    from lab.job import RunOptions, run_experiment

    # On a deployment every party's file is its node's own: the lab reads none of them, not
    # even a header (each node validates its own file when it joins the job).
    exp = load_experiment(experiment, set_ or [], check_data=deployment is None)
    job_id = resume if resume is not None else secrets.token_hex(8)

    def announce(started: str) -> None:
        verb = "resuming" if resume is not None else "starting"
        err.print(
            f"{verb} job {started} (if it is interrupted: lab train {experiment} --resume "
            f"{started}, with the same --set options)",
            highlight=False,
            soft_wrap=True,
        )

    with _progress_bar(not verbose):
        summary = run_experiment(
            exp,
            RunOptions(
                summary_json=summary_json,
                capture=capture,
                verbose=verbose,
                deployment=deployment,
                job_id=job_id,
                resume=resume is not None,
                announce=announce,
            ),
        )
    _print_summary(summary)


@app.command()
def align(
    experiment: Annotated[
        Path, typer.Argument(help="Experiment config (YAML).", dir_okay=False, show_default=False)
    ],
    summary_json: SummaryOpt = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a config key, e.g. --set alignment.reveal=size (repeatable).",
        ),
    ] = None,
    capture: Annotated[
        bool, typer.Option("--capture", help="Record every message that passed the coordinator.")
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Only align enterprises (private set intersection) and report sizes and traffic."""
    _configure_logging(verbose)
    from lab.config import load_experiment
    from lab.job import RunOptions, run_experiment

    exp = load_experiment(experiment, set_ or [])
    with _progress_bar(not verbose):
        summary = run_experiment(
            exp,
            RunOptions(summary_json=summary_json, capture=capture, verbose=verbose),
            task="align",
        )
    sent = ", ".join(f"{p}: {b:,} B" for p, b in summary["bytes_sent"].items())
    out.print(
        f"[bold]{summary['name']}[/] aligned {summary['n_aligned']:,} enterprises "
        f"(bank {summary['n_bank']:,}; platforms {summary['n_platform']}; reveal "
        f"{summary['reveal']}); sent {sent}; {summary['wall_seconds']} s"
    )
    _print_results(summary)


@app.command()
def check(
    experiment: Annotated[Path, typer.Argument(help="Experiment config (YAML).", dir_okay=False)],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config key (repeatable).")
    ] = None,
) -> None:
    """Validate an experiment config and every party's data without running anything."""
    _configure_logging(False)
    from features.profile import format_profile, profile_columns
    from lab.config import load_experiment
    from lab.governance.preflight import check_lines
    from lab.job import preflight

    exp = load_experiment(experiment, set_ or [])
    tables = preflight(exp)
    for party in exp.config.parties:
        table = tables[party.name]
        kinds = list(table.feature_kinds.values())
        lines = [
            f"{party.name} ({party.role}): {table.n_rows} rows, "
            f"{kinds.count('numeric')} numeric + {kinds.count('categorical')} categorical "
            f"features, {table.digest[:19]}...",
            f"  file: {table.path}",
            *format_profile(profile_columns(table)),
        ]
        for line in lines:  # plain text: never wrapped or cut, whatever stdout is
            out.print(line, markup=False, highlight=False, soft_wrap=True)
    for line in check_lines(exp, tables):  # what each node's governance would serve
        out.print(line, soft_wrap=True, highlight=False, markup=False)
    out.print(f"[green]ok[/] {exp.name}: config {exp.config_hash[:19]}...")


@app.command()
def demo(
    summary_json: SummaryOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic SME data.")] = 7,
    verbose: VerboseOpt = False,
) -> None:
    """Generate synthetic SME data and run the end-to-end joint-modeling job on it."""
    _configure_logging(verbose)
    from lab.demo import run_demo

    with _progress_bar(not verbose):
        summary = run_demo(summary_json=summary_json, seed=seed, verbose=verbose)
    _print_summary(summary)


@data_app.command("synth")
def data_synth(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write (must be empty).")],
    n_enterprises: Annotated[
        int, typer.Option(help="Enterprises the platform knows.", min=100)
    ] = 20000,
    n_banks: Annotated[int, typer.Option(help="Number of banks.", min=1, max=20)] = 1,
    bank_size: Annotated[
        int | None, typer.Option(help="Borrowers per bank (default: derived).", min=50)
    ] = None,
    unmatched_rate: Annotated[
        float, typer.Option(help="Share of a bank's customers unknown to the platform.")
    ] = 0.10,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing non-empty folder.")] = False,
) -> None:
    """Write synthetic platform and bank files, a governed experiment and its authorizations.

    Prints the platform's steps (publish, import authorizations, grant a budget) after which
    the written experiment.yaml runs as it is, in this lab home.
    """
    _configure_logging(False)
    from lab.demo import governed_steps, synthesize

    manifest = synthesize(
        out_dir,
        n_enterprises=n_enterprises,
        n_banks=n_banks,
        bank_size=bank_size,
        unmatched_rate=unmatched_rate,
        seed=seed,
        overwrite=overwrite,
    )
    out.print(f"[green]wrote[/] {manifest}")
    steps = governed_steps(out_dir)
    out.print("next, as the platform (publish, authorizations, budget), then as the bank:")
    for step in steps:
        out.print(f"  {step}", markup=False, highlight=False, soft_wrap=True)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fail(code: int, message: str) -> int:
    err.print(f"error: {_one_line(message)}", markup=False, highlight=False, soft_wrap=True)
    return code


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (for tests and :func:`main`)."""
    command: Callable[..., Any] = typer.main.get_command(app)
    try:
        # Without standalone mode Typer catches ``typer.Exit`` itself and *returns* its code
        # (a command's own return value is None): that code is the command's exit status.
        status = command.main(args=argv, prog_name="lab", standalone_mode=False)  # type: ignore[attr-defined]
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        return _fail(EXIT_INPUT, "aborted")
    except click.ClickException as exc:
        exc.show(file=sys.stderr)
        return EXIT_INPUT
    except (InputError, DataError) as exc:
        return _fail(EXIT_INPUT, str(exc))
    except JobError as exc:
        return _fail(EXIT_JOB, str(exc))
    except KeyboardInterrupt:
        return _fail(EXIT_JOB, "interrupted")
    except Exception as exc:
        if os.environ.get("LAB_DEBUG") == "1":
            traceback.print_exc()
        return _fail(EXIT_INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
    return _exit_status(status)


def _exit_status(value: Any) -> int:
    """The process exit status for what ``main(standalone_mode=False)`` returned.

    ``typer.Exit(code)`` raised by a command comes back as ``code``; a command that returns
    normally comes back as its return value (``None`` for every ``lab`` command): success.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value == EXIT_INTERRUPTED:
            # Typer turns Ctrl-C in a command into ``Exit(130)`` without a word.
            return _fail(EXIT_INTERRUPTED, "interrupted; nothing more was done")
        return value
    return 0


def main() -> None:
    """Console entry point."""
    sys.exit(run())
