"""Reading and validating one party's table."""

from __future__ import annotations

import bz2
import gzip
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.errors import DataError
from features.io import PartyTable, file_digest, read_header, read_party_table, resolve_data_file
from features.profile import format_profile, profile_columns
from features.same_columns import check_same_features
from features.text_format import DEFAULT_FORMAT, TextFormat
from federated.spec import JobSpec, PartySpec


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


# --- type flips: a mostly numeric column with some text is refused, with the fix ------------


def _numbers(tokens: dict[int, str], n: int = 12) -> str:
    """A CSV of ``n`` rows whose ``amount`` is a number except where ``tokens`` says."""
    rows = [f"E{i},{tokens.get(i, f'{i}.5')},{'AB'[i % 2]}" for i in range(n)]
    return "id,amount,grade\n" + "\n".join(rows) + "\n"


def test_a_question_mark_among_numbers_is_refused_with_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", _numbers({4: "?", 9: "?"}))
    with pytest.raises(DataError) as info:
        read_party_table(path, id_column="id")
    message = str(info.value)
    assert "feature column 'amount' looks numeric, but 2 of its 12 values" in message
    assert "'?' at t.csv:6, t.csv:11" in message
    assert 'set na_values: ["?"]' in message
    assert 'categorical: ["amount"]' in message
    assert "'?'" not in info.value.redacted
    assert "lines [6, 11]" in info.value.redacted


def test_na_values_make_the_column_numeric(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", _numbers({4: "?", 9: " n.a. "}))
    table = read_party_table(path, id_column="id", text_format=TextFormat(na_values=("?", "n.a.")))
    assert table.feature_kinds["amount"] == "numeric"
    amount = table.features["amount"].to_numpy()
    assert np.isnan(amount[[4, 9]]).all()
    assert amount[0] == 0.5


def test_a_code_column_is_categorical_when_the_party_says_so(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", _numbers({4: "HQ"}))
    with pytest.raises(DataError, match=re.escape("'HQ' at t.csv:6")):
        read_party_table(path, id_column="id")
    table = read_party_table(path, id_column="id", categorical=["amount"])
    assert table.feature_kinds["amount"] == "categorical"


def test_a_mostly_text_column_stays_categorical(tmp_path: Path) -> None:
    rows = "".join(f"E{i},{'7' if i == 0 else 'ABC'[i % 3]}\n" for i in range(9))
    table = read_party_table(_write(tmp_path / "t.csv", "id,grade\n" + rows), id_column="id")
    assert table.feature_kinds["grade"] == "categorical"


def test_decimal_commas_are_read_with_decimal_comma(tmp_path: Path) -> None:
    text = "id;amount;grade\nE1;12,5;A\nE2;-0,25;B\nE3;?;A\nE4;3;B\n"
    path = _write(tmp_path / "t.csv", text)
    semicolon = TextFormat(delimiter=";")
    with pytest.raises(DataError) as info:
        read_party_table(path, id_column="id", text_format=semicolon)
    assert "2 number(s) with a decimal comma, e.g. '12,5' at t.csv:2" in str(info.value)
    assert "set decimal: ','" in str(info.value)
    assert 'na_values: ["?"]' in str(info.value)
    european = TextFormat(delimiter=";", decimal=",", na_values=("?",))
    table = read_party_table(path, id_column="id", text_format=european)
    assert table.feature_kinds["amount"] == "numeric"
    np.testing.assert_array_equal(table.features["amount"].to_numpy(), [12.5, -0.25, np.nan, 3.0])


def test_with_decimal_comma_a_point_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", "id;amount\nE1;12,5\nE2;1.500\nE3;3\n")
    with pytest.raises(DataError, match=r"decimal point, e\.g\. '1\.500' at t\.csv:3"):
        read_party_table(path, id_column="id", text_format=TextFormat(delimiter=";", decimal=","))


def test_na_values_apply_to_labels(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", "id,y,a\nE1,0,1\nE2,?,2\nE3,1,3\n")
    with pytest.raises(DataError, match=r"1 missing label\(s\) in column 'y' at lines \[3\]"):
        read_party_table(
            path, id_column="id", label_column="y", text_format=TextFormat(na_values=("?",))
        )


# --- file formats: delimiter, encoding, compression ------------------------------------------


_PLAIN = "id,amount,city\nE1,1.5,Paris\nE2,2.5,Köln\nE3,3.5,Lyon\n"


@pytest.mark.parametrize(
    ("delimiter", "setting"), [(";", "delimiter: ';'"), ("\t", 'delimiter: "\\t"')]
)
def test_a_wrong_delimiter_is_named_with_the_setting(
    tmp_path: Path, delimiter: str, setting: str
) -> None:
    path = _write(tmp_path / "t.csv", _PLAIN.replace(",", delimiter))
    with pytest.raises(DataError, match=r"looks .*-delimited") as info:
        read_party_table(path, id_column="id")
    assert setting in str(info.value)
    with pytest.raises(DataError, match=re.escape(setting)):
        read_header(path)
    table = read_party_table(path, id_column="id", text_format=TextFormat(delimiter=delimiter))
    assert table.feature_names == ["amount", "city"]


def test_a_latin1_file_is_named_with_its_line_and_byte(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(_PLAIN.encode("latin-1"))
    with pytest.raises(DataError) as info:
        read_party_table(path, id_column="id")
    message = str(info.value)
    assert "line 3, byte 9 (0xf6) is not valid utf-8" in message
    assert "set encoding: latin-1" in message
    assert "codec can't decode" not in message
    assert "line 3, byte 9" in info.value.redacted
    assert "Köln" not in info.value.redacted
    table = read_party_table(path, id_column="id", text_format=TextFormat(encoding="latin-1"))
    assert table.features["city"].astype(str).tolist() == ["Paris", "Köln", "Lyon"]


def test_utf8_with_a_byte_order_mark_and_utf16_files(tmp_path: Path) -> None:
    bom = tmp_path / "bom.csv"
    bom.write_bytes(_PLAIN.encode("utf-8-sig"))
    assert read_party_table(bom, id_column="id").n_rows == 3
    wide = tmp_path / "wide.csv"
    wide.write_bytes(_PLAIN.encode("utf-16"))
    with pytest.raises(DataError, match=r"is UTF-16 text .* set encoding: utf-16"):
        read_party_table(wide, id_column="id")
    table = read_party_table(wide, id_column="id", text_format=TextFormat(encoding="utf-16"))
    assert table.features["city"].astype(str).tolist() == ["Paris", "Köln", "Lyon"]


@pytest.mark.parametrize(
    ("name", "compress"),
    [("t.csv", gzip.compress), ("t.csv.gz", gzip.compress), ("t.csv.bz2", bz2.compress)],
)
def test_gzip_and_bz2_files_are_read_transparently(
    tmp_path: Path, name: str, compress: Callable[[bytes], bytes]
) -> None:
    plain = read_party_table(_write(tmp_path / "plain.csv", _PLAIN), id_column="id")
    path = tmp_path / name
    path.write_bytes(compress(_PLAIN.encode()))
    table = read_party_table(path, id_column="id")
    pd.testing.assert_frame_equal(table.features, plain.features)
    assert table.digest == file_digest(path)
    assert read_header(path) == ["id", "amount", "city"]


@pytest.mark.parametrize(
    ("magic", "fragment"),
    [
        (b"PK\x03\x04rest", "is a zip archive (an Excel .xlsx workbook is one too)"),
        (b"\xfd7zXZ\x00rest", "is xz-compressed"),
        (b"\x28\xb5\x2f\xfdrest", "is zstd-compressed"),
        (b"PAR1rest", "is a Parquet file; rename it"),
    ],
)
def test_other_binary_files_are_refused_with_what_to_do(
    tmp_path: Path, magic: bytes, fragment: str
) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(magic)
    with pytest.raises(DataError, match=re.escape(fragment)):
        read_party_table(path, id_column="id")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"delimiter": "\\t"}, 'for a tab write delimiter: "\\t"'),
        ({"delimiter": '"'}, "cannot be a delimiter"),
        ({"encoding": "klingon"}, "unknown encoding 'klingon'"),
        ({"encoding": "base64"}, "not a text encoding"),
        ({"decimal": ";"}, "decimal must be"),
    ],
)
def test_text_format_refuses_bad_settings(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        TextFormat(**kwargs)


# --- what lab check shows: type and missing rate per column ---------------------------------


def test_profile_shows_type_missing_rate_and_full_names(tmp_path: Path) -> None:
    long = "settlement_inflow_monthly_10k_cny"
    path = _write(tmp_path / "t.csv", f"id,y,{long},grade\nE1,0,1,A\nE2,1,,B\nE3,0,3,A\nE4,1,4,\n")
    table = read_party_table(path, id_column="id", label_column="y")
    profiles = profile_columns(table)
    assert [(p.name, p.type, p.missing, p.distinct) for p in profiles] == [
        ("id", "id", 0.0, 4),
        ("y", "label", 0.0, 2),
        (long, "numeric", 0.25, 3),
        ("grade", "categorical", 0.25, 2),
    ]
    assert format_profile(profiles) == [
        "  column                             type         missing  distinct",
        "  id                                 id              0.0%         4",
        "  y                                  label           0.0%         2",
        "  settlement_inflow_monthly_10k_cny  numeric        25.0%         3",
        "  grade                              categorical    25.0%         2",
    ]


# --- a horizontal job's banks: the same feature columns --------------------------------------


def test_banks_with_different_columns_are_named(tmp_path: Path) -> None:
    def bank(name: str, header: str, row: str) -> PartyTable:
        text = f"id,y,{header}\n" + "".join(f"E{i},{i % 2},{row}\n" for i in range(4))
        return read_party_table(_write(tmp_path / name, text), id_column="id", label_column="y")

    one = bank("b1.csv", "a,b", "1,2")
    check_same_features({"bank_1": one, "bank_3": bank("b3.csv", "a,b", "3,4")})
    with pytest.raises(DataError) as info:
        check_same_features({"bank_1": one, "bank_2": bank("b2.csv", "a,c", "1,2")})
    assert str(info.value) == (
        f'the banks\' feature columns differ: bank_2 ({tmp_path / "b2.csv"}) lacks ["b"] and '
        f'has extra ["c"] compared with bank_1 ({tmp_path / "b1.csv"}); every bank of a '
        "horizontal job needs the same feature columns; rename or add them, or list the shared "
        "ones under each bank's 'features'"
    )
    with pytest.raises(DataError, match=r"'b' is categorical \(at bank_1 .*\): numeric\)"):
        check_same_features({"bank_1": one, "bank_2": bank("k.csv", "a,b", "1,x")})
    with pytest.raises(DataError, match="in another order"):
        check_same_features({"bank_1": one, "bank_2": bank("o.csv", "b,a", "1,2")})


def test_the_text_format_travels_in_the_job_spec() -> None:
    fmt = TextFormat(delimiter=";", encoding="latin-1", decimal=",", na_values=("?",))
    spec = JobSpec(
        job_id="j",
        name="n",
        kind="vertical",
        parties=(PartySpec("bank", "bank", "id", "y", text_format=fmt), PartySpec("p", "platform")),
        model={"type": "secureboost"},
        crypto={},
    )
    back = JobSpec.from_json(spec.to_json())
    assert back.parties[0].text_format == fmt
    assert back.parties[1].text_format == DEFAULT_FORMAT
