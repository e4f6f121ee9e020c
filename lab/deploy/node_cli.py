"""``lab node``: one party's installation on its own host (see :mod:`lab.deploy.node_home`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lab.console import console
from lab.deploy.node_home import DEFAULT_LISTEN, JOBS_PORT, SUPERLINK_PORT

out = console()

node_app = typer.Typer(
    help="This party's own node: init, exchange files, start and stop.", no_args_is_help=True
)

HomeOpt = Annotated[
    Path, typer.Option("--home", help="This party's node home (its $LAB_HOME).", file_okay=False)
]


@node_app.command("init")
def init(
    home: HomeOpt,
    role: Annotated[str, typer.Option("--role", help="coordinator, bank or platform.")],
    name: Annotated[str, typer.Option("--name", help="This party's name in jobs.")],
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="Coordinator: a name or address parties reach it by (repeatable; goes into "
            "its certificate).",
        ),
    ] = None,
    listen: Annotated[
        str, typer.Option(help="Coordinator: the address its services listen on.")
    ] = DEFAULT_LISTEN,
    coordinator: Annotated[
        str, typer.Option(help="Bank or platform: the coordinator's name or address.")
    ] = DEFAULT_LISTEN,
    superlink_port: Annotated[int, typer.Option(help="The coordinator's SuperLink port.")] = (
        SUPERLINK_PORT
    ),
    jobs_port: Annotated[int, typer.Option(help="The coordinator's job endpoint port.")] = (
        JOBS_PORT
    ),
) -> None:
    """Create this party's home: keys, certificates, governance stores (and MLflow, banks)."""
    from lab.deploy.node_home import init_node

    made = init_node(
        home,
        role,
        name,
        hosts=tuple(host or ()),
        listen=listen,
        coordinator=coordinator,
        superlink_port=superlink_port,
        jobs_port=jobs_port,
    )
    out.print(f"[green]initialised[/] {role} '{name}' in {made.path}")
    for path in sorted(made.exchange.iterdir()):
        out.print(f"  hand over: {path}")


@node_app.command("add-party")
def add_party(
    home: HomeOpt,
    name: Annotated[str, typer.Option("--name", help="The party's name in jobs.")],
    role: Annotated[str, typer.Option("--role", help="bank or platform.")],
    public_key: Annotated[
        Path, typer.Argument(help="The party's exchange/NAME.pub.", dir_okay=False)
    ],
) -> None:
    """Coordinator: admit a party with the public key its operator handed over."""
    from lab.deploy.node_home import NodeHome, add_party
    from lab.deploy.node_runtime import running, sync_registrations

    node = NodeHome.read(home)
    add_party(node, name, role, public_key)
    note = ""
    if "superlink" in running(node):
        sync_registrations(node)
        note = " and registered on the running SuperLink"
    out.print(f"[green]admitted[/] {role} '{name}'{note}")


@node_app.command("trust")
def trust(
    home: HomeOpt,
    ca_cert: Annotated[
        Path, typer.Argument(help="The coordinator's exchange/ca.crt.", dir_okay=False)
    ],
) -> None:
    """Bank or platform: install the coordinator's CA certificate."""
    from lab.deploy.node_home import NodeHome, trust_ca

    path = trust_ca(NodeHome.read(home), ca_cert)
    out.print(f"[green]trusted[/] {path}")


@node_app.command("rotate-key")
def rotate_key(home: HomeOpt) -> None:
    """Bank or platform: a new SuperNode key pair (hand the new .pub to the coordinator)."""
    from lab.deploy.node_home import NodeHome, rotate_key

    node = NodeHome.read(home)
    rotate_key(node)
    out.print(f"[green]rotated[/]; hand over {node.exchange / (node.identity.name + '.pub')}")


@node_app.command("rotate-ca")
def rotate_ca(home: HomeOpt) -> None:
    """Coordinator: a new CA and server certificate (hand the new ca.crt to every party)."""
    from lab.deploy.node_home import NodeHome, rotate_ca

    node = NodeHome.read(home)
    rotate_ca(node)
    out.print(f"[green]rotated[/]; hand over {node.exchange / 'ca.crt'} and restart every node")


@node_app.command("start")
def start(
    home: HomeOpt,
    data: Annotated[
        Path | None, typer.Option("--data", help="Bank or platform: this party's data file.")
    ] = None,
    holdout: Annotated[
        Path | None, typer.Option("--holdout", help="A bank's held-out file (horizontal).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every process.")] = 120.0,
) -> None:
    """Start this party's processes: SuperLink + job endpoint, or SuperNode + worker."""
    from lab.deploy.node_home import NodeHome
    from lab.deploy.node_runtime import start as start_node

    node = NodeHome.read(home)
    run = start_node(node, data=data, holdout=holdout, timeout=timeout)
    ident = node.identity
    where = (
        f"SuperLink https://{ident.superlink_address}, jobs https://{ident.jobs_address}"
        if ident.role == "coordinator"
        else f"coordinator {ident.superlink_address}"
    )
    out.print(f"[green]started[/] {ident.role} '{ident.name}': {where}")
    for name, info in run["processes"].items():
        out.print(f"  {name}: pid {info['pid']}, log {info['log']}")


@node_app.command("stop")
def stop(
    home: HomeOpt,
    grace: Annotated[float, typer.Option(help="Seconds between SIGTERM and SIGKILL.")] = 10.0,
) -> None:
    """Stop this party's processes (idempotent)."""
    from lab.deploy.node_home import NodeHome
    from lab.deploy.node_runtime import stop as stop_node

    stopped = stop_node(NodeHome.read(home), grace)
    out.print(f"[green]stopped[/] {len(stopped)} process(es)")
