"""The synthetic SME generator: determinism, schema, realism, non-IID banks, output."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.synth import (
    BANK_COLUMNS,
    COLUMNS,
    ID_COLUMN,
    LABEL_COLUMN,
    PLATFORM_COLUMNS,
    SMEConfig,
    SMEDataset,
    generate,
    is_valid_uscc,
    load,
    measure_signal,
    write,
)
from features.synth.schema import GROUPS, INDUSTRIES, TAX_GRADES

PLATFORM_GROUPS = GROUPS[:12]
BANK_GROUPS = GROUPS[12:]


@pytest.fixture(scope="module")
def small() -> SMEDataset:
    return generate(SMEConfig(n_enterprises=5000, seed=11))


@pytest.fixture(scope="module")
def three_banks() -> SMEDataset:
    return generate(SMEConfig(n_enterprises=30_000, n_banks=3, seed=3))


@pytest.fixture(scope="module")
def large() -> SMEDataset:
    """Enough borrowers (~40k) for stable default rates by tax grade."""
    return generate(SMEConfig(n_enterprises=100_000, seed=21))


def _tables(ds: SMEDataset) -> dict[str, pd.DataFrame]:
    return {"platform": ds.platform, **ds.banks}


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_identical_frames(small: SMEDataset) -> None:
    again = generate(SMEConfig(n_enterprises=5000, seed=11))
    for name, frame in _tables(small).items():
        pd.testing.assert_frame_equal(frame, _tables(again)[name])


def test_different_seed_gives_different_data(small: SMEDataset) -> None:
    other = generate(SMEConfig(n_enterprises=5000, seed=12))
    assert not set(small.platform[ID_COLUMN]) & set(other.platform[ID_COLUMN])
    assert not small.platform["firm_age_years"].equals(other.platform["firm_age_years"])
    assert not small.banks["bank_1"][LABEL_COLUMN].equals(other.banks["bank_1"][LABEL_COLUMN])


# ------------------------------------------------------------------------ ids


def test_ids_are_valid_uscc_and_unique(three_banks: SMEDataset) -> None:
    ids = three_banks.platform[ID_COLUMN]
    assert ids.is_unique
    assert all(is_valid_uscc(code) for code in ids)
    assert ids.str.startswith("91").mean() > 0.8
    for frame in three_banks.banks.values():
        assert frame[ID_COLUMN].is_unique  # each enterprise at most once per bank
        assert all(is_valid_uscc(code) for code in frame[ID_COLUMN])


def test_id_is_the_first_column_and_the_only_shared_one(small: SMEDataset) -> None:
    plat, bank = small.platform, small.banks["bank_1"]
    assert plat.columns[0] == ID_COLUMN == bank.columns[0]
    assert set(plat.columns) & set(bank.columns) == {ID_COLUMN}


# --------------------------------------------------------------------- schema


def test_columns_follow_the_schema(small: SMEDataset) -> None:
    assert list(small.platform.columns) == [ID_COLUMN] + [c.name for c in PLATFORM_COLUMNS]
    for frame in small.banks.values():
        assert list(frame.columns) == [ID_COLUMN] + [c.name for c in BANK_COLUMNS]
        assert frame.columns[-1] == LABEL_COLUMN


def test_metadata_covers_every_column(small: SMEDataset) -> None:
    for name, frame in _tables(small).items():
        party = "platform" if name == "platform" else "bank"
        for col in frame.columns[1:]:
            info = small.columns[col]
            assert info.party == party
            assert info.group in GROUPS
            assert info.description
    assert set(small.columns) == {c for f in _tables(small).values() for c in f.columns[1:]}


def test_dtypes_match_metadata(small: SMEDataset) -> None:
    for frame in _tables(small).values():
        assert pd.api.types.is_string_dtype(frame[ID_COLUMN])
        for col in frame.columns[1:]:
            info = COLUMNS[col]
            if info.dtype == "categorical":
                assert isinstance(frame[col].dtype, pd.CategoricalDtype), col
                assert tuple(frame[col].cat.categories) == info.categories
                assert all(isinstance(v, str) for v in frame[col].cat.categories)
            else:
                assert pd.api.types.is_numeric_dtype(frame[col]), col


def test_label_is_binary(small: SMEDataset) -> None:
    label = small.banks["bank_1"][LABEL_COLUMN]
    assert label.dtype == np.int64
    assert set(label.unique()) == {0, 1}
    assert COLUMNS[LABEL_COLUMN].role == "label"
    assert [c.name for c in COLUMNS.values() if c.role == "label"] == [LABEL_COLUMN]


def test_every_published_group_is_present_and_key_personnel_is_personal() -> None:
    assert {c.group for c in PLATFORM_COLUMNS} == set(PLATFORM_GROUPS)
    assert {c.group for c in BANK_COLUMNS} == set(BANK_GROUPS)
    for info in COLUMNS.values():
        assert (info.group == "key_personnel") == (info.sensitivity == "personal"), info.name


def test_categorical_values_are_readable_strings(small: SMEDataset) -> None:
    plat = small.platform
    assert set(plat["industry"].cat.categories) == set(INDUSTRIES)
    assert "C Manufacturing" in set(plat["industry"])
    assert set(plat["tax_credit_grade"].unique()) == set(TAX_GRADES)
    assert plat["region"].notna().all()


def test_only_declared_columns_have_missing_values(small: SMEDataset) -> None:
    for frame in _tables(small).values():
        for col in frame.columns[1:]:
            if COLUMNS[col].missing == "none":
                assert frame[col].notna().all(), col


# ------------------------------------------------------------------- realism


def test_portfolio_default_rate(three_banks: SMEDataset) -> None:
    city = three_banks.banks["bank_1"][LABEL_COLUMN].mean()
    assert 0.025 < city < 0.045
    pooled = pd.concat([b[LABEL_COLUMN] for b in three_banks.banks.values()]).mean()
    assert 0.03 < pooled < 0.045


def test_unmatched_rate_and_platform_coverage(three_banks: SMEDataset) -> None:
    known = set(three_banks.platform[ID_COLUMN])
    for frame in three_banks.banks.values():
        unmatched = 1.0 - frame[ID_COLUMN].isin(known).mean()
        assert unmatched == pytest.approx(0.10, abs=0.002)
        assert len(three_banks.platform) >= 2 * len(frame)


def test_unmatched_rate_follows_config() -> None:
    ds = generate(SMEConfig(n_enterprises=2000, unmatched_rate=0.3, seed=1))
    bank = ds.banks["bank_1"]
    assert 1.0 - bank[ID_COLUMN].isin(ds.platform[ID_COLUMN]).mean() == pytest.approx(0.3, abs=0.01)
    none = generate(SMEConfig(n_enterprises=2000, unmatched_rate=0.0, seed=1))
    assert none.banks["bank_1"][ID_COLUMN].isin(none.platform[ID_COLUMN]).all()


def test_matched_rows_are_not_grouped_in_the_bank_table(small: SMEDataset) -> None:
    known = small.banks["bank_1"][ID_COLUMN].isin(small.platform[ID_COLUMN]).to_numpy()
    half = len(known) // 2
    assert abs(known[:half].mean() - known[half:].mean()) < 0.05


def test_tax_grade_default_rates_are_monotone(large: SMEDataset) -> None:
    joined = large.matched("bank_1")
    rate = joined.groupby("tax_credit_grade", observed=True)[LABEL_COLUMN].mean()
    assert rate["A"] < rate["B"] < rate["C"] < rate["D"]
    assert rate["B"] < rate["M"] < rate["D"]
    assert rate["A"] < 0.01
    assert rate["D"] > 0.12
    assert rate["D"] / rate["A"] > 15


def test_customs_values_are_structurally_missing(small: SMEDataset) -> None:
    plat = small.platform
    trader = plat["customs_trader"] == 1
    for col in ("customs_export_12m_10k_usd", "customs_credit_class"):
        assert plat.loc[~trader, col].isna().all()
        assert plat.loc[trader, col].notna().all()
    assert 0.05 < trader.mean() < 0.25


def test_utilities_missing_not_at_random(large: SMEDataset) -> None:
    plat = large.platform
    absent = plat["elec_kwh_12m"].isna()
    assert 0.25 < absent.mean() < 0.6
    assert (plat["utility_arrears_count_12m"].isna() == absent).all()
    assert plat.loc[absent, "elec_yoy_change"].isna().all()
    # leased offices: manufacturers usually have their own meter, IT firms rarely
    by_industry = absent.groupby(plat["industry"], observed=True).mean()
    assert by_industry["C Manufacturing"] + 0.2 < by_industry[INDUSTRIES[6]]
    # and absence carries risk the observed columns do not explain
    joined = large.matched("bank_1")
    rates = joined.groupby(joined["elec_kwh_12m"].isna())[LABEL_COLUMN].mean()
    assert rates[True] > 1.2 * rates[False]


def test_other_structural_missingness(small: SMEDataset) -> None:
    plat = small.platform
    assert plat.loc[plat["firm_age_years"] < 2, "vat_sales_growth_yoy"].isna().all()
    assert plat.loc[plat["firm_age_years"] < 1, "si_headcount_change_12m"].isna().all()


def test_dishonest_debtor_is_rare_and_strong(large: SMEDataset) -> None:
    assert 0.005 < large.platform["dishonest_debtor"].mean() < 0.02
    joined = large.matched("bank_1")
    rates = joined.groupby("dishonest_debtor")[LABEL_COLUMN].mean()
    assert rates[1] > 5 * rates[0]


def test_latent_health_correlates_observables(large: SMEDataset) -> None:
    plat = large.platform
    grade_rank = plat["tax_credit_grade"].map({"A": 0, "B": 1, "C": 2, "D": 3, "M": np.nan})
    pairs = [
        (grade_rank.astype(float), plat["si_arrears_months_12m"].astype(float), 0.1),
        (plat["vat_sales_growth_yoy"], plat["elec_yoy_change"], 0.2),
        (plat["vat_sales_growth_yoy"], plat["si_headcount_change_12m"], 0.2),
    ]
    for a, b, floor in pairs:
        rho = float(pd.concat([a, b], axis=1).dropna().corr(method="spearman").to_numpy()[0, 1])
        assert abs(rho) > floor, (a.name, b.name, rho)


# -------------------------------------------------------------------- non-IID


def _industry_mix(frame: pd.DataFrame) -> pd.Series:
    return frame["borrower_industry"].value_counts(normalize=True).reindex(INDUSTRIES)


def test_banks_differ_in_default_rate_and_industry_mix(three_banks: SMEDataset) -> None:
    assert three_banks.bank_profiles == {
        "bank_1": "city_commercial",
        "bank_2": "rural_commercial",
        "bank_3": "joint_stock",
    }
    rate = {k: b[LABEL_COLUMN].mean() for k, b in three_banks.banks.items()}
    assert rate["bank_2"] > rate["bank_1"] > rate["bank_3"]
    assert rate["bank_2"] - rate["bank_3"] > 0.02
    mix = {k: _industry_mix(b) for k, b in three_banks.banks.items()}
    agriculture = INDUSTRIES[0]
    assert mix["bank_2"][agriculture] > 3 * mix["bank_3"][agriculture]
    assert 0.5 * (mix["bank_2"] - mix["bank_3"]).abs().sum() > 0.1


def test_heterogeneity_zero_gives_similar_banks() -> None:
    ds = generate(SMEConfig(n_enterprises=30_000, n_banks=3, heterogeneity=0.0, seed=3))
    rates = [b[LABEL_COLUMN].mean() for b in ds.banks.values()]
    assert max(rates) - min(rates) < 0.012
    mix = [_industry_mix(b) for b in ds.banks.values()]
    assert 0.5 * (mix[1] - mix[2]).abs().sum() < 0.05


def test_explicit_sizes_profiles_and_rates() -> None:
    cfg = SMEConfig(
        n_enterprises=3000,
        n_banks=2,
        bank_sizes=(500, 1200),
        bank_profiles=("joint_stock", "joint_stock"),
        default_rates=(0.02, 0.08),
        seed=5,
    )
    ds = generate(cfg)
    assert [len(b) for b in ds.banks.values()] == [500, 1200]
    assert ds.banks["bank_2"][LABEL_COLUMN].mean() > ds.banks["bank_1"][LABEL_COLUMN].mean()


# ------------------------------------------------------------ config checks


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_enterprises": 10}, "n_enterprises"),
        ({"n_enterprises": 2000.0}, "n_enterprises"),
        ({"n_enterprises": True}, "n_enterprises"),
        ({"n_banks": 0}, "n_banks"),
        ({"bank_share": 0.0}, "bank_share"),
        ({"bank_share": 1.5}, "bank_share"),
        ({"unmatched_rate": -0.1}, "unmatched_rate"),
        ({"unmatched_rate": 0.95}, "unmatched_rate"),
        ({"seed": -1}, "seed"),
        ({"heterogeneity": 5.0}, "heterogeneity"),
        ({"bank_sizes": (100, 200)}, "bank_sizes"),
        ({"bank_sizes": (5,)}, "bank_sizes"),
        ({"bank_sizes": (50_000,)}, "bank_sizes"),
        ({"bank_profiles": ("savings_bank",)}, "bank_profiles"),
        ({"bank_profiles": ("joint_stock", "joint_stock")}, "bank_profiles"),
        ({"default_rates": (0.5,)}, "default_rates"),
        ({"n_enterprises": 100, "bank_share": 0.1}, "bank_sizes"),
    ],
)
def test_config_validation_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SMEConfig(**kwargs)  # type: ignore[arg-type]


def test_config_derives_sizes_and_serialises() -> None:
    cfg = SMEConfig(n_banks=3)
    assert cfg.bank_names == ("bank_1", "bank_2", "bank_3")
    sizes = cfg.resolved_bank_sizes()
    assert sizes[0] == 8000
    assert all(s < cfg.n_enterprises / 2 for s in sizes)
    assert SMEConfig(bank_sizes=[300]).bank_sizes == (300,)  # type: ignore[arg-type]
    fields: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in cfg.to_dict().items()
    }
    again = SMEConfig(**fields)
    assert again == cfg
    json.dumps(cfg.to_dict())


# ---------------------------------------------------------------------- write


def test_write_outputs_and_manifest(small: SMEDataset, tmp_path: Path) -> None:
    out = tmp_path / "data"
    manifest_path = write(small, out)
    names = {p.name for p in out.iterdir()}
    assert names == {"platform.csv", "bank_1.csv", "columns.json", "manifest.json"}
    manifest = json.loads(manifest_path.read_text())
    assert manifest["config"] == small.config.to_dict()
    assert manifest["platform"]["rows"] == len(small.platform)
    bank = manifest["banks"]["bank_1"]
    assert bank["rows"] == len(small.banks["bank_1"])
    assert bank["default_rate"] == pytest.approx(small.banks["bank_1"][LABEL_COLUMN].mean())
    assert bank["matched_fraction"] == pytest.approx(0.9, abs=0.01)
    for name, entry in manifest["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == entry["sha256"]
    assert set(manifest["files"]) == names - {"manifest.json"}
    columns = json.loads((out / "columns.json").read_text())
    assert set(columns) == set(small.columns)
    assert columns["kp_legal_rep_age"]["sensitivity"] == "personal"


def test_written_files_are_reproducible(small: SMEDataset, tmp_path: Path) -> None:
    first = json.loads(write(small, tmp_path / "a").read_text())
    again = generate(small.config)
    second = json.loads(write(again, tmp_path / "b").read_text())
    assert first == second


def test_write_round_trips_through_load(small: SMEDataset, tmp_path: Path) -> None:
    write(small, tmp_path)
    back = load(tmp_path)
    assert back.config == small.config
    assert back.columns == small.columns
    for name, frame in _tables(small).items():
        pd.testing.assert_frame_equal(_tables(back)[name], frame, check_dtype=True)


def test_write_refuses_to_overwrite(small: SMEDataset, tmp_path: Path) -> None:
    write(small, tmp_path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write(small, tmp_path)
    (tmp_path / "bank_7.csv").write_text("stale\n")
    (tmp_path / "notes.txt").write_text("keep me\n")
    write(small, tmp_path, overwrite=True)
    assert not (tmp_path / "bank_7.csv").exists()
    assert (tmp_path / "notes.txt").read_text() == "keep me\n"
    other = tmp_path / "other"
    other.mkdir()
    (other / "x").write_text("")
    with pytest.raises(FileExistsError):
        write(small, other)
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(FileExistsError, match="not a directory"):
        write(small, a_file, overwrite=True)


def test_load_detects_tampering(small: SMEDataset, tmp_path: Path) -> None:
    write(small, tmp_path)
    with (tmp_path / "bank_1.csv").open("a") as fh:
        fh.write("\n")
    with pytest.raises(ValueError, match="sha256"):
        load(tmp_path)


# --------------------------------------------------------------------- signal


def test_joint_model_beats_each_party_alone() -> None:
    ds = generate(SMEConfig(n_enterprises=12_000, bank_share=0.8, seed=2))
    report = measure_signal(ds, n_estimators=60, learning_rate=0.1, n_splits=3)
    assert report.n_defaults > 200
    assert report.auc_joint > report.auc_bank + 0.01
    assert report.auc_joint > report.auc_platform + 0.01
    assert report.auc_platform > report.auc_bank
    assert 0.6 < report.auc_bank < report.auc_joint < 0.9
