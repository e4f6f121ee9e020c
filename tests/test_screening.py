"""Screening before training: stability indices and IV selection, each at the column's holder.

The indices each party's node computes from its own columns are checked against a plain pandas
computation on the joined data; the bank is shown never to receive a platform value or bin
edge; the IV the bank computes from encrypted counts equals the plaintext one, and the columns
it drops are left out of the joint model.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features import stability
from features.woe import WoeTable
from federated.driver import run_job
from federated.party import DictStore, PartyRuntime
from federated.protocols import party_protocols
from federated.spec import JobSpec, PartyBinding, PartySpec, ScreeningSpec
from federated.transport import InProcessTransport, PartyError
from models.alignment import ALIGNED_ROWS_KEY
from models.evaluation import TEST_MASK_KEY
from models.guard import PolicyRefusalError
from models.protocol import Envelope
from tests.conftest import TEST_LIMITS

BINS = 10


# -- plaintext reference: pandas only ------------------------------------------------------------


def _plain_codes(reference: pd.Series, values: pd.Series, categorical: bool) -> pd.Series:
    """Bin codes of ``values`` over bins fixed on ``reference`` (missing: its own code)."""
    if categorical:
        counts = reference.dropna().astype(str).value_counts()
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: BINS - 1]
        keep = {cat: i for i, (cat, _) in enumerate(ranked)}
        codes = values.astype("string").map(lambda v: keep.get(v, len(keep)), na_action="ignore")
        return codes.astype("Float64").fillna(-1).astype(int)
    ref = reference.dropna().to_numpy(dtype=float)
    distinct = np.unique(ref)
    if distinct.size <= BINS:
        edges = distinct[:-1]
    else:
        edges = np.unique(np.quantile(ref, np.linspace(0, 1, BINS + 1)[1:-1]))
        edges = edges[edges < distinct[-1]]
    cut = pd.cut(values, bins=[-np.inf, *edges, np.inf], right=True, labels=False)
    return cut.fillna(-1).astype(int)


def _plain_psi(reference: pd.Series, recent: pd.Series, categorical: bool) -> float:
    e = _plain_codes(reference, reference, categorical).value_counts(normalize=True)
    a = _plain_codes(reference, recent, categorical).value_counts(normalize=True)
    codes = e.index.union(a.index)
    e = e.reindex(codes, fill_value=0.0).clip(lower=1e-4)
    a = a.reindex(codes, fill_value=0.0).clip(lower=1e-4)
    return float(((a - e) * np.log(a / e)).sum())


# -- data: overlapping but different populations, and shifted recent windows -------------------


def _write(folder: Path, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    n = 420
    ids = [f"E{i:05d}" for i in range(n)]
    signal = rng.normal(size=n)
    y = (signal + rng.normal(size=n) > 0.8).astype(int)
    bank = pd.DataFrame(
        {
            "id": ids,
            "y": y,
            "deposits": rng.normal(size=n).round(3),
            "queries": rng.integers(0, 5, size=n),
            "product": rng.choice(["tax_loan", "credit", "mortgage"], size=n),
        }
    ).iloc[:360]  # the bank lends to the first 360
    platform = pd.DataFrame(
        {
            "id": ids,
            "tax_grade": rng.choice(list("ABMCD"), size=n),
            "score": (signal + rng.normal(scale=0.5, size=n)).round(3),
        }
    ).iloc[60:]  # the platform serves the last 360: 300 in common
    recent_bank = bank.drop(columns="y").assign(
        deposits=lambda f: (f["deposits"] + 0.4).where(rng.uniform(size=len(f)) > 0.1),
        queries=lambda f: f["queries"] + (rng.uniform(size=len(f)) < 0.3),
    )
    recent_platform = platform.assign(
        score=lambda f: f["score"] * 1.3 + 0.5,
        tax_grade=lambda f: f["tax_grade"].where(rng.uniform(size=len(f)) > 0.2, "D"),
    ).iloc[::2]
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "bank": folder / "bank.csv",
        "platform": folder / "platform.csv",
        "bank_recent": folder / "bank_recent.csv",
        "platform_recent": folder / "platform_recent.csv",
    }
    for key, frame in (
        ("bank", bank),
        ("platform", platform),
        ("bank_recent", recent_bank),
        ("platform_recent", recent_platform),
    ):
        frame.to_csv(paths[key], index=False)
    return paths


def _spec(screening: ScreeningSpec, **model: Any) -> JobSpec:
    return JobSpec(
        job_id="screen1",
        name="screen",
        kind="vertical",
        parties=(PartySpec("bank", "bank", "id", "y"), PartySpec("platform", "platform", "id")),
        model={"type": "secureboost", "n_estimators": 2, "max_depth": 2, "max_bin": 8, **model},
        crypto={"key_bits": 512, "insecure_test_keys": True},
        screening=screening,
    )


def _transport(
    folder: Path, paths: dict[str, Path], *, detail: str = "feature", tap: Any = None
) -> InProcessTransport:
    def runtime(name: str, recent: Path, limits: Any) -> PartyRuntime:
        binding = PartyBinding(name, name, paths[name], store=folder / name, recent=recent)  # type: ignore[arg-type]
        return PartyRuntime(
            binding, DictStore(), party_protocols(), disclose_errors=True, limits=limits
        )

    return InProcessTransport(
        {
            "bank": runtime("bank", paths["bank_recent"], TEST_LIMITS),
            "platform": runtime(
                "platform", paths["platform_recent"], replace(TEST_LIMITS, csi_detail=detail)
            ),
        },
        tap=tap,
    )


def _joined(paths: dict[str, Path]) -> pd.DataFrame:
    bank = pd.read_csv(paths["bank"], dtype={"id": str})
    platform = pd.read_csv(paths["platform"], dtype={"id": str})
    return bank.merge(platform, on="id", how="inner")


# -- tests ---------------------------------------------------------------------------------------


def test_stability_indices_equal_a_plaintext_computation_on_joined_data(tmp_path: Path) -> None:
    paths = _write(tmp_path / "data")
    transport = _transport(tmp_path, paths)
    spec = _spec(ScreeningSpec(recent={"bank": None, "platform": None}, bins=BINS))
    result = run_job(spec, transport)
    joined = _joined(paths)
    assert result.n_aligned == len(joined) == 300
    recent = {
        "bank": pd.read_csv(paths["bank_recent"], dtype={"id": str}),
        "platform": pd.read_csv(paths["platform_recent"], dtype={"id": str}),
    }
    categorical = {"product", "tax_grade"}
    for party in ("bank", "platform"):
        report = result.screening["csi"][party]
        assert report["n_reference"] == 300
        assert report["n_recent"] == len(recent[party])
        assert report["detail"] == "feature"
        for entry in report["features"]:
            name = entry["name"]
            plain = _plain_psi(joined[name], recent[party][name], name in categorical)
            assert entry["index"] == pytest.approx(plain, abs=1e-12), (party, name)
            assert entry["shift"] == stability.shift(plain)
            assert sum(entry["expected"]) == 300
    csi = {e["name"]: e["index"] for e in result.screening["csi"]["platform"]["features"]}
    assert csi["score"] >= 0.1  # the recent scores were stretched and shifted
    assert set(result.stage_seconds) >= {"screen"}


def test_a_platform_shares_only_group_aggregates_by_default(tmp_path: Path) -> None:
    paths = _write(tmp_path / "data")
    transport = _transport(tmp_path, paths, detail="group")
    spec = _spec(ScreeningSpec(recent={"platform": None}, bins=BINS))
    result = run_job(spec, transport)
    report = result.screening["csi"]["platform"]
    assert "features" not in report
    assert set(report["groups"]) == {"other"}  # unpublished columns have no group
    group = report["groups"]["other"]
    joined = _joined(paths)
    recent = pd.read_csv(paths["platform_recent"], dtype={"id": str})
    plain = [_plain_psi(joined[c], recent[c], c == "tax_grade") for c in ("tax_grade", "score")]
    assert group["n_features"] == 2
    assert group["csi_mean"] == pytest.approx(float(np.mean(plain)), abs=1e-12)
    assert group["csi_max"] == pytest.approx(max(plain), abs=1e-12)
    assert set(group) == {
        "n_features",
        "csi_mean",
        "csi_max",
        "n_moderate",
        "n_significant",
        "shift",
    }
    assert "bank" not in result.screening["csi"]


def test_iv_selection_equals_plaintext_and_no_platform_value_or_edge_reaches_the_bank(
    tmp_path: Path,
) -> None:
    paths = _write(tmp_path / "data")
    to_bank: list[Envelope] = []
    seen: list[Envelope] = []

    def tap(direction: str, env: Envelope) -> None:
        if direction != "to_party" and env.recipient != "coordinator":
            return
        seen.append(env)
        if env.recipient == "bank" and env.sender != "coordinator":
            to_bank.append(env)

    transport = _transport(tmp_path, paths, tap=tap)
    spec = _spec(ScreeningSpec(recent={"platform": None}, bins=BINS, min_iv=0.05))
    result = run_job(spec, transport)
    iv = result.screening["iv"]
    # Plaintext: the bank's training rows, joined with the platform's columns.
    bank_rt = transport.parties["bank"]
    rows = bank_rt.store.get_array(ALIGNED_ROWS_KEY).astype(int)
    train = ~bank_rt.store.get_array(TEST_MASK_KEY).astype(bool)
    train_ids = set(bank_rt.table().ids[rows][train])
    joined = _joined(paths)
    joined = joined[joined["id"].isin(train_ids)]
    assert len(joined) == int(train.sum())
    for name in ("tax_grade", "score"):
        codes = _plain_codes(joined[name], joined[name], name == "tax_grade")
        n_fine = int(codes.max()) + 2  # value bins, then missing (none here)
        codes = codes.where(codes >= 0, n_fine - 1)
        total = np.bincount(codes, minlength=n_fine)
        bad = np.bincount(codes, weights=joined["y"], minlength=n_fine).astype(np.int64)
        kind = "categorical" if name == "tax_grade" else "numeric"
        plain = WoeTable.fit(name, "platform", kind, total, bad).iv
        assert iv["iv"]["platform"][name] == pytest.approx(plain, abs=1e-12)
    assert iv["iv"]["platform"]["tax_grade"] < 0.05 <= iv["iv"]["platform"]["score"]
    assert iv["dropped"] == {"platform": ["tax_grade"]}
    assert iv["n_dropped"] == {"platform": 1}
    assert set(iv["iv"]["bank"]) == {"deposits", "queries", "product"}
    # The dropped column is not used by the joint model.
    used = {(r["party"], r["feature"]) for r in result.joint.details["importance"]}
    assert ("platform", "tax_grade") not in used
    assert transport.parties["platform"].table().feature_names == ["score"]
    # What reached the bank from the platform: counts and ciphertexts, no value or edge.
    platform = pd.read_csv(paths["platform"], dtype={"id": str})
    values = {str(v) for v in platform["score"]} | set(platform["tax_grade"])
    screening_in = [e for e in to_bank if e.protocol == "screening"]
    assert [(e.sender, e.stage) for e in screening_in] == [("platform", "iv_counts")]
    env = screening_in[0]
    assert set(env.payload) == {"features", "totals", "enc_bad"}
    features = json.loads(env.text("features"))
    assert [set(f) for f in features] == [{"name", "kind", "n_fine"}] * 2
    assert env.array("totals").dtype.kind == "i"
    assert not values & set(json.dumps(features).replace('"', " ").split())
    # Nothing of the stability reports goes to the bank; the coordinator gets no edge either.
    (csi,) = [
        e for e in seen if e.protocol == "screening" and e.stage == "csi" and e.sender == "platform"
    ]
    for entry in csi.json("report")["features"]:
        assert set(entry) == {"name", "expected", "actual", "index", "shift", "group"}


def test_a_platform_refuses_exact_iv_counts_in_a_dp_job(tmp_path: Path) -> None:
    paths = _write(tmp_path / "data")
    transport = _transport(tmp_path, paths)
    spec = _spec(ScreeningSpec(min_iv=0.05), dp_epsilon=5.0)
    with pytest.raises(PartyError, match="only with DP noise") as info:
        run_job(spec, transport)
    assert info.value.error_type == PolicyRefusalError.__name__


def test_a_party_without_a_recent_window_says_how_to_give_it_one(tmp_path: Path) -> None:
    paths = _write(tmp_path / "data")
    transport = _transport(tmp_path, paths)
    runtime = transport.parties["bank"]
    runtime.binding = replace(runtime.binding, recent=None)
    spec = _spec(ScreeningSpec(recent={"bank": None}))
    with pytest.raises(PartyError, match=r"keeps no recent window; set 'recent'"):
        run_job(spec, transport)


def test_psi_of_known_counts_and_thresholds() -> None:
    assert stability.psi([50, 50], [50, 50]) == 0.0
    expected = 0.4 * np.log(0.9 / 0.5) - 0.4 * np.log(0.1 / 0.5)
    assert stability.psi([5, 5], [9, 1]) == pytest.approx(expected, abs=1e-15)
    assert stability.psi([10, 0], [5, 5]) == pytest.approx(
        (0.5 - 1.0) * np.log(0.5 / 1.0) + (0.5 - 1e-4) * np.log(0.5 / 1e-4), abs=1e-15
    )
    assert [stability.shift(v) for v in (0.0, 0.0999, 0.1, 0.2499, 0.25, 3)] == [
        "stable",
        "stable",
        "moderate",
        "moderate",
        "significant",
        "significant",
    ]
    with pytest.raises(stability.StabilityError, match="bins differ"):
        stability.psi([1, 2], [1, 2, 3])
    counts = stability.score_stability(np.linspace(0, 1, 1000), np.linspace(0, 1, 500))
    assert counts.index == pytest.approx(0.0, abs=1e-3)
    assert len(counts.expected) == 11


# -- the experiment's screening section ----------------------------------------------------------


def _config(folder: Path, screening: dict[str, Any], **platform: Any) -> dict[str, Any]:
    return {
        "name": "screen",
        "kind": "vertical",
        "parties": [
            {
                "name": "bank",
                "role": "bank",
                "data": "bank.csv",
                "id_column": "id",
                "label_column": "y",
            },
            {
                "name": "platform",
                "role": "platform",
                "data": "platform.csv",
                "id_column": "id",
                **platform,
            },
        ],
        "model": {"type": "secureboost", "n_estimators": 2},
        "screening": screening,
    }


def test_recent_windows_become_node_files_and_versions_never_paths(tmp_path: Path) -> None:
    from lab.config import experiment_from_dict

    paths = _write(tmp_path)
    raw = _config(
        tmp_path,
        {"recent": {"bank": "bank_recent.csv", "platform": "platform_recent.csv"}, "min_iv": 0.02},
    )
    experiment = experiment_from_dict(raw, source=tmp_path / "exp.yaml")
    spec = experiment.job_spec()
    assert dict(spec.screening.recent) == {"bank": None, "platform": None}
    assert spec.screening.min_iv == 0.02
    assert str(tmp_path) not in spec.to_json()  # paths stay with the nodes
    bindings = {b.name: b for b in experiment.bindings()}
    assert bindings["bank"].recent == paths["bank_recent"].resolve()
    assert bindings["platform"].recent == paths["platform_recent"].resolve()
    shared = experiment.shareable_config()["screening"]["recent"]
    assert str(tmp_path) not in json.dumps(shared)
    assert JobSpec.from_json(spec.to_json()).screening == spec.screening


@pytest.mark.parametrize(
    ("screening", "platform", "message"),
    [
        (
            {"recent": {"banq": "bank_recent.csv"}},
            {},
            r"screening.recent.banq: no party is named 'banq'",
        ),
        ({"recent": {"bank": "missing.csv"}}, {}, r"screening.recent.bank: .*missing.csv"),
        (
            {"recent": {"platform": "bank_recent.csv"}},
            {},
            r"bank_recent.csv has no columns \['tax_grade', 'score'\]",
        ),
        (
            {"recent": {"platform": "sme@2"}},
            {},
            r"looks like a feature-set version, but party 'platform'",
        ),
        ({"recent": {"platform": "sme@1"}}, {"feature_set": "sme@1"}, r"sme@1 is not later than"),
        (
            {"recent": {"platform": "other@2"}},
            {"feature_set": "sme@1"},
            r"'other@2' is not a version of sme",
        ),
        ({"bins": 1}, {}, r"screening.bins"),
        ({"min_iv": -0.1}, {}, r"screening.min_iv"),
    ],
    ids=[
        "unknown-party",
        "missing-file",
        "wrong-columns",
        "ref-for-a-file",
        "same-version",
        "other-set",
        "bins",
        "min-iv",
    ],
)
def test_bad_screening_sections_are_refused_naming_the_key(
    tmp_path: Path, screening: dict[str, Any], platform: dict[str, Any], message: str
) -> None:
    from lab.config import experiment_from_dict
    from lab.errors import ConfigError

    _write(tmp_path)
    raw = _config(tmp_path, screening, **platform)
    with pytest.raises(ConfigError, match=message):
        experiment_from_dict(raw, source=tmp_path / "exp.yaml")
