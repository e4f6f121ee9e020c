"""A model type is defined in one place: a type kept under tests/ trains end to end through
Flower with no file under ``lab/`` or ``federated/`` knowing it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab.config import load_experiment
from lab.errors import ConfigError
from models.model_type import EXTRA_ENV, model_type, model_types
from tests.conftest import DATA, EXPERIMENTS, REPO, TEST_KEY_POLICY

EXTRA = "tests.extra_model:STUMP"


def test_every_builtin_type_is_registered_once() -> None:
    names = [t.name for t in model_types()]
    assert names[:4] == ["secureboost", "hetero_lr", "logreg", "mlp"]
    assert len(names) == len(set(names))
    assert {t.name for t in model_types("vertical")} >= {"secureboost", "hetero_lr"}


@pytest.mark.parametrize("name", ["secureboost", "hetero_lr", "logreg", "mlp"])
def test_the_model_section_sent_to_the_parties_parses_as_the_same_settings(name: str) -> None:
    """Every party re-reads the job's ``model`` section with the type's settings (node checks,
    DP grants): what the lab sends must parse, groups resolved from the catalogs included."""
    described = model_type(name)
    settings = described.parse({})
    sent = described.job_model(settings, {"platform:tax_grade": "tax", "bank:age": "bank"})
    parsed = described.parse(sent).model_dump()
    expected = settings.model_dump()
    for dumped in (parsed, expected):
        dumped.get("scorecard", {}).pop("groups", None)
    assert parsed == expected
    assert json.loads(json.dumps(sent)) == sent


def test_hetero_lr_reason_groups_reach_the_protocol_per_column() -> None:
    from models.vertical_lr.descriptor import params

    described = model_type("hetero_lr")
    settings = described.parse({"scorecard": {"groups": {"filing": ["platform:tax_grade"]}}})
    sent = described.job_model(settings, {"platform:tax_grade": "tax", "bank:age": "bank"})
    groups = params(described.parse(sent), {}).groups
    assert groups == {"platform:tax_grade": "filing", "bank:age": "bank"}


def test_no_model_type_name_is_tested_outside_its_package() -> None:
    """No module of lab/ or federated/ compares against a model-type name."""
    names = "|".join(re.escape(t.name) for t in model_types())
    compared = re.compile(rf"""(==|!=)\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    offenders = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for folder in ("lab", "federated")
        for path in (REPO / folder).rglob("*.py")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if compared.search(line)
    ]
    assert offenders == []
    assert compared.search('if spec.model_type == "hetero_lr":')


def test_an_unregistered_type_is_refused_naming_the_registered_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'model\.type': unknown value 'stump'; use one of"):
        load_experiment(EXPERIMENTS / "breast_secureboost.yaml", ["model={type: stump}"])


@pytest.mark.slow
def test_a_model_type_defined_in_tests_trains_through_flower(
    tmp_path: Path, lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EXTRA_ENV, EXTRA)
    assert model_type("stump").kind == "vertical"
    # Its settings validate through the ordinary config, with its own bounds.
    with pytest.raises(ConfigError, match=r"'model\.n_bins'"):
        load_experiment(EXPERIMENTS / "breast_secureboost.yaml", ["model={type: stump, n_bins: 1}"])
    folder = tmp_path / "exp"
    shutil.copytree(DATA / "breast", folder / "breast")
    config = yaml.safe_load((EXPERIMENTS / "breast_secureboost.yaml").read_text())
    config.update(
        name="breast-stump",
        model={"type": "stump", "n_bins": 8},
        crypto={"key_bits": 512, "insecure_test_keys": True},
    )
    config["evaluation"]["pooled_reference"] = False
    for party in config["parties"]:
        party["data"] = party["data"].replace("../data/", "")
    (folder / "experiment.yaml").write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "LAB_HOME": str(lab_home),
        EXTRA_ENV: EXTRA,
        "PYTHONPATH": str(REPO),  # every process of the job (Ray workers) imports the type
    }
    lab = str(Path(sys.executable).parent / "lab")
    policy = subprocess.run(
        [lab, "policy", "set", *TEST_KEY_POLICY], env=env, capture_output=True, text=True
    )
    assert policy.returncode == 0, policy.stderr
    summary_path = tmp_path / "summary.json"
    done = subprocess.run(
        [lab, "train", str(folder / "experiment.yaml"), "--summary-json", str(summary_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["model"] == "stump"
    assert summary["joint_model"]["status"] == "trained"
    assert summary["metrics"]["test_auc"] > 0.8  # one good platform column separates breast data
    assert summary["registered_model"] is None  # the type names no registration hook
