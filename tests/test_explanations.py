"""Per-party explanations: contributions that sum to the margin, by the platform's groups only.

Unit tests run the real SecureBoost and hetero LR protocols between in-process parties (test
keys); the platform's node releases its splits' feature groups only under its own policy. The
end-to-end test trains through Flower, registers the model, serves the platform's part on a real
HTTP endpoint and runs the installed ``lab score`` in a subprocess.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from federated.inprocess import inprocess_job
from lab.reports import importance_by_group
from models.explanations import (
    Attribution,
    AttributionRefusedError,
    ExplanationUnavailableError,
    reason_codes,
)
from models.guard import NodeLimits, single_operator
from models.protocol import Envelope
from models.secureboost.explain import node_values, saabas
from models.secureboost.parts import BankPart, PlatformPart
from models.secureboost.protocol import SecureBoostParams, conclude, start_envelope
from tests.test_secureboost_protocol import _data

PARAMS = {"n_estimators": 3, "max_depth": 3, "max_bin": 8, "min_child_samples": 5}
CRYPTO = {"key_bits": 512, "insecure_test_keys": True}
GROUPS = {"tax_score": "tax", "grade": "quality_credit"}


def _fit(
    limits: NodeLimits | None = None, groups: dict[str, str] | None = None
) -> tuple[BankPart, PlatformPart, list[Envelope], dict[str, Any]]:
    """Train SecureBoost in process; the platform's groups come from its own ``columns.json``."""
    bank, y, platforms = _data()
    platform_groups = {c: GROUPS.get(c, "registration") for c in platforms["platform"].columns}
    seen: list[Envelope] = []
    params = SecureBoostParams(**PARAMS, **CRYPTO)
    with inprocess_job(
        bank,
        y,
        platforms,
        name="explain",
        model={"type": "secureboost", **PARAMS},
        crypto=CRYPTO,
        limits=limits or single_operator(True),
        groups={"platform": platform_groups if groups is None else groups},
    ) as job:
        job.transport.tap = lambda direction, env: (
            seen.append(env) if direction == "from_party" else None
        )
        outcome = conclude(job.run(start_envelope("bank", job.platforms, job.order, params, "f")))
        part = BankPart.from_dict(json.loads(Path(outcome.bank_part["path"]).read_text()))
        [raw] = job.platform_parts(outcome.platform_parts).values()
        job.close()
    return part, PlatformPart.from_dict(raw), seen, {"bank": bank, "y": y, **platforms}


@pytest.fixture(scope="module")
def trained() -> tuple[BankPart, PlatformPart, list[Envelope], dict[str, Any]]:
    return _fit()


def _decisions(part: BankPart, platform: PlatformPart, frame: pd.DataFrame) -> Any:
    ids = part.platform_splits()["platform"]
    return {"platform": (ids, platform.decisions(frame, ids))}


def _reference_saabas(part: BankPart, bank: pd.DataFrame, decisions: Any) -> dict[str, Any]:
    """Row by row, node by node: an independent reading of the same definition."""
    ids, bits = decisions["platform"]
    out: list[dict[str, float]] = []
    for r in range(len(bank)):
        contrib: dict[str, float] = {}
        for tree in part.trees:
            values = node_values(tree)
            node = 0
            while tree[node].weight is None:
                n = tree[node]
                if n.rule is not None:
                    value = bank[n.rule.feature].iloc[[r]]
                    left = bool(n.rule.goes_left(part.bins[n.rule.feature], value)[0])
                    label = f"bank:{n.rule.feature}"
                else:
                    left = bool(bits[r, ids.index(str(n.split_id))])
                    label = f"platform:{part.platform_groups['platform'][str(n.split_id)]}"
                child = 2 * node + 1 if left else 2 * node + 2
                contrib[label] = contrib.get(label, 0.0) + values[child] - values[node]
                node = child
        out.append(contrib)
    return {"rows": out}


def test_saabas_contributions_sum_to_the_margin_and_name_platform_groups_only(
    trained: tuple[BankPart, PlatformPart, list[Envelope], dict[str, Any]],
) -> None:
    part, platform, _, data = trained
    bank = data["bank"]
    decisions = _decisions(part, platform, data["platform"])
    attribution = saabas(part, bank, decisions)
    margin = part.raw_scores(bank, decisions)
    assert np.abs(attribution.margin - margin).max() < 1e-9
    platform_labels = [label for label in attribution.labels if label.startswith("platform:")]
    assert platform_labels, "no platform split: the test proves nothing"
    assert set(platform_labels) <= {"platform:tax", "platform:quality_credit"}
    assert {label for label in attribution.labels if label.startswith("bank:")} <= {
        f"bank:{c}" for c in bank.columns
    }
    reference = _reference_saabas(part, bank.iloc[:40], _decisions_rows(decisions, 40))
    for r, expected in enumerate(reference["rows"]):
        got = dict(zip(attribution.labels, attribution.values[r], strict=True))
        for label, value in expected.items():
            assert got[label] == pytest.approx(value, abs=1e-12)
        assert all(abs(v) < 1e-12 for k, v in got.items() if k not in expected)
    # The base is what no label accounts for: the same for every row.
    assert np.ptp(attribution.base) == 0.0


def _decisions_rows(decisions: Any, n: int) -> Any:
    ids, bits = decisions["platform"]
    return {"platform": (ids, bits[:n])}


def test_node_covers_are_the_hessian_sums_of_the_training_rows(
    trained: tuple[BankPart, PlatformPart, list[Envelope], dict[str, Any]],
) -> None:
    from models.secureboost.core import SCALE, gradients

    part, platform, _, data = trained
    bank, y = data["bank"], data["y"]
    decisions = _decisions(part, platform, data["platform"])
    staged = part.raw_scores(bank, decisions, staged=True)
    for t, tree in enumerate(part.trees):
        raw = np.full(len(y), part.base_score) if t == 0 else staged[:, t - 1]
        _, h = gradients(y, raw)
        members = {0: np.arange(len(y))}
        for node_id in sorted(tree):
            node, rows = tree[node_id], members.get(node_id, np.arange(0))
            assert node.cover == pytest.approx(float(h[rows].sum()) / SCALE, rel=1e-12)
            if node.weight is not None:
                continue
            if node.rule is not None:
                column = bank[node.rule.feature].iloc[rows]
                left = node.rule.goes_left(part.bins[node.rule.feature], column)
            else:
                ids, bits = decisions["platform"]
                left = bits[rows, ids.index(str(node.split_id))]
            members[2 * node_id + 1], members[2 * node_id + 2] = rows[left], rows[~left]


def _platform_secrets(platform: PlatformPart, data: dict[str, Any]) -> list[str]:
    """Strings that would betray a platform column, threshold, bin edge or value."""
    out = list(data["platform"].columns)
    for spec in platform.bins.values():
        out += [repr(float(e)) for e in spec.edges]
        out += [json.dumps(float(e)) for e in spec.edges]
    values = data["platform"]["tax_score"].dropna().to_numpy()[:50]
    out += [repr(float(v)) for v in values] + [f"{float(v):.6f}" for v in values]
    return [s for s in out if len(s) >= 4]


def test_bank_side_artefacts_and_the_release_hold_no_platform_column_edge_or_value(
    trained: tuple[BankPart, PlatformPart, list[Envelope], dict[str, Any]],
) -> None:
    part, platform, seen, data = trained
    assert platform.bins, "the platform part uses no column: the test proves nothing"
    decisions = _decisions(part, platform, data["platform"])
    reasons = reason_codes(saabas(part, data["bank"], decisions), 4)
    released = [e for e in seen if e.stage == "decisions" and e.sender == "platform"]
    assert len(released) == 1
    groups = released[0].json("groups")
    assert set(groups) == set(platform.splits)
    assert set(groups.values()) <= {"tax", "quality_credit"}
    texts = {
        "bank part": json.dumps(part.to_dict()),
        "reason codes": reasons.to_csv(index=False),
        "group release": json.dumps(groups),
    }
    for name, text in texts.items():
        leaked = [s for s in _platform_secrets(platform, data) if s in text]
        assert not leaked, f"{name} carries {leaked[:5]}"
    assert (
        "platform:tax" in texts["reason codes"]
        or "platform:quality_credit" in texts["reason codes"]
    )


def test_a_platform_whose_policy_refuses_group_attribution_withholds_and_is_named() -> None:
    limits = replace(single_operator(True), group_attribution=False)
    part, platform, seen, data = _fit(limits)
    [reply] = [e for e in seen if e.stage == "decisions" and e.sender == "platform"]
    assert "groups" not in reply.payload
    assert "explanations.group_attribution=refuse" in reply.text("groups_withheld")
    assert not part.platform_groups
    decisions = _decisions(part, platform, data["platform"])
    with pytest.raises(AttributionRefusedError) as refused:
        saabas(part, data["bank"], decisions)
    message = str(refused.value)
    assert "platform 'platform' did not release the feature groups" in message
    assert "explanations.group_attribution=refuse" in message
    assert "lab policy set explanations.group_attribution=allow" in message
    # Scoring itself is untouched.
    assert np.isfinite(part.predict_proba(data["bank"], decisions)).all()


def test_the_platforms_policy_file_switches_the_release(lab_home: Path) -> None:
    from lab.governance.policy import read_policy, set_policy

    assert read_policy(lab_home).limits().group_attribution is True  # the default: allow
    set_policy(["explanations.group_attribution=refuse"], lab_home)
    assert read_policy(lab_home).limits().group_attribution is False


def test_a_part_saved_before_covers_cannot_explain_and_says_so(
    trained: tuple[BankPart, PlatformPart, list[Envelope], dict[str, Any]],
) -> None:
    part, platform, _, data = trained
    raw = part.to_dict()
    for tree in raw["trees"]:
        for node in tree:
            node.pop("cover", None)
    old = BankPart.from_dict(raw)
    with pytest.raises(ExplanationUnavailableError, match="retrain"):
        saabas(old, data["bank"], _decisions(old, platform, data["platform"]))


def test_reason_codes_are_the_largest_positive_contributions_with_signs() -> None:
    attribution = Attribution(
        base=np.zeros(3),
        labels=("bank:a", "platform:judicial", "platform:tax"),
        values=np.array([[0.2, 0.5, -0.3], [-0.1, -0.2, -0.3], [0.4, 0.4, 0.1]]),
    )
    codes = reason_codes(attribution, 2)
    assert list(codes.columns) == ["reason_1", "reason_1_value", "reason_2", "reason_2_value"]
    assert codes.iloc[0][["reason_1", "reason_2"]].tolist() == ["platform:judicial", "bank:a"]
    assert codes.iloc[0]["reason_1_value"] == 0.5
    assert codes.iloc[1]["reason_1"] == ""
    assert np.isnan(codes.iloc[1]["reason_1_value"])
    assert codes.iloc[2][["reason_1", "reason_2"]].tolist() == ["bank:a", "platform:judicial"]
    with pytest.raises(ValueError, match=r"reasons must be an integer in \[0, 10\]"):
        reason_codes(attribution, 11)


def test_hetero_lr_contributions_sum_to_the_logit_and_sum_platform_columns_by_group() -> None:
    from federated.estimators import HeteroLRClassifier
    from models.vertical_lr.explain import contributions

    bank, y, platforms = _data(n=600)
    clf = HeteroLRClassifier(max_epochs=3, batch_size=256, key_bits=512, insecure_test_keys=True)
    clf.fit(bank, y, platforms)
    part = clf.bank_part_
    platform = clf.platform_parts_["platform"]
    bins = platform.coarse_bins(platforms["platform"])
    keyed = {f"platform:{c}": bins[:, j] for j, c in enumerate(platform.features)}
    attribution = contributions(part, bank, keyed)
    assert np.abs(attribution.margin - part.logits(bank, keyed)).max() < 1e-9
    # No group known for the platform's columns: one 'ungrouped' label, never a column name.
    assert [label for label in attribution.labels if label.startswith("platform:")] == [
        "platform:ungrouped"
    ]
    terms = sum(
        part.coefficients[f"platform:{c}"]
        * np.asarray(next(t for t in part.tables if t.name == c and t.party == "platform").woe)[
            bins[:, j]
        ]
        for j, c in enumerate(platform.features)
    )
    np.testing.assert_allclose(
        attribution.values[:, attribution.labels.index("platform:ungrouped")], terms, atol=1e-12
    )
    # Global importance by party and group: the estimator's per-feature spreads, summed.
    from models.vertical_lr.explain import group_importance

    table = group_importance(part)
    assert set(zip(table["party"], table["group"], strict=True)) == {
        ("bank", "ungrouped"),
        ("platform", "ungrouped"),
    }
    raw = clf._raw_importance()
    for party in ("bank", "platform"):
        row = table[table["party"] == party].iloc[0]
        assert row["spread"] == pytest.approx(
            sum(v for k, v in raw.items() if k.startswith(f"{party}:"))
        )
        assert row["features"] == sum(t.party == party for t in part.tables)
    assert table["spread_share"].sum() == pytest.approx(1.0)


def test_importance_by_group_has_gain_and_cover_and_their_shares(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        [
            ("platform", "vat_sales", "tax", 2, 10.0, 30.0),
            ("platform", "tax_grade", "tax", 1, 5.0, 10.0),
            ("platform", "lawsuits", "judicial", 1, 5.0, 60.0),
            ("bank", "loan_rate", "ungrouped", 3, 20.0, 100.0),
        ],
        columns=["party", "feature", "group", "splits", "gain", "cover"],
    )
    table = importance_by_group(frame)
    assert table[["party", "group"]].values.tolist() == [
        ["bank", "ungrouped"],
        ["platform", "tax"],
        ["platform", "judicial"],
    ]
    tax = table.iloc[1]
    assert (tax["features"], tax["splits"], tax["gain"], tax["cover"]) == (2, 3, 15.0, 40.0)
    assert tax["gain_share"] == pytest.approx(15 / 40)
    assert tax["cover_share"] == pytest.approx(40 / 200)
    assert table["cover_share"].sum() == pytest.approx(1.0)
    # The chart draws each group's cover share beside its gain share.
    from lab.reports import importance_chart, plot_importance

    frame["label"] = frame["party"] + ":" + frame["feature"]
    frame["gain_share"] = frame["gain"] / frame["gain"].sum()
    chart = importance_chart(frame, dp=False)
    assert chart.group_cover == pytest.approx(
        {"bank:ungrouped": 0.5, "platform:tax": 0.2, "platform:judicial": 0.3}
    )
    assert any("cover share (hatched" in n for n in chart.notes)
    png = plot_importance(chart, tmp_path / "importance.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lab_score_refuses_bad_input_in_one_line_and_writes_nothing(
    tmp_path: Path, lab_home: Path
) -> None:
    from tests.cli_helpers import run_lab

    out = tmp_path / "out.csv"
    missing = run_lab(["score", "m", "--input", str(tmp_path / "no.csv"), "--out", str(out)],
                      home=lab_home)  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        f"error: {tmp_path / 'no.csv'}: no such file; pass the CSV of enterprises to score"
    )
    (tmp_path / "noid.csv").write_text("loan_amount\n3\n")
    noid = run_lab(["score", "m", "--input", str(tmp_path / "noid.csv"), "--out", str(out)],
                   home=lab_home)  # fmt: skip
    assert noid.returncode == 2
    assert "no 'enterprise_id' column (line 1 has ['loan_amount'])" in noid.stderr
    (tmp_path / "ok.csv").write_text("enterprise_id,loan_amount\n91350102MA9Y5Y2C5D,3\n,4\n")
    empty = run_lab(["score", "m", "--input", str(tmp_path / "ok.csv"), "--out", str(out)],
                    home=lab_home)  # fmt: skip
    assert empty.returncode == 2
    assert f"{tmp_path / 'ok.csv'}:3: 'enterprise_id' is empty" in empty.stderr
    (tmp_path / "ok.csv").write_text("enterprise_id,loan_amount\n91350102MA9Y5Y2C5D,3\n")
    unknown = run_lab(["score", "nobody", "--input", str(tmp_path / "ok.csv"), "--out", str(out)],
                      home=lab_home)  # fmt: skip
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("error: models:/nobody@champion: no registry at ")
    assert len(unknown.stderr.strip().splitlines()) == 1
    assert not lab_home.exists() or not (lab_home / "mlflow.db").exists()
    assert not out.exists()
    assert not list(tmp_path.glob(".out.csv.*"))


# -- end to end: trained through Flower, registered, the platform's endpoint, `lab score` -----


@pytest.mark.slow
def test_lab_score_writes_reason_codes_from_the_registered_model_and_the_platform_endpoint(
    tmp_path: Path, lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.pyfunc

    from lab.serving.platform_endpoint import create_app
    from lab.serving.platform_scorer import PlatformScorer
    from lab.serving.ratelimit import TokenBucketLimiter
    from lab.serving.tokens import TokenStore
    from tests.cli_helpers import run_lab
    from tests.serving_helpers import (
        SERVED_BANK,
        SERVED_MODEL,
        SERVED_REF,
        free_port,
        train_served_model,
        uvicorn_thread,
    )

    trained = train_served_model(tmp_path / "sme")
    folder: Path = trained["folder"]  # (importance by group of hetero LR: tests/test_serving.py)
    joint = next(lab_home.rglob("joint/importance_by_group.csv"))
    by_group = pd.read_csv(joint)
    assert {"gain", "cover", "gain_share", "cover_share"} <= set(by_group.columns)
    ref = trained["summary"]["registered_model"]["platform_parts"]["platform"]
    platform_dir = lab_home / "parties" / "platform"
    platform = PlatformPart.from_dict(
        json.loads((platform_dir / "models" / f"{ref['model_id']}.json").read_text())
    )
    assert platform.splits, "the joint model uses no platform split: the test proves nothing"
    bank: pd.DataFrame = trained["bank"]
    sample = bank.iloc[:20].drop(columns=["default_12m"]).reset_index(drop=True)
    (tmp_path / "in.csv").write_text(sample.to_csv(index=False))
    published = json.loads((folder / "columns.json").read_text())
    platform_columns = [c for c, v in published.items() if v.get("party") == "platform"]

    scorer = PlatformScorer(platform_dir, folder / "platform.csv", SERVED_REF, lab_home)
    token = TokenStore.in_dir(platform_dir).issue(SERVED_BANK, ["loan_approval"])
    app = create_app(scorer, TokenStore.in_dir(platform_dir), TokenBucketLimiter(1000, 1000))
    with uvicorn_thread(app, free_port()) as url:
        env = {"LAB_PLATFORM_URL": url, "LAB_PLATFORM_TOKEN": token}
        files = ["--input", str(tmp_path / "in.csv"), "--out", str(tmp_path / "out.csv")]
        done = run_lab(["score", f"{SERVED_MODEL}@challenger", *files, "--reasons", "3"],
                       home=lab_home, env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "20 enterprises scored" in done.stdout
        # A bad reasons count, a model this registry does not have: one line, exit 2.
        bad = run_lab(["score", SERVED_MODEL, "--input", str(tmp_path / "in.csv"),
                       "--out", str(tmp_path / "bad.csv"), "--reasons", "11"],
                      home=lab_home, env=env)  # fmt: skip
        assert bad.returncode == 2
        assert bad.stderr.startswith("error: --reasons: reasons must be an integer in [0, 10]")
        unknown = run_lab(["score", "nobody@champion", "--input", str(tmp_path / "in.csv"),
                           "--out", str(tmp_path / "bad.csv")], home=lab_home, env=env)  # fmt: skip
        assert unknown.returncode == 2
        assert "error: models:/nobody@champion: " in unknown.stderr
        assert "lab models list shows the registered models" in unknown.stderr
        assert not (tmp_path / "bad.csv").exists()
        uri = f"sqlite:///{lab_home / 'mlflow.db'}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
        monkeypatch.setenv("LAB_PLATFORM_URL", url)
        monkeypatch.setenv("LAB_PLATFORM_TOKEN", token)
        model = mlflow.pyfunc.load_model(f"models:/{SERVED_MODEL}@challenger")
        numeric = sample.select_dtypes("number").columns
        served = model.predict(
            sample.astype(dict.fromkeys(numeric, float)), params={"output": "reasons"}
        )
    scored = pd.read_csv(tmp_path / "out.csv", dtype={"enterprise_id": str})
    assert scored["enterprise_id"].tolist() == sample["enterprise_id"].tolist()
    assert list(scored.columns[:4]) == ["enterprise_id", "probability", "margin", "base"]
    assert [c for c in scored.columns if c.startswith("reason_")] == [
        "reason_1", "reason_1_value", "reason_2", "reason_2_value", "reason_3", "reason_3_value"
    ]  # fmt: skip
    np.testing.assert_allclose(scored["probability"], 1 / (1 + np.exp(-scored["margin"])))
    np.testing.assert_allclose(scored["probability"], served["probability"], rtol=1e-9)
    assert list(served.columns[:3]) == ["probability", "margin", "base"]
    assert [c for c in served.columns if c.startswith("reason_")][-1] == "reason_4_value"
    reasons = {r for c in ("reason_1", "reason_2", "reason_3") for r in scored[c].dropna()}
    published_groups = {v["group"] for v in published.values() if v.get("party") == "platform"}
    assert all(r.split(":", 1)[1] in published_groups for r in reasons if r.startswith("platform:"))
    assert (scored["reason_1_value"].dropna() > 0).all()
    text = (tmp_path / "out.csv").read_text()
    # Whole names only: the bank's own "borrower_industry" is not the platform's "industry".
    leaked = [c for c in platform_columns if re.search(rf"(?<![\w]){re.escape(c)}(?![\w])", text)]
    assert not leaked, f"the scores name platform columns {leaked}"
    edges = [repr(float(e)) for s in platform.bins.values() for e in s.edges]
    assert not [e for e in edges if len(e) >= 4 and e in text]
