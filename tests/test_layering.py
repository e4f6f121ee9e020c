"""Imports point down: lab -> federated -> models -> features, secure_agg (DESIGN.md).

Every import in every module of the five packages, at any depth (function-level imports
included), is checked against the allowed layers; ``secure_agg`` imports nothing of the
project and ``features`` nothing but itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

#: What each top-level package may import from the project (besides itself).
ALLOWED: dict[str, frozenset[str]] = {
    "lab": frozenset({"federated", "models", "features", "secure_agg"}),
    "federated": frozenset({"models", "features", "secure_agg"}),
    "models": frozenset({"features", "secure_agg"}),
    "features": frozenset(),
    "secure_agg": frozenset(),
}


def _project_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return [(line, top) for line, top in found if top in ALLOWED]


def _modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_down(package: str) -> None:
    upward = [
        f"{path.relative_to(REPO)}:{line} imports {top}"
        for path in _modules(package)
        for line, top in _project_imports(path)
        if top != package and top not in ALLOWED[package]
    ]
    assert upward == [], "\n".join(upward)


def test_the_check_sees_every_package_and_catches_an_upward_import(tmp_path: Path) -> None:
    assert all(_modules(p) for p in ALLOWED)
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from lab.config import load_experiment\n")
    assert _project_imports(bad) == [(2, "lab")]
