"""Bad configs and bad data files: a clear one-line error, a non-zero exit, nothing left behind.

Every case goes through the real CLI (``lab train``) with ``--summary-json``; afterwards the
lab home (MLflow store, artifacts) must not exist and no summary file may have been written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from lab.cli import EXIT_INPUT, run
from tests.conftest import allow_test_keys, make_vertical, vertical_config

Setup = Callable[[Path, dict[str, Any]], None]


def _edit_csv(folder: Path, name: str, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    path = folder / name
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(frame).to_csv(path, index=False)


def _set(frame: pd.DataFrame, row: int, column: str, value: str) -> pd.DataFrame:
    frame.loc[row, column] = value
    return frame


def _cfg(change: Callable[[dict[str, Any]], None]) -> Setup:
    def setup(folder: Path, cfg: dict[str, Any]) -> None:
        change(cfg)

    return setup


def _data(name: str, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Setup:
    def setup(folder: Path, cfg: dict[str, Any]) -> None:
        _edit_csv(folder, name, edit)

    return setup


def _raw_file(name: str, text: str) -> Setup:
    def setup(folder: Path, cfg: dict[str, Any]) -> None:
        (folder / name).write_text(text, encoding="utf-8")

    return setup


def _rewrite(name: str, change: Callable[[str], bytes]) -> Setup:
    """Rewrite a data file's bytes (a delimiter, an encoding, a container format)."""

    def setup(folder: Path, cfg: dict[str, Any]) -> None:
        path = folder / name
        path.write_bytes(change(path.read_text(encoding="utf-8")))

    return setup


def _accent_latin1(text: str) -> bytes:
    lines = text.splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[1], "Caf\u00e9", 1)
    return ("\n".join(lines) + "\n").encode("latin-1")


def _party(index: int, **changes: Any) -> Callable[[dict[str, Any]], None]:
    def change(cfg: dict[str, Any]) -> None:
        cfg["parties"][index].update(changes)

    return change


def _drop_party_key(index: int, key: str) -> Callable[[dict[str, Any]], None]:
    def change(cfg: dict[str, Any]) -> None:
        del cfg["parties"][index][key]

    return change


def _two_tables(folder: Path, cfg: dict[str, Any]) -> None:
    sub = folder / "bankdir"
    sub.mkdir()
    (folder / "bank.csv").rename(sub / "a.csv")
    (sub / "a.csv").with_name("b.csv").write_text("id,y\n", encoding="utf-8")
    cfg["parties"][0]["data"] = "bankdir"


CASES: list[tuple[str, Setup, list[str]]] = [
    # ---- config files ----
    ("unknown-top-key", _cfg(lambda c: c.update(modle={"type": "x"})), ["unknown key 'modle'"]),
    (
        "unknown-model-key",
        _cfg(lambda c: c["model"].update(n_trees=3)),
        ["unknown key 'model.n_trees'"],
    ),
    (
        "wrong-type",
        _cfg(lambda c: c["model"].update(n_estimators="many")),
        ["'model.n_estimators'", "valid integer", "'many'"],
    ),
    ("missing-required", _cfg(lambda c: c.pop("kind")), ["missing required key 'kind'"]),
    ("bad-kind", _cfg(lambda c: c.update(kind="diagonal")), ["'kind'", "'diagonal'"]),
    ("bad-role", _cfg(_party(1, role="regulator")), ["'parties[1].role'", "'regulator'"]),
    ("missing-file", _cfg(_party(1, data="nowhere.csv")), ["parties[1].data", "nowhere.csv"]),
    (
        "label-column-missing",
        _cfg(_party(0, label_column="default")),
        ["parties[0].label_column 'default'", "bank.csv"],
    ),
    ("id-column-missing", _cfg(_party(1, id_column="uscc")), ["parties[1].id_column 'uscc'"]),
    ("duplicate-party", _cfg(_party(1, name="bank")), ["duplicate party name", "'bank'"]),
    ("bank-without-label", _cfg(_drop_party_key(0, "label_column")), ["must set 'label_column'"]),
    ("platform-with-label", _cfg(_party(1, label_column="y")), ["only the bank holds labels"]),
    (
        "weak-key",
        _cfg(lambda c: c["crypto"].update(key_bits=1024)),
        ["crypto.key_bits=1024", "below 2048"],
    ),
    (
        "test-size-out-of-range",
        _cfg(lambda c: c["evaluation"].update(test_size=1.5)),
        ["'evaluation.test_size'", "less than 1"],
    ),
    (
        "feature-not-in-file",
        _cfg(_party(1, features=["score", "revenue"])),
        ["parties[1].features", "'revenue'"],
    ),
    ("bad-party-name", _cfg(_party(0, name="Bank A")), ["'parties[0].name'", "'Bank A'"]),
    ("unknown-model-type", _cfg(lambda c: c["model"].update(type="xgboost")), ["'model.type'"]),
    # ---- data files ----
    (
        "duplicate-ids",
        _data("platform.csv", lambda f: _set(f, 3, "id", f.loc[4, "id"])),
        ["platform.csv", "duplicate id", "column 'id'", "lines"],
    ),
    (
        "empty-id",
        _data("bank.csv", lambda f: _set(f, 7, "id", "  ")),
        ["bank.csv", "empty id", "line", "9"],
    ),
    (
        "label-not-binary",
        _data("bank.csv", lambda f: _set(f, 2, "y", "2")),
        ["label column 'y'", "0 (good) or 1 (bad)", "'2'"],
    ),
    (
        "label-missing-value",
        _data("bank.csv", lambda f: _set(f, 5, "y", "")),
        ["missing label", "column 'y'"],
    ),
    (
        "single-class",
        _data("bank.csv", lambda f: f.assign(y="0")),
        ["only the class 0", "both good (0) and bad (1)"],
    ),
    (
        "infinite-value",
        _data("platform.csv", lambda f: _set(f, 1, "score", "inf")),
        ["feature column 'score'", "infinite"],
    ),
    (
        "all-missing-column",
        _data("platform.csv", lambda f: f.assign(score="")),
        ["feature column 'score'", "all missing"],
    ),
    ("empty-file", _raw_file("platform.csv", ""), ["platform.csv", "empty"]),
    ("header-only", _raw_file("platform.csv", "id,score\n"), ["platform.csv", "no rows"]),
    (
        "no-feature-columns",
        _raw_file("platform.csv", "id\nA\nB\n"),
        ["platform.csv", "no feature columns"],
    ),
    ("directory-with-two-tables", _two_tables, ["bankdir", "exactly one table", "a.csv, b.csv"]),
    (
        "unsupported-suffix",
        _cfg(_party(1, data="platform.xlsx")),
        ["parties[1].data", "platform.xlsx"],
    ),
    # ---- the last bad inputs (issue 12) ----
    (
        "short-row",
        _raw_file("platform.csv", "id,score,tax_grade\nE00000,1.5,A\nE00001,2.5\nE00002,3,B\n"),
        ["platform.csv", "do not have the header's 3 fields", "line 3 has 2"],
    ),
    (
        "long-row",
        _raw_file("platform.csv", "id,score\nE00000,1.5\nE00001,2,5\nE00002,3\n"),
        ["platform.csv", "do not have the header's 2 fields", "line 3 has 3"],
    ),
    (
        "comma-decimals",
        _data("platform.csv", lambda f: _set(_set(f, 1, "score", "1,5"), 6, "score", "-0,25")),
        ["feature column 'score'", "written with a comma", "'1,5'", "lines [3, 8]", "'.'"],
    ),
    # ---- types and file formats (issue 20) ----
    (
        "question-mark-among-numbers",
        _data("platform.csv", lambda f: _set(f, 4, "score", "?")),
        [
            "party 'platform'",
            "feature column 'score' looks numeric",
            "'?' at platform.csv:6",
            'set na_values: ["?"]',
            'categorical: ["score"]',
        ],
    ),
    (
        "semicolon-delimited",
        _rewrite("platform.csv", lambda t: t.replace(",", ";").encode()),
        ["platform.csv", "looks ';'-delimited", "set delimiter: ';'"],
    ),
    (
        "latin-1-encoded",
        _rewrite("platform.csv", _accent_latin1),
        ["platform.csv", "line 4", "(0xe9) is not valid utf-8", "set encoding: latin-1"],
    ),
    (
        "zip-named-csv",
        _rewrite("platform.csv", lambda t: b"PK\x03\x04" + t.encode()),
        ["platform.csv", "is a zip archive", "export the sheet as CSV"],
    ),
    (
        "tab-written-as-backslash-t",
        _cfg(_party(1, delimiter="\\t")),
        ["'parties[1].delimiter'", 'delimiter: "\\t" in double quotes'],
    ),
    (
        "unknown-encoding",
        _cfg(_party(1, encoding="latin-9000")),
        ["'parties[1].encoding'", "unknown encoding 'latin-9000'"],
    ),
    (
        "experiment-name-is-a-path",
        _cfg(lambda c: c.update(tracking={"experiment": "../../outside"})),
        ["'tracking.experiment'", "folder under $LAB_HOME/mlartifacts", "'../../outside'"],
    ),
]


@pytest.mark.parametrize(("case", "setup", "fragments"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_cleanly(
    case: str,
    setup: Setup,
    fragments: list[str],
    tmp_path: Path,
    lab_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "exp"
    make_vertical(folder)
    (folder / "platform.xlsx").write_bytes(b"PK\x03\x04")
    cfg = vertical_config()
    setup(folder, cfg)
    config_path = folder / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    summary = tmp_path / "out" / "summary.json"
    before = sorted(p.name for p in folder.rglob("*"))

    code = run(["train", str(config_path), "--summary-json", str(summary)])

    stderr = capsys.readouterr().err.strip()
    assert code == EXIT_INPUT, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert not summary.exists()
    assert not summary.parent.exists()
    assert not lab_home.exists(), "bad input must not create the lab home, tracking store or runs"
    assert sorted(p.name for p in folder.rglob("*")) == before


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 15


def test_a_yaml_key_given_twice_is_refused_with_its_line(
    tmp_path: Path, lab_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_vertical(tmp_path)
    text = yaml.safe_dump(vertical_config(), sort_keys=False)
    text = text.replace("  n_estimators: 3\n", "  n_estimators: 3\n  n_estimators: 50\n")
    config_path = tmp_path / "experiment.yaml"
    config_path.write_text(text, encoding="utf-8")
    first = text.splitlines().index("  n_estimators: 3") + 1
    assert run(["train", str(config_path)]) == EXIT_INPUT
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"error: {config_path}: line {first + 1}, column 3: key 'n_estimators' is given twice "
        f"(first at line {first}); keep one of them"
    )
    assert not lab_home.exists()


@pytest.mark.slow
def test_too_few_bad_outcomes_are_refused_before_training(tmp_path: Path, lab_home: Path) -> None:
    """Three bads in 200 rows: the split's test part would get one. No protocol crash."""
    from tests.cli_helpers import run_lab

    make_vertical(tmp_path)
    _edit_csv(tmp_path, "bank.csv", lambda f: f.assign(y=["1"] * 3 + ["0"] * (len(f) - 3)))
    cfg = vertical_config()
    cfg["crypto"] = {"key_bits": 512, "insecure_test_keys": True}
    allow_test_keys(lab_home)
    config_path = tmp_path / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    done = run_lab(["train", str(config_path)], home=lab_home)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "(job/split): the test part of the bank's split would hold 1 bad outcome(s)" in errors[0]
    assert "at least 3 in each part" in errors[0]
    assert "is not allowed after" not in done.stderr
    assert not (lab_home / "parties" / "platform" / "models").exists()  # nothing trained


def test_invalid_yaml(tmp_path: Path, lab_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: [unclosed\nkind: vertical\n", encoding="utf-8")
    assert run(["train", str(bad)]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "broken.yaml: not valid YAML" in err
    assert not lab_home.exists()


def test_config_not_a_mapping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n", encoding="utf-8")
    assert run(["train", str(bad)]) == EXIT_INPUT
    assert "must be a mapping" in capsys.readouterr().err


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["train", str(tmp_path / "absent.yaml")]) == EXIT_INPUT
    assert "absent.yaml: experiment config not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("model.n_estimators", "expected KEY=VALUE"),
        ("parties.treasury.data=x.csv", "no item 'treasury'"),
        ("model.max_depth=-1", "'model.max_depth'"),
    ],
)
def test_bad_override(
    override: str, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_vertical(tmp_path)
    config_path = tmp_path / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(vertical_config()), encoding="utf-8")
    assert run(["train", str(config_path), "--set", override]) == EXIT_INPUT
    assert fragment in capsys.readouterr().err


def test_a_feature_set_spec_key_given_twice_is_refused(tmp_path: Path) -> None:
    from lab.governance.errors import SpecError
    from lab.governance.spec import load_spec

    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: sme\nversion: '1'\nowner: team\ndescription: x\nid_column: id\ncolumns:\n"
        "  score: {type: numeric, group: tax, sensitivity: internal, purposes: [loan_approval]}\n"
        "  score: {type: integer, group: tax, sensitivity: internal, purposes: [loan_approval]}\n",
        encoding="utf-8",
    )
    with pytest.raises(
        SpecError, match=r"line 8, column 3: key 'score' is given twice \(first at line 7\)"
    ):
        load_spec(spec)
