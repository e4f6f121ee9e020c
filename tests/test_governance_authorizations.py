"""Enterprise authorizations: only enterprises with a valid authorization pass the filter."""

from __future__ import annotations

import tempfile
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.synth import generate_uscc
from lab.governance.audit import AuditLog
from lab.governance.authorizations import REQUIRED_COLUMNS, AuthorizationRegistry
from lab.governance.errors import (
    AuthorizationImportError,
    AuthorizationNotFoundError,
    VocabularyError,
)

HEADER = ",".join(REQUIRED_COLUMNS)
DAY = date(2026, 6, 1)
PURPOSE = "credit_risk_modeling"
TAX = {"tax"}


@pytest.fixture
def registry(tmp_path: Path) -> AuthorizationRegistry:
    return AuthorizationRegistry(tmp_path / "g.db", audit=AuditLog(tmp_path / "log.jsonl"))


@pytest.fixture(scope="module")
def ids() -> list[str]:
    return [str(i) for i in generate_uscc(12, np.random.default_rng(5))]


def _csv(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _row(
    eid: str,
    *,
    bank: str = "bank_1",
    purpose: str = PURPOSE,
    start: str = "2026-01-01",
    end: str = "2026-12-31",
    groups: str = "tax;registration",
    consent: str = "false",
) -> str:
    return f"{eid},{bank},{purpose},{start},{end},{groups},{consent}"


def test_each_reason_for_exclusion(
    registry: AuthorizationRegistry, ids: list[str], tmp_path: Path
) -> None:
    ok, expired, future, revoked, purpose, bank, group, personal, yes_personal = ids[:9]
    path = _csv(
        tmp_path / "auth.csv",
        [
            _row(f"  {ok} "),  # ids are stripped
            _row(expired, end="2026-05-31"),
            _row(future, start="2026-06-02"),
            _row(revoked),
            _row(purpose, purpose="post_loan_monitoring"),
            _row(bank, bank="bank_2"),
            _row(group, groups="registration"),
            _row(personal, groups="tax;key_personnel"),
            _row(yes_personal, groups="tax;key_personnel", consent="yes"),
        ],
    )
    summary = registry.import_csv(path)
    assert (summary.rows, summary.inserted, summary.duplicates) == (9, 9, 0)
    assert registry.revoke(revoked, "bank_1", PURPOSE) == 1

    plain = registry.authorized("bank_1", PURPOSE, DAY, TAX, needs_personal=False)
    assert plain == {ok, personal, yes_personal}
    with_personal = registry.authorized(
        "bank_1", PURPOSE, DAY, {"tax", "key_personnel"}, needs_personal=True
    )
    assert with_personal == {yes_personal}
    # Validity boundaries are inclusive.
    assert expired in registry.authorized("bank_1", PURPOSE, date(2026, 5, 31), TAX, False)
    assert future in registry.authorized("bank_1", PURPOSE, date(2026, 6, 2), TAX, False)


def test_one_authorization_must_cover_every_group(
    registry: AuthorizationRegistry, ids: list[str], tmp_path: Path
) -> None:
    split, whole = ids[:2]
    registry.import_csv(
        _csv(
            tmp_path / "a.csv",
            [
                _row(split, groups="tax"),
                _row(split, groups="customs"),
                _row(whole, groups="tax;customs"),
            ],
        )
    )
    assert registry.authorized("bank_1", PURPOSE, DAY, {"tax", "customs"}, False) == {whole}
    assert registry.authorized("bank_1", PURPOSE, DAY, {"customs"}, False) == {split, whole}


def test_filter_rows_drops_unauthorized_rows(
    registry: AuthorizationRegistry, ids: list[str], tmp_path: Path
) -> None:
    ids = [i for i in ids if any(c.isalpha() for c in i)]  # so that case matters
    registry.import_csv(_csv(tmp_path / "a.csv", [_row(ids[0]), _row(ids[2])]))
    table = np.array([ids[0], ids[1], f" {ids[2]}", ids[3]])
    mask = registry.filter_rows(table, "bank_1", PURPOSE, DAY, TAX, needs_personal=False)
    assert mask.dtype == bool
    assert mask.tolist() == [True, False, True, False]
    lower = np.array([i.lower() for i in table])
    assert registry.filter_rows(lower, "bank_1", PURPOSE, DAY, TAX, False).sum() == 0
    upper = registry.filter_rows(lower, "bank_1", PURPOSE, DAY, TAX, False, id_scheme="uscc")
    assert upper.tolist() == [True, False, True, False]
    empty = registry.filter_rows(np.array([], dtype=str), "bank_1", PURPOSE, DAY, TAX, False)
    assert empty.shape == (0,)


def test_queries_check_the_vocabulary(registry: AuthorizationRegistry) -> None:
    with pytest.raises(VocabularyError, match="unknown feature group 'taxes'"):
        registry.authorized("bank_1", PURPOSE, DAY, {"taxes"}, False)
    with pytest.raises(VocabularyError, match="unknown purpose"):
        registry.authorized("bank_1", "marketing", DAY, TAX, False)


def test_reimport_is_idempotent_and_never_revives_a_revocation(
    registry: AuthorizationRegistry, ids: list[str], tmp_path: Path
) -> None:
    path = _csv(tmp_path / "a.csv", [_row(ids[0]), _row(ids[1])])
    registry.import_csv(path)
    assert registry.revoke(ids[0], "bank_1", PURPOSE) == 1
    assert registry.revoke(ids[0], "bank_1", PURPOSE) == 0
    again = registry.import_csv(path)
    assert (again.inserted, again.duplicates) == (0, 2)
    assert registry.authorized("bank_1", PURPOSE, DAY, TAX, False) == {ids[1]}
    # A renewed authorization is a new row (new validity window) and is valid again.
    registry.import_csv(_csv(tmp_path / "b.csv", [_row(ids[0], start="2026-03-01")]))
    assert registry.authorized("bank_1", PURPOSE, DAY, TAX, False) == {ids[0], ids[1]}
    with pytest.raises(AuthorizationNotFoundError, match="bank_9"):
        registry.revoke(ids[0], "bank_9", PURPOSE)


def test_audit_records_counts_never_ids(
    registry: AuthorizationRegistry, ids: list[str], tmp_path: Path
) -> None:
    registry.import_csv(_csv(tmp_path / "a.csv", [_row(i) for i in ids]))
    registry.revoke(ids[0], "bank_1", PURPOSE)
    imported = next(registry.audit.entries("authorizations_imported")).payload
    assert imported["n_inserted"] == len(ids)
    assert imported["banks"] == ["bank_1"]
    revoked = next(registry.audit.entries("authorization_revoked")).payload
    assert revoked["n_revoked"] == 1
    text = registry.audit.path.read_text()
    assert not [i for i in ids if i in text]
    summary = registry.summary(DAY)
    assert summary == [
        {
            "bank": "bank_1",
            "purpose": PURPOSE,
            "active": len(ids) - 1,
            "valid": len(ids) - 1,
            "revoked": 1,
        }
    ]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            _row("E1", start="2026-13-01"),
            "line 2, column 'valid_from', value '2026-13-01': not a date",
        ),
        (
            _row("E1", start="2026-12-01", end="2026-01-01"),
            "column 'valid_to', value '2026-01-01': before",
        ),
        (
            _row("E1", groups="tax;astrology"),
            "column 'groups', value 'tax;astrology': unknown group",
        ),
        (_row("E1", groups=""), "column 'groups', value '': empty"),
        (
            _row("E1", consent="maybe"),
            "column 'personal_consent', value 'maybe': use true or false",
        ),
        (_row("E1", purpose="marketing"), "column 'purpose', value 'marketing': unknown purpose"),
        (_row("E1", bank="bank one"), "column 'bank', value 'bank one'"),
        (_row(" "), "column 'enterprise_id', value '': empty"),
        ("E1,bank_1", "line 2: 2 cells but the header has 7"),
    ],
)
def test_csv_errors_name_line_column_and_value(
    registry: AuthorizationRegistry, tmp_path: Path, row: str, expected: str
) -> None:
    path = _csv(tmp_path / "bad.csv", [row, _row("E2")])
    with pytest.raises(AuthorizationImportError) as info:
        registry.import_csv(path)
    assert expected in str(info.value)
    assert "nothing imported" in str(info.value)
    assert registry.records() == []
    assert not registry.audit.path.exists()


def test_csv_errors_are_collected_across_rows(
    registry: AuthorizationRegistry, tmp_path: Path
) -> None:
    rows = [_row("E1"), _row("E2", consent="?"), _row("E3", end="soon")]
    with pytest.raises(AuthorizationImportError, match="2 invalid cell") as info:
        registry.import_csv(_csv(tmp_path / "bad.csv", rows))
    assert "line 3, column 'personal_consent'" in str(info.value)
    assert "line 4, column 'valid_to'" in str(info.value)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            "enterprise_id,bank,purpose,valid_from,valid_to,groups",
            "missing columns ['personal_consent']",
        ),
        (HEADER + ",colour", "unknown columns ['colour']"),
    ],
)
def test_csv_header_errors(
    registry: AuthorizationRegistry, tmp_path: Path, header: str, expected: str
) -> None:
    with pytest.raises(AuthorizationImportError, match=r"line 1 \(header\)") as info:
        registry.import_csv(_csv(tmp_path / "bad.csv", [_row("E1")], header=header))
    assert expected in str(info.value)


def test_empty_or_missing_files(registry: AuthorizationRegistry, tmp_path: Path) -> None:
    with pytest.raises(AuthorizationImportError, match="cannot read"):
        registry.import_csv(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(AuthorizationImportError, match="empty file"):
        registry.import_csv(tmp_path / "empty.csv")
    with pytest.raises(AuthorizationImportError, match="no authorizations"):
        registry.import_csv(_csv(tmp_path / "header.csv", []))


GROUP_CHOICES = ["tax", "registration", "customs", "key_personnel"]


@settings(max_examples=40, deadline=None)
@given(
    auths=st.lists(
        st.tuples(
            st.integers(0, 5),  # enterprise
            st.sampled_from(["bank_1", "bank_2"]),
            st.sampled_from([PURPOSE, "pre_loan_screening"]),
            st.integers(-60, 30),  # start offset (days from DAY)
            st.integers(0, 90),  # length
            st.sets(st.sampled_from(GROUP_CHOICES), min_size=1),
            st.booleans(),
            st.booleans(),  # revoked afterwards
        ),
        min_size=1,
        max_size=12,
    ),
    wanted=st.sets(st.sampled_from(GROUP_CHOICES), min_size=1),
)
def test_no_unauthorized_row_passes_the_filter(
    auths: list[tuple[int, str, str, int, int, set[str], bool, bool]], wanted: set[str]
) -> None:
    needs_personal = "key_personnel" in wanted
    eids = [f"E{i}" for i in range(8)]
    rows, revoked = [], set()
    for e, bank, purpose, offset, length, groups, consent, revoke in auths:
        start = DAY + timedelta(days=offset)
        end = start + timedelta(days=length)
        rows.append(
            _row(
                eids[e],
                bank=bank,
                purpose=purpose,
                start=start.isoformat(),
                end=end.isoformat(),
                groups=";".join(sorted(groups)),
                consent=str(consent).lower(),
            )
        )
        if revoke:
            revoked.add((eids[e], bank, purpose))
    with tempfile.TemporaryDirectory() as folder:
        registry = AuthorizationRegistry(
            Path(folder) / "g.db", audit=AuditLog(Path(folder) / "log.jsonl")
        )
        registry.import_csv(_csv(Path(folder) / "a.csv", rows))
        for eid, bank, purpose in revoked:
            registry.revoke(eid, bank, purpose)
        mask = registry.filter_rows(
            np.array(eids), "bank_1", PURPOSE, DAY, wanted, needs_personal=needs_personal
        )
        registry.close()
    expected = []
    for eid in eids:
        expected.append(
            any(
                eids[e] == eid
                and bank == "bank_1"
                and purpose == PURPOSE
                and (eid, bank, purpose) not in revoked
                and DAY + timedelta(days=offset) <= DAY <= DAY + timedelta(days=offset + length)
                and wanted <= groups
                and (consent or not needs_personal)
                for e, bank, purpose, offset, length, groups, consent, _ in auths
            )
        )
    assert mask.tolist() == expected
