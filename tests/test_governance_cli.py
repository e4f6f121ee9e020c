"""The governance sub-apps, mounted the way lab/cli.py mounts them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from features.synth import SMEConfig, generate, write
from lab.errors import InputError
from lab.governance.audit import AuditLog
from lab.governance.cli import audit_app, authorizations_app, budget_app, features_app
from lab.governance.errors import (
    AuditPayloadError,
    FeatureSetNotFoundError,
    SpecViolationError,
)
from lab.governance.ledger import BudgetLedger
from models.privacy import PrivacyEvent

app = typer.Typer()
app.add_typer(features_app, name="features")
app.add_typer(budget_app, name="budget")
app.add_typer(audit_app, name="audit")
app.add_typer(authorizations_app, name="authorizations")

runner = CliRunner()


def run(*args: str) -> Result:
    return runner.invoke(app, list(args), catch_exceptions=True)


def ok(*args: str) -> Result:
    result = run(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("synth")
    write(generate(SMEConfig(n_enterprises=300, n_banks=1, seed=11)), folder)
    return folder


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["features"],
        ["features", "publish"],
        ["features", "list"],
        ["features", "show"],
        ["features", "spec-from-synth"],
        ["budget", "set"],
        ["budget", "show"],
        ["audit", "verify"],
        ["audit", "head"],
        ["audit", "recover"],
        ["audit", "budget"],
        ["audit", "jobs"],
        ["audit", "log"],
        ["authorizations", "import"],
        ["authorizations", "revoke"],
        ["authorizations", "summary"],
    ],
)
def test_help_everywhere(command: list[str]) -> None:
    result = ok(*command, "--help")
    assert "Usage" in result.output


def test_platform_bank_and_auditor_workflow(synth: Path, tmp_path: Path, lab_home: Path) -> None:
    spec = tmp_path / "spec.yaml"
    ok("features", "spec-from-synth", str(synth), "--out", str(spec), "--name", "sme")
    result = ok("features", "publish", str(spec), "--data", str(synth / "platform.csv"))
    assert "published sme@1" in result.output
    assert "sme@1" in ok("features", "list").output
    shown = json.loads(ok("features", "show", "sme", "--json").output)
    assert shown["ref"] == "sme@1"
    assert shown["rows"] == 300
    assert "sme@1 owner platform; 300 rows" in ok("features", "show", "sme@1").output

    ok("budget", "set", "sme@1", "--bank", "bank_1", "--epsilon", "3", "--delta", "1e-5")
    (row,) = json.loads(ok("budget", "show", "--json").output)
    assert (row["cap_epsilon"], row["spent_epsilon"], row["accountant"]) == (3.0, 0.0, "rdp")

    ids = pd.read_csv(synth / "platform.csv", usecols=["enterprise_id"])["enterprise_id"]
    auth = tmp_path / "auth.csv"
    pd.DataFrame(
        {
            "enterprise_id": ids[:20],
            "bank": "bank_1",
            "purpose": "credit_risk_modeling",
            "valid_from": "2020-01-01",
            "valid_to": "2099-12-31",
            "groups": "tax;registration",
            "personal_consent": "false",
        }
    ).to_csv(auth, index=False)
    assert "imported 20 authorizations" in ok("authorizations", "import", str(auth)).output
    ok(
        "authorizations",
        "revoke",
        str(ids[0]),
        "--bank",
        "bank_1",
        "--purpose",
        "credit_risk_modeling",
    )
    (counts,) = json.loads(ok("authorizations", "summary", "--json").output)
    assert (counts["active"], counts["revoked"]) == (19, 1)

    # A job reserves and spends through the library; the auditor sees it.
    with BudgetLedger() as ledger:
        event = PrivacyEvent(1.0, 0.01, 100, unit="enterprise", mechanism="dp-sgd")
        ledger.reserve("sme@1", "bank_1", "run-1", [event])
        ledger.commit("run-1", [event])
    (job,) = json.loads(ok("audit", "jobs", "--json").output)
    assert (job["job_id"], job["state"], job["dp"]) == ("run-1", "committed", True)
    assert job["spent_epsilon"] > 0
    (row,) = json.loads(ok("audit", "budget", "--json").output)
    assert row["spent_epsilon"] == pytest.approx(job["spent_epsilon"])
    assert "run-1" in ok("audit", "jobs").output

    report = json.loads(ok("audit", "verify", "--json").output)
    assert report["ok"]
    assert report["entries"] == 6
    head = ok("audit", "head").output.strip()
    assert head.startswith("6:")
    assert "ok: 6 entries" in ok("audit", "verify", "--expect-head", head).output
    types = [e["type"] for e in json.loads(ok("audit", "log", "--json").output)]
    assert types == [
        "feature_set_published",
        "budget_set",
        "authorizations_imported",
        "authorization_revoked",
        "budget_checked",
        "budget_spent",
    ]
    assert not [i for i in ids[:20] if str(i) in (lab_home / "audit" / "log.jsonl").read_text()]


def test_verify_exits_1_and_locates_tampering(lab_home: Path) -> None:
    log = AuditLog()
    for i in range(3):
        log.record("scoring_call", {"n_scored": i})
    lines = log.path.read_text().splitlines()
    log.path.write_text("\n".join([lines[0], lines[2]]) + "\n")
    result = run("audit", "verify")
    assert result.exit_code == 1
    assert "TAMPERED: deleted at line 2 (seq 2)" in result.output


def test_errors_are_input_errors(synth: Path, tmp_path: Path) -> None:
    result = run("budget", "set", "nope@1", "--bank", "b", "--epsilon", "1", "--delta", "1e-5")
    assert isinstance(result.exception, FeatureSetNotFoundError)
    assert isinstance(result.exception, InputError)

    spec = tmp_path / "spec.yaml"
    ok("features", "spec-from-synth", str(synth), "--out", str(spec))
    frame = pd.read_csv(synth / "platform.csv", dtype=str, keep_default_na=False)
    frame.loc[0, "tax_credit_grade"] = "Z"
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    result = run("features", "publish", str(spec), "--data", str(bad))
    assert isinstance(result.exception, SpecViolationError)
    assert "tax_credit_grade" in str(result.exception)

    result = run("audit", "verify", "--expect-head", "garbage")
    assert isinstance(result.exception, AuditPayloadError)
    result = run("authorizations", "summary", "--at", "tomorrow")
    assert isinstance(result.exception, InputError)
    result = run("features", "spec-from-synth", str(tmp_path), "--out", str(spec))
    assert isinstance(result.exception, InputError)
    assert "lab data synth" in str(result.exception)
