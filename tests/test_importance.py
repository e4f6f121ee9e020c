"""Honest importance and gains reports: exact gains, party labels and colours, published groups.

The protocol tests train with the real SecureBoost protocol (in-process parties, Paillier) and
recompute every split's gain independently; the chart is tested through the data it draws; one
governed DP job through the real pipeline checks the logged artifacts.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from federated.estimators import SecureBoostClassifier
from lab import reports
from lab.config import experiment_from_dict, load_experiment
from lab.reports import UNKNOWN_GROUP
from models.evaluation import evaluate_scores
from models.secureboost.core import TreeParams, gradients, split_gain
from tests.conftest import EXPERIMENTS, sme_parties
from tests.test_secureboost_protocol import KEYS, _core, _data

PARAMS = {"n_estimators": 4, "max_depth": 3, "max_bin": 8, "min_child_samples": 5}
LAMBDA = TreeParams().reg_lambda


def _by_key(importance: list[dict[str, Any]], field: str) -> dict[str, float]:
    return {f"{e['party']}:{e['feature']}": float(e[field]) for e in importance}


def _exact_gains(
    clf: SecureBoostClassifier, bank: pd.DataFrame, y: np.ndarray, platforms: dict[str, Any]
) -> tuple[dict[str, float], dict[str, int]]:
    """Each split's gain recomputed from the fitted parts: route the training rows through
    every tree, take the gradients the tree was grown on, and score each split's children."""
    part = clf.bank_part_
    platform = clf.platform_parts_["platform"]
    ids = sorted(platform.splits)
    decisions = {"platform": (ids, platform.decisions(platforms["platform"], ids))}
    staged = part.raw_scores(bank, decisions, staged=True)
    gains: dict[str, float] = {}
    splits: dict[str, int] = {}
    for t, tree in enumerate(part.trees):
        raw = np.full(len(y), part.base_score) if t == 0 else staged[:, t - 1]
        g, h = gradients(y, raw)
        members = {0: np.arange(len(y))}
        for node_id in sorted(tree):
            node, rows = tree[node_id], members.get(node_id, np.arange(0))
            if node.weight is not None:
                continue
            if node.rule is not None:
                column = bank[node.rule.feature].iloc[rows]
                left = node.rule.goes_left(part.bins[node.rule.feature], column)
                key = f"bank:{node.rule.feature}"
            else:
                left = decisions["platform"][1][rows, ids.index(str(node.split_id))]
                key = f"platform:{platform.splits[str(node.split_id)].feature}"
            members[2 * node_id + 1], members[2 * node_id + 2] = rows[left], rows[~left]
            sums = [(int(g[r].sum()), int(h[r].sum())) for r in (rows[left], rows[~left])]
            gains[key] = gains.get(key, 0.0) + split_gain(sums[0], sums[1], LAMBDA)
            splits[key] = splits.get(key, 0) + 1
    return gains, splits


def test_importance_without_dp_is_the_split_gain_the_plaintext_core_chose() -> None:
    bank, y, platforms = _data()
    clf = SecureBoostClassifier(**PARAMS, **KEYS).fit(bank, y, platforms)  # type: ignore[arg-type]
    core, _ = _core(bank, y, platforms, **PARAMS)
    names = [list(bank.columns), list(platforms["platform"].columns)]
    expected: dict[str, float] = {}
    for tree in core.trees:
        for node in tree.nodes.values():
            if node.split is not None:
                owner = ("bank", "platform")[node.split.owner]
                key = f"{owner}:{names[node.split.owner][node.split.feature]}"
                expected[key] = expected.get(key, 0.0) + node.split.gain
    importance = clf.outcome_.importance
    assert _by_key(importance, "gain") == pytest.approx(expected, rel=1e-9)
    # Without noise the search saw the exact gain.
    assert _by_key(importance, "search_gain") == _by_key(importance, "gain")
    assert all(e["cover"] > 0 for e in importance)


def test_dp_importance_is_the_exact_gain_not_the_noise_inflated_search_gain() -> None:
    bank, y, platforms = _data()
    clf = SecureBoostClassifier(**PARAMS, dp_epsilon=8.0, dp_delta=1e-5, **KEYS).fit(
        bank, y, platforms
    )
    importance = clf.outcome_.importance
    gains, splits = _exact_gains(clf, bank, y, platforms)
    assert _by_key(importance, "gain") == pytest.approx(gains, rel=1e-9, abs=1e-9)
    assert _by_key(importance, "splits") == splits
    search = _by_key(importance, "search_gain")
    exact = _by_key(importance, "gain")
    platform = [k for k in exact if k.startswith("platform:")]
    assert platform, "no platform split: the test proves nothing"
    # The bank's own histograms are exact; the platform's noisy ones inflate what the search saw.
    assert all(search[k] == exact[k] for k in exact if k.startswith("bank:"))
    assert sum(search[k] for k in platform) > 3 * sum(exact[k] for k in platform)


def _frame() -> pd.DataFrame:
    rows = [
        ("platform", "region", "registration", 0.05),
        ("bank", "region", "relationship", 0.30),
        ("platform", "vat_sales", "tax", 0.40),
        ("bank", "loan_rate", UNKNOWN_GROUP, 0.10),
        ("platform", "tax_grade", "tax", 0.15),
    ]
    return pd.DataFrame(rows, columns=["party", "feature", "group", "gain_share"])


def test_importance_chart_labels_parties_colours_each_sorts_and_groups() -> None:
    chart = reports.importance_chart(_frame(), dp=False)
    labels = [b.label for b in chart.features]
    # Same-named columns of two parties stay two bars; largest first.
    assert labels == [
        "platform:vat_sales",
        "bank:region",
        "platform:tax_grade",
        "bank:loan_rate",
        "platform:region",
    ]
    assert [b.value for b in chart.features] == sorted(
        (b.value for b in chart.features), reverse=True
    )
    # One colour per party, a different one for each, and the legend says which.
    assert set(chart.colours) == {"bank", "platform"}
    assert chart.colours["bank"] != chart.colours["platform"]
    assert {b.party for b in chart.features if b.label.startswith("bank:")} == {"bank"}
    # Groups: the published ones, summed per party, sorted; the unpublished said as such.
    assert [(b.label, round(b.value, 6)) for b in chart.groups] == [
        ("platform:tax", 0.55),
        ("bank:relationship", 0.30),
        ("bank:ungrouped", 0.10),
        ("platform:registration", 0.05),
    ]
    assert any("No published feature groups for bank" in n for n in chart.notes)
    assert not any("DP" in n for n in chart.notes)
    assert "exact" in chart.title


def test_importance_chart_of_a_dp_job_says_the_bars_are_exact_and_the_search_noisy() -> None:
    chart = reports.importance_chart(_frame(), dp=True, top=3)
    assert len(chart.features) == 3
    assert any("DP-noised" in n and "search_gain" in n for n in chart.notes)
    assert any("Top 3 of 5" in n for n in chart.notes)


def test_fate_data_has_no_groups_and_a_published_feature_set_has_its_own(
    tmp_path: Path, lab_home: Path
) -> None:
    from lab.demo import publish_feature_set, synthesize

    assert load_experiment(EXPERIMENTS / "breast_secureboost.yaml").feature_groups() == {}
    folder = tmp_path / "sme"
    synthesize(folder, n_enterprises=300, n_banks=1, bank_size=100, unmatched_rate=0.1, seed=2)
    publish_feature_set(folder, "sme_groups@1")
    published = json.loads((folder / "columns.json").read_text())
    (folder / "columns.json").unlink()  # only the catalog can say the groups now
    experiment = experiment_from_dict(_config("sme_groups@1"), source=None, base_dir=folder)
    groups = experiment.feature_groups()
    platform = {c: v["group"] for c, v in published.items() if v["party"] == "platform"}
    assert {c: g for (p, c), g in groups.items() if p == "platform"} == platform
    assert not [k for k in groups if k[0] == "bank"]  # the bank publishes none here


def test_gains_table_html_has_a_title_and_says_what_was_scored(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    report = evaluate_scores(y, np.clip(0.3 * y + rng.uniform(0, 0.7, 200), 0, 1))
    csv, html = reports.write_gains(
        report, tmp_path / "gains", model="joint secureboost", rows="the bank's test rows"
    )
    text = html.read_text()
    assert "<title>Gains table: joint secureboost</title>" in text
    assert "<h1>Gains table: joint secureboost</h1>" in text
    caption = text[text.index("<caption>") : text.index("</caption>")]
    assert "predicted default probability of joint secureboost" in caption
    assert "the bank&#x27;s test rows" in caption
    assert f"{report.n} rows, {report.n_bad} bad" in caption
    assert "decile 1 is the riskiest" in caption
    assert pd.read_csv(csv).columns[0] == "decile"


def _config(ref: str, *, dp: bool = False) -> dict[str, Any]:
    model: dict[str, Any] = {"type": "secureboost", "n_estimators": 3, "max_depth": 2}
    if dp:
        model |= {"max_bin": 8, "dp_epsilon": 8.0, "dp_delta": 1e-5}
    return {
        "name": "importance",
        "kind": "vertical",
        "parties": sme_parties(ref),
        "model": model,
        "crypto": {"key_bits": 512, "insecure_test_keys": True},
        "evaluation": {"test_size": 0.25, "random_state": 1},
        "alignment": {"id_scheme": "uscc", "min_intersection": 20},
        "governance": {"require_authorization": True},
    }


@pytest.mark.slow
def test_a_governed_dp_job_logs_honest_importance_and_titled_gains(
    tmp_path: Path, lab_home: Path
) -> None:
    from mlflow.tracking import MlflowClient

    from lab import tracking
    from lab.cli import run
    from lab.demo import publish_feature_set, synthesize
    from tests.conftest import allow_test_keys

    ref = "sme_importance@1"
    folder = tmp_path / "sme"
    synthesize(folder, n_enterprises=1200, n_banks=1, bank_size=600, unmatched_rate=0.1, seed=4)
    publish_feature_set(folder, ref)
    published = json.loads((folder / "columns.json").read_text())
    (folder / "columns.json").unlink()  # the groups must come from the published spec
    allow_test_keys(lab_home)
    today = datetime.now(UTC).date()
    ids = pd.read_csv(folder / "platform.csv", usecols=["enterprise_id"], dtype=str)
    pd.DataFrame(
        {
            "enterprise_id": ids["enterprise_id"],
            "bank": "bank",
            "purpose": "credit_risk_modeling",
            "valid_from": (today - timedelta(days=1)).isoformat(),
            "valid_to": (today + timedelta(days=30)).isoformat(),
            "groups": ";".join(sorted({v["group"] for v in published.values()})),
            "personal_consent": "true",
        }
    ).to_csv(folder / "auth.csv", index=False)
    assert run(["authorizations", "import", str(folder / "auth.csv")]) == 0
    assert run(["budget", "set", ref, "--bank", "bank", "--epsilon", "9", "--delta", "1e-5"]) == 0
    (folder / "job.yaml").write_text(yaml.safe_dump(_config(ref, dp=True)))
    summary = tmp_path / "summary.json"
    assert run(["train", str(folder / "job.yaml"), "--summary-json", str(summary)]) == 0
    run_id = json.loads(summary.read_text())["mlflow_run_id"]
    client = MlflowClient(tracking_uri=tracking.default_tracking_uri())
    out = tmp_path / "artifacts"
    out.mkdir()
    joint = Path(client.download_artifacts(run_id, "joint", str(out)))
    frame = pd.read_csv(joint / "feature_importance.csv")
    assert (frame["label"] == frame["party"] + ":" + frame["feature"]).all()
    assert frame["gain"].tolist() == sorted(frame["gain"], reverse=True)
    platform = frame[frame["party"] == "platform"]
    assert not platform.empty
    assert (platform["group"] == platform["feature"].map(lambda c: published[c]["group"])).all()
    # DP: the search saw noisy platform gains; the plotted gain is the exact one.
    assert (platform["search_gain"] > platform["gain"]).any()
    png = joint / "feature_importance.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gains = Path(client.download_artifacts(run_id, "evaluation", str(out)))
    html = (gains / "gains_joint_secureboost.html").read_text()
    assert "<title>Gains table: joint secureboost</title>" in html
    assert "held-out test rows (test_size 0.25, random_state 1" in html
