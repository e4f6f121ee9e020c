"""The walkthrough notebooks run top to bottom (executed, not just parsed)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["risk_modeler.ipynb", "auditor.ipynb"])
def test_notebook_executes(name: str, lab_home: Path, tmp_path: Path) -> None:
    notebook = nbformat.read(REPO / "notebooks" / name, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # the kernel inherits LAB_HOME (a fresh folder) from this process
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
