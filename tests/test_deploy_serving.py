"""Issue 7 end to end: deployment on loopback -> registered model -> served -> scored over HTTP.

`lab up` (TLS, node auth, one SuperNode per party), `lab train --deployment`, promotion to
champion, the platform's scoring endpoint on the platform node's own store, `mlflow models
serve` of the champion calling it, scoring requests over HTTP, then `lab down`: no process left.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from lab.cli import run
from lab.deploy import processes
from lab.deploy.deployment import down
from lab.deploy.state import DeploymentState
from tests.serving_helpers import (
    SERVED_BANK,
    SERVED_MODEL,
    group_alive,
    invocation_body,
    served,
    train_served_model,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def deployment_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "deployment"
    try:
        yield folder
    finally:
        down(folder, grace=5.0)


def test_deployed_model_is_served_and_scores_enterprises_over_http(
    tmp_path: Path,
    lab_home: Path,
    deployment_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    trained = train_served_model(tmp_path / "sme", deployment=deployment_dir)
    summary = trained["summary"]
    assert summary["runtime"].startswith("deployment")
    assert summary["registered_model"]["alias"] == "challenger"
    state = DeploymentState.read(deployment_dir)
    platform_store = Path(state.node("platform").store)
    ref = summary["registered_model"]["platform_parts"]["platform"]
    assert (platform_store / "models" / f"{ref['model_id']}.json").is_file()

    assert run(["models", "promote", SERVED_MODEL, "--from", "challenger", "--to", "champion"]) == 0
    capsys.readouterr()
    assert (
        run(["platform", "issue-token", "--bank", SERVED_BANK, "--dir", str(platform_store)]) == 0
    )
    token = capsys.readouterr().out.strip()

    bank = trained["bank"]
    sample = bank.iloc[:10].drop(columns=["default_12m"]).reset_index(drop=True)
    with served(lab_home, trained["folder"], token, tmp_path / "logs", platform_store) as live:
        for i in range(len(sample)):
            response = httpx.post(
                f"{live['bank_url']}/invocations",
                json=invocation_body(sample.iloc[[i]]),
                timeout=60,
                trust_env=False,
            )
            assert response.status_code == 200, response.text
            [p] = np.asarray(response.json()["predictions"], dtype=float).ravel()
            assert 0.0 < p < 1.0
        refused = bank[bank["enterprise_id"] == trained["refused"]].drop(columns=["default_12m"])
        response = httpx.post(
            f"{live['bank_url']}/invocations",
            json=invocation_body(refused),
            timeout=60,
            trust_env=False,
        )
        assert response.status_code >= 400
        assert "not_authorized" in response.text
        serving_groups = [p.pid for p in live["procs"]]
    assert not any(group_alive(g) for g in serving_groups)

    pids: set[int] = set()
    for pid in state.pids():
        pids |= {p.pid for p in processes.family(pid)}
    assert pids
    assert run(["down", "--dir", str(deployment_dir)]) == 0
    assert not [pid for pid in pids if processes.alive(pid)]
