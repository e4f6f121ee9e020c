"""The feature-set catalog: specs enforced by pandera, immutable entries, guarded serving."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features.synth import COLUMNS, SMEConfig, generate, write
from lab.governance.audit import AuditLog
from lab.governance.catalog import Catalog, version_key
from lab.governance.errors import (
    CatalogError,
    ColumnNotPublishedError,
    DataDigestMismatchError,
    FeatureSetExistsError,
    FeatureSetNotFoundError,
    PurposeNotAllowedError,
    SpecError,
    SpecViolationError,
)
from lab.governance.quality import SMALL_CELL, quality_report
from lab.governance.spec import (
    FeatureSetSpec,
    load_spec,
    spec_from_dict,
    spec_from_synth_columns,
    write_spec,
)
from lab.governance.validation import build_schema


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("synth")
    dataset = generate(SMEConfig(n_enterprises=400, n_banks=1, seed=3))
    write(dataset, folder)
    spec = spec_from_synth_columns(
        folder / "columns.json",
        name="sme_platform",
        version="1",
        owner="platform-data-team",
        description="Synthetic enterprise features.",
        data=dataset.platform,
    )
    spec_path = write_spec(spec, folder / "spec.yaml")
    frame = pd.read_csv(folder / "platform.csv", dtype=str, keep_default_na=False)
    return {"folder": folder, "spec": spec, "spec_path": spec_path, "frame": frame}


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(tmp_path / "catalog", audit=AuditLog(tmp_path / "log.jsonl"))


def _csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return path


# -- specs ------------------------------------------------------------------------------------


def test_spec_from_synth_metadata(synth: dict[str, Any]) -> None:
    spec: FeatureSetSpec = synth["spec"]
    platform = [c for c in COLUMNS.values() if c.party == "platform"]
    assert list(spec.columns) == [c.name for c in platform]
    assert spec.columns["tax_credit_grade"].categories == ("A", "B", "M", "C", "D")
    assert spec.columns["dishonest_debtor"].type == "boolean"
    assert spec.columns["lawsuits_defendant_3y"].type == "integer"
    assert spec.columns["kp_legal_rep_age"].sensitivity == "personal"
    assert spec.columns["customs_export_12m_10k_usd"].nullable
    assert not spec.columns["firm_age_years"].nullable
    # The same spec from the in-memory metadata, and a round trip through YAML.
    again = spec_from_synth_columns(
        COLUMNS,
        name="sme_platform",
        version="1",
        owner="platform-data-team",
        description="Synthetic enterprise features.",
        data=generate(SMEConfig(n_enterprises=400, n_banks=1, seed=3)).platform,
    )
    assert again.digest() == spec.digest()
    assert load_spec(synth["spec_path"]).digest() == spec.digest()


def test_schema_is_pandera_built_from_the_spec(synth: dict[str, Any]) -> None:
    schema = build_schema(synth["spec"])
    assert schema.strict is True
    assert set(schema.columns) == set(synth["spec"].columns)
    checks = [str(c) for c in schema.columns["tax_credit_grade"].checks]
    assert any("isin" in c for c in checks)


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ({"columns": {"x": {"group": "astrology"}}}, "columns.x.group: unknown feature group"),
        ({"columns": {"x": {"purposes": ["marketing"]}}}, "unknown purpose 'marketing'"),
        ({"columns": {"x": {"type": "categorical", "range": {"min": 0}}}}, "range applies"),
        ({"columns": {"x": {"range": {"min": 3, "max": 1}}}}, "greater than max"),
        ({"version": 1.1}, "quote it"),
        ({"name": "bad name"}, "invalid feature-set name"),
        ({"columns": {"x": {"sensitivity": "secret"}}}, "columns.x.sensitivity"),
        ({"surprise": 1}, "surprise"),
        ({"columns": {"enterprise_id": {}}}, "must not be listed"),
    ],
)
def test_invalid_specs_name_the_key(patch: dict[str, Any], match: str) -> None:
    column = {
        "type": "numeric",
        "description": "d",
        "group": "tax",
        "sensitivity": "internal",
        "purposes": ["credit_risk_modeling"],
    }
    data: dict[str, Any] = {
        "name": "s",
        "version": "1",
        "owner": "o",
        "description": "d",
        "columns": {"x": column},
    }
    for key, value in patch.items():
        if key == "columns":
            data["columns"] = {n: {**column, **v} for n, v in value.items()}
        else:
            data[key] = value
    with pytest.raises(SpecError, match=match):
        spec_from_dict(data)


def test_unreadable_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)


# -- publishing -------------------------------------------------------------------------------


def test_publish_stores_an_immutable_audited_entry(catalog: Catalog, synth: dict[str, Any]) -> None:
    data = synth["folder"] / "platform.csv"
    entry = catalog.publish(synth["spec_path"], data, actor="alice")
    path = catalog.root / "sme_platform" / "1.json"
    assert path.is_file()
    assert path.stat().st_mode & 0o222 == 0  # read-only
    assert entry.ref == "sme_platform@1"
    assert entry.rows == 400
    assert entry.data_digest.startswith("sha256:")
    assert entry.spec_digest == synth["spec"].digest()
    (event,) = list(catalog.audit.entries("feature_set_published"))
    assert event.actor == "alice"
    assert event.payload["data_digest"] == entry.data_digest
    assert event.payload["n_rows"] == 400
    assert "key_personnel" in event.payload["groups"]
    # Same content again: the same entry, nothing new audited.
    assert catalog.publish(synth["spec_path"], data) == entry
    assert len(list(catalog.audit.entries())) == 1
    assert catalog.audit.verify().ok


def test_entry_and_report_hold_no_ids(catalog: Catalog, synth: dict[str, Any]) -> None:
    entry = catalog.publish(synth["spec_path"], synth["folder"] / "platform.csv")
    text = json.dumps(entry.to_dict()) + catalog.audit.path.read_text()
    ids = synth["frame"]["enterprise_id"].tolist()
    assert not [i for i in ids if i in text]
    quality = entry.quality["columns"]
    # Every shown level count is at least the small-cell threshold.
    for column in quality.values():
        for count in column.get("levels", {}).get("counts", {}).values():
            assert count >= SMALL_CELL
    # Single enterprises' values (min/max) only for public and internal columns.
    assert "max" in quality["firm_age_years"]
    assert "max" not in quality["vat_sales_12m_10k_cny"]  # trade secret
    assert "max" not in quality["kp_legal_rep_age"]  # personal
    assert "p01" not in quality["firm_age_years"]["quantiles"]  # needs 1,000 values
    assert "p50" in quality["kp_legal_rep_age"]["quantiles"]


def test_republishing_other_content_is_refused(
    catalog: Catalog, synth: dict[str, Any], tmp_path: Path
) -> None:
    catalog.publish(synth["spec_path"], synth["folder"] / "platform.csv")
    changed = synth["frame"].copy()
    changed.loc[0, "firm_age_years"] = "3.5"
    with pytest.raises(FeatureSetExistsError, match=r"sme_platform@1 .* data differ.*bump"):
        catalog.publish(synth["spec_path"], _csv(changed, tmp_path / "changed.csv"))
    spec = synth["spec"].model_copy(update={"description": "Edited."})
    edited = write_spec(spec, tmp_path / "edited.yaml")
    with pytest.raises(FeatureSetExistsError, match="spec differ"):
        catalog.publish(edited, synth["folder"] / "platform.csv")
    assert len(catalog.list_sets()) == 1


def test_versions_list_and_latest(catalog: Catalog, synth: dict[str, Any], tmp_path: Path) -> None:
    data = synth["folder"] / "platform.csv"
    for version in ("2", "10", "1"):
        spec = synth["spec"].model_copy(update={"version": version})
        catalog.publish(write_spec(spec, tmp_path / f"spec-{version}.yaml"), data)
    assert [e.version for e in catalog.list_sets()] == ["1", "2", "10"]
    assert catalog.show("sme_platform").version == "10"
    assert catalog.show("sme_platform", "2").version == "2"
    assert catalog.show("sme_platform@1").version == "1"
    with pytest.raises(FeatureSetNotFoundError, match="versions of sme_platform: 1, 2, 10"):
        catalog.show("sme_platform", "3")
    with pytest.raises(FeatureSetNotFoundError, match="published: sme_platform"):
        catalog.show("other")
    assert version_key("1.2") < version_key("1.10") < version_key("2")


def test_edited_entry_is_refused(catalog: Catalog, synth: dict[str, Any]) -> None:
    catalog.publish(synth["spec_path"], synth["folder"] / "platform.csv")
    path = catalog.root / "sme_platform" / "1.json"
    data = json.loads(path.read_text())
    data["spec"]["columns"]["kp_legal_rep_age"]["sensitivity"] = "public"
    path.chmod(0o644)
    path.write_text(json.dumps(data))
    with pytest.raises(CatalogError, match="edited after publication"):
        catalog.show("sme_platform")


# -- violations -------------------------------------------------------------------------------


def _violation(
    catalog: Catalog, synth: dict[str, Any], frame: pd.DataFrame, tmp_path: Path
) -> SpecViolationError:
    with pytest.raises(SpecViolationError) as info:
        catalog.publish(synth["spec_path"], _csv(frame, tmp_path / "bad.csv"))
    assert not catalog.list_sets()
    assert not list(catalog.audit.entries())
    return info.value


@pytest.mark.parametrize(
    ("column", "value", "rule", "shown"),
    [
        ("firm_age_years", "abc", "type numeric", "'abc'"),
        ("firm_age_years", "-4", "greater_than_or_equal_to(0.0)", "-4.0"),
        ("tax_credit_grade", "Z", "isin", "'Z'"),
        ("firm_age_years", "", "not_nullable", None),
        ("lawsuits_defendant_3y", "1.5", "integer", "1.5"),
        ("dishonest_debtor", "2", "isin([0.0, 1.0])", "2.0"),
    ],
)
def test_bad_values_name_column_rule_and_line(
    catalog: Catalog,
    synth: dict[str, Any],
    tmp_path: Path,
    column: str,
    value: str,
    rule: str,
    shown: str | None,
) -> None:
    frame = synth["frame"].copy()
    frame.loc[[3, 7], column] = value
    error = _violation(catalog, synth, frame, tmp_path)
    assert [c for c, _ in error.violations] == [column]
    assert rule in error.violations[0][1]
    message = str(error)
    assert f"column '{column}' breaks rule" in message
    assert rule in message
    assert "lines [5, 9]" in message  # header is line 1, row 3 is line 5
    if shown is not None:
        assert shown in message


def test_missing_and_extra_columns(catalog: Catalog, synth: dict[str, Any], tmp_path: Path) -> None:
    frame = synth["frame"].drop(columns=["region"]).assign(shoe_size="42")
    error = _violation(catalog, synth, frame, tmp_path)
    assert set(error.violations) == {
        ("region", "column_in_dataframe"),
        ("shoe_size", "column_in_schema"),
    }
    assert "column 'region' is declared in the spec but missing from the data" in str(error)
    assert "column 'shoe_size' is present in the data but not declared" in str(error)


def test_several_violations_are_reported_together(
    catalog: Catalog, synth: dict[str, Any], tmp_path: Path
) -> None:
    frame = synth["frame"].copy()
    frame.loc[0, "tax_credit_grade"] = "Z"
    frame.loc[1, "firm_age_years"] = "-1"
    error = _violation(catalog, synth, frame, tmp_path)
    assert {c for c, _ in error.violations} == {"tax_credit_grade", "firm_age_years"}


def test_id_problems(catalog: Catalog, synth: dict[str, Any], tmp_path: Path) -> None:
    frame = synth["frame"].copy()
    frame.loc[5, "enterprise_id"] = frame.loc[4, "enterprise_id"]
    error = _violation(catalog, synth, frame, tmp_path)
    assert "duplicate id" in str(error)
    frame = synth["frame"].drop(columns=["enterprise_id"])
    error = _violation(catalog, synth, frame, tmp_path)
    assert error.violations == (("enterprise_id", "id column present"),)


# -- serving ----------------------------------------------------------------------------------


def test_check_served(catalog: Catalog, synth: dict[str, Any], tmp_path: Path) -> None:
    data = tmp_path / "served.csv"
    data.write_bytes((synth["folder"] / "platform.csv").read_bytes())
    catalog.publish(synth["spec_path"], data)
    served = catalog.check_served(
        "sme_platform@1", data, ["tax_credit_grade", "firm_age_years"], purpose="loan_approval"
    )
    assert served.groups == frozenset({"tax", "registration"})
    assert not served.needs_personal_consent
    everything = catalog.check_served("sme_platform@1", data)
    assert everything.needs_personal_consent
    assert len(everything.columns) == len(synth["spec"].columns)

    with pytest.raises(ColumnNotPublishedError, match=r"\['shoe_size'\]"):
        catalog.check_served("sme_platform@1", data, ["firm_age_years", "shoe_size"])
    with pytest.raises(FeatureSetNotFoundError):
        catalog.check_served("sme_platform@2", data, ["firm_age_years"])
    data.write_bytes(data.read_bytes().replace(b"\n", b"\r\n", 1))  # one byte more
    with pytest.raises(DataDigestMismatchError, match="publish a new version"):
        catalog.check_served("sme_platform@1", data, ["firm_age_years"])


def test_purpose_not_allowed(catalog: Catalog, synth: dict[str, Any], tmp_path: Path) -> None:
    spec = synth["spec"]
    columns = dict(spec.columns)
    columns["kp_legal_rep_age"] = columns["kp_legal_rep_age"].model_copy(
        update={"purposes": ("credit_risk_modeling",)}
    )
    narrowed = write_spec(spec.model_copy(update={"columns": columns}), tmp_path / "s.yaml")
    data = synth["folder"] / "platform.csv"
    catalog.publish(narrowed, data)
    catalog.check_served(
        "sme_platform@1", data, ["kp_legal_rep_age"], purpose="credit_risk_modeling"
    )
    with pytest.raises(PurposeNotAllowedError, match="kp_legal_rep_age"):
        catalog.check_served(
            "sme_platform@1", data, ["kp_legal_rep_age"], purpose="post_loan_monitoring"
        )


# -- quality report -----------------------------------------------------------------------------


def test_small_cells_and_secondary_suppression() -> None:
    spec = spec_from_dict(
        {
            "name": "q",
            "version": "1",
            "owner": "o",
            "description": "d",
            "columns": {
                "grade": {
                    "type": "categorical",
                    "description": "d",
                    "group": "tax",
                    "sensitivity": "internal",
                    "purposes": ["credit_risk_modeling"],
                    "nullable": True,
                },
                "few": {
                    "type": "numeric",
                    "description": "d",
                    "group": "tax",
                    "sensitivity": "public",
                    "purposes": ["credit_risk_modeling"],
                    "nullable": True,
                },
            },
        }
    )
    grade = ["A"] * 50 + ["B"] * 12 + ["C"] * 3 + [None] * 5
    few = [1.0] * 5 + [None] * 65
    report = quality_report(spec, pd.DataFrame({"grade": grade, "few": few}))
    levels = report["columns"]["grade"]["levels"]
    assert levels["counts"] == {"A": 50}
    assert levels["suppressed"] == {"levels": 2, "count": 15}
    assert report["columns"]["grade"]["missing"] == 5
    assert report["columns"]["few"]["suppressed"] == f"fewer than {SMALL_CELL} values"
    assert "mean" not in report["columns"]["few"]
