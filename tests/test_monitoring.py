"""Post-loan monitoring: a registered joint model on a new window of the platform and the book.

One governed scenario of the synthetic timeline (:mod:`lab.monitoring_demo`) is trained once, in
process, then monitored on a steady month and on a month after a regional shock. Each figure
the job reports is recomputed here in plaintext from the joined files; what crossed to the bank
is tapped and searched.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features import stability
from features.io import read_party_table
from federated.driver import run_job
from federated.party import DictStore, PartyRuntime
from federated.protocols import party_protocols
from federated.spec import PartyBinding
from federated.transport import InProcessTransport, PartyError
from lab.config import load_experiment
from lab.governance.authorizations import AuthorizationRegistry
from lab.governance.policy import set_policy
from lab.monitoring import MonitoredModel, MonitorOptions, alerts, monitoring_job
from lab.monitoring_demo import SEGMENT_COLUMN, Scenario, govern, write_scenario
from models import monitoring
from models.monitoring import Thresholds
from models.protocol import Envelope
from models.secureboost.explain import saabas
from models.secureboost.parts import BankPart, PlatformPart
from tests.conftest import TEST_KEY_POLICY

MODEL = {"type": "secureboost", "n_estimators": 5, "max_depth": 3, "max_bin": 8}
CRYPTO = {"key_bits": 512, "insecure_test_keys": True}
STEADY, SHOCKED = "sme_monthly@2", "sme_monthly@3"


def _runtimes(bindings: list[PartyBinding]) -> dict[str, PartyRuntime]:
    return {
        b.name: PartyRuntime(b, DictStore(), party_protocols(), disclose_errors=True)
        for b in bindings
    }


def _monitor(
    world: dict[str, Any],
    window: str,
    tapped: list[Envelope] | None = None,
    bins: int | None = None,
    **model: Any,
) -> Any:
    scenario: Scenario = world["scenario"]
    options = MonitorOptions(
        model=world["model"].name,
        book=scenario.books[window],
        window=window,
        segment_column=SEGMENT_COLUMN,
    )
    monitored = replace(world["model"], **model) if model else world["model"]
    with pytest.MonkeyPatch.context() as mp:  # the bank's lab acts in the scenario's home
        mp.setenv("LAB_HOME", str(world["home"]))
        mp.setenv("LAB_KEYS", str(world["home"].parent / "keys"))
        spec, bindings = monitoring_job(world["experiment"], monitored, options)
        if bins is not None:  # a bank's own code asking for finer bins than the lab's default
            spec = replace(spec, monitoring=replace(spec.monitoring, bins=bins))

        def tap(direction: str, env: Envelope) -> None:
            if tapped is not None and env.protocol == "monitoring":
                tapped.append(env)

        return run_job(spec, InProcessTransport(_runtimes(bindings), tap=tap))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The scenario trained once, monitored on the steady then the shocked month."""
    root = tmp_path_factory.mktemp("monitoring")
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAB_HOME", str(home))
        mp.setenv("LAB_KEYS", str(root / "keys"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        set_policy([*TEST_KEY_POLICY, "dp.require=false"], home, actor="platform")
        scenario = write_scenario(
            root / "data", n_enterprises=6000, n_loans=5000, seed=3, model=MODEL, crypto=CRYPTO
        )
        govern(scenario)
        experiment = load_experiment(scenario.experiment, [])
        trained = run_job(
            experiment.job_spec(task="train"), InProcessTransport(_runtimes(experiment.bindings()))
        )
        assert trained.joint.status == "trained"
        store = home / "parties"
        bank = BankPart.from_dict(
            json.loads(next((store / "bank" / "models").glob("*.json")).read_text())
        )
        parts = {"bank": {"model_id": bank.model_id, "content_hash": bank.content_hash}}
        parts |= {p: dict(ref) for p, ref in bank.platform_parts.items()}
        used = sorted({n.rule.feature for t in bank.trees for n in t.values() if n.rule})
        model = MonitoredModel("demo", "1", parts, tuple(used), trained.joint.report.auc)
        world: dict[str, Any] = {
            "home": home,
            "scenario": scenario,
            "experiment": experiment,
            "model": model,
            "bank": bank,
            "platform": PlatformPart.from_dict(
                json.loads(next((store / "platform" / "models").glob("*.json")).read_text())
            ),
            "tapped": [],
        }
        folder = store / "bank" / "monitoring" / "demo"
        world["steady"] = _monitor(world, STEADY, world["tapped"])
        world["steady_warnings"] = pd.read_csv(folder / "early_warnings.csv", dtype=str)
        world["steady_scores"] = pd.read_csv(
            folder / "last_scores.csv", dtype={"enterprise_id": str}
        )
        world["shocked"] = _monitor(world, SHOCKED)
        yield world


def _table(path: Path, **kwargs: Any) -> Any:
    return read_party_table(path, id_column="enterprise_id", id_scheme="uscc", **kwargs)


def _plain(world: dict[str, Any], window: str) -> dict[str, Any]:
    """Scores in both windows, PSI and CSI from the joined files, without any protocol."""
    scenario: Scenario = world["scenario"]
    bank: BankPart = world["bank"]
    platform: PlatformPart = world["platform"]
    auth = pd.read_csv(scenario.authorizations, dtype=str)
    allowed = set(auth.loc[auth["purpose"] == "post_loan_monitoring", "enterprise_id"])
    book = _table(scenario.books[window], features=world["model"].bank_columns)
    now = _table(scenario.snapshots[window])
    then = _table(scenario.snapshots["sme_monthly@1"])
    train = _table(scenario.folder / "bank_train.csv", features=world["model"].bank_columns)
    ids = [i for i in book.ids.tolist() if i in allowed and i in set(now.ids.tolist())]
    row = {i: k for k, i in enumerate(book.ids.tolist())}
    now_row = {i: k for k, i in enumerate(now.ids.tolist())}
    then_row = {i: k for k, i in enumerate(then.ids.tolist())}
    frame = book.features.iloc[[row[i] for i in ids]].reset_index(drop=True)
    splits = sorted(platform.splits)

    def score(snapshot: Any, at: dict[str, int]) -> np.ndarray:
        rows = snapshot.features.iloc[[at[i] for i in ids]].reset_index(drop=True)
        return bank.predict_proba(frame, {"platform": (splits, platform.decisions(rows, splits))})

    p_now, p_then = score(now, now_row), score(then, then_row)
    population = np.isin(ids, train.ids.tolist())
    platform_ref = then.features.iloc[[then_row[i] for i in ids]]
    platform_now = now.features.iloc[[now_row[i] for i in ids]]
    specs = stability.fit_bins(platform_ref, now.feature_kinds)
    groups = {
        c: str(v["group"])
        for c, v in json.loads((scenario.folder / "columns.json").read_text()).items()
    }
    bank_specs = stability.fit_bins(train.features, train.feature_kinds)
    return {
        "ids": ids,
        "p_now": p_now,
        "p_then": p_then,
        "frame": frame,
        "score_psi": stability.score_stability(p_then[population], p_now).index,
        "platform_groups": stability.group_summary(
            stability.bin_counts(specs, platform_ref, platform_now), groups
        ),
        "bank_csi": {
            c.name: c.index for c in stability.bin_counts(bank_specs, train.features, frame)
        },
    }


@pytest.mark.slow
def test_psi_and_csi_equal_the_plaintext_computation_on_joined_data(world: dict[str, Any]) -> None:
    for key, window in (("steady", STEADY), ("shocked", SHOCKED)):
        plain = _plain(world, window)
        report = world[key].monitoring
        assert world[key].n_aligned == len(plain["ids"])
        assert report["bank"]["score_stability"]["index"] == pytest.approx(
            plain["score_psi"], abs=1e-12
        )
        groups = report["csi"]["platform"]["groups"]
        assert set(groups) == set(plain["platform_groups"])
        for group, values in plain["platform_groups"].items():
            assert groups[group] == pytest.approx(values, abs=1e-12), group
        bank_csi = {c["name"]: c["index"] for c in report["bank"]["bank_csi"]}
        assert bank_csi == pytest.approx(plain["bank_csi"], abs=1e-12)


@pytest.mark.slow
def test_a_regional_shock_is_flagged_and_a_steady_month_is_not(world: dict[str, Any]) -> None:
    test_auc = world["model"].test_auc
    steady = alerts(world["steady"].monitoring, Thresholds(), test_auc)
    shocked = alerts(world["shocked"].monitoring, Thresholds(), test_auc)
    assert steady == []
    flagged = {(a.kind, a.subject) for a in shocked}
    segments = world["shocked"].monitoring["bank"]["segments"]
    assert ("segment_shift", "Zhejiang") in flagged, segments
    assert {s for k, s in flagged if k.startswith("segment")} == {"Zhejiang"}, segments
    others = [v["shift"] for k, v in segments.items() if k != "Zhejiang"]
    assert segments["Zhejiang"]["shift"] > Thresholds().segment_shift_max > max(others)


@pytest.mark.slow
def test_the_early_warning_list_matches_a_plaintext_recomputation(world: dict[str, Any]) -> None:
    plain = _plain(world, STEADY)
    threshold = world["steady"].monitoring["bank"]["early_warning"]["threshold"]
    crossed = (plain["p_then"] < threshold) & (plain["p_now"] >= threshold)
    expected = {i: p for i, p, c in zip(plain["ids"], plain["p_now"], crossed, strict=True) if c}
    listed = world["steady_warnings"]
    assert len(expected) > 5
    assert set(listed["enterprise_id"]) == set(expected)
    got = dict(zip(listed["enterprise_id"], listed["probability"].astype(float), strict=True))
    for eid, p in expected.items():
        assert got[eid] == pytest.approx(p, abs=1e-12)
    # the first reason is the label whose contribution rose most between the two windows
    splits = sorted(world["platform"].splits)
    snapshots = world["scenario"].snapshots
    rows = {}
    for ref in ("sme_monthly@1", STEADY):
        table = _table(snapshots[ref])
        at = {i: k for k, i in enumerate(table.ids.tolist())}
        rows[ref] = table.features.iloc[[at[i] for i in plain["ids"]]].reset_index(drop=True)
    contributions = {
        ref: saabas(
            world["bank"],
            plain["frame"],
            {"platform": (splits, world["platform"].decisions(frame, splits))},
        )
        for ref, frame in rows.items()
    }
    labels = contributions[STEADY].labels
    delta = contributions[STEADY].values - contributions["sme_monthly@1"].values
    position = {eid: k for k, eid in enumerate(plain["ids"])}
    for _, warning in listed.iterrows():
        top = labels[int(np.argmax(delta[position[warning["enterprise_id"]]]))]
        assert warning["reason_1"] == top


@pytest.mark.slow
def test_no_platform_row_value_or_threshold_reaches_the_bank(world: dict[str, Any]) -> None:
    to_bank = [env for env in world["tapped"] if env.recipient == "bank"]
    assert to_bank
    platform_columns = set(_table(world["scenario"].snapshots["sme_monthly@1"]).feature_names)
    for env in to_bank:
        assert set(env.payload) == {"split_ids", "now", "then", "held"}
        for key in ("now", "then", "held"):
            assert env.array(key).dtype == np.uint8  # bits only: no value, no edge
        split_ids = env.json("split_ids")
        assert not any(c in str(s) for s in split_ids for c in platform_columns)
    folder = world["home"] / "parties" / "bank" / "monitoring"
    bank_columns = set(world["model"].bank_columns)
    groups = {
        str(v["group"])
        for v in json.loads((world["scenario"].folder / "columns.json").read_text()).values()
    }
    for path in folder.rglob("*.csv"):
        frame = pd.read_csv(path, dtype=str)
        names = {c.removeprefix("c:") for c in frame.columns if c.startswith("c:")}
        names |= {
            v
            for c in frame.columns
            if c.startswith("reason_") and not c.endswith("_change")
            for v in frame[c].dropna()
        }
        for name in names:  # the bank's own columns by name, a platform only by group
            party, _, label = name.partition(":")
            assert (party == "bank" and label in bank_columns) or (
                party == "platform" and label in groups
            ), name
    report = json.dumps(world["steady"].monitoring["bank"])
    for column in platform_columns:
        assert f'"{column}"' not in report
    edges = {
        str(edge) for spec in world["platform"].bins.values() for edge in getattr(spec, "edges", ())
    }
    assert edges
    assert not any(f'"{e}"' in report for e in edges)


@pytest.mark.slow
def test_unauthorized_enterprises_are_absent(world: dict[str, Any]) -> None:
    scores = world["steady_scores"]
    revoked = scores["enterprise_id"].iloc[:40].tolist()
    home = world["home"]
    with AuthorizationRegistry(home / "governance.db") as registry:
        for eid in revoked:
            registry.revoke(eid, "bank", "post_loan_monitoring", actor="test")
    try:
        result = _monitor(world, STEADY)
        after = pd.read_csv(
            home / "parties" / "bank" / "monitoring" / "demo" / "last_scores.csv", dtype=str
        )
        assert result.n_aligned == world["steady"].n_aligned - 40
        assert not set(revoked) & set(after["enterprise_id"])
    finally:
        auth = pd.read_csv(world["scenario"].authorizations, dtype=str)
        auth = auth[auth["enterprise_id"].isin(revoked)]
        path = home / "reauthorize.csv"
        auth.to_csv(path, index=False)
        with AuthorizationRegistry(home / "governance.db") as registry:
            registry.import_csv(path, actor="test")


@pytest.mark.slow
def test_a_platform_refuses_a_part_it_does_not_hold_as_pinned(world: dict[str, Any]) -> None:
    parts = {k: dict(v) for k, v in world["model"].parts.items()}
    parts["platform"]["content_hash"] = "sha256:" + "0" * 64
    with pytest.raises(PartyError, match="monitor the version registered from the same job"):
        _monitor(world, STEADY, parts=parts)


@pytest.mark.slow
def test_a_platform_refuses_monitoring_bins_finer_than_its_policy(world: dict[str, Any]) -> None:
    with pytest.raises(PartyError, match=r"monitoring\.bins=100.*binning\.max_bins=64") as info:
        _monitor(world, STEADY, bins=100)
    assert info.value.party == "platform"
    assert info.value.error_type == "PolicyRefusalError"


# ------------------------------------------------------------------------------ bank-side units


def test_early_warnings_need_a_crossing_and_list_only_rising_reasons() -> None:
    ids = ["a", "b", "c", "d"]
    before = np.array([0.1, 0.3, np.nan, 0.15])
    now = np.array([0.25, 0.4, 0.9, 0.1])
    c_before = np.array([[0.0, 0.5], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    c_now = np.array([[0.3, 0.2], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    out = monitoring.early_warnings(
        ids,
        before,
        now,
        0.2,
        labels=["bank:x", "platform:tax"],
        previous_contributions=c_before,
        current_contributions=c_now,
        reasons=2,
    )
    assert out["enterprise_id"].tolist() == ["a"]  # b was above already, c unknown, d fell
    assert out.loc[0, "reason_1"] == "bank:x"
    assert out.loc[0, "reason_1_change"] == pytest.approx(0.3)
    assert out.loc[0, "reason_2"] is None  # the platform group fell: not a reason


def test_vintage_auc_needs_enough_bads_and_equals_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    n = 600
    y = (rng.uniform(size=n) < 0.1).astype(float)
    p = np.clip(0.1 + 0.3 * y + rng.normal(0, 0.15, n), 0.001, 0.999)
    vintage = np.where(np.arange(n) < 500, "2024-01", "2024-02")
    y[550:] = np.nan  # the younger vintage is partly immature
    rows = {r["vintage"]: r for r in monitoring.vintage_table(vintage, y, p)}
    first = rows["2024-01"]
    assert first["n_matured"] == 500
    assert first["auc"] == pytest.approx(roc_auc_score(y[:500], p[:500]), abs=1e-12)
    assert rows["2024-02"]["auc"] is None  # a handful of bads: no AUC worth reading
    assert rows["2024-02"]["n_matured"] == 50


def test_segments_compare_the_same_enterprises_then_and_now() -> None:
    rng = np.random.default_rng(1)
    ref = rng.uniform(0.01, 0.2, size=2050)
    seg = np.where(np.arange(2050) < 1000, "A", "B")
    seg[2000:] = "C"
    now = ref.copy()
    odds = now[1000:2000] / (1 - now[1000:2000]) * np.exp(0.5)  # B's log-odds up by 0.5
    now[1000:2000] = odds / (1 + odds)
    out = monitoring.segment_stability(seg, ref, now)
    assert set(out) == {"A", "B"}  # C has too few enterprises
    assert out["A"]["index"] == pytest.approx(0.0, abs=1e-12)
    assert out["B"]["index"] == pytest.approx(
        stability.score_stability(ref[1000:2000], now[1000:2000]).index
    )
    book = 0.5 * 1000 / 2050  # the book's mean log-odds change
    assert out["B"]["shift"] == pytest.approx(0.5 - book, abs=1e-9)
    assert out["A"]["shift"] == pytest.approx(-book, abs=1e-9)
    assert out["B"]["z"] > 1e6  # every enterprise of B moved by exactly 0.5: no noise
    # Two segments: each at half the alpha, so that either alerting by chance is that rare.
    floor = monitoring.psi_noise_floor(10, 1000, 1000, monitoring.SEGMENT_PSI_ALPHA / 2)
    assert out["B"]["noise_floor"] == pytest.approx(floor)


def test_a_segments_psi_noise_floor_is_what_unchanged_scores_exceed_once_in_a_thousand() -> None:
    assert monitoring.psi_noise_floor(10, 115, 115) == pytest.approx(0.485, abs=0.001)
    assert monitoring.psi_noise_floor(10, 2000, 2000) == pytest.approx(0.0279, abs=0.0005)
    assert monitoring.psi_noise_floor(1, 100, 100) == 0.0
    # Simulated: two draws of 115 scores from one distribution, decile bins of the first.
    rng = np.random.default_rng(7)
    over = 0
    trials = 4000
    for _ in range(trials):
        ref, now = rng.uniform(size=115), rng.uniform(size=115)
        index = stability.score_stability(ref, now).index
        over += index > monitoring.psi_noise_floor(10, 115, 115)
    assert over / trials < 0.01  # alpha 0.001, with room for the approximation at n = 115


def test_alerts_name_what_crossed_its_threshold() -> None:
    report = {
        "bank": {
            "score_stability": {"index": 0.3},
            "bank_csi": [{"name": "x", "index": 0.05}],
            "segments": {
                "Zhejiang": {"index": 0.4, "shift": 0.3, "z": 9.0},
                "Anhui": {"index": 0.01, "shift": 0.3, "z": 1.0},  # not significant
                # Over the threshold but within what noise gives 115 enterprises (CI, 2026-12-04).
                "Gansu": {"index": 0.278, "noise_floor": 0.485, "shift": -0.006, "z": -0.19},
            },
            "out_of_time": {"auc": 0.70},
        },
        "csi": {"platform": {"groups": {"tax": {"csi_max": 0.3}, "judicial": {"csi_max": 0.0}}}},
    }
    found = {(a.kind, a.subject) for a in alerts(report, Thresholds(), test_auc=0.78)}
    assert found == {
        ("score_psi", "score"),
        ("segment_psi", "Zhejiang"),
        ("segment_shift", "Zhejiang"),
        ("csi", "platform:tax"),
        ("auc_drop", "matured out-of-time loans"),
    }
    relaxed = Thresholds(psi_max=0.5, segment_shift_max=0.5, csi_max=0.5, auc_drop_max=0.1)
    assert alerts(report, relaxed, 0.78) == []
