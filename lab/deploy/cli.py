"""``lab up`` / ``lab down``, ``lab node`` and the ``--deployment`` option of ``lab train``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lab.console import console
from lab.deploy.state import PROFILES

out = console()

DeploymentOpt = Annotated[
    Path | None,
    typer.Option(
        "--deployment",
        help="Run on the deployment started by 'lab up --dir DIR', or submit from this bank's "
        "node home ('lab node init --role bank') to its coordinator (default: embedded runtime).",
        file_okay=False,
    ),
]
DirOpt = Annotated[Path, typer.Option("--dir", help="Deployment folder.", file_okay=False)]


def up(
    folder: DirOpt,
    experiment: Annotated[
        Path,
        typer.Option("--experiment", help="Experiment whose parties get a node.", dir_okay=False),
    ],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key (repeatable)."),
    ] = None,
    profile: Annotated[
        str,
        typer.Option(
            help=f"Deployment engine profile: {' or '.join(PROFILES)} (Flower as shipped)."
        ),
    ] = "tuned",
    governance_home: Annotated[
        Path | None,
        typer.Option(
            help="One governance home for every node (default: one per node under DIR).",
            file_okay=False,
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for every process to start and connect.")
    ] = 120.0,
) -> None:
    """Start a SuperLink (coordinator) and one SuperNode per party on 127.0.0.1, TLS + node auth."""
    from lab.config import load_experiment
    from lab.deploy.deployment import up as start

    exp = load_experiment(experiment, set_ or [])
    state = start(folder, exp, profile=profile, governance_home=governance_home, timeout=timeout)
    out.print(
        f"[green]up[/] {exp.name} ({state.profile}): SuperLink https://{state.address} "
        f"(pid {state.superlink.pid})"
    )
    for node in state.nodes:
        worker = f", worker pid {node.worker.pid}" if node.worker else ""
        out.print(f"  {node.party} ({node.role}): SuperNode pid {node.supernode.pid}{worker}")
    out.print(f"state: {Path(state.folder) / 'deployment.json'}")


def down(
    folder: DirOpt,
    grace: Annotated[float, typer.Option(help="Seconds between SIGTERM and SIGKILL.")] = 10.0,
) -> None:
    """Stop every process of a deployment (idempotent)."""
    from lab.deploy.deployment import down as stop

    stopped = stop(folder, grace)
    out.print(f"[green]down[/] {folder}: stopped {len(stopped)} process(es)")


def register(app: typer.Typer) -> None:
    """Add ``up``, ``down`` and ``node`` to the ``lab`` CLI."""
    from lab.deploy.node_cli import node_app

    app.command("up")(up)
    app.command("down")(down)
    app.add_typer(node_app, name="node")
