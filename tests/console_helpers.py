"""A small governed home built the way ``lab demo`` builds its own, for the console's tests.

The demo's own steps (:mod:`lab.demo`: synthetic SME data, the platform publishes its feature
set, imports the enterprises' authorizations and grants a budget for one job) on 2,000
enterprises, then two runs of the demo's experiment through the real job pipeline with short
test keys and fewer trees: the first spends the budget, the second is refused by the
platform's node for lack of budget (an alert). One home per test session.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from lab.config import experiment_from_dict
from lab.demo import (
    default_experiment,
    grant_budget,
    import_authorizations,
    publish_feature_set,
    synthesize,
)
from lab.errors import InputError
from lab.job import RunOptions, run_experiment
from lab.webconsole.users import add_user
from tests.conftest import allow_test_keys

#: Users of the console tests: name -> (password, role).
USERS = {
    "ada": ("ada-password-1", "auditor"),
    "mo": ("mo-password-1", "modeler"),
    "admin": ("admin-password-1", "admin"),
}


def small_demo_experiment() -> dict[str, Any]:
    """The demo's experiment, smaller: 3 trees (1 bank-only), 512-bit test keys."""
    raw = copy.deepcopy(default_experiment())
    raw["model"].update(n_estimators=3, bank_only_trees=1, max_depth=2)
    raw["crypto"] = {"key_bits": 512, "insecure_test_keys": True}
    raw["alignment"]["min_intersection"] = 50
    return raw


def build_governed_home(home: Path, data: Path) -> dict[str, Any]:
    """Govern ``home`` as the demo does and run two jobs; return the first job's summary."""
    synthesize(data, n_enterprises=2000, n_banks=1, bank_size=None, unmatched_rate=0.1, seed=3)
    raw = small_demo_experiment()
    platform = next(p for p in raw["parties"] if p["role"] == "platform")
    bank = next(p for p in raw["parties"] if p["role"] == "bank")
    allow_test_keys(home)
    publish_feature_set(data, platform["feature_set"])
    import_authorizations(data, bank["name"], raw["governance"]["purpose"], 3)
    eps, delta = float(raw["model"]["dp_epsilon"]), float(raw["model"]["dp_delta"])
    grant_budget(platform["feature_set"], bank["name"], eps, delta)
    experiment = experiment_from_dict(raw, source=None, base_dir=data)
    summary = run_experiment(experiment, RunOptions())
    try:  # the budget had room for one job: the platform's node refuses the second
        run_experiment(experiment, RunOptions())
    except InputError:
        pass
    else:
        raise AssertionError("the second job should have been refused for lack of budget")
    return summary


def add_users(users_dir: Path) -> None:
    """Create :data:`USERS` in an MLflow server folder (offline, through MLflow's auth store)."""
    for name, (password, role) in USERS.items():
        add_user(users_dir, name, password, role)
