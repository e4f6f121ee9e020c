"""``lab demo`` and ``lab data synth``: synthetic SME data and the end-to-end job on it.

``lab data synth`` writes the data, a governed experiment (``experiment.yaml``), the platform's
feature-set spec and the enterprises' authorizations (``authorizations.csv``), and prints the
platform's three steps (publish, import, grant a budget) after which the experiment runs as
written (:func:`governed_steps`). The demo generates (once, then reuses) synthetic SME data
under ``$LAB_HOME/demo/``, takes those steps itself and runs the experiment like ``lab train``.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from features.io import file_digest
from features.safe_csv import write_csv
from features.synth import SMEConfig, generate, write
from lab import yaml_strict
from lab.config import experiment_from_dict
from lab.errors import InputError
from lab.governance.authorizations import AuthorizationRegistry
from lab.governance.catalog import Catalog
from lab.governance.ledger import BudgetLedger
from lab.governance.report import write_report
from lab.governance.spec import spec_from_synth_columns, write_spec
from lab.home import ensure, lab_home
from lab.job import RunOptions, run_experiment, write_json

logger = logging.getLogger(__name__)

#: Size of the demo's synthetic world: the platform knows 50,000 enterprises, the bank lends to
#: 40 % of that many, 10 % of them unknown to the platform.
DEMO_ENTERPRISES = 50_000
DEMO_BANK_SHARE = 0.4

EXPERIMENT_FILE = "experiment.yaml"
HORIZONTAL_EXPERIMENT_FILE = "experiment_horizontal.yaml"
AUTHORIZATIONS_FILE = "authorizations.csv"

#: Share of the synthetic platform's enterprises that authorise the bank, and of those that
#: also consent to the use of personal data (key-personnel columns).
AUTHORIZED_SHARE = 0.93
PERSONAL_CONSENT_SHARE = 0.96

#: Jobs of the written experiment that the budget of :func:`governed_steps` allows.
GRANTED_JOBS = 2


def default_experiment() -> dict[str, Any]:
    """The embedded default experiment of the demo (data paths relative to the data folder)."""
    text = (resources.files("lab") / "defaults" / "demo.yaml").read_text(encoding="utf-8")
    raw: dict[str, Any] = yaml_strict.load(text)
    return raw


def synthesize(
    out_dir: Path,
    *,
    n_enterprises: int,
    n_banks: int,
    bank_size: int | None,
    unmatched_rate: float,
    seed: int,
    bank_share: float = DEMO_BANK_SHARE,
    overwrite: bool = False,
) -> Path:
    """Generate synthetic SME data into ``out_dir`` plus a governed experiment config.

    Also writes what the platform needs to govern the experiment's job: its feature-set spec
    and the enterprises' authorizations of the experiment's bank (:func:`governed_steps` says
    what to run). Returns the manifest's path. Refuses a non-empty folder unless ``overwrite``.
    """
    try:
        config = SMEConfig(
            n_enterprises=n_enterprises,
            n_banks=n_banks,
            bank_sizes=(bank_size,) * n_banks if bank_size is not None else None,
            bank_share=bank_share,
            unmatched_rate=unmatched_rate,
            seed=seed,
        )
    except ValueError as exc:
        raise InputError(f"synthetic data settings: {exc}") from exc
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(f"{out_dir} is not empty; choose an empty folder or pass --overwrite")
    manifest: Path = write(generate(config), out_dir, overwrite=overwrite)
    experiment = default_experiment()
    experiment["name"] = f"sme-seed{seed}-secureboost"
    (out_dir / EXPERIMENT_FILE).write_text(yaml.safe_dump(experiment, sort_keys=False))
    write_feature_set_spec(out_dir, _platform(experiment)["feature_set"])
    write_authorizations(
        out_dir, _bank(experiment)["name"], experiment["governance"]["purpose"], seed
    )
    if n_banks >= 3:
        horizontal = horizontal_experiment(n_banks)
        horizontal["name"] = f"sme-seed{seed}-horizontal"
        (out_dir / HORIZONTAL_EXPERIMENT_FILE).write_text(
            yaml.safe_dump(horizontal, sort_keys=False)
        )
    return manifest


def horizontal_experiment(n_banks: int) -> dict[str, Any]:
    """A horizontal job across the synthetic banks (non-IID: industry mix, size, default rate).

    Every bank trains on its own loan files' columns (the same schema at every bank); the
    platform's table plays no part. There is no common held-out file: each bank evaluates the
    global model on its own test rows.
    """
    return {
        "name": "sme-horizontal",
        "kind": "horizontal",
        "description": (
            "Synthetic banks with different industry mixes, sizes and default rates train one "
            "MLP with FedAvg and secure aggregation."
        ),
        "parties": [
            {
                "name": f"bank_{k}",
                "role": "bank",
                "data": f"bank_{k}.csv",
                "id_column": "enterprise_id",
                "label_column": "default_12m",
            }
            for k in range(1, n_banks + 1)
        ],
        "model": {"type": "mlp", "hidden": [32, 16], "rounds": 10, "strategy": "fedavg"},
        "secure_aggregation": {"enabled": True},
        "evaluation": {"test_size": 0.2, "random_state": 42, "stratify": True},
    }


def _is_intact(folder: Path) -> bool:
    """Whether a generated folder is complete and unmodified (its manifest's digests match)."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return False
    files: dict[str, dict[str, Any]] = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    return bool(files) and all(
        (folder / name).is_file() and file_digest(folder / name) == f"sha256:{meta['sha256']}"
        for name, meta in files.items()
    )


def demo_data(seed: int) -> Path:
    """Return the demo's data folder, generating it on first use."""
    folder = lab_home() / "demo" / f"sme-seed{seed}-n{DEMO_ENTERPRISES}"
    if _is_intact(folder):
        return folder
    ensure(folder.parent)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder.parent))
    try:
        synthesize(
            staging / "data",
            n_enterprises=DEMO_ENTERPRISES,
            n_banks=1,
            bank_size=None,
            unmatched_rate=0.10,
            seed=seed,
        )
        if folder.exists():
            shutil.rmtree(folder)
        (staging / "data").rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _platform(experiment: dict[str, Any]) -> dict[str, Any]:
    party: dict[str, Any] = next(p for p in experiment["parties"] if p["role"] == "platform")
    return party


def _bank(experiment: dict[str, Any]) -> dict[str, Any]:
    party: dict[str, Any] = next(p for p in experiment["parties"] if p["role"] == "bank")
    return party


def governed_steps(out_dir: Path) -> list[str]:
    """The commands after which ``out_dir``'s experiment runs as written (one lab home).

    As the platform: publish the feature set, import the authorizations, grant the bank a
    budget for :data:`GRANTED_JOBS` jobs; as the bank: train. Paths are as ``out_dir`` is given.
    """
    experiment = yaml_strict.load((out_dir / EXPERIMENT_FILE).read_text(encoding="utf-8"))
    ref = _platform(experiment)["feature_set"]
    model = experiment["model"]
    epsilon = GRANTED_JOBS * float(model["dp_epsilon"])

    def path(file: str) -> str:
        return shlex.quote(str(out_dir / file))

    return [
        f"lab features publish {path(spec_file_name(ref))} --data {path('platform.csv')}",
        f"lab authorizations import {path(AUTHORIZATIONS_FILE)}",
        f"lab budget set {ref} --bank {_bank(experiment)['name']} --epsilon {epsilon:g} "
        f"--delta {float(model['dp_delta']):g}",
        f"lab train {path(EXPERIMENT_FILE)}",
    ]


def spec_file_name(ref: str) -> str:
    """File name of the synthetic platform's spec of feature set ``ref`` (``NAME-VERSION``)."""
    name, version = ref.split("@")
    return f"{name}-{version}.spec.yaml"


def write_feature_set_spec(folder: Path, ref: str) -> Path:
    """Write the platform's spec of its synthetic table as ``ref`` (``NAME-VERSION.spec.yaml``)."""
    name, version = ref.split("@")
    spec = spec_from_synth_columns(
        folder / "columns.json",
        name=name,
        version=version,
        owner="demo-platform-data-team",
        description="Synthetic enterprise features of a provincial credit platform (demo).",
    )
    spec_path = folder / spec_file_name(ref)
    write_spec(spec, spec_path)
    return spec_path


def publish_feature_set(folder: Path, ref: str) -> None:
    """Act as the platform: publish the synthetic platform table as ``ref`` (idempotent)."""
    spec_path = write_feature_set_spec(folder, ref)
    Catalog().publish(spec_path, folder / "platform.csv", actor="demo-platform")


def write_authorizations(folder: Path, bank: str, purpose: str, seed: int) -> Path:
    """Write the synthetic enterprises' authorizations of ``bank`` for ``purpose`` (a CSV).

    About 93 % of enterprises authorise the bank for the purpose, covering every feature group;
    96 % of those also consent to the use of personal data (key-personnel columns). Valid from
    180 days ago to a year from today.
    """
    ids = pd.read_csv(folder / "platform.csv", usecols=["enterprise_id"], dtype=str)[
        "enterprise_id"
    ]
    groups = sorted(
        {
            str(info["group"])
            for info in json.loads((folder / "columns.json").read_text()).values()
            if info.get("party") == "platform"
        }
    )
    rng = np.random.default_rng(seed)
    authorised = rng.uniform(size=len(ids)) < AUTHORIZED_SHARE
    consent = rng.uniform(size=len(ids)) < PERSONAL_CONSENT_SHARE
    today = datetime.now(UTC).date()
    frame = pd.DataFrame(
        {
            "enterprise_id": ids[authorised].to_numpy(),
            "bank": bank,
            "purpose": purpose,
            "valid_from": (today - timedelta(days=180)).isoformat(),
            "valid_to": (today + timedelta(days=365)).isoformat(),
            "groups": ";".join(groups),
            "personal_consent": np.where(consent[authorised], "true", "false"),
            "reference": "DEMO-AUTH",
        }
    )
    path = folder / AUTHORIZATIONS_FILE
    write_csv(frame, path)
    return path


def import_authorizations(folder: Path, bank: str, purpose: str, seed: int) -> Path:
    """Act as the platform: import enterprises' authorizations for ``bank`` (idempotent).

    Imports the folder's authorizations file, written first if missing
    (:func:`write_authorizations`).
    """
    path = folder / AUTHORIZATIONS_FILE
    if not path.exists():
        write_authorizations(folder, bank, purpose, seed)
    with AuthorizationRegistry() as registry:
        registry.import_csv(path, actor="demo-platform")
    return path


def grant_budget(ref: str, bank: str, epsilon: float, delta: float) -> None:
    """Act as the platform: make room for one more demo job of ``epsilon`` for ``bank``.

    The demo can be run again and again; each run raises the cap by what one job needs, the way
    a platform renews a bank's allowance (a real cap renews with its window).
    """
    with BudgetLedger() as ledger:
        spent = next(
            (r.spent_epsilon for r in ledger.status() if (r.feature_set, r.bank) == (ref, bank)),
            0.0,
        )
        ledger.set_cap(
            ref, bank, epsilon=round(spent + epsilon + 2.0, 3), delta=delta, actor="demo-platform"
        )


def run_demo(*, summary_json: Path | None, seed: int, verbose: bool = False) -> dict[str, Any]:
    """Generate (or reuse) the demo data, govern it as the platform would, and run the job.

    As the platform: publish the feature set, import authorizations, grant a privacy budget.
    As the bank: run the default experiment. As the auditor: write the audit report.
    """
    folder = demo_data(seed)
    raw = default_experiment()
    platform = _platform(raw)
    bank = _bank(raw)
    ref = platform["feature_set"]
    publish_feature_set(folder, ref)
    import_authorizations(folder, bank["name"], raw["governance"]["purpose"], seed)
    grant_budget(
        ref, bank["name"], float(raw["model"]["dp_epsilon"]), float(raw["model"]["dp_delta"])
    )
    experiment = experiment_from_dict(raw, source=None, base_dir=folder)
    summary = run_experiment(experiment, RunOptions(summary_json=summary_json, verbose=verbose))
    report = write_report(lab_home() / "demo" / "audit-report.html")
    summary["audit_report"] = str(report)
    if summary_json is not None:
        write_json(summary_json, summary)
    return summary
