"""The platform's protections through the real runtime, tried as a bank would (installed ``lab``).

Every test runs the installed ``lab`` executable in a subprocess against the embedded Flower
runtime (Ray workers acting for each party) and checks its exit status and output: a job spec
cannot lower a platform protection, a probing alignment is refused and listed as an alert, a
tiny batch or a test key is refused by the platform, and nothing the job starts listens
beyond loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pytest
import yaml

from lab.demo import publish_feature_set, synthesize
from tests.conftest import DATA, EXPERIMENTS, TEST_KEY_POLICY, sme_parties

pytestmark = pytest.mark.slow

REF = "sme_flower@1"
LAB = str(Path(sys.executable).parent / "lab")


def _lab(args: Sequence[str], home: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LAB_HOME": str(home)}
    return subprocess.run(
        [LAB, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def governed(tmp_path: Path, lab_home: Path) -> dict[str, Any]:
    """A platform home that published its file; a third of its enterprises authorised the bank."""
    folder = tmp_path / "sme"
    synthesize(folder, n_enterprises=1200, n_banks=1, bank_size=500, unmatched_rate=0.1, seed=8)
    publish_feature_set(folder, REF)
    assert _lab(["policy", "set", *TEST_KEY_POLICY], lab_home).returncode == 0
    ids = pd.read_csv(folder / "platform.csv", usecols=["enterprise_id"], dtype=str)
    rng = np.random.default_rng(2)
    allowed = ids["enterprise_id"][rng.uniform(size=len(ids)) < 0.33].tolist()
    groups = sorted(
        {
            str(v["group"])
            for v in json.loads((folder / "columns.json").read_text()).values()
            if v.get("party") == "platform"
        }
    )
    today = datetime.now(UTC).date()
    pd.DataFrame(
        {
            "enterprise_id": allowed,
            "bank": "bank",
            "purpose": "credit_risk_modeling",
            "valid_from": (today - timedelta(days=1)).isoformat(),
            "valid_to": (today + timedelta(days=30)).isoformat(),
            "groups": ";".join(groups),
            "personal_consent": "true",
            "reference": "T",
        }
    ).to_csv(folder / "auth.csv", index=False)
    assert _lab(["authorizations", "import", str(folder / "auth.csv")], lab_home).returncode == 0
    bank = pd.read_csv(folder / "bank_1.csv", usecols=["enterprise_id"], dtype=str)
    # The bank's attempt: no feature set named, authorizations "off", no DP.
    config = {
        "name": "bypass",
        "kind": "vertical",
        "parties": sme_parties(),
        "model": {"type": "secureboost", "n_estimators": 2, "max_depth": 2, "max_bin": 8},
        "crypto": {"key_bits": 512, "insecure_test_keys": True},
        "evaluation": {"test_size": 0.25, "random_state": 1},
        "alignment": {"id_scheme": "uscc", "min_intersection": 10},
        "governance": {"require_authorization": False},
    }
    path = folder / "bypass.yaml"
    path.write_text(yaml.safe_dump(config))
    return {
        "folder": folder,
        "config": path,
        "expected": set(bank["enterprise_id"]) & set(allowed),
        "allowed": set(allowed),
    }


def test_a_bank_cannot_switch_the_platforms_governance_off(
    governed: dict[str, Any], tmp_path: Path, lab_home: Path
) -> None:
    summary = tmp_path / "align.json"
    done = _lab(["align", str(governed["config"]), "--summary-json", str(summary)], lab_home)
    assert done.returncode == 0, done.stderr
    result = json.loads(summary.read_text())
    # Only enterprises that authorised this bank entered the alignment.
    assert result["n_aligned"] == len(governed["expected"])
    assert result["n_platform"] == {"platform": len(governed["allowed"])}
    # Training on them without DP would release exact statistics of a governed set: refused.
    train = _lab(["train", str(governed["config"])], lab_home)
    assert train.returncode == 2, train.stderr
    # One error line (after the progress bar's last frame).
    [line] = [x for x in train.stderr.splitlines() if x.startswith("error:")]
    assert train.stderr.strip().endswith(line)
    assert "refuses" in line
    assert "unbounded privacy spend" in line
    assert _runs(lab_home, "train") == 0  # the refused job left no run behind
    log = _lab(["audit", "log", "--type", "alignment", "--json"], lab_home)
    [entry] = json.loads(log.stdout)
    assert entry["payload"]["n_authorized"] == len(governed["allowed"])


def _runs(home: Path, task: str) -> int:
    from mlflow.tracking import MlflowClient

    from lab.tracking import TAG_TASK

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(experiments, filter_string=f"tags.`{TAG_TASK}` = '{task}'"))


def test_a_probing_alignment_is_refused_and_listed_as_an_alert(
    governed: dict[str, Any], tmp_path: Path, lab_home: Path
) -> None:
    from features.synth import generate_uscc

    folder = governed["folder"]
    platform = pd.read_csv(folder / "platform.csv", usecols=["enterprise_id"], dtype=str)
    real = platform["enterprise_id"].tolist()
    fake = generate_uscc(25 * len(governed["allowed"]), np.random.default_rng(5))
    ids = list(dict.fromkeys(real + [str(u) for u in fake]))
    rng = np.random.default_rng(1)
    pd.DataFrame(
        {
            "enterprise_id": ids,
            "default_12m": rng.integers(0, 2, size=len(ids)),
            "x": rng.normal(size=len(ids)).round(3),
        }
    ).to_csv(folder / "candidates.csv", index=False)
    done = _lab(
        ["align", str(governed["config"]), "--set", "parties.bank.data=candidates.csv"], lab_home
    )
    assert done.returncode == 2, done.stderr
    assert "psi.max_bank_ratio" in done.stderr
    alerts = _lab(["audit", "alerts", "--json"], lab_home)
    assert alerts.returncode == 0
    kinds = [a["type"] for a in json.loads(alerts.stdout)]
    assert "psi_probe_suspected" in kinds


def test_the_platform_refuses_test_keys_and_tiny_batches_its_policy_does_not_allow(
    tmp_path: Path, lab_home: Path
) -> None:
    folder = tmp_path / "exp"
    shutil.copytree(DATA / "breast", folder / "breast")
    config = (EXPERIMENTS / "breast_hetero_lr.yaml").read_text().replace("../data/", "")
    (folder / "experiment.yaml").write_text(config)
    # A home with no policy file: every secure default. The bank asks for 512-bit test keys.
    weak = _lab(
        [
            "train",
            str(folder / "experiment.yaml"),
            "--set",
            "crypto.key_bits=512",
            "--set",
            "crypto.insecure_test_keys=true",
        ],
        lab_home,
    )
    assert weak.returncode == 2, weak.stderr
    assert "crypto.min_key_bits=2048" in weak.stderr
    # Test keys allowed by the node's owner, but a batch of one row is not.
    assert _lab(["policy", "set", *TEST_KEY_POLICY], lab_home).returncode == 0
    tiny = _lab(
        [
            "train",
            str(folder / "experiment.yaml"),
            "--set",
            "crypto.key_bits=512",
            "--set",
            "crypto.insecure_test_keys=true",
            "--set",
            "model.batch_size=1",
        ],
        lab_home,
    )
    assert tiny.returncode == 2, tiny.stderr
    assert "hetero_lr.min_batch_size=256" in tiny.stderr
    refused = _lab(["audit", "alerts", "--json"], lab_home)
    reasons = [a["payload"]["reason"] for a in json.loads(refused.stdout)]
    assert any("min_key_bits" in r for r in reasons)
    assert any("min_batch_size" in r for r in reasons)


def _listeners(root: int) -> list[tuple[str, int, str]]:
    """Listening TCP sockets of ``root`` and its descendants: (address, port, process)."""
    try:
        procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    out = []
    for proc in procs:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    out.append((conn.laddr.ip, conn.laddr.port, proc.name()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def test_nothing_an_embedded_job_starts_listens_beyond_loopback(
    tmp_path: Path, lab_home: Path
) -> None:
    env = {**os.environ, "LAB_HOME": str(lab_home)}
    job = subprocess.Popen(
        [
            LAB,
            "train",
            str(EXPERIMENTS / "breast_secureboost.yaml"),
            "--set",
            "model.n_estimators=2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: set[tuple[str, int, str]] = set()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seen.update(_listeners(job.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _, err = job.communicate(timeout=600)
    finally:
        stop.set()
        sampler.join()
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, err
    processes = {name for _, _, name in seen}
    assert any("raylet" in n or "gcs_server" in n for n in processes), seen  # Ray was observed
    loopback = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
    assert {(ip, port, name) for ip, port, name in seen if ip not in loopback} == set()
