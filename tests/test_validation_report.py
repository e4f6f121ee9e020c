"""The validation report shows the model's own numbers: recomputed here from its parts' scores."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.stability import score_stability
from federated.driver import run_job
from federated.spec import ScreeningSpec
from lab import validation_report
from lab.reporting.secureboost import IMPORTANCE_COLUMNS
from models.alignment import ALIGNED_ROWS_KEY
from models.evaluation import TEST_MASK_KEY, evaluate_scores
from models.secureboost.core import sigmoid
from models.secureboost.parts import BankPart, PlatformPart
from models.vertical import model_file
from tests.test_screening import _spec, _transport, _write


def _rows(page: str, first_cell: str) -> list[list[str]]:
    """Cells of every table row of ``page`` whose first cell is ``first_cell``."""
    found = []
    for row in re.findall(r"<tr>(.*?)</tr>", page, flags=re.S):
        cells = [
            html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td>(.*?)</td>", row)
        ]
        if cells and cells[0] == first_cell:
            found.append(cells)
    return found


def test_the_report_shows_the_models_own_numbers(tmp_path: Path) -> None:
    paths = _write(tmp_path / "data")
    transport = _transport(tmp_path, paths, detail="group")
    spec = _spec(ScreeningSpec(recent={"bank": None, "platform": None}, min_iv=0.05))
    result = run_job(spec, transport)
    # The joint model's scores of the bank's training and test rows, from its two parts.
    bank_rt, platform_rt = transport.parties["bank"], transport.parties["platform"]
    details = result.joint.details
    bank_part = BankPart.from_dict(json.loads(Path(details["bank_part"]["path"]).read_text()))
    ref = details["platform_parts"]["platform"]
    platform_part = PlatformPart.from_dict(
        json.loads(model_file(platform_rt.model_dir(), ref["model_id"]).read_text())
    )
    rows = bank_rt.store.get_array(ALIGNED_ROWS_KEY).astype(int)
    test = bank_rt.store.get_array(TEST_MASK_KEY).astype(bool)
    bank_table = bank_rt.table()
    ids = bank_table.ids[rows]
    platform = pd.read_csv(paths["platform"], dtype={"id": str}).set_index("id").loc[ids]
    split_ids = sorted(platform_part.splits)
    bits = platform_part.decisions(platform.reset_index(drop=True), split_ids)
    frame = bank_table.features.iloc[rows].reset_index(drop=True)
    p = sigmoid(bank_part.raw_scores(frame, {"platform": (split_ids, bits)}))
    y = bank_table.label[rows]  # type: ignore[index]
    train_eval = evaluate_scores(y[~test], p[~test])
    test_eval = evaluate_scores(y[test], p[test])
    psi = score_stability(p[~test], p[test])
    assert details["train_report"]["auc"] == pytest.approx(train_eval.auc, abs=1e-12)
    assert result.joint.report is not None
    assert result.joint.report.auc == pytest.approx(test_eval.auc, abs=1e-12)
    assert details["score_stability"]["index"] == pytest.approx(psi.index, abs=1e-12)

    importance = pd.DataFrame(details["importance"]).assign(group="ungrouped")
    importance["label"] = importance["party"] + ":" + importance["feature"]
    importance["gain_share"] = importance["gain"] / importance["gain"].sum()
    inputs = validation_report.ReportInputs(
        model_name="screen",
        version="3",
        run_id="r1",
        result=result,
        summary={"config_hash": "sha256:abc", "model": "secureboost", "kind": "vertical"},
        importance=importance.loc[:, list(IMPORTANCE_COLUMNS)],
    )
    page = validation_report.build(inputs)
    for outside in ("http://", "https://", "<script", "<link"):
        assert outside not in page
    assert page.count("data:image/png;base64,") == 2  # calibration, importance
    for split, ev in (("train", train_eval), ("test", test_eval)):
        (row,) = _rows(page, split)
        assert row[1:] == [
            str(ev.n),
            str(ev.n_bad),
            f"{ev.bad_rate:.4f}",
            f"{ev.auc:.4f}",
            f"{ev.ks:.4f}",
            f"{ev.gini:.4f}",
            f"{ev.brier:.4f}",
            f"{ev.log_loss:.4f}",
        ]
    assert f"Brier score {test_eval.brier:.4f}" in page
    for c in test_eval.calibration:
        assert _rows(page, str(c.bin))[0][1:4] == [
            str(c.n),
            f"{c.mean_predicted:.4f}",
            f"{c.observed_rate:.4f}",
        ]
    assert f"Score PSI train &rarr; test: <b>{psi.index:.4f}</b>" in page
    # Stability: the platform shared its group only; the bank every column.
    platform_rows = _rows(page, "platform")
    csi = result.screening["csi"]["platform"]["groups"]["other"]["csi_max"]
    assert ["platform", "group (largest)", "other", "other", f"{csi:.4f}"] in [
        r[:5] for r in platform_rows
    ]
    assert not any(r[1] == "feature" and len(r) == 6 for r in platform_rows)
    bank_csi = {e["name"]: e["index"] for e in result.screening["csi"]["bank"]["features"]}
    for name, value in bank_csi.items():
        assert ["bank", "feature", name, "", f"{value:.4f}"] in [r[:5] for r in _rows(page, "bank")]
    # IV: the dropped column is marked unused.
    assert any(r[:2] == ["platform", "tax_grade"] and r[-1] == "no" for r in platform_rows)
    # Importance by party: shares of the exact gain.
    share = importance.groupby("party")["gain"].sum() / importance["gain"].sum()
    for party, value in share.items():
        assert any(r[0] == party and r[-1] == f"{value:.4f}" for r in _rows(page, str(party)))
    # Lineage: each party's digest.
    for party in result.parties:
        assert party.digest in page
    # Privacy: each node's charge is listed.
    assert set(result.nodes) == {"bank", "platform"}
    assert len(_rows(page, "platform")) >= 3


def test_the_report_escapes_what_parties_named(tmp_path: Path) -> None:
    paths = _write(tmp_path / "data")
    frame = pd.read_csv(paths["bank"]).rename(columns={"deposits": "<img src=x>"})
    frame.to_csv(paths["bank"], index=False)
    recent = pd.read_csv(paths["bank_recent"]).rename(columns={"deposits": "<img src=x>"})
    recent.to_csv(paths["bank_recent"], index=False)
    result = run_job(_spec(ScreeningSpec(recent={"bank": None})), _transport(tmp_path, paths))
    page = validation_report.build(
        validation_report.ReportInputs("m", "1", "r", result, summary={})
    )
    assert "<img src=x>" not in page
    assert "&lt;img src=x&gt;" in page
    assert np.isfinite(result.screening["csi"]["bank"]["features"][0]["index"])


def test_a_version_without_a_logged_report_gets_one_built_from_its_run(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    paths = _write(tmp_path / "data")
    result = run_job(_spec(ScreeningSpec(recent={"bank": None})), _transport(tmp_path, paths))
    folder = tmp_path / "artifacts"
    folder.mkdir()
    result.write(folder)
    (folder / "summary.json").write_text(json.dumps({"config_hash": "sha256:feed"}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("old", artifact_location=str(tmp_path / "mlartifacts"))
    run_id = client.create_run(experiment).info.run_id
    for name in ("result.json", "summary.json"):
        client.log_artifact(run_id, str(folder / name))
    client.create_registered_model("old-model")
    client.create_model_version("old-model", f"runs:/{run_id}/model", run_id=run_id)
    out = tmp_path / "report.html"
    path, rebuilt = validation_report.fetch(uri, "old-model", "1", out)
    assert (path, rebuilt) == (out, True)
    page = out.read_text()
    assert result.joint.report is not None
    assert f"{result.joint.report.auc:.4f}" in page
    assert "sha256:feed" in page
    with pytest.raises(
        validation_report.ReportNotFoundError, match=r"no version '2'; versions: \['1'\]"
    ):
        validation_report.fetch(uri, "old-model", "2", tmp_path / "x.html")
    with pytest.raises(
        validation_report.ReportNotFoundError, match=r"known models: \['old-model'\]"
    ):
        validation_report.fetch(uri, "nope", "1", tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()
