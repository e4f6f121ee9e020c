"""The installed ``lab`` executable's exit status is the command's, for every command.

These run ``.venv/bin/lab`` in a subprocess (:func:`tests.cli_helpers.run_lab`), the way a cron
job or a CI gate sees it: 0 on success, 1 when a check fails (``typer.Exit(1)``) or a job fails,
2 on bad input or usage, with one ``error:`` line.
"""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import typer

from lab.cli import EXIT_INPUT, app
from lab.governance.audit import AuditLog
from tests.cli_helpers import run_lab


def _leaf_commands() -> list[list[str]]:
    def walk(command: click.Command, path: list[str]) -> list[list[str]]:
        if isinstance(command, click.Group):
            return [p for name, sub in command.commands.items() for p in walk(sub, [*path, name])]
        return [path]

    return walk(typer.main.get_command(app), [])


COMMANDS = _leaf_commands()


def test_the_command_tree_is_what_this_file_covers() -> None:
    assert len(COMMANDS) >= 30
    assert ["audit", "verify"] in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_every_command_exits_0_on_help_and_2_on_a_usage_error(
    command: list[str], lab_home: Path
) -> None:
    done = run_lab([*command, "--help"], home=lab_home)
    assert done.returncode == 0, done.stderr
    assert "Usage: lab" in done.stdout
    done = run_lab([*command, "--no-such-option"], home=lab_home)
    assert done.returncode == EXIT_INPUT, (done.stdout, done.stderr)
    assert "No such option" in done.stderr


def test_a_failed_check_exits_1_and_a_passed_one_0(lab_home: Path) -> None:
    log = AuditLog()
    for i in range(3):
        log.record("scoring_call", {"n_scored": i})
    assert run_lab(["audit", "verify"], home=lab_home).returncode == 0
    head = run_lab(["audit", "head"], home=lab_home)
    assert head.returncode == 0
    assert head.stdout.startswith("3:")
    # The anchor names an entry the log does not have: printed TAMPERED, and now exits 1.
    other = f"3:{'b' * 64}"
    done = run_lab(["audit", "verify", "--expect-head", other], home=lab_home)
    assert done.returncode == 1
    assert "TAMPERED" in done.stdout
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    done = run_lab(["audit", "verify"], home=lab_home)
    assert done.returncode == 1
    assert "TAMPERED: deleted at line 2 (seq 2)" in done.stdout


def test_bad_input_exits_2_with_one_error_line(lab_home: Path, tmp_path: Path) -> None:
    for args in (
        ["audit", "verify", "--expect-head", "garbage"],
        ["features", "show", "nope@1"],
        ["check", str(tmp_path / "absent.yaml")],
        ["authorizations", "summary", "--at", "tomorrow"],
    ):
        done = run_lab(args, home=lab_home)
        assert done.returncode == EXIT_INPUT, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("error: "), lines


def test_version_and_bare_groups(lab_home: Path) -> None:
    assert run_lab(["--version"], home=lab_home).returncode == 0
    # A group without a command prints its help, as a usage error (Click's convention).
    done = run_lab(["audit"], home=lab_home)
    assert done.returncode == EXIT_INPUT
    assert "Usage: lab audit" in done.stdout + done.stderr
