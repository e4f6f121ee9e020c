"""A platform's recent window is a later published version, served by its own node's policy.

The platform's node reads the version from its own catalog (unchanged file, published columns,
authorised enterprises only), computes its columns' stability and shares it per feature group
unless its own policy says more; a job cannot name an older version, another feature set or a
file of its choosing.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from federated.driver import run_job
from federated.party import DictStore, PartyRuntime
from federated.protocols import party_protocols
from federated.spec import (
    AlignmentSpec,
    EvaluationSpec,
    GovernanceSpec,
    JobSpec,
    PartyBinding,
    PartySpec,
    ScreeningSpec,
)
from federated.transport import InProcessTransport, PartyError
from lab.config import NODE_POLICY
from lab.demo import publish_feature_set, synthesize, write_feature_set_spec
from lab.governance.audit import AuditLog
from lab.governance.authorizations import AuthorizationRegistry
from lab.governance.catalog import Catalog
from lab.governance.policy import set_policy
from tests.conftest import TEST_KEY_POLICY
from tests.test_screening import _plain_psi

V1, V2 = "sme_scr@1", "sme_scr@2"


@pytest.fixture
def governed(tmp_path: Path, lab_home: Path) -> dict[str, Any]:
    """v1 and a drifted v2 published in the platform's home; 70 % authorised the bank."""
    folder = tmp_path / "sme"
    synthesize(folder, n_enterprises=1200, n_banks=1, bank_size=800, unmatched_rate=0.1, seed=4)
    publish_feature_set(folder, V1)
    v1 = pd.read_csv(folder / "platform.csv", dtype=str, keep_default_na=False)
    rng = np.random.default_rng(1)
    v2 = v1.copy()
    v2["tax_credit_grade"] = v2["tax_credit_grade"].where(rng.uniform(size=len(v2)) > 0.4, "D")
    later = tmp_path / "v2"
    later.mkdir()
    v2.to_csv(later / "platform.csv", index=False)
    Catalog().publish(write_feature_set_spec(folder, V2), later / "platform.csv", actor="test")
    # This platform serves exact statistics of unbudgeted sets (its owner's choice): no budget.
    set_policy([*TEST_KEY_POLICY, "dp.require=false"], lab_home, actor="platform")
    allowed = v1["enterprise_id"][rng.uniform(size=len(v1)) < 0.7].tolist()
    columns = json.loads((folder / "columns.json").read_text())
    groups = sorted({str(v["group"]) for v in columns.values() if v.get("party") == "platform"})
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
    ).to_csv(tmp_path / "auth.csv", index=False)
    with AuthorizationRegistry() as registry:
        registry.import_csv(tmp_path / "auth.csv")
    bank_home = tmp_path / "bank-home"
    set_policy(list(TEST_KEY_POLICY), bank_home, actor="bank")
    runtimes = {
        "bank": _runtime("bank", "bank", folder / "bank_1.csv", bank_home, tmp_path / "bs"),
        "platform": _runtime(
            "platform", "platform", folder / "platform.csv", lab_home, tmp_path / "ps"
        ),
    }
    group_of = {c: str(v["group"]) for c, v in columns.items() if v.get("party") == "platform"}
    return {
        "transport": InProcessTransport(runtimes),  # type: ignore[arg-type]
        "folder": folder,
        "v2": later / "platform.csv",
        "allowed": set(allowed),
        "groups": group_of,
        "home": lab_home,
    }


def _runtime(name: str, role: str, data: Path, home: Path, store: Path) -> PartyRuntime:
    binding = PartyBinding(
        name,
        role,
        data,
        store=store,
        policy=NODE_POLICY,
        governance_home=home,  # type: ignore[arg-type]
    )
    return PartyRuntime(binding, DictStore(), party_protocols(), disclose_errors=True)


def _spec(recent: dict[str, str | None]) -> JobSpec:
    return JobSpec(
        job_id=f"scr{np.random.default_rng().integers(1 << 30)}",
        name="screen-governed",
        kind="vertical",
        parties=(
            PartySpec("bank", "bank", "enterprise_id", "default_12m"),
            PartySpec("platform", "platform", "enterprise_id", feature_set=V1),
        ),
        model={"type": "secureboost", "n_estimators": 1, "max_depth": 1, "max_bin": 4},
        crypto={"key_bits": 512, "insecure_test_keys": True},
        alignment=AlignmentSpec(id_scheme="uscc", min_intersection=10),
        evaluation=EvaluationSpec(test_size=0.4),
        governance=GovernanceSpec(require_authorization=True),
        screening=ScreeningSpec(recent=recent),
    )


def test_the_platform_serves_a_later_version_and_shares_groups_only(
    governed: dict[str, Any],
) -> None:
    result = run_job(_spec({"platform": V2}), governed["transport"])
    report = result.screening["csi"]["platform"]
    assert report["detail"] == "group"
    assert "features" not in report
    assert (report["reference"], report["recent"]) == (V1, V2)
    folder = governed["folder"]
    v1 = pd.read_csv(folder / "platform.csv", dtype={"enterprise_id": str})
    v2 = pd.read_csv(governed["v2"], dtype={"enterprise_id": str})
    bank = pd.read_csv(folder / "bank_1.csv", dtype={"enterprise_id": str})
    allowed = governed["allowed"]
    training = v1[
        v1["enterprise_id"].isin(allowed) & v1["enterprise_id"].isin(bank["enterprise_id"])
    ]
    recent = v2[v2["enterprise_id"].isin(allowed)]
    assert report["n_reference"] == len(training) == result.n_aligned
    assert report["n_recent"] == len(recent)
    kinds = result.parties[1].feature_kinds  # how the node read each column (its hello)
    plain: dict[str, list[float]] = {}
    for column, group in governed["groups"].items():
        categorical = kinds[column] == "categorical"
        plain.setdefault(group, []).append(
            _plain_psi(training[column], recent[column], categorical)
        )
    assert set(report["groups"]) == set(plain)
    for group, values in plain.items():
        shared = report["groups"][group]
        assert shared["n_features"] == len(values)
        assert shared["csi_mean"] == pytest.approx(float(np.mean(values)), abs=1e-12), group
        assert shared["csi_max"] == pytest.approx(max(values), abs=1e-12), group
    assert report["groups"]["tax"]["shift"] == "significant"  # 40 % of grades turned to D
    entries = [
        e.payload
        for e in AuditLog(governed["home"] / "audit" / "log.jsonl").entries("screening_window")
    ]
    assert entries[-1]["feature_set"] == V2
    assert entries[-1]["n_admitted"] == len(recent)


def test_the_platforms_own_policy_may_share_each_column(governed: dict[str, Any]) -> None:
    set_policy(["stability.csi_detail=feature"], governed["home"], actor="platform")
    result = run_job(_spec({"platform": V2}), governed["transport"])
    report = result.screening["csi"]["platform"]
    assert report["detail"] == "feature"
    assert {e["name"] for e in report["features"]} == set(governed["groups"])
    assert {e["group"] for e in report["features"]} == set(governed["groups"].values())


@pytest.mark.parametrize(
    ("recent", "message"),
    [
        ({"platform": V1}, "is not later than the training window sme_scr@1"),
        ({"platform": "sme_scr@3"}, "sme_scr@3 is not published"),
        ({"platform": "other_set@2"}, "is not a version of sme_scr"),
        ({"platform": None}, "name a later published version of sme_scr"),
    ],
    ids=["same-version", "unpublished", "other-set", "a-file-instead"],
)
def test_a_job_cannot_choose_what_the_platform_serves_as_its_recent_window(
    governed: dict[str, Any], recent: dict[str, str | None], message: str
) -> None:
    transport = governed["transport"]
    platform = transport.parties["platform"]
    platform.binding = replace(platform.binding, recent=governed["folder"] / "bank_1.csv")
    with pytest.raises(PartyError, match=message) as info:
        run_job(_spec(recent), transport)
    assert info.value.error_type == "PolicyRefusalError"
