"""``lab policy``: show and change this node's own policy (:mod:`lab.governance.policy`)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
import yaml

from lab.console import console
from lab.governance.policy import policy_path, read_policy, set_policy

out = console()

policy_app = typer.Typer(
    help="This node's own policy: what it serves, key sizes, alignment limits, DP.",
    no_args_is_help=True,
)


@policy_app.command("show")
def policy_show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The effective policy of this lab home (every setting, defaults included)."""
    from lab.governance.node import home_status

    policy = read_policy()
    status = home_status()
    if as_json:
        typer.echo(
            json.dumps(
                {"file": str(policy_path()), "policy": policy.model_dump(mode="json"), **status},
                indent=2,
            )
        )
        return
    source = policy_path() if policy_path().is_file() else "no file: secure defaults"
    out.print(f"[bold]policy[/] of {policy_path().parent} ({source})")
    out.print(yaml.safe_dump(policy.model_dump(mode="json"), sort_keys=False).rstrip())
    out.print(status["summary"])


@policy_app.command("set")
def policy_set(
    assignments: Annotated[
        list[str],
        typer.Argument(help="KEY=VALUE settings, e.g. crypto.min_key_bits=3072 psi.reveal=[both]"),
    ],
    actor: Annotated[
        str | None, typer.Option("--actor", help="Who acts (default: $LAB_ACTOR or the OS user).")
    ] = None,
) -> None:
    """Change settings (validated, all or nothing; audited as policy_set)."""
    set_policy(assignments, actor=actor)
    out.print(f"[green]saved[/] {policy_path()}")
