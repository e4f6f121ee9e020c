"""benchmarks/ray_histogram.py refuses to start Ray's all-interface nodes on a host's network."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from secure_agg.ray_local import other_interfaces

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ray_histogram.py"


@pytest.mark.skipif(not other_interfaces(), reason="only loopback here")
def test_it_refuses_outside_a_loopback_only_namespace(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--summary-json", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 2
    assert "listen on every interface" in done.stderr
    assert "unshare" in done.stderr or "network namespace" in done.stderr
    assert not out.exists()
