"""benchmarks/secureboost.py: the lab against the reference runs of issue 19."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.bench_helpers import load_benchmark


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("secureboost")


def test_references_are_the_issues_figures(bench: ModuleType) -> None:
    figures = {(r["system"], r["scheme"]): r for r in bench.REFERENCES}
    assert figures[("FATE 2.2 SecureBoost", "paillier")]["wall_seconds"] == 5610.0
    assert figures[("SecretFlow 1.13 SGB (HEU)", "paillier")]["seconds_per_tree"] == 25.6
    assert figures[("SecretFlow 1.13 SGB (HEU)", "ou")]["auc"] == 0.7798


def test_ratios_are_lab_over_reference_and_an_override_replaces_its_scheme(
    bench: ModuleType, tmp_path: Path
) -> None:
    lab = {"scheme": "ou", "wall_seconds": 74.5, "seconds_per_tree": 1.49, "auc": 0.7794}
    rows = bench.compare(lab, list(bench.REFERENCES), None)
    sf_ou = next(r for r in rows if r["scheme"] == "ou")
    assert sf_ou["same_scheme"]
    assert sf_ou["wall_ratio"] == pytest.approx(74.5 / 149.0, abs=1e-4)
    assert sf_ou["per_tree_ratio"] == pytest.approx(1.49 / 4.8, abs=1e-4)
    assert sf_ou["auc_difference"] == pytest.approx(0.7794 - 0.7798, abs=1e-4)
    assert not next(r for r in rows if r["system"].startswith("FATE"))["same_scheme"]

    result = tmp_path / "sf.json"
    result.write_text(json.dumps({"wall_seconds": 120.0, "auc": 0.78}))
    override = bench.secretflow_override(result, "ou", 30)
    assert override["seconds_per_tree"] == pytest.approx(4.0)
    rows = bench.compare(lab, list(bench.REFERENCES), override)
    assert len(rows) == len(bench.REFERENCES)
    sf_ou = next(r for r in rows if r["scheme"] == "ou")
    assert sf_ou["wall_seconds"] == 120.0
    assert sf_ou["source"] == str(result)
    result.write_text(json.dumps({"auc": 0.78}))
    with pytest.raises(SystemExit, match="wall_seconds"):
        bench.secretflow_override(result, "ou", 30)
