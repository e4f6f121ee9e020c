"""The CLI surface: help everywhere, data generation, config check, the demo end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lab.cli import EXIT_INPUT, run
from lab.demo import import_authorizations, publish_feature_set
from tests.conftest import EXPERIMENTS

COMMANDS = [[], ["train"], ["align"], ["check"], ["demo"], ["data"], ["data", "synth"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "lab")
def test_help_everywhere(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run([*command, "--help"]) == 0
    assert "Usage: lab" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--version"]) == 0
    assert "lab 0." in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["fly"]) == EXIT_INPUT


def test_check_validates_without_running(
    capsys: pytest.CaptureFixture[str], lab_home: Path
) -> None:
    assert run(["check", str(EXPERIMENTS / "default_credit_secureboost.yaml")]) == 0
    out = capsys.readouterr().out
    assert "bank (bank): 30000 rows, 13 numeric" in out
    assert "platform (platform): 30000 rows, 10 numeric" in out
    assert not lab_home.exists()


@pytest.mark.slow
def test_data_synth_writes_a_runnable_experiment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sme"
    args = ["data", "synth", "--out", str(out), "--n-enterprises", "3000", "--n-banks", "2"]
    assert run([*args, "--seed", "3"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["banks"]) == {"bank_1", "bank_2"}
    platform = pd.read_csv(out / "platform.csv", nrows=5)
    assert platform.columns[0] == "enterprise_id"
    experiment = yaml.safe_load((out / "experiment.yaml").read_text())
    assert experiment["parties"][0]["data"] == "bank_1.csv"
    # The experiment is governed: lab check says what the platform's node would refuse.
    capsys.readouterr()
    assert run(["check", str(out / "experiment.yaml")]) == EXIT_INPUT
    assert "no feature set named 'sme_platform' is published" in capsys.readouterr().err
    # As the platform, publish the feature set and import the enterprises' authorizations (no
    # budget is needed to align: alignment releases no features).
    publish_feature_set(out, experiment["parties"][1]["feature_set"])
    authorizations = import_authorizations(out, "bank", experiment["governance"]["purpose"], seed=3)
    ref = experiment["parties"][1]["feature_set"]
    assert run(["budget", "set", ref, "--bank", "bank", "--epsilon", "9", "--delta", "1e-5"]) == 0
    capsys.readouterr()
    assert run(["check", str(out / "experiment.yaml")]) == 0  # training needs the budget
    assert "platform rows authorized for bank bank" in capsys.readouterr().out
    # The bank's customers known to the platform and authorised for the bank (with consent) are
    # exactly what alignment finds.
    summary_path = tmp_path / "align.json"
    assert run(["align", str(out / "experiment.yaml"), "--summary-json", str(summary_path)]) == 0
    summary = json.loads(summary_path.read_text())
    ids = {
        name: set(pd.read_csv(out / name, usecols=["enterprise_id"], dtype=str)["enterprise_id"])
        for name in ("bank_1.csv", "platform.csv")
    }
    # The feature set serves key-personnel columns, so personal-data consent is needed too.
    grants = pd.read_csv(authorizations, dtype=str)
    authorised = set(grants.loc[grants["personal_consent"] == "true", "enterprise_id"])
    matched = ids["bank_1.csv"] & ids["platform.csv"]
    assert len(matched) == manifest["banks"]["bank_1"]["matched_with_platform"]
    assert summary["n_aligned"] == len(matched & authorised)
    assert summary["n_bank"] == manifest["banks"]["bank_1"]["rows"]
    # The platform's side of alignment is what its policy admitted, never its whole table.
    assert len(ids["platform.csv"]) == manifest["platform"]["rows"]
    assert summary["n_platform"] == {"platform": len(authorised & ids["platform.csv"])}
    # A non-empty folder is not overwritten by accident.
    capsys.readouterr()
    assert run([*args, "--seed", "4"]) == EXIT_INPUT
    assert "error:" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path, lab_home: Path) -> None:
    summary_path = tmp_path / "demo.json"
    assert run(["demo", "--summary-json", str(summary_path)]) == 0
    summary = json.loads(summary_path.read_text())
    assert summary["name"] == "demo-sme-secureboost"
    assert summary["mlflow_run_id"]
    # Joint modeling is worth it on the synthetic data: the pooled reference beats the bank
    # alone. The demo's joint model is DP (ε = 8 on the platform's histograms); its noise moves
    # the joint AUC from run to run (measured 0.791-0.810 against a bank-only 0.793), so the
    # test only bounds what DP may cost against the bank alone.
    bank_only = summary["baselines"]["bank_only_auc"]
    assert summary["baselines"]["pooled_auc"] > bank_only + 0.01
    assert summary["metrics"]["test_auc"] > bank_only - 0.03
    data_dirs = [p for p in (lab_home / "demo").iterdir() if p.is_dir()]
    assert len(data_dirs) == 1
    manifest = data_dirs[0] / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    # The second demo reuses the generated data instead of generating it again.
    assert run(["demo"]) == 0
    assert manifest.stat().st_mtime_ns == stamp
