"""The walkthrough notebooks: committed executed, on the public API, and they still run.

The committed files carry their outputs (``make notebooks`` writes them), so a reader sees
results without running anything; the slow test executes them again top to bottom.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO

NOTEBOOKS = ["risk_modeler.ipynb", "auditor.ipynb"]

#: What a notebook may import from the project: the estimators' packages (and ``models`` to
#: find the repository's data). Everything else goes through the installed ``lab`` command.
PUBLIC = {"models", "models.secureboost", "models.vertical_lr"}
PROJECT = {"lab", "federated", "models", "features", "secure_agg"}


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(REPO / "notebooks" / name, as_version=4)


def _code_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def _errors(notebook: nbformat.NotebookNode) -> list[str]:
    return [
        f"{output.get('ename')}: {output.get('evalue')}"
        for cell in _code_cells(notebook)
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
        or (output.get("output_type") == "stream" and output.get("name") == "stderr")
    ]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebooks_carry_their_outputs(name: str) -> None:
    notebook = _read(name)
    cells = _code_cells(notebook)
    assert cells
    assert [cell.execution_count for cell in cells] == list(range(1, len(cells) + 1)), (
        "not executed top to bottom in one kernel; run `make notebooks`"
    )
    assert all(cell.outputs for cell in cells), "a code cell has no output; run `make notebooks`"
    assert _errors(notebook) == []
    text = nbformat.writes(notebook)
    assert "\\u001b[" not in text  # no terminal escapes in the committed outputs


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebooks_use_only_the_public_api(name: str) -> None:
    imported: set[str] = set()
    for cell in _code_cells(_read(name)):
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
    project = {m for m in imported if m.split(".")[0] in PROJECT}
    assert project <= PUBLIC, f"internal modules: {sorted(project - PUBLIC)}"


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes(name: str, lab_home: Path, tmp_path: Path) -> None:
    notebook = _read(name)
    client = NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # the kernel inherits LAB_HOME (a fresh folder) from this process
    assert _errors(notebook) == []
    assert all(cell.outputs for cell in _code_cells(notebook))
