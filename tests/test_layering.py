"""Imports point down: lab -> federated -> models -> features, secure_agg (DESIGN.md).

Every import in every module of the five packages, at any depth (function-level imports
included), is checked against the allowed layers; ``secure_agg`` imports nothing of the
project and ``features`` nothing but itself.

One named exception: a model package's ``__init__.py`` may re-export its scikit-learn face
from ``federated.estimators`` lazily, inside a module-level ``__getattr__`` (PEP 562) or under
``if TYPE_CHECKING:``, so users write ``from models.secureboost import SecureBoostClassifier``
while importing ``models`` still imports nothing from ``federated`` (checked in a fresh
process below).
"""

from __future__ import annotations

import ast
import subprocess
import sys
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


#: The lazy re-exports of estimators (module docstring): package -> the modules they may load.
FACADES: dict[str, str] = {
    "models/secureboost/__init__.py": "federated.estimators.secureboost",
    "models/vertical_lr/__init__.py": "federated.estimators.hetero_lr",
}


def _facade_imports(tree: ast.Module, allowed: str) -> set[int]:
    """Lines of ``from <allowed> import ...`` in a module-level ``__getattr__`` or TYPE_CHECKING."""
    blocks: list[ast.AST] = [
        node
        for node in tree.body
        if (isinstance(node, ast.FunctionDef) and node.name == "__getattr__")
        or (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING"
        )
    ]
    return {
        node.lineno
        for block in blocks
        for node in ast.walk(block)
        if isinstance(node, ast.ImportFrom) and node.module == allowed
    }


def _project_imports(path: Path, facade: str | None = None) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    lazy = _facade_imports(tree, facade) if facade else set()
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and node.lineno not in lazy
        ):
            found.append((node.lineno, node.module.split(".")[0]))
    return [(line, top) for line, top in found if top in ALLOWED]


def _modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_down(package: str) -> None:
    upward = [
        f"{path.relative_to(REPO)}:{line} imports {top}"
        for path in _modules(package)
        for line, top in _project_imports(path, FACADES.get(path.relative_to(REPO).as_posix()))
        if top != package and top not in ALLOWED[package]
    ]
    assert upward == [], "\n".join(upward)


def test_the_check_sees_every_package_and_catches_an_upward_import(tmp_path: Path) -> None:
    assert all(_modules(p) for p in ALLOWED)
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from lab.config import load_experiment\n")
    assert _project_imports(bad) == [(2, "lab")]


def test_the_facade_exception_is_narrow(tmp_path: Path) -> None:
    allowed = "federated.estimators.secureboost"
    eager = tmp_path / "eager.py"
    eager.write_text(f"from {allowed} import SecureBoostClassifier\n")
    assert _project_imports(eager, allowed) == [(1, "federated")]
    other = tmp_path / "other.py"
    other.write_text("def __getattr__(name):\n    from federated.party import PartyRuntime\n")
    assert _project_imports(other, allowed) == [(2, "federated")]
    lazy = tmp_path / "lazy.py"
    lazy.write_text(f"def __getattr__(name):\n    from {allowed} import SecureBoostClassifier\n")
    assert _project_imports(lazy, allowed) == []


def test_estimators_import_from_their_model_packages_without_loading_federated() -> None:
    code = (
        "import sys\n"
        "import models.secureboost, models.vertical_lr\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'federated'], 'eager'\n"
        "from models.secureboost import SecureBoostClassifier\n"
        "from models.vertical_lr import HeteroLRClassifier\n"
        "import federated.estimators as fe\n"
        "assert SecureBoostClassifier is fe.SecureBoostClassifier\n"
        "assert HeteroLRClassifier is fe.HeteroLRClassifier\n"
        "try:\n"
        "    models.secureboost.Nope\n"
        "except AttributeError as e:\n"
        "    assert 'Nope' in str(e)\n"
        "else:\n"
        "    raise SystemExit('no AttributeError')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
