"""``lab monitor``: the command (see :mod:`lab.monitoring` for what it does)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from lab.console import console
from models.monitoring import Thresholds

_DEFAULTS = Thresholds()


def register(app: typer.Typer) -> None:
    """Add ``lab monitor`` and ``lab demo-monitoring`` to ``app``."""
    app.command("monitor")(monitor)
    app.command("demo-monitoring")(demo_monitoring)


def demo_monitoring(
    seed: Annotated[int, typer.Option(help="Seed of the synthetic timeline.")] = 7,
    enterprises: Annotated[int | None, typer.Option(help="Enterprises the platform knows.")] = None,
    loans: Annotated[
        int | None, typer.Option(help="Loans the bank makes over the timeline.")
    ] = None,
    key_bits: Annotated[
        int, typer.Option(help="Paillier key size (below 2048 only if this home's policy allows).")
    ] = 2048,
    summary_json: Annotated[
        Path | None,
        typer.Option(
            "--summary-json", help="Also write the summary to this JSON file.", dir_okay=False
        ),
    ] = None,
) -> None:
    """Train on one month of a synthetic timeline, then monitor a steady and a shocked month."""
    from lab.monitoring_demo import DEMO_ENTERPRISES, DEMO_LOANS, run

    result = run(
        seed=seed,
        n_enterprises=enterprises or DEMO_ENTERPRISES,
        n_loans=loans or DEMO_LOANS,
        key_bits=key_bits,
        summary_json=summary_json,
    )
    out = console()
    training = result["training"]
    out.print(
        f"trained {training['model']}: test AUC {training['test_auc']}, "
        f"{training['wall_seconds']} s",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    for key in ("steady", "shocked"):
        out.print(f"-- {key} window --", markup=False, highlight=False)
        _print(result[key])
    out.print(f"demo wall time {result['wall_seconds']} s", markup=False, highlight=False)


def monitor(
    experiment: Annotated[
        Path,
        typer.Argument(
            help="The experiment the model was trained with (YAML).",
            dir_okay=False,
            show_default=False,
        ),
    ],
    model: Annotated[
        str, typer.Option("--model", help="Registered model: NAME, NAME@ALIAS or NAME/VERSION.")
    ],
    book: Annotated[
        Path,
        typer.Option(
            "--book",
            help="The bank's current book: its model columns, 'vintage' (YYYY-MM) and the "
            "outcome column (empty until matured).",
            dir_okay=False,
        ),
    ],
    window: Annotated[
        str,
        typer.Option("--window", help="The platform's new published version, SET@VERSION."),
    ],
    psi_max: Annotated[
        float, typer.Option(help="Alert when the score PSI is above this.")
    ] = _DEFAULTS.psi_max,
    segment_shift_max: Annotated[
        float,
        typer.Option(
            help="Alert when a segment's mean log-odds rose this much more than the book's."
        ),
    ] = _DEFAULTS.segment_shift_max,
    csi_max: Annotated[
        float, typer.Option(help="Alert when a column's or group's CSI is above this.")
    ] = _DEFAULTS.csi_max,
    auc_drop_max: Annotated[
        float,
        typer.Option(help="Alert when a matured vintage's AUC is this far below the test AUC."),
    ] = _DEFAULTS.auc_drop_max,
    warning_threshold: Annotated[
        float | None,
        typer.Option(
            help="Early warning: default probability an enterprise reached since the last run."
        ),
    ] = None,
    segment_column: Annotated[
        str | None,
        typer.Option(
            help="A column of the book (not a model column, e.g. the borrower's province) "
            "within whose values score PSI is also computed."
        ),
    ] = None,
    summary_json: Annotated[
        Path | None,
        typer.Option(
            "--summary-json", help="Also write the summary to this JSON file.", dir_okay=False
        ),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config key (repeatable).")
    ] = None,
) -> None:
    """Monitor a registered joint model on a new window: drift, vintages, early warnings.

    Exits 4 when a threshold was crossed (alerts are audited), 0 otherwise.
    """
    from lab.config import load_experiment
    from lab.errors import InputError
    from lab.monitoring import EXIT_ALERT, MonitorOptions, run_monitoring

    for name, value in (
        ("--psi-max", psi_max),
        ("--csi-max", csi_max),
        ("--auc-drop-max", auc_drop_max),
    ):
        if not value > 0:
            raise InputError(f"{name} {value}: a threshold must be above 0")
    options = MonitorOptions(
        model=model,
        book=book,
        window=window,
        thresholds=Thresholds(
            psi_max=psi_max,
            segment_shift_max=segment_shift_max,
            csi_max=csi_max,
            auc_drop_max=auc_drop_max,
        ),
        summary_json=summary_json,
        segment_column=segment_column,
    )
    if warning_threshold is not None:
        if not 0 < warning_threshold < 1:
            raise InputError(
                f"--warning-threshold {warning_threshold}: a default probability in (0, 1)"
            )
        options = MonitorOptions(**{**options.__dict__, "warning_threshold": warning_threshold})
    exp = load_experiment(experiment, set_ or [])
    summary = run_monitoring(exp, options)
    _print(summary)
    if summary["alerts"]:
        raise typer.Exit(EXIT_ALERT)


def _print(summary: dict[str, Any]) -> None:
    out = console()
    model = summary["model"]
    out.print(
        f"monitored {model['name']} v{model['version']} on {summary['window']}: "
        f"{summary['n_aligned']:,} enterprises aligned, score PSI {summary['score_psi']:.4f}, "
        f"{summary['early_warning']['n_warnings']} early warning(s) "
        f"({summary['early_warning']['file']}), {summary['wall_seconds']} s",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    for party, groups in summary["platform_csi"].items():
        worst = sorted(groups.items(), key=lambda kv: -kv[1]["csi_max"])[:3]
        text = ", ".join(f"{g} {v['csi_max']:.3f}" for g, v in worst)
        out.print(f"  {party} CSI (largest per group): {text}", markup=False, highlight=False)
    matured = summary["matured"]
    if matured.get("auc") is not None:
        out.print(
            f"  matured loans: {matured['n_matured']:,}, AUC {matured['auc']:.4f}, KS "
            f"{matured['ks']:.4f} (test AUC {model['test_auc']})",
            markup=False,
            highlight=False,
        )
    for alert in summary["alerts"]:
        out.print(
            f"ALERT {alert['kind']} {alert['subject']}: {alert['value']:.4f} > "
            f"{alert['threshold']}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if not summary["alerts"]:
        out.print("no alert", markup=False, highlight=False)
