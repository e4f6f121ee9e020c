"""Shared fixtures: an isolated lab home per test, the repository's paths, tiny data sets."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.guard import NodeLimits

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
EXPERIMENTS = REPO / "experiments"

for _key, _value in {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
}.items():
    os.environ.setdefault(_key, _value)

# pytest-xdist's workers run with COLUMNS=80 and LINES=24 in their environment, which every
# ``lab`` a test starts would inherit as an explicit width (tests/test_results.py checks that
# piped output is never cut at 80 columns); a serial run has neither.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _key in ("COLUMNS", "LINES"):
        os.environ.pop(_key, None)


#: Test files that start Ray (the embedded runtime, in-process or through ``lab``), found by
#: watching for a raylet among each test's child processes over a whole run. ``make test``
#: runs the suite on two pytest-xdist workers (``--dist loadgroup``, scheduled below): these
#: files form one group, run one test at a time on one worker, because two Ray clusters
#: starting at once on two cores slow each other past Ray's start-up window; every other file
#: is a group of its own (its module fixtures are built once), spread over both workers.
RAY_TEST_FILES = frozenset(
    {
        "test_bad_inputs.py",
        "test_cli.py",
        "test_cli_check.py",
        "test_compute_ray.py",
        "test_deploy_hosts.py",
        "test_e2e_flower.py",
        "test_early_stopping_e2e.py",
        "test_explanations.py",
        "test_governance_e2e.py",
        "test_hetero_lr_early_stopping.py",
        "test_hetero_lr_rerandomization.py",
        "test_horizontal_flower.py",
        "test_importance.py",
        "test_interrupt.py",
        "test_model_registry.py",
        "test_monitoring_cli.py",
        "test_node_policy_flower.py",
        "test_notebooks.py",
        "test_results.py",
        "test_resume_e2e.py",
        "test_safe_outputs.py",
        "test_screening_governed.py",
        "test_secureboost_early_stopping.py",
        "test_serving.py",
        "test_webconsole.py",
        "test_webconsole_audit.py",
    }
)


def test_group(nodeid: str) -> str:
    """The scheduling group of a test: ``ray`` for :data:`RAY_TEST_FILES`, else its file."""
    path = nodeid.split("::", 1)[0]
    return "ray" if Path(path).name in RAY_TEST_FILES else path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """With ``--dist loadgroup``, schedule by :func:`test_group`.

    pytest-xdist 3.8's own ``loadgroup`` marks groups by rewriting ``item._nodeid``, which
    pytest 9 no longer reads (node ids live in ``_id``), so its groups are silently ignored; a
    scope scheduler whose scope is the group does the same job.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return test_group(nodeid)

    return GroupScheduling(config, log)


@pytest.fixture(scope="session", autouse=True)
def session_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Audit keys of module- and session-scoped fixtures: never the user's ~/.config/lab/keys."""
    keys = tmp_path_factory.mktemp("session-keys")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAB_KEYS", str(keys))
        yield keys


@pytest.fixture(scope="session", autouse=True)
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Lab home of module- and session-scoped fixtures: never the user's ~/.lab.

    Their nodes sign its audit log with the session's keys; a ~/.lab written by an earlier
    session is signed with keys this session does not have, and its nodes refuse to append.
    """
    home = tmp_path_factory.mktemp("session-home") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAB_HOME", str(home))
        yield home


#: Node limits of in-process test runtimes that use short (fast, insecure) test keys.
TEST_LIMITS = NodeLimits(min_key_bits=512, allow_insecure_test_keys=True)

#: ``lab policy set`` assignments that let a test home's nodes use short test keys.
TEST_KEY_POLICY = ("crypto.min_key_bits=512", "crypto.allow_insecure_test_keys=true")


def allow_test_keys(home: Path, *extra: str) -> None:
    """Let the nodes of ``home`` accept and make short test keys (their own policy decides)."""
    from lab.governance.policy import set_policy

    set_policy([*TEST_KEY_POLICY, *extra], home, actor="test")


@pytest.fixture(autouse=True)
def lab_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Every test gets its own (not yet created) LAB_HOME, audit key folder and no outside
    tracking URI. The keys live beside the home, not in it (as they must)."""
    root = tmp_path_factory.mktemp("labhome")
    home = root / "home"
    monkeypatch.setenv("LAB_HOME", str(home))
    monkeypatch.setenv("LAB_KEYS", str(root / "keys"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return home


def make_vertical(folder: Path, n: int = 200, seed: int = 0) -> tuple[Path, Path]:
    """Write a small bank file (id, y, 2 numeric, 1 categorical) and a platform file."""
    rng = np.random.default_rng(seed)
    ids = [f"E{i:05d}" for i in range(n)]
    signal = rng.normal(size=n)
    y = (signal + rng.normal(scale=1.0, size=n) > 1.0).astype(int)
    bank = pd.DataFrame(
        {
            "id": ids,
            "y": y,
            "deposits": rng.normal(size=n).round(3),
            "queries": rng.integers(0, 5, size=n),
            "product": rng.choice(["tax_loan", "credit", "mortgage"], size=n),
        }
    )
    platform = pd.DataFrame(
        {
            "id": ids[::-1],
            "tax_grade": rng.choice(list("ABMCD"), size=n),
            "score": (signal[::-1] + rng.normal(scale=0.5, size=n)).round(3),
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    bank_path = folder / "bank.csv"
    platform_path = folder / "platform.csv"
    bank.to_csv(bank_path, index=False)
    platform.to_csv(platform_path, index=False)
    return bank_path, platform_path


def vertical_config(bank: str = "bank.csv", platform: str = "platform.csv") -> dict[str, object]:
    """A valid config dict for :func:`make_vertical` data (relative paths)."""
    return {
        "name": "tiny",
        "kind": "vertical",
        "parties": [
            {"name": "bank", "role": "bank", "data": bank, "id_column": "id", "label_column": "y"},
            {"name": "platform", "role": "platform", "data": platform, "id_column": "id"},
        ],
        "model": {"type": "secureboost", "n_estimators": 3, "max_depth": 2, "max_bin": 8},
        "crypto": {"key_bits": 2048},
        "evaluation": {"test_size": 0.25, "random_state": 1, "stratify": True},
    }


def sme_parties(feature_set: str | None = None, bank: str = "bank") -> list[dict[str, str]]:
    """The two parties of a vertical job on ``lab data synth`` output (``bank_1.csv``, relative).

    ``feature_set`` (``name@version``) makes the platform's side governed; ``bank`` is the bank
    party's name (authorizations and budgets are keyed by it).
    """
    platform = {
        "name": "platform",
        "role": "platform",
        "data": "platform.csv",
        "id_column": "enterprise_id",
    }
    if feature_set is not None:
        platform["feature_set"] = feature_set
    return [
        {
            "name": bank,
            "role": "bank",
            "data": "bank_1.csv",
            "id_column": "enterprise_id",
            "label_column": "default_12m",
        },
        platform,
    ]
