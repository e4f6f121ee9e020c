"""``lab demo-monitoring``: train on one month, then monitor a steady month and a shocked one.

The synthetic timeline (:mod:`features.synth.timeline`) gives monthly platform snapshots of the
same firms and a bank's loan vintages whose outcomes mature after ``outcome_months``. This module
writes one governed scenario from it (:func:`write_scenario`) and runs it (:func:`run`):

1. as the platform, publish the snapshots of :data:`TRAIN_MONTH`, :data:`STEADY_MONTH` and
   :data:`SHOCK_MONTH` as versions 1, 2 and 3 of :data:`FEATURE_SET`, import the
   enterprises' authorizations of the bank for ``credit_risk_modeling`` and
   ``post_loan_monitoring``, and grant the bank a privacy budget for one DP training job;
2. as the bank, train the joint model on the loans matured by the training month (their outcome
   is known) and the platform's version 1;
3. monitor the model on the bank's book at the steady month (version 2): nothing is flagged;
   then at the shocked month (version 3, three months after a regional shock): the alert.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from features.safe_csv import write_csv
from features.synth import SMEConfig
from features.synth.schema import LABEL_COLUMN
from features.synth.timeline import VINTAGE_COLUMN, DriftConfig, SMETimeline, generate_timeline

#: The platform's feature set whose monthly versions the scenario publishes.
FEATURE_SET = "sme_monthly"
#: Month indices (0 = the timeline's first month) of the three windows.
TRAIN_MONTH = 21
STEADY_MONTH = 22
SHOCK_MONTH = 27
#: The regional shock of the scenario, in standard deviations of health and liquidity: a severe
#: one (a province-wide lockdown), so that three months on it still moves the province's scores.
SHOCK_SIZE = 2.0
#: The bank of the scenario (the timeline's first bank).
BANK = "bank"
PLATFORM = "platform"
#: Sizes of the demo's world: enterprises the platform knows, loans the bank makes over the
#: timeline.
DEMO_ENTERPRISES = 30_000
DEMO_LOANS = 16_000
#: The book's column the demo monitors segments by (the bank's own record, not a model column).
SEGMENT_COLUMN = "borrower_province"
#: The demo's model: the main demo's (lab/defaults/demo.yaml), DP on the platform's histograms,
#: as a platform whose policy requires DP for a budgeted set serves it.
DEMO_MODEL: dict[str, Any] = {
    "type": "secureboost",
    "n_estimators": 15,
    "bank_only_trees": 5,
    "max_depth": 3,
    "max_bin": 8,
    "learning_rate": 0.3,
    "dp_epsilon": 8.0,
    "dp_delta": 1.0e-5,
}
EXPERIMENT_FILE = "experiment.yaml"
AUTHORIZATIONS_FILE = "authorizations.csv"


@dataclass(frozen=True)
class Scenario:
    """Files of a written scenario (all under ``folder``)."""

    folder: Path
    experiment: Path
    #: Platform snapshot file per version (``sme_monthly@1`` ...).
    snapshots: dict[str, Path]
    #: The bank's book file per monitored version.
    books: dict[str, Path]
    authorizations: Path
    #: Enterprise ids of the shocked province (for tests and the demo's narrative).
    shocked: frozenset[str]

    def ref(self, version: int) -> str:
        """``sme_monthly@<version>``."""
        return f"{FEATURE_SET}@{version}"


def timeline(n_enterprises: int, n_loans: int, seed: int) -> SMETimeline:
    """The scenario's timeline: up to the shocked month, only the three windows kept."""
    return generate_timeline(
        SMEConfig(n_enterprises=n_enterprises, n_banks=1, bank_sizes=(n_loans,), seed=seed),
        DriftConfig(months=SHOCK_MONTH + 1, shock_size=SHOCK_SIZE),
        keep=(TRAIN_MONTH, STEADY_MONTH, SHOCK_MONTH),
    )


def write_scenario(
    folder: Path,
    *,
    n_enterprises: int = DEMO_ENTERPRISES,
    n_loans: int = DEMO_LOANS,
    seed: int = 7,
    model: dict[str, Any] | None = None,
    crypto: dict[str, Any] | None = None,
) -> Scenario:
    """Write the snapshots, the bank's files, authorizations and the experiment into ``folder``.

    ``model`` and ``crypto`` override the experiment's sections (tests use small models and
    test keys their node policy allows).
    """
    world = timeline(n_enterprises, n_loans, seed)
    folder.mkdir(parents=True, exist_ok=True)
    months = world.months
    meta = {name: info.to_dict() for name, info in world.columns.items()}
    (folder / "columns.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    snapshots = {}
    for version, month in enumerate((TRAIN_MONTH, STEADY_MONTH, SHOCK_MONTH), start=1):
        path = folder / f"platform_{months[month]}.csv"
        write_csv(world.platform[months[month]], path, lineterminator="\n")
        snapshots[f"{FEATURE_SET}@{version}"] = path
    loans = next(iter(world.banks.values()))
    index = {m: t for t, m in enumerate(months)}
    vintage = loans[VINTAGE_COLUMN].map(index).to_numpy()
    outcome_months = world.drift.outcome_months
    training = loans[vintage <= TRAIN_MONTH - outcome_months].drop(columns=[VINTAGE_COLUMN])
    training = training.assign(**{LABEL_COLUMN: training[LABEL_COLUMN].astype(np.int64)})
    write_csv(training, folder / "bank_train.csv", lineterminator="\n")
    # The bank's own record of each borrower's province (its KYC file), kept beside the book to
    # monitor by segment; the generator takes it from the firm's registered region.
    province = world.platform[months[TRAIN_MONTH]].set_index("enterprise_id")["region"].astype(str)
    books = {}
    for version, month in ((2, STEADY_MONTH), (3, SHOCK_MONTH)):
        book = loans[vintage <= month].copy()
        book[SEGMENT_COLUMN] = province.reindex(book["enterprise_id"]).fillna("unknown").to_numpy()
        immature = vintage[vintage <= month] > month - outcome_months
        book[LABEL_COLUMN] = book[LABEL_COLUMN].astype("Float64").mask(immature)
        path = folder / f"book_{months[month]}.csv"
        write_csv(book, path, lineterminator="\n")
        books[f"{FEATURE_SET}@{version}"] = path
    bank_features = [c for c in training.columns if c not in ("enterprise_id", LABEL_COLUMN)]
    experiment = {
        "name": "monitoring-demo-secureboost",
        "kind": "vertical",
        "description": "Trained on one month of a synthetic SME timeline, then monitored.",
        "parties": [
            {
                "name": BANK,
                "role": "bank",
                "data": "bank_train.csv",
                "id_column": "enterprise_id",
                "label_column": LABEL_COLUMN,
                "features": bank_features,
            },
            {
                "name": PLATFORM,
                "role": "platform",
                "data": snapshots[f"{FEATURE_SET}@1"].name,
                "id_column": "enterprise_id",
                "feature_set": f"{FEATURE_SET}@1",
            },
        ],
        "model": model or dict(DEMO_MODEL),
        "crypto": crypto or {"key_bits": 2048},
        "evaluation": {"test_size": 0.25, "random_state": 42, "stratify": True},
        "alignment": {"reveal": "both", "id_scheme": "uscc", "min_intersection": 100},
        "governance": {"purpose": "credit_risk_modeling", "require_authorization": True},
    }
    path = folder / EXPERIMENT_FILE
    path.write_text(yaml.safe_dump(experiment, sort_keys=False), encoding="utf-8")
    authorizations = _authorizations(folder, world, seed)
    shocked = frozenset(str(i) for i in world.shocked)
    return Scenario(folder, path, snapshots, books, authorizations, shocked)


def _authorizations(folder: Path, world: SMETimeline, seed: int) -> Path:
    """Every borrower authorises the bank for modeling and monitoring, except 3 % (random)."""
    from datetime import UTC, datetime, timedelta

    loans = next(iter(world.banks.values()))
    ids = pd.Series(sorted(set(loans["enterprise_id"].astype(str))))
    groups = sorted(
        {str(info.group) for info in world.columns.values() if info.party == "platform"}
    )
    rng = np.random.default_rng(seed)
    kept = ids[rng.uniform(size=len(ids)) >= 0.03]
    today = datetime.now(UTC).date()
    frames = [
        pd.DataFrame(
            {
                "enterprise_id": kept.to_numpy(),
                "bank": BANK,
                "purpose": purpose,
                "valid_from": (today - timedelta(days=30)).isoformat(),
                "valid_to": (today + timedelta(days=365)).isoformat(),
                "groups": ";".join(groups),
                "personal_consent": "true",
                "reference": "DEMO-MONITORING",
            }
        )
        for purpose in ("credit_risk_modeling", "post_loan_monitoring")
    ]
    path = folder / AUTHORIZATIONS_FILE
    write_csv(pd.concat(frames, ignore_index=True), path)
    return path


def govern(scenario: Scenario, actor: str = "demo-platform") -> None:
    """As the platform: publish the three versions and import the authorizations (idempotent)."""
    from lab.demo import write_feature_set_spec
    from lab.governance.authorizations import AuthorizationRegistry
    from lab.governance.catalog import Catalog
    from lab.governance.errors import GovernanceError

    catalog = Catalog()
    for ref, path in scenario.snapshots.items():
        spec = write_feature_set_spec(scenario.folder, ref)
        try:
            catalog.show(ref)
        except GovernanceError:
            catalog.publish(spec, path, actor=actor)
    with AuthorizationRegistry() as registry:
        registry.import_csv(scenario.authorizations, actor=actor)


def run(
    *,
    seed: int = 7,
    n_enterprises: int = DEMO_ENTERPRISES,
    n_loans: int = DEMO_LOANS,
    key_bits: int = 2048,
    summary_json: Path | None = None,
) -> dict[str, Any]:
    """Write and govern the scenario, train, then monitor the steady and the shocked month.

    Keys shorter than 2048 bits need a node policy of this home that allows test keys.
    Returns ``{"training": ..., "steady": ..., "shocked": ..., "wall_seconds": ...}``.
    """
    import time

    from lab.config import load_experiment
    from lab.demo import grant_budget
    from lab.home import lab_home
    from lab.job import RunOptions, run_experiment, write_json
    from lab.monitoring import MonitorOptions, run_monitoring

    started = time.perf_counter()
    crypto: dict[str, Any] = {"key_bits": key_bits}
    if key_bits < 2048:
        crypto["insecure_test_keys"] = True
    folder = lab_home() / "demo" / f"monitoring-seed{seed}-n{n_enterprises}-l{n_loans}"
    scenario = write_scenario(
        folder, n_enterprises=n_enterprises, n_loans=n_loans, seed=seed, crypto=crypto
    )
    govern(scenario)
    grant_budget(
        scenario.ref(1), BANK, float(DEMO_MODEL["dp_epsilon"]), float(DEMO_MODEL["dp_delta"])
    )
    experiment = load_experiment(scenario.experiment, [])
    trained = run_experiment(experiment, RunOptions())
    registered = trained.get("registered_model")
    if not registered:
        raise RuntimeError(f"the demo's training registered no model: {trained.get('joint')}")
    model = f"{registered['name']}/{registered['version']}"
    out: dict[str, Any] = {
        "training": {
            "model": model,
            "test_auc": trained.get("metrics", {}).get("test_auc"),
            "wall_seconds": trained.get("wall_seconds"),
        }
    }
    for key, version in (("steady", 2), ("shocked", 3)):
        ref = scenario.ref(version)
        out[key] = run_monitoring(
            experiment,
            MonitorOptions(
                model=model,
                book=scenario.books[ref],
                window=ref,
                segment_column=SEGMENT_COLUMN,
            ),
        )
    out["wall_seconds"] = round(time.perf_counter() - started, 3)
    if summary_json is not None:
        write_json(summary_json, out)
    return out
