"""CLI of serving: ``lab platform ...``, ``lab models ...``, ``lab mlflow ...``.

Heavy imports (Starlette, uvicorn, MLflow) happen inside the commands, so ``lab --help`` stays
fast. :func:`add_serving_commands` attaches the three sub-apps to the root ``lab`` app.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lab import mlflow_ui as mlflow_ui_module
from lab.console import console
from lab.home import lab_home
from lab.serving.ratelimit import (
    DEFAULT_CALL_BURST,
    DEFAULT_CALL_RATE,
    DEFAULT_DECISION_BURST,
    DEFAULT_DECISION_RATE,
)
from lab.serving.refusals import DEFAULT_WINDOW_S

out = console()

platform_app = typer.Typer(
    help="The platform's scoring endpoint (its half of vertical models).", no_args_is_help=True
)
models_app = typer.Typer(
    help="Registered models: list, promote, and their validation reports.", no_args_is_help=True
)
mlflow_app = typer.Typer(
    help="MLflow: browse this home's runs (ui), a multi-user server (serve, add-user).",
    no_args_is_help=True,
)

DirOpt = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="The platform's store (model parts in models/); default $LAB_HOME/parties/platform.",
        file_okay=False,
    ),
]
HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--governance-home",
        help="Folder of the catalog, authorizations and audit log; default $LAB_HOME.",
        file_okay=False,
    ),
]
UriOpt = Annotated[
    str | None,
    typer.Option("--tracking-uri", help="Registry URI; default MLFLOW_TRACKING_URI or the lab's."),
]


def add_serving_commands(app: typer.Typer) -> None:
    """Attach ``platform``, ``models`` and ``mlflow`` to the root app."""
    app.add_typer(platform_app, name="platform")
    app.add_typer(models_app, name="models")
    app.add_typer(mlflow_app, name="mlflow")
    app.command("score")(score)


def score(
    model: Annotated[
        str, typer.Argument(help="Registered model: NAME (its champion), NAME@ALIAS, NAME/VERSION.")
    ],
    input_file: Annotated[
        Path,
        typer.Option("--input", help="CSV of enterprises: enterprise_id and the bank's columns."),
    ],
    out_file: Annotated[Path, typer.Option("--out", help="CSV to write (replaced whole).")],
    purpose: Annotated[
        str | None,
        typer.Option(
            "--purpose",
            help="What the platform checks authorizations for (default loan_approval).",
        ),
    ] = None,
    reasons: Annotated[
        int | None,
        typer.Option(
            "--reasons",
            help="Reason codes per enterprise, what raised the risk most (default 4; 0: "
            "probability only).",
        ),
    ] = None,
    tracking_uri: UriOpt = None,
) -> None:
    """Score a file of enterprises with a registered vertical model, with reason codes.

    The model asks each platform's scoring endpoint for its half (LAB_PLATFORM_URL,
    LAB_PLATFORM_TOKEN), as the served model does; the output has enterprise_id, probability,
    margin, base and reason_1..reason_K with their signed log-odds contributions (the bank's
    columns by name, a platform's only by feature group).
    """
    from lab.batch_scoring import score_file

    done = score_file(
        model, input_file, out_file, purpose=purpose, reasons=reasons, tracking_uri=tracking_uri
    )
    out.print(
        f"{done.n_rows} enterprises scored with {done.model_uri} -> {done.path}"
        + (f" ({done.reasons} reason codes each)" if done.reasons else ""),
        highlight=False,
    )


def _platform_dir(value: Path | None) -> Path:
    return (value or lab_home() / "parties" / "platform").resolve()


@platform_app.command("serve")
def platform_serve(
    data: Annotated[
        Path, typer.Option("--data", help="The platform's feature table (as published).")
    ],
    feature_set: Annotated[
        str, typer.Option("--feature-set", help="The published feature set, name@version.")
    ],
    platform_dir: DirOpt = None,
    governance_home: HomeOpt = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.", min=1, max=65535)] = 8700,
    rate: Annotated[
        float, typer.Option(help="Calls per second per bank (sustained).", min=0.001)
    ] = DEFAULT_CALL_RATE,
    burst: Annotated[
        int, typer.Option(help="Calls a bank may make at once.", min=1)
    ] = DEFAULT_CALL_BURST,
    decision_rate: Annotated[
        float,
        typer.Option(
            help="Decisions (enterprises x splits) per second per bank (sustained).", min=0.001
        ),
    ] = DEFAULT_DECISION_RATE,
    decision_burst: Annotated[
        int,
        typer.Option(help="Decisions a bank may ask at once (also the most per call).", min=1),
    ] = DEFAULT_DECISION_BURST,
    audit_window: Annotated[
        float,
        typer.Option(
            help="Seconds of 401/429 refusals written as one audit entry per caller.", min=0.1
        ),
    ] = DEFAULT_WINDOW_S,
) -> None:
    """Serve split decisions to authenticated banks on 127.0.0.1 (Ctrl-C stops)."""
    from lab.serving.platform_endpoint import HOST, create_app, make_server
    from lab.serving.platform_scorer import PlatformScorer
    from lab.serving.ratelimit import TokenBucketLimiter
    from lab.serving.tokens import TokenStore

    root = _platform_dir(platform_dir)
    home = (governance_home or lab_home()).resolve()
    scorer = PlatformScorer(root, data.resolve(), feature_set, home)
    tokens = TokenStore.in_dir(root)
    if not tokens.banks():
        typer.echo(
            f"warning: no bank holds a token yet; run `lab platform issue-token --bank NAME "
            f"--dir {root}`",
            err=True,
        )
    app = create_app(
        scorer,
        tokens,
        TokenBucketLimiter(rate, burst),
        work_limiter=TokenBucketLimiter(decision_rate, decision_burst),
        audit_window_s=audit_window,
    )
    typer.echo(
        f"platform endpoint on http://{HOST}:{port} ({len(scorer.models())} model part(s), "
        f"{scorer.table.n_rows} enterprises, {rate:g} calls/s and {decision_rate:g} "
        "decisions/s per bank)",
        err=True,
    )
    make_server(app, port).run()


@platform_app.command("issue-token")
def platform_issue_token(
    bank: Annotated[str, typer.Option("--bank", help="The bank's name (as in authorizations).")],
    platform_dir: DirOpt = None,
    governance_home: HomeOpt = None,
    purpose: Annotated[
        list[str] | None,
        typer.Option(
            "--purpose",
            help="Purpose the bank may score for (repeatable); default pre-loan screening, "
            "loan approval and post-loan monitoring.",
        ),
    ] = None,
) -> None:
    """Issue (or replace) a bank's bearer token; prints it once, stores only its hash."""
    from lab.governance.audit import AuditLog
    from lab.serving.tokens import DEFAULT_PURPOSES, TokenStore

    root = _platform_dir(platform_dir)
    home = (governance_home or lab_home()).resolve()
    purposes = tuple(purpose or DEFAULT_PURPOSES)
    token = TokenStore.in_dir(root).issue(bank, purposes)
    AuditLog(home / "audit" / "log.jsonl").record(
        "scoring_token_issued", {"bank": bank, "purposes": sorted(set(purposes))}
    )
    typer.echo(token)


@platform_app.command("bind")
def platform_bind(
    model_id: Annotated[str, typer.Argument(help="The platform part's model id.")],
    bank: Annotated[str, typer.Option("--bank", help="The bank that trained it.")],
    platform_dir: DirOpt = None,
    governance_home: HomeOpt = None,
) -> None:
    """Bind a part trained before parts named their bank; only that bank may score with it."""
    from lab.governance.audit import AuditLog
    from lab.serving.platform_scorer import bind_part

    root = _platform_dir(platform_dir)
    home = (governance_home or lab_home()).resolve()
    path = bind_part(root / "models", model_id, bank)
    AuditLog(home / "audit" / "log.jsonl").record(
        "model_part_bound", {"model": model_id, "bank": bank}
    )
    out.print(f"bound {model_id} to {bank} ({path})", highlight=False)


def _uri(value: str | None) -> str:
    from lab.tracking import default_tracking_uri

    return value or default_tracking_uri()


@models_app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str | None, typer.Option("--version", help="Version to promote.")] = None,
    alias: Annotated[
        str | None, typer.Option("--alias", help="Alias to set with --version.")
    ] = None,
    from_alias: Annotated[
        str | None, typer.Option("--from", help="Promote the version this alias names.")
    ] = None,
    to_alias: Annotated[str | None, typer.Option("--to", help="Alias to set with --from.")] = None,
    tracking_uri: UriOpt = None,
) -> None:
    """Point challenger/champion at a version: --version V --alias A, or --from A --to B."""
    from lab.serving.errors import PromotionError
    from lab.serving.promotion import promote

    if version is not None and (alias is None or from_alias or to_alias):
        raise PromotionError("use --version V --alias ALIAS (without --from/--to)")
    if from_alias is not None and (to_alias is None or alias or version):
        raise PromotionError("use --from ALIAS --to ALIAS (without --version/--alias)")
    target = alias if version is not None else to_alias
    if target is None:
        raise PromotionError("use --version V --alias ALIAS, or --from challenger --to champion")
    done = promote(_uri(tracking_uri), name, target, version=version, from_alias=from_alias)
    before = f" (was version {done.previous_version})" if done.previous_version else ""
    out.print(f"{done.name}@{done.alias} -> version {done.version}{before}", highlight=False)
    for stale in done.removed_aliases:
        out.print(
            f"{done.name}@{stale} removed from version {done.version} (it is the {done.alias} "
            f"now; the next job registers a new {stale})",
            highlight=False,
        )


@models_app.command("list")
def models_list(
    tracking_uri: UriOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every version of every registered model, with its aliases."""
    from lab.serving.promotion import list_models

    rows = list_models(_uri(tracking_uri))
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    table = Table()
    for column in ("model", "version", "aliases", "run"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["version"], ", ".join(row["aliases"]), row["run_id"] or "")
    out.print(table)


@models_app.command("report")
def models_report(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version number.")],
    out_path: Annotated[
        Path, typer.Option("--out", "-o", help="HTML file to write.", dir_okay=False)
    ],
    tracking_uri: UriOpt = None,
) -> None:
    """Write a version's validation/approval report as one self-contained HTML file.

    Discrimination, calibration, stability, importance by party and group, privacy spend and
    data lineage of the registered version, from its run.
    """
    from lab.validation_report import fetch

    path, rebuilt = fetch(_uri(tracking_uri), name, version, out_path)
    how = "built from its run's artifacts" if rebuilt else "as logged by its job"
    out.print(f"wrote {path} ({name} version {version}, {how})", markup=False, highlight=False)


@mlflow_app.command("serve")
def mlflow_serve(
    server_dir: Annotated[
        Path, typer.Option("--dir", help="Server folder (stores, auth config).", file_okay=False)
    ],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.", min=1, max=65535)] = 5000,
) -> None:
    """Run `mlflow server --app-name basic-auth` on 127.0.0.1 with a sqlite store."""
    from lab.serving.mlflow_server import prepare, server_command, server_env

    layout = prepare(server_dir)
    command = server_command(layout, port)
    env = server_env(layout)
    typer.echo(f"mlflow server on http://127.0.0.1:{port} (store {layout.backend_uri})", err=True)
    os.execve(command[0], command, env)  # noqa: S606 - fixed argv, our own venv's mlflow


@mlflow_app.command("ui")
def mlflow_ui(
    tracking_uri: UriOpt = None,
    port: Annotated[
        int, typer.Option(help="Port on 127.0.0.1.", min=1, max=65535)
    ] = mlflow_ui_module.DEFAULT_PORT,
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the command line instead of running it.")
    ] = False,
) -> None:
    """Browse this lab home's runs and models: `mlflow ui` on its store, 127.0.0.1 only.

    The store is $LAB_HOME/mlflow.db unless --tracking-uri or MLFLOW_TRACKING_URI names another;
    MLflow's job execution is off (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false). Ctrl-C stops it.
    """
    from lab.serving.errors import ServingSetupError

    uri = _uri(tracking_uri)
    command = mlflow_ui_module.browse_command(uri, port)
    if print_only:
        typer.echo(command)
        return
    if mlflow_ui_module.is_server(uri):
        raise ServingSetupError(f"{uri} is a tracking server already: open it in a browser")
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise ServingSetupError(
            f"no tracking store at {uri.removeprefix('sqlite:///')} yet: run a job first "
            "(`lab train EXPERIMENT`), or check $LAB_HOME"
        )
    argv = mlflow_ui_module.ui_argv(uri, port)
    typer.echo(f"mlflow ui on http://{mlflow_ui_module.HOST}:{port} (store {uri})", err=True)
    os.execve(argv[0], argv, mlflow_ui_module.ui_env())  # noqa: S606 - fixed argv, our venv's mlflow


@mlflow_app.command("add-user")
def mlflow_add_user(
    username: Annotated[str, typer.Argument(help="The new user's name.")],
    role: Annotated[str, typer.Option("--role", help="modeler or auditor.")],
    server_dir: Annotated[
        Path, typer.Option("--dir", help="The server's folder.", file_okay=False)
    ],
    url: Annotated[str, typer.Option("--url", help="Server URL.")] = "http://127.0.0.1:5000",
    experiment: Annotated[
        list[str] | None,
        typer.Option("--experiment", help="Give a modeler EDIT on this experiment (repeatable)."),
    ] = None,
) -> None:
    """Create a user (as admin: MLFLOW_AUTH_ADMIN_PASSWORD); prints a generated password once.

    Set LAB_MLFLOW_NEW_PASSWORD to choose the password instead.
    """
    from lab.serving.errors import ServingSetupError
    from lab.serving.mlflow_server import ADMIN_PASSWORD_ENV, ROLES, Role, ServerLayout, add_user

    admin_password = os.environ.get(ADMIN_PASSWORD_ENV)
    if not admin_password:
        raise ServingSetupError(f"set {ADMIN_PASSWORD_ENV} to the admin's password")
    if role not in ROLES:
        raise ServingSetupError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    chosen = os.environ.get("LAB_MLFLOW_NEW_PASSWORD")
    password = chosen or secrets.token_urlsafe(18)
    role_: Role = "auditor" if role == "auditor" else "modeler"
    add_user(
        url,
        ServerLayout(server_dir.resolve()),
        username,
        password,
        role_,
        admin_password=admin_password,
        edit_experiments=experiment or (),
    )
    out.print(f"created {role} {username!r}", highlight=False)
    if not chosen:
        typer.echo(password)
