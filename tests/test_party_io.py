"""Reading and validating one party's table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.errors import DataError
from features.io import file_digest, read_party_table, resolve_data_file


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_types_missing_values_and_id_normalisation(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "t.csv",
        "id,y,amount,grade,code\n 007 ,1,1.5,A,10\n8,0,,B,20\n9,0,NA,,30\n10,1,2.5,C,NULL\n",
    )
    table = read_party_table(path, id_column="id", label_column="y", categorical=["code"])
    assert table.ids.tolist() == ["007", "8", "9", "10"]
    assert table.label is not None
    assert table.label.tolist() == [1, 0, 0, 1]
    assert table.feature_kinds == {
        "amount": "numeric",
        "grade": "categorical",
        "code": "categorical",
    }
    assert np.isnan(table.features["amount"].to_numpy()[1:3]).all()
    assert table.features["grade"].isna().tolist() == [False, False, True, False]
    assert table.features["code"].astype(str).tolist()[:3] == ["10", "20", "30"]
    assert table.digest == file_digest(path)


def test_feature_subset(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", "id,a,b,c\n1,1,2,3\n2,4,5,6\n")
    table = read_party_table(path, id_column="id", features=["c", "a"])
    assert table.feature_names == ["c", "a"]


def test_parquet_is_read_with_native_types(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pd.DataFrame(
        {"id": [1, 2, 3], "y": [0, 1, 0], "x": [0.5, None, 1.5], "s": ["a", None, "b"]}
    ).to_parquet(path)
    table = read_party_table(path, id_column="id", label_column="y")
    assert table.ids.tolist() == ["1", "2", "3"]
    assert table.feature_kinds == {"x": "numeric", "s": "categorical"}


def test_directory_with_one_table(tmp_path: Path) -> None:
    _write(tmp_path / "only.csv", "id,a\n1,2\n")
    _write(tmp_path / "notes.txt", "not a table")
    assert resolve_data_file(tmp_path) == tmp_path / "only.csv"


def test_duplicate_ids_are_redacted_for_other_domains(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", "id,a\nSECRET1,1\nSECRET1,2\nB,3\n")
    with pytest.raises(DataError) as info:
        read_party_table(path, id_column="id")
    assert "SECRET1" in str(info.value)
    assert "SECRET1" not in info.value.redacted
    assert "lines [2, 3]" in info.value.redacted


def test_ids_stored_as_floats_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pd.DataFrame({"id": [1.0, 2.0], "a": [1, 2]}).to_parquet(path)
    with pytest.raises(DataError, match="floating point"):
        read_party_table(path, id_column="id")


def test_duplicate_column_names(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", "id,a,a\n1,2,3\n")
    with pytest.raises(DataError, match=r"duplicate column names \['a'\]"):
        read_party_table(path, id_column="id")


def test_categorical_that_is_not_a_feature(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", "id,a\n1,2\n")
    with pytest.raises(DataError, match="not feature columns"):
        read_party_table(path, id_column="id", categorical=["b"])
