"""benchmarks/scale_projection.py: per-tree time projected from a measured scale run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.bench_helpers import load_benchmark

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def proj() -> ModuleType:
    return load_benchmark("scale_projection")


def _summary(seconds_per_tree: float = 100.0) -> dict[str, Any]:
    """A scale run's summary: 1 tree, 1,000 rows x 10 features, 2 cores, 2048-bit."""
    return {
        "trees": 1,
        "rows_train": 1000,
        "cores": 2,
        "key_bits": 2048,
        "seconds_per_tree": seconds_per_tree,
        "seconds_per_tree_by_phase": {
            "bank.encrypt": 4.0,
            "bank.decrypt": 1.0,
            "bank.split_search": 0.5,
            "bank.leaves": 0.1,
            "bank.keygen": 0.2,
            "platform.histogram": 8.0,
            "platform.pack": 2.0,
            "platform.apply_splits": 0.1,
            "communication_and_runtime": 1.0,
        },
        "operations": {
            "bank": {"encrypt": 1000, "decrypt": 50},
            "platform": {"histogram": 30_000, "pack": 500},
        },
        "peak_rss_gib": {"process_tree": 2.0, "largest_process": 0.5},
    }


def test_costs_are_measured_seconds_times_cores_over_operations(proj: ModuleType) -> None:
    m = proj.Measured.from_summary(_summary(), features=10)
    assert m.core_seconds_per_op("bank.encrypt") == pytest.approx(4.0 * 2 / 1000)
    assert m.core_seconds_per_op("platform.histogram") == pytest.approx(8.0 * 2 / 30_000)
    assert m.runtime_seconds == 1.0
    # At the measured size and cores the parallel phases come back as measured.
    p = proj.project(m, 1000, 10, 2, link_gbit=1e9)
    assert p["bank.encrypt"] == pytest.approx(4.0)
    assert p["platform.histogram"] == pytest.approx(8.0)
    assert p["serial"] == pytest.approx(0.9)
    assert p["total"] == pytest.approx(4 + 1 + 8 + 2 + 0.9 + 1.0, rel=1e-6)


def test_runtime_is_the_trees_own_transport_when_the_critical_path_has_it(
    proj: ModuleType,
) -> None:
    # The joint stage's leftover also holds once-per-job work; the bank's critical path does not.
    summary = {**_summary(), "critical_path_per_tree": {"transport_and_runtime_mean": 0.25}}
    assert proj.Measured.from_summary(summary, features=10).runtime_seconds == 0.25
    assert proj.Measured.from_summary(_summary(), features=10).runtime_seconds == 1.0


def test_operations_grow_with_rows_features_and_shrink_with_cores(proj: ModuleType) -> None:
    m = proj.Measured.from_summary(_summary(), features=10)
    base = proj.project(m, 1000, 10, 2)
    rows = proj.project(m, 10_000, 10, 2)
    # Encryption and histograms grow with rows; packing and decryption do not.
    assert rows["bank.encrypt"] == pytest.approx(10 * base["bank.encrypt"])
    assert rows["platform.histogram"] == pytest.approx(10 * base["platform.histogram"])
    assert rows["platform.pack"] == pytest.approx(base["platform.pack"])
    assert rows["bank.decrypt"] == pytest.approx(base["bank.decrypt"])
    assert rows["runtime"] == pytest.approx(10 * base["runtime"])
    assert rows["gradient_gib"] == pytest.approx(10_000 * 512 / 2**30)
    feats = proj.project(m, 1000, 30, 2)
    assert feats["platform.histogram"] == pytest.approx(3 * base["platform.histogram"])
    assert feats["platform.pack"] == pytest.approx(3 * base["platform.pack"])
    assert feats["bank.encrypt"] == pytest.approx(base["bank.encrypt"])
    cores = proj.project(m, 1000, 10, 8)
    assert cores["bank.encrypt"] == pytest.approx(base["bank.encrypt"] / 4)
    assert cores["serial"] == pytest.approx(base["serial"])  # one core whatever the cluster
    half = proj.project(m, 1000, 10, 8, efficiency=0.5)
    assert half["platform.histogram"] == pytest.approx(2 * cores["platform.histogram"])


def test_transfer_counts_gradients_out_and_histograms_back(proj: ModuleType) -> None:
    m = proj.Measured.from_summary(_summary(), features=10)
    p = proj.project(m, 1000, 10, 2, link_gbit=1.0)
    assert p["transfer"] == pytest.approx((1000 + 50) * 512 * 8 / 1e9)


def test_efficiency_comes_from_a_ray_run_and_is_checked(proj: ModuleType) -> None:
    assert proj.efficiency_from(_summary(100.0), _summary(125.0)) == pytest.approx(0.8)
    assert proj.efficiency_from(_summary(100.0), _summary(90.0)) == 1.0
    m = proj.Measured.from_summary(_summary(), features=10)
    with pytest.raises(ValueError, match="efficiency"):
        proj.project(m, 1000, 10, 2, efficiency=1.5)


def test_the_script_prints_and_writes_the_table(tmp_path: Path) -> None:
    local, ray = tmp_path / "local.json", tmp_path / "ray.json"
    local.write_text(json.dumps(_summary(100.0)))
    ray.write_text(json.dumps(_summary(125.0)))
    out = tmp_path / "projection.md"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "scale_projection.py"),
            str(local),
            "--measured-features",
            "10",
            "--rows",
            "1000000",
            "--cores",
            "16",
            "64",
            "--ray",
            str(ray),
            "--markdown",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "scale-out efficiency 0.80" in done.stdout
    lines = [line for line in out.read_text().splitlines() if line.startswith("| 1,000,000")]
    assert [line.split("|")[2].strip() for line in lines] == ["16", "64"]
