"""Governance through the real job pipeline: feature sets, authorizations, budgets, audit."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from lab.cli import EXIT_INPUT, run
from lab.demo import publish_feature_set, synthesize
from lab.governance.audit import AuditLog
from lab.governance.authorizations import AuthorizationRegistry
from lab.governance.ledger import BudgetLedger
from lab.governance.report import jobs_from_audit
from tests.cli_helpers import run_lab
from tests.conftest import allow_test_keys, sme_parties

pytestmark = pytest.mark.slow

REF = "sme_test@1"


@pytest.fixture
def governed(tmp_path: Path, lab_home: Path) -> dict[str, Any]:
    """Synthetic data published as a feature set; half the enterprises authorise the bank."""
    folder = tmp_path / "sme"
    synthesize(folder, n_enterprises=2000, n_banks=1, bank_size=900, unmatched_rate=0.1, seed=11)
    publish_feature_set(folder, REF)
    allow_test_keys(lab_home)
    platform_ids = pd.read_csv(folder / "platform.csv", usecols=["enterprise_id"], dtype=str)[
        "enterprise_id"
    ]
    rng = np.random.default_rng(0)
    allowed = platform_ids[rng.uniform(size=len(platform_ids)) < 0.5].tolist()
    groups = sorted(
        {
            str(v["group"])
            for v in json.loads((folder / "columns.json").read_text()).values()
            if v.get("party") == "platform"
        }
    )
    today = datetime.now(UTC).date()
    auth = pd.DataFrame(
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
    )
    auth.to_csv(folder / "auth.csv", index=False)
    assert run(["authorizations", "import", str(folder / "auth.csv")]) == 0
    config = {
        "name": "governed",
        "kind": "vertical",
        "parties": sme_parties(REF),
        "model": {
            "type": "secureboost",
            "n_estimators": 3,
            "max_depth": 2,
            "max_bin": 8,
            "dp_epsilon": 2.0,
            "dp_delta": 1e-5,
        },
        "crypto": {"key_bits": 512, "insecure_test_keys": True},
        "evaluation": {"test_size": 0.25, "random_state": 1},
        "alignment": {"id_scheme": "uscc", "min_intersection": 20},
        "governance": {"require_authorization": True},
    }
    path = folder / "governed.yaml"
    path.write_text(yaml.safe_dump(config))
    bank = pd.read_csv(folder / "bank_1.csv", usecols=["enterprise_id"], dtype=str)["enterprise_id"]
    expected = set(bank) & set(allowed)
    return {"folder": folder, "config": path, "allowed": set(allowed), "expected": expected}


def test_no_unauthorised_row_reaches_the_job(
    governed: dict[str, Any], tmp_path: Path, lab_home: Path
) -> None:
    assert run(["budget", "set", REF, "--bank", "bank", "--epsilon", "5", "--delta", "1e-5"]) == 0
    summary_path = tmp_path / "s.json"
    code = run(["train", str(governed["config"]), "--summary-json", str(summary_path), "--capture"])
    assert code == 0
    summary = json.loads(summary_path.read_text())
    # Exactly the bank's customers that authorised the bank are aligned: none other.
    assert summary["n_aligned"] == len(governed["expected"])
    platform = next(p for p in summary["parties"] if p["name"] == "platform")
    assert platform["n_rows"] == 2000
    assert platform["n_authorized"] == len(governed["allowed"])
    assert platform["n_dropped_unauthorized"] == 2000 - len(governed["allowed"])
    assert summary["alignment"]["n_platform"] == {"platform": len(governed["allowed"])}
    # The job spent its ε, composed by Opacus, and the ledger shows it.
    assert summary["privacy"]["epsilon"] <= 2.0 + 1e-6
    with BudgetLedger() as ledger:
        [status] = ledger.status()
    assert status.spent_epsilon == pytest.approx(summary["privacy"]["epsilon"], rel=1e-6)
    assert status.remaining_epsilon == pytest.approx(5 - status.spent_epsilon, rel=1e-6)
    # The audit log tells the story, verifies, and holds sizes, not ids.
    log = AuditLog()
    assert log.verify().ok
    types = [e.type for e in log.entries()]
    for kind in ("job_started", "budget_checked", "alignment", "model_registered", "job_finished"):
        assert kind in types
    [alignment] = [e for e in log.entries() if e.type == "alignment"]
    assert alignment.payload["n_authorized"] == len(governed["allowed"])
    [finished] = [e for e in log.entries() if e.type == "job_finished"]
    assert finished.payload["served"]["platform"] == {
        "n_rows": 2000,
        "n_authorized": len(governed["allowed"]),
        "n_dropped_unauthorized": 2000 - len(governed["allowed"]),
    }
    [job] = jobs_from_audit(log)
    assert job["status"] == "completed"
    assert f"ε={summary['privacy']['epsilon']:.3f} ({REF})" in html_of_report(tmp_path)
    text = (lab_home / "audit" / "log.jsonl").read_text()
    assert not any(i in text for i in list(governed["expected"])[:50])
    # The auditor's report and the publisher's usage feedback show the job.
    report = tmp_path / "report.html"
    assert run(["audit", "report", "--out", str(report)]) == 0
    html = report.read_text()
    assert summary["job_id"] in html
    assert "burn-down" in html
    assert "<td>paillier 512</td>" in html  # the job's homomorphic scheme and key size
    usage = tmp_path / "usage.json"
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert run(["features", "usage", "sme_test", "--json"]) == 0
    feedback = json.loads(buffer.getvalue())
    usage.write_text(buffer.getvalue())
    [row] = feedback["jobs"]
    assert row["job_id"] == summary["job_id"]
    assert feedback["banks"] == ["bank"]
    assert row["joint_test_auc"] == pytest.approx(summary["metrics"]["test_auc"])


def test_over_budget_job_is_refused_by_the_platform_node_before_alignment(
    governed: dict[str, Any],
    lab_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(["budget", "set", REF, "--bank", "bank", "--epsilon", "1", "--delta", "1e-5"]) == 0

    def ledger_state() -> list[dict[str, Any]]:
        with BudgetLedger() as ledger:
            rows = [s.to_dict() for s in ledger.status()]
            jobs = [j.job_id for j in ledger.jobs()]
        for row in rows:
            row.pop("window_start")  # "now minus the window": moves with the clock
        return [*rows, {"jobs": jobs}]

    before = ledger_state()
    capsys.readouterr()
    assert run(["train", str(governed["config"])]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "error:" in err
    assert "cap" in err.lower()
    assert "refuses" in err
    assert ledger_state() == before
    assert not (lab_home / "mlflow.db").exists()
    entries = list(AuditLog().entries())
    types = [e.type for e in entries]
    assert "budget_refused" in types
    [refusal] = [e for e in entries if e.type == "job_refused"]
    assert refusal.payload["party"] == "platform"
    # The platform's node refused at hello: no alignment, nothing of its data served.
    assert "alignment" not in types
    assert not [e for e in entries if e.type == "job_served" and e.payload["party"] == "platform"]


def test_a_job_without_dp_on_a_budgeted_feature_set_is_refused(
    governed: dict[str, Any], lab_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["budget", "set", REF, "--bank", "bank", "--epsilon", "5", "--delta", "1e-5"]) == 0
    capsys.readouterr()
    code = run(["train", str(governed["config"]), "--set", "model.dp_epsilon=null"])
    assert code == EXIT_INPUT
    assert "unbounded privacy spend" in capsys.readouterr().err
    assert not (lab_home / "mlflow.db").exists()


def test_revoked_authorizations_drop_rows(
    governed: dict[str, Any], tmp_path: Path, lab_home: Path
) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert run(["budget", "set", REF, "--bank", "bank", "--epsilon", "5", "--delta", "1e-5"]) == 0
    assert run(["align", str(governed["config"]), "--summary-json", str(first)]) == 0
    revoked = sorted(governed["expected"])[:10]
    with AuthorizationRegistry() as registry:
        for enterprise in revoked:
            registry.revoke(enterprise, "bank", "credit_risk_modeling")
    assert run(["align", str(governed["config"]), "--summary-json", str(second)]) == 0
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    assert a["n_aligned"] == len(governed["expected"])
    assert b["n_aligned"] == len(governed["expected"]) - 10


def test_data_changed_after_publication_is_refused(
    governed: dict[str, Any], capsys: pytest.CaptureFixture[str], lab_home: Path
) -> None:
    assert run(["budget", "set", REF, "--bank", "bank", "--epsilon", "5", "--delta", "1e-5"]) == 0
    platform = governed["folder"] / "platform.csv"
    platform.write_text(platform.read_text() + "\n")
    capsys.readouterr()
    assert run(["align", str(governed["config"])]) != 0
    assert "differs from sme_test@1 as published" in capsys.readouterr().err


def html_of_report(tmp_path: Path) -> str:
    """The auditor's report, written by the CLI."""
    report = tmp_path / "audit-report.html"
    assert run(["audit", "report", "--out", str(report)]) == 0
    return report.read_text()


def _ledger_state() -> list[dict[str, Any]]:
    with BudgetLedger() as ledger:
        rows = [s.to_dict() for s in ledger.status()]
        jobs = [j.job_id for j in ledger.jobs()]
    for row in rows:
        row.pop("window_start")  # "now minus the window": moves with the clock
    return [*rows, {"jobs": jobs}]


def _publish_v2_for_one_purpose(folder: Path) -> str:
    """Publish the same file as sme_test@2, one column allowed for credit_risk_modeling only."""
    spec = yaml.safe_load((folder / "sme_test-1.spec.yaml").read_text())
    spec["version"] = "2"
    column = sorted(spec["columns"])[0]
    spec["columns"][column]["purposes"] = ["credit_risk_modeling"]
    (folder / "v2.yaml").write_text(yaml.safe_dump(spec))
    args = ["features", "publish", str(folder / "v2.yaml"), "--data", str(folder / "platform.csv")]
    assert run(args) == 0
    return column


@pytest.mark.parametrize(
    "case",
    ["data drift", "purpose not allowed", "unknown purpose", "no authorization", "no such version"],
)
def test_a_refused_job_spends_nothing_and_the_audit_report_says_why(
    governed: dict[str, Any],
    tmp_path: Path,
    lab_home: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    """Refused by the governance preflight: before the runtime starts, nothing reserved."""
    assert run(["budget", "set", REF, "--bank", "bank", "--epsilon", "5", "--delta", "1e-5"]) == 0
    folder = governed["folder"]
    sets: list[str] = []
    if case == "data drift":
        platform = folder / "platform.csv"
        platform.write_text(platform.read_text() + "\n")
        why = f"differs from {REF} as published"
    elif case == "purpose not allowed":
        column = _publish_v2_for_one_purpose(folder)
        sets = ["parties.platform.feature_set=sme_test@2", "governance.purpose=loan_approval"]
        why = f"columns ['{column}'] are not published for purpose 'loan_approval'"
    elif case == "unknown purpose":
        sets = ["governance.purpose=marketing"]
        why = "'governance.purpose': unknown purpose; use one of credit_risk_modeling"
    elif case == "no authorization":  # every column allows it; no enterprise authorised it
        sets = ["governance.purpose=pre_loan_screening"]
        why = "no authorization valid today for that bank and purpose"
    else:
        sets = ["parties.platform.feature_set=sme_test@9"]
        why = "sme_test@9 is not published; versions of sme_test: 1"
    before = _ledger_state()
    capsys.readouterr()
    code = run(["train", str(governed["config"]), *[f"--set={s}" for s in sets]])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT, err
    assert why in " ".join(err.split()), err
    assert _ledger_state() == before
    assert not (lab_home / "mlflow.db").exists()
    types = [e.type for e in AuditLog().entries()]
    assert "budget_checked" not in types
    assert "job_started" not in types  # nothing ran
    jobs = jobs_from_audit(AuditLog())
    if case == "unknown purpose":
        assert jobs == []  # an invalid config: no job ever existed
        return
    assert "refused before it started" in err
    [job] = jobs
    assert job["status"] == "refused"
    page = html.unescape(html_of_report(tmp_path))
    assert job["job_id"] in page
    assert "none (no reservation)" in page
    assert why in page
    # Nothing was encrypted or shared: no scheme, protection or empty "None" cells shown.
    assert "<td>None</td>" not in page
    assert "exact statistics shared" not in page


def test_lab_check_prints_the_authorized_count(governed: dict[str, Any], lab_home: Path) -> None:
    assert run(["budget", "set", REF, "--bank", "bank", "--epsilon", "5", "--delta", "1e-5"]) == 0
    log = lab_home / "audit" / "log.jsonl"
    before = log.read_bytes()
    done = run_lab(["check", str(governed["config"])], home=lab_home)
    assert done.returncode == 0, done.stderr
    n = len(governed["allowed"])
    assert (
        f"{n:,} of 2,000 platform rows authorized for bank bank, purpose credit_risk_modeling"
    ) in done.stdout
    assert f"{2000 - n:,} dropped" in done.stdout
    assert "this job plans ε=" in done.stdout
    assert log.read_bytes() == before  # lab check writes nothing
    # A purpose no enterprise authorised: lab check says so, as the job would be refused.
    done = run_lab(
        ["check", str(governed["config"]), "--set", "governance.purpose=pre_loan_screening"],
        home=lab_home,
    )
    assert done.returncode == EXIT_INPUT
    assert "none of the 2,000 rows of sme_test@1 has a valid authorization" in done.stderr
