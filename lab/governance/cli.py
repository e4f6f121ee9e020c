"""Governance commands: ``lab features``, ``lab budget``, ``lab audit``, ``lab authorizations``.

Four typer sub-apps for ``lab/cli.py`` to register (pandas and pandera are imported only by the
commands that need them, so ``lab --help`` stays fast). Commands raise
:class:`lab.errors.InputError` subclasses for bad input, which the main CLI reports as one line
and exit code 2; ``lab audit verify`` exits 1 when the log was tampered with.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from lab.console import console
from lab.errors import InputError
from lab.governance._common import utc_now
from lab.governance.audit import AuditLog, Head
from lab.governance.ledger import DEFAULT_WINDOW_DAYS, BudgetLedger
from lab.governance.vocabulary import PURPOSES, parse_ref
from lab.home import lab_home
from models.privacy import ACCOUNTANTS

if TYPE_CHECKING:
    from lab.governance.authorizations import AuthorizationRegistry
    from lab.governance.catalog import Catalog, CatalogEntry

out = console()

features_app = typer.Typer(help="Publish and inspect versioned feature sets.", no_args_is_help=True)
budget_app = typer.Typer(help="Set and show privacy-budget caps.", no_args_is_help=True)
audit_app = typer.Typer(
    help="Auditor views: verify the audit log, budgets, jobs.", no_args_is_help=True
)
authorizations_app = typer.Typer(
    help="Import and revoke enterprise authorizations.", no_args_is_help=True
)

ActorOpt = Annotated[
    str | None,
    typer.Option("--actor", help="Who acts (default: $LAB_ACTOR or the OS user)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _catalog() -> Catalog:
    from lab.governance.catalog import Catalog

    return Catalog()


def _registry() -> AuthorizationRegistry:
    from lab.governance.authorizations import AuthorizationRegistry

    return AuthorizationRegistry()


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


# --- lab features ------------------------------------------------------------------------------


@features_app.command("publish")
def features_publish(
    spec: Annotated[
        Path, typer.Argument(help="Feature-set spec (YAML).", dir_okay=False, show_default=False)
    ],
    data: Annotated[
        Path, typer.Option("--data", help="The table to publish (CSV, CSV.gz, parquet).")
    ],
    actor: ActorOpt = None,
) -> None:
    """Validate DATA against SPEC and publish it as an immutable name@version."""
    entry = _catalog().publish(spec, data, actor=actor)
    out.print(
        f"[green]published[/] {entry.ref}: {entry.rows:,} rows, {len(entry.spec.columns)} "
        f"columns, data {entry.data_digest[:19]}..."
    )


@features_app.command("list")
def features_list(as_json: JsonOpt = False) -> None:
    """List every published feature-set version."""
    entries = _catalog().list_sets()
    if as_json:
        _echo_json([_entry_summary(e) for e in entries])
        return
    table = Table(title="Published feature sets")
    for column in ("feature set", "owner", "rows", "columns", "published", "by"):
        table.add_column(column)
    for e in entries:
        table.add_row(
            e.ref,
            e.spec.owner,
            f"{e.rows:,}",
            str(len(e.spec.columns)),
            e.published_at[:19],
            e.published_by,
        )
    out.print(table)


@features_app.command("show")
def features_show(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION (latest version if omitted).")],
    as_json: JsonOpt = False,
) -> None:
    """Show a published version: spec, digests and the row-free quality report."""
    name, version = parse_ref(ref, version_required=False)
    entry = _catalog().show(name, version)
    if as_json:
        _echo_json(entry.to_dict())
        return
    out.print(
        f"[bold]{entry.ref}[/] owner {entry.spec.owner}; {entry.rows:,} rows; published "
        f"{entry.published_at[:19]} by {entry.published_by}\n{entry.spec.description}\n"
        f"spec {entry.spec_digest}\ndata {entry.data_digest}"
    )
    table = Table()
    for column in ("column", "type", "group", "sensitivity", "missing", "summary"):
        table.add_column(column)
    for name_, col in entry.spec.columns.items():
        q = entry.quality["columns"][name_]
        table.add_row(
            name_,
            col.type,
            col.group,
            col.sensitivity,
            f"{q['missing_rate']:.1%}",
            _quality_summary(q),
        )
    out.print(table)


@features_app.command("usage")
def features_usage(
    ref: Annotated[str, typer.Argument(help="NAME (all versions) or NAME@VERSION.")],
    as_json: JsonOpt = False,
) -> None:
    """Which banks and jobs used a feature set, and what it contributed (feedback to publishers)."""
    from lab.governance.usage import feature_set_usage

    report = feature_set_usage(ref)
    if as_json:
        _echo_json(report)
        return
    table = Table(title=f"Usage of {ref}: banks {', '.join(report['banks']) or '-'}")
    for column in (
        "job",
        "started",
        "status",
        "versions",
        "banks",
        "joint AUC",
        "bank-only AUC",
        "lift",
        "top groups",
    ):
        table.add_column(column)
    for row in report["jobs"]:
        groups = ", ".join(f"{g} {v:.0%}" for g, v in list(row["importance_by_group"].items())[:3])
        table.add_row(
            str(row["job_id"]),
            str(row["started"]),
            str(row["status"]),
            ", ".join(row["versions"]),
            ", ".join(row["banks"] or []),
            _fmt(row["joint_test_auc"]),
            _fmt(row["bank_only_test_auc"]),
            _fmt(row["auc_lift"]),
            groups or "-",
        )
    out.print(table)


@features_app.command("spec-from-synth")
def features_spec_from_synth(
    data_dir: Annotated[
        Path, typer.Argument(help="Folder written by `lab data synth`.", file_okay=False)
    ],
    out_path: Annotated[Path, typer.Option("--out", help="Spec file to write.", dir_okay=False)],
    name: Annotated[str, typer.Option(help="Feature-set name.")] = "sme_platform",
    version: Annotated[str, typer.Option(help="Feature-set version.")] = "1",
    owner: Annotated[str, typer.Option(help="Owner (team or person).")] = "platform",
    description: Annotated[
        str, typer.Option(help="One-line description.")
    ] = "Synthetic SME enterprise features of a credit platform.",
) -> None:
    """Write an example spec from a synthetic data folder's columns.json and platform.csv."""
    import pandas as pd

    from lab.governance.spec import spec_from_synth_columns, write_spec

    columns = data_dir / "columns.json"
    table = data_dir / "platform.csv"
    if not columns.is_file() or not table.is_file():
        raise InputError(
            f"{data_dir}: expected columns.json and platform.csv; generate them with "
            "`lab data synth --out DIR`"
        )
    spec = spec_from_synth_columns(
        columns,
        name=name,
        version=version,
        owner=owner,
        description=description,
        data=pd.read_csv(table),
    )
    write_spec(spec, out_path)
    out.print(f"[green]wrote[/] {out_path} ({spec.ref}, {len(spec.columns)} columns)")


def _entry_summary(entry: CatalogEntry) -> dict[str, Any]:
    return {
        "ref": entry.ref,
        "owner": entry.spec.owner,
        "rows": entry.rows,
        "columns": len(entry.spec.columns),
        "groups": sorted(entry.spec.groups_of(entry.spec.columns)),
        "spec_digest": entry.spec_digest,
        "data_digest": entry.data_digest,
        "published_at": entry.published_at,
        "published_by": entry.published_by,
    }


def _quality_summary(q: dict[str, Any]) -> str:
    if "suppressed" in q and isinstance(q["suppressed"], str):
        return q["suppressed"]
    if "levels" in q:
        counts = q["levels"]["counts"]
        shown = ", ".join(f"{k}: {v}" for k, v in list(counts.items())[:3])
        more = len(counts) - 3
        return shown + (f" (+{more} more)" if more > 0 else "")
    quantiles = q.get("quantiles", {})
    if "p50" in quantiles:
        return f"median {_fmt(quantiles['p50'])}, mean {_fmt(q.get('mean'))}"
    return f"mean {_fmt(q.get('mean'))}"


# --- lab budget --------------------------------------------------------------------------------


@budget_app.command("set")
def budget_set(
    feature_set: Annotated[str, typer.Argument(help="Published feature set, NAME@VERSION.")],
    bank: Annotated[str, typer.Option("--bank", help="The bank the cap applies to.")],
    epsilon: Annotated[float, typer.Option("--epsilon", help="Cap on ε within the window.")],
    delta: Annotated[float, typer.Option("--delta", help="δ of the cap, e.g. 1e-5.")],
    accountant: Annotated[
        str, typer.Option("--accountant", help=f"Opacus accountant: {' or '.join(ACCOUNTANTS)}.")
    ] = "rdp",
    window_days: Annotated[
        int, typer.Option("--window-days", help="Rolling renewal window, days.")
    ] = DEFAULT_WINDOW_DAYS,
    actor: ActorOpt = None,
) -> None:
    """Set (or replace) the privacy budget of BANK on FEATURE_SET."""
    name, version = parse_ref(feature_set)
    _catalog().show(name, version)  # refuses a feature set that is not published
    if accountant not in ACCOUNTANTS:
        raise InputError(f"unknown accountant {accountant!r}; use one of {', '.join(ACCOUNTANTS)}")
    with BudgetLedger() as ledger:
        cap = ledger.set_cap(
            feature_set,
            bank,
            epsilon=epsilon,
            delta=delta,
            accountant="rdp" if accountant == "rdp" else "prv",
            window_days=window_days,
            actor=actor,
        )
    out.print(
        f"[green]set[/] {cap.feature_set} x {cap.bank}: epsilon={cap.epsilon:g}, "
        f"delta={cap.delta:g}, {cap.accountant}, {cap.window_days}-day window"
    )


@budget_app.command("settle")
def budget_settle(
    reservation: Annotated[
        str, typer.Argument(help="The open reservation, JOB_ID/NAME@VERSION (lab audit jobs).")
    ],
    actor: ActorOpt = None,
) -> None:
    """Close a reservation whose platform node ended without closing it (crash, cut link).

    Commits the releases the node journaled (or releases the reservation if the job never
    touched data); without a journal, the whole plan is committed as spent.
    """
    from lab.governance.node import settle

    outcome = settle(reservation, actor=actor)
    out.print(f"[green]{outcome}[/] {reservation}")


@budget_app.command("show")
def budget_show(as_json: JsonOpt = False) -> None:
    """Caps, spent, reserved and remaining ε per feature set x bank."""
    _print_status(as_json)


def _print_status(as_json: bool) -> None:
    with BudgetLedger() as ledger:
        rows = ledger.status()
    if as_json:
        _echo_json([r.to_dict() for r in rows])
        return
    table = Table(title="Privacy budgets (ε at the cap's δ, composed by Opacus)")
    for column in (
        "feature set",
        "bank",
        "cap ε",
        "δ",
        "accountant",
        "spent ε",
        "reserved ε",
        "remaining ε",
        "open",
        "window",
    ):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.feature_set,
            r.bank,
            _fmt(r.cap_epsilon),
            f"{r.delta:g}",
            r.accountant,
            _fmt(r.spent_epsilon),
            _fmt(r.reserved_epsilon),
            _fmt(r.remaining_epsilon),
            str(r.open_reservations),
            f"{r.window_days} d",
        )
    out.print(table)


# --- lab audit ---------------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify(
    expect_head: Annotated[
        str | None,
        typer.Option(
            "--expect-head", help="SEQ:HASH noted earlier (`lab audit head`) the log must contain."
        ),
    ] = None,
    anchor: Annotated[
        list[Path] | None,
        typer.Option(
            "--anchor",
            help="Anchor file of `lab audit anchor` to check against (repeatable).",
            dir_okay=False,
        ),
    ] = None,
    peer_log: Annotated[
        list[Path] | None,
        typer.Option(
            "--peer-log",
            help="Another party's audit log: check the heads of this log it recorded (repeatable).",
            dir_okay=False,
        ),
    ] = None,
    mlflow: Annotated[
        bool,
        typer.Option(
            "--mlflow", help="Also check the heads exported into MLflow job runs (lab.audit_head)."
        ),
    ] = False,
    tracking_uri: Annotated[
        str | None,
        typer.Option("--tracking-uri", help="MLflow store for --mlflow (default: the lab's)."),
    ] = None,
    ledger: Annotated[
        bool,
        typer.Option(
            "--ledger/--no-ledger",
            help="Also reconcile governance.db with the budget entries of the log.",
        ),
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Check the log (chain, head, signatures, witness, anchors) and the ledger; exit 1 if not ok.

    Names the first bad entry and everything it compared against.
    """
    from lab.governance import anchors as anchor_io

    log = AuditLog()
    external = []
    public = None
    for path in anchor or []:
        head, key = anchor_io.read_anchor(path)
        external.append(head)
        public = public or key
    fingerprint = log.key_fingerprint() or (public.fingerprint if public else None)
    peers: list[AuditLog] = []
    for path in peer_log or []:
        peer = AuditLog(path)
        peers.append(peer)
        if fingerprint is not None:
            external.extend(anchor_io.from_peer_log(peer, fingerprint))
    if mlflow and fingerprint is not None:
        from lab.tracking import default_tracking_uri

        external.extend(anchor_io.from_mlflow(tracking_uri or default_tracking_uri(), fingerprint))
    report = log.verify(
        Head.parse(expect_head) if expect_head else None, anchors=external, public_key=public
    )
    peer_reports = [peer.verify() for peer in peers]
    reconciled = None
    if ledger and report.ok and (lab_home() / "governance.db").exists():
        from lab.governance.reconcile import reconcile

        with BudgetLedger(audit=log) as budget:
            reconciled = reconcile(budget)
    ok = report.ok and all(r.ok for r in peer_reports) and (reconciled is None or reconciled.ok)
    if as_json:
        _echo_json(
            {
                **report.to_dict(),
                "ok": ok,
                "log_ok": report.ok,
                "peers": [r.to_dict() for r in peer_reports],
                "ledger": None if reconciled is None else reconciled.to_dict(),
            }
        )
    else:
        style = "green" if report.ok else "bold red"
        out.print(f"[{style}]{report.summary()}[/]", highlight=False, soft_wrap=True)
        out.print("compared against:", highlight=False, soft_wrap=True)
        for item in report.compared:
            out.print(f"  - {item}", highlight=False, soft_wrap=True)
        if mlflow and not any(a.source.startswith("MLflow") for a in external):
            out.print(
                "  - (no MLflow run carries this log's head)", highlight=False, soft_wrap=True
            )
        for peer_report in peer_reports:
            tag = "green" if peer_report.ok else "bold red"
            out.print(
                f"[{tag}]peer log {peer_report.path}: {peer_report.summary()}[/]", highlight=False
            )
        if reconciled is not None:
            tag = "green" if reconciled.ok else "bold red"
            out.print(f"[{tag}]{reconciled.summary()}[/]", highlight=False, soft_wrap=True)
            for diff in reconciled.differences[1:]:
                out.print(f"  - {diff.describe()}", highlight=False, soft_wrap=True)
    if not ok:
        raise typer.Exit(1)


@audit_app.command("reconcile")
def audit_reconcile(as_json: JsonOpt = False) -> None:
    """Rebuild budget caps and jobs from the audit log's budget entries; diff with governance.db.

    Exits 1 if they differ (or the log itself is damaged).
    """
    from lab.governance.reconcile import reconcile

    log = AuditLog()
    checked = log.verify()
    if not checked.ok:
        out.print(f"[bold red]{checked.summary()}[/]", highlight=False, soft_wrap=True)
        out.print(
            "the ledger cannot be reconciled against a damaged log", highlight=False, soft_wrap=True
        )
        raise typer.Exit(1)
    with BudgetLedger(audit=log) as budget:
        report = reconcile(budget)
    if as_json:
        _echo_json(report.to_dict())
    else:
        style = "green" if report.ok else "bold red"
        out.print(f"[{style}]{report.summary()}[/]", highlight=False, soft_wrap=True)
        for diff in report.differences[1:]:
            out.print(f"  - {diff.describe()}", highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("anchor")
def audit_anchor(
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write the anchor to this new file (kept outside the home).",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Print (and optionally write) an anchor of the head: seq, hash, signing key, public key.

    Keep it where an editor of this lab home cannot write (a ticket, another machine); check
    later with `lab audit verify --anchor FILE`.
    """
    from lab.governance.anchors import write_anchor

    anchor = write_anchor(AuditLog(), out_path)
    typer.echo(json.dumps(anchor, sort_keys=True))


@audit_app.command("head")
def audit_head() -> None:
    """Print the head anchor SEQ:HASH; keep it outside the lab home to detect rewrites."""
    head = AuditLog().head()
    typer.echo("empty" if head is None else str(head))


@audit_app.command("recover")
def audit_recover(
    adopt: Annotated[
        str | None,
        typer.Option(
            "--adopt", help="SEQ:HASH of the last entry after the head anchor, once inspected."
        ),
    ] = None,
    actor: ActorOpt = None,
) -> None:
    """Repair an append interrupted by a crash (torn line, unanchored entries); nothing else."""
    done = AuditLog().recover(Head.parse(adopt) if adopt else None, actor=actor)
    out.print("; ".join(done) if done else "nothing to recover: the log and its head agree")


@audit_app.command("report")
def audit_report(
    report_path: Annotated[Path, typer.Option("--out", help="HTML file to write.", dir_okay=False)],
) -> None:
    """Write the auditor report: budgets, burn-down plot, every job's privacy parameters."""
    from lab.governance.report import write_report

    path = write_report(report_path)
    out.print(f"[green]wrote[/] {path}")


@audit_app.command("budget")
def audit_budget(as_json: JsonOpt = False) -> None:
    """Caps, spent and remaining budget per feature set x bank, with accountant and δ."""
    _print_status(as_json)


@audit_app.command("jobs")
def audit_jobs(
    feature_set: Annotated[
        str | None, typer.Option("--feature-set", help="Only this NAME@VERSION.")
    ] = None,
    bank: Annotated[str | None, typer.Option("--bank", help="Only this bank.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Every job the budget ledger knows: state, outcome, planned and spent ε."""
    with BudgetLedger() as ledger:
        jobs = ledger.jobs(feature_set, bank)
        rows: list[dict[str, Any]] = []
        for job in jobs:
            planned, spent = ledger.epsilon_of(job)
            rows.append(
                {
                    "job_id": job.job_id,
                    "feature_set": job.feature_set,
                    "bank": job.bank,
                    "state": job.state,
                    "outcome": job.outcome,
                    "dp": job.dp,
                    "planned_epsilon": planned,
                    "spent_epsilon": spent,
                    "reserved_at": job.reserved_at,
                    "closed_at": job.closed_at,
                    "mechanisms": sorted(
                        {e.mechanism for e in job.planned_events + (job.actual_events or ())}
                    ),
                }
            )
    if as_json:
        _echo_json(rows)
        return
    table = Table(title="Jobs")
    for column in ("job", "feature set", "bank", "state", "outcome", "DP", "planned ε", "spent ε"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["job_id"],
            r["feature_set"],
            r["bank"],
            r["state"],
            r["outcome"] or "-",
            "yes" if r["dp"] else "no",
            _fmt(r["planned_epsilon"]),
            _fmt(r["spent_epsilon"]),
        )
    out.print(table)


@audit_app.command("log")
def audit_log(
    event_type: Annotated[str | None, typer.Option("--type", help="Only this event type.")] = None,
    last: Annotated[int, typer.Option("--last", help="Show the last N entries.", min=1)] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Show the latest audit entries (use `verify` to check them)."""
    entries = list(AuditLog().entries(event_type))[-last:]
    if as_json:
        _echo_json([e.to_dict() for e in entries])
        return
    table = Table(title="Audit log")
    for column in ("seq", "time (UTC)", "type", "actor", "payload"):
        table.add_column(column)
    for e in entries:
        payload = json.dumps(e.payload, ensure_ascii=False)
        table.add_row(
            str(e.seq), e.ts[:19], e.type, e.actor, payload[:120] + ("..." * (len(payload) > 120))
        )
    out.print(table)


#: Audit events an auditor should look at first.
ALERT_TYPES = ("psi_probe_suspected", "job_refused")


@audit_app.command("alerts")
def audit_alerts(
    last: Annotated[int, typer.Option("--last", help="Show the last N alerts.", min=1)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Alignments that looked like membership probes, and jobs a node refused."""
    log = AuditLog()
    entries = sorted((e for kind in ALERT_TYPES for e in log.entries(kind)), key=lambda e: e.seq)[
        -last:
    ]
    if as_json:
        _echo_json([e.to_dict() for e in entries])
        return
    table = Table(title=f"Alerts ({', '.join(ALERT_TYPES)})")
    for column in ("seq", "time (UTC)", "type", "job", "detail"):
        table.add_column(column)
    for e in entries:
        detail = {k: v for k, v in e.payload.items() if k != "job_id"}
        text = json.dumps(detail, ensure_ascii=False)
        table.add_row(
            str(e.seq),
            e.ts[:19],
            e.type,
            str(e.payload.get("job_id", "")),
            text[:140] + ("..." * (len(text) > 140)),
        )
    out.print(table)
    if not entries:
        out.print("no alerts")


# --- lab authorizations ------------------------------------------------------------------------


@authorizations_app.command("import")
def authorizations_import(
    csv_path: Annotated[
        Path, typer.Argument(help="Authorizations CSV.", dir_okay=False, show_default=False)
    ],
    actor: ActorOpt = None,
) -> None:
    """Import enterprise authorizations from a CSV file (all or nothing)."""
    with _registry() as registry:
        summary = registry.import_csv(csv_path, actor=actor)
    out.print(
        f"[green]imported[/] {summary.inserted:,} authorizations from {csv_path} "
        f"({summary.duplicates:,} already present; banks {', '.join(summary.banks)})"
    )


@authorizations_app.command("revoke")
def authorizations_revoke(
    enterprise_id: Annotated[str, typer.Argument(help="The enterprise's id.")],
    bank: Annotated[str, typer.Option("--bank", help="The bank authorized.")],
    purpose: Annotated[str, typer.Option("--purpose", help=f"One of {', '.join(PURPOSES)}.")],
    actor: ActorOpt = None,
) -> None:
    """Revoke an enterprise's authorizations of BANK for PURPOSE."""
    with _registry() as registry:
        count = registry.revoke(enterprise_id, bank, purpose, actor=actor)
    if count:
        out.print(f"[green]revoked[/] {count} authorization(s) of {bank} for {purpose}")
    else:
        out.print(f"already revoked: no active authorization of {bank} for {purpose}")


@authorizations_app.command("summary")
def authorizations_summary(
    at: Annotated[
        str | None, typer.Option("--at", help="Day to check validity on (YYYY-MM-DD).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Counts of active, valid and revoked authorizations per bank and purpose (no ids)."""
    try:
        day = date.fromisoformat(at) if at else utc_now().date()
    except ValueError as exc:
        raise InputError(f"--at {at!r} is not a date; use YYYY-MM-DD") from exc
    with _registry() as registry:
        rows = registry.summary(day)
    if as_json:
        _echo_json(rows)
        return
    table = Table(title=f"Authorizations (valid on {day})")
    for column in ("bank", "purpose", "active", "valid", "revoked"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["bank"], r["purpose"], str(r["active"]), str(r["valid"]), str(r["revoked"]))
    out.print(table)
