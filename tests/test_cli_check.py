"""``lab check`` as a user runs it: types you can see, and targeted messages for bad files.

Every case runs the installed ``lab`` in a subprocess with stdout and stderr piped (not a
terminal): the column table must come out whole, and every refusal is one ``error:`` line,
exit code 2, no traceback, and no lab home created.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from tests.cli_helpers import run_lab
from tests.conftest import make_vertical, vertical_config


def _write_config(folder: Path, cfg: dict[str, Any]) -> Path:
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _one_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in stderr
    return lines[0]


def test_check_shows_types_and_missing_rates_and_refuses_a_stray_token(
    tmp_path: Path, lab_home: Path
) -> None:
    make_vertical(tmp_path)
    platform = pd.read_csv(tmp_path / "platform.csv", dtype=str, keep_default_na=False)
    platform.loc[4, "score"] = "?"
    platform["tax_grade_reported_by_the_tax_bureau"] = platform.pop("tax_grade")
    platform.loc[7, "tax_grade_reported_by_the_tax_bureau"] = ""
    platform.to_csv(tmp_path / "platform.csv", index=False)
    config = _write_config(tmp_path, vertical_config())

    refused = run_lab(["check", str(config)], home=lab_home)

    assert refused.returncode == 2, refused.stderr
    error = _one_error(refused.stderr)
    assert "party 'platform'" in error
    assert "feature column 'score' looks numeric, but 1 of its 200 values" in error
    assert "'?' at platform.csv:6" in error
    assert 'set na_values: ["?"]' in error
    assert not lab_home.exists()

    fixed = run_lab(
        ["check", str(config), "--set", 'parties.platform.na_values=["?"]'], home=lab_home
    )

    assert fixed.returncode == 0, fixed.stderr
    rows = [line.split() for line in fixed.stdout.splitlines()]
    assert ["column", "type", "missing", "distinct"] in rows
    assert ["id", "id", "0.0%", "200"] in rows
    assert ["y", "label", "0.0%", "2"] in rows
    assert ["product", "categorical", "0.0%", "3"] in rows
    assert ["score", "numeric", "0.5%"] in [row[:3] for row in rows]
    assert ["tax_grade_reported_by_the_tax_bureau", "categorical", "0.5%", "5"] in rows
    assert "…" not in fixed.stdout
    assert f"  file: {tmp_path / 'platform.csv'}" in fixed.stdout.splitlines()
    assert not lab_home.exists()


def test_check_names_the_delimiter_and_the_decimal_mark(tmp_path: Path, lab_home: Path) -> None:
    make_vertical(tmp_path)
    platform = pd.read_csv(tmp_path / "platform.csv", dtype=str)
    platform["score"] = platform["score"].str.replace(".", ",", regex=False)
    platform.to_csv(tmp_path / "platform.csv", index=False, sep=";")
    config = _write_config(tmp_path, vertical_config())

    wrong_delimiter = run_lab(["check", str(config)], home=lab_home)
    assert wrong_delimiter.returncode == 2, wrong_delimiter.stderr
    error = _one_error(wrong_delimiter.stderr)
    assert "looks ';'-delimited (3 columns); set delimiter: ';'" in error

    semicolon = ["--set", "parties.platform.delimiter=;"]
    wrong_decimal = run_lab(["check", str(config), *semicolon], home=lab_home)
    assert wrong_decimal.returncode == 2, wrong_decimal.stderr
    assert "if the comma is the decimal mark, set decimal: ','" in _one_error(wrong_decimal.stderr)

    decimal = ["--set", "parties.platform.decimal=','"]
    fixed = run_lab(["check", str(config), *semicolon, *decimal], home=lab_home)
    assert fixed.returncode == 0, fixed.stderr
    assert ["score", "numeric", "0.0%"] in [line.split()[:3] for line in fixed.stdout.splitlines()]


def test_a_latin1_and_a_gzip_file(tmp_path: Path, lab_home: Path) -> None:
    make_vertical(tmp_path)
    text = (tmp_path / "platform.csv").read_text(encoding="utf-8").replace(",A,", ",Café,")
    (tmp_path / "platform.csv").write_bytes(text.encode("latin-1"))
    (tmp_path / "bank.csv").write_bytes(gzip.compress((tmp_path / "bank.csv").read_bytes()))
    config = _write_config(tmp_path, vertical_config())

    refused = run_lab(["check", str(config)], home=lab_home)
    assert refused.returncode == 2, refused.stderr
    error = _one_error(refused.stderr)
    assert "(0xe9) is not valid utf-8" in error
    assert "set encoding: latin-1 (or cp1252)" in error
    assert "codec can't decode" not in error

    fixed = run_lab(
        ["check", str(config), "--set", "parties.platform.encoding=latin-1"], home=lab_home
    )
    assert fixed.returncode == 0, fixed.stderr  # the gzip-compressed bank file is read as is
    assert "bank (bank): 200 rows" in fixed.stdout


def test_banks_with_different_columns_are_refused_before_flower_starts(
    tmp_path: Path, lab_home: Path
) -> None:
    make_vertical(tmp_path / "one")
    make_vertical(tmp_path / "two", seed=1)
    bank_2 = tmp_path / "two" / "bank.csv"
    frame = pd.read_csv(bank_2)
    frame.rename(columns={"queries": "inquiries"}).to_csv(bank_2, index=False)
    cfg = {
        "name": "two-banks",
        "kind": "horizontal",
        "parties": [
            {"name": "bank_1", "role": "bank", "data": "one/bank.csv", "label_column": "y"},
            {"name": "bank_2", "role": "bank", "data": "two/bank.csv", "label_column": "y"},
        ],
        "model": {"type": "logreg", "rounds": 1},
        "secure_aggregation": {"enabled": False},
    }
    config = _write_config(tmp_path, cfg)
    expected = (
        f'error: the banks\' feature columns differ: bank_2 ({bank_2}) lacks ["queries"] and '
        f'has extra ["inquiries"] compared with bank_1 ({tmp_path / "one" / "bank.csv"}); '
        "every bank of a horizontal job needs the same feature columns"
    )
    for command in ("check", "train"):
        done = run_lab([command, str(config)], home=lab_home)
        assert done.returncode == 2, done.stderr
        assert _one_error(done.stderr).startswith(expected)
        assert "ServerApp" not in done.stderr
        assert not lab_home.exists(), f"lab {command} created the lab home"


@pytest.mark.slow
def test_a_european_export_is_read_by_its_node_with_the_party_settings(
    tmp_path: Path, lab_home: Path
) -> None:
    """A ;-delimited, decimal-comma, latin-1, gzip file with a '?' runs through the runtime."""
    make_vertical(tmp_path)
    platform = pd.read_csv(tmp_path / "platform.csv", dtype=str)
    platform["score"] = platform["score"].str.replace(".", ",", regex=False)
    platform.loc[3, "score"] = "?"
    platform.loc[5, "tax_grade"] = "Café"
    text = platform.to_csv(index=False, sep=";")
    (tmp_path / "platform.csv").write_bytes(gzip.compress(text.encode("latin-1")))
    cfg = vertical_config()
    cfg["parties"][1].update(delimiter=";", decimal=",", encoding="latin-1", na_values=["?"])
    config = _write_config(tmp_path, cfg)

    checked = run_lab(["check", str(config)], home=lab_home)
    assert checked.returncode == 0, checked.stderr
    assert ["score", "numeric", "0.5%"] in [
        line.split()[:3] for line in checked.stdout.splitlines()
    ]

    aligned = run_lab(["align", str(config)], home=lab_home)
    assert aligned.returncode == 0, aligned.stderr
    assert "aligned 200 enterprises" in aligned.stdout
