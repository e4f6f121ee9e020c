"""The job driver and the job protocol through the in-process transport."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federated.driver import run_job
from federated.party import DictStore, PartyRuntime
from federated.protocols import party_protocols
from federated.spec import JobSpec, PartyBinding, PartySpec
from federated.transport import (
    InProcessTransport,
    PartyError,
    TransportError,
    run_protocol,
)
from models.protocol import COORDINATOR, Envelope
from tests.conftest import TEST_LIMITS, make_vertical


def _spec() -> JobSpec:
    return JobSpec(
        job_id="t1",
        name="tiny",
        kind="vertical",
        parties=(
            PartySpec("bank", "bank", "id", "y"),
            PartySpec("platform", "platform", "id"),
        ),
        model={"type": "secureboost", "n_estimators": 2, "max_depth": 2, "max_bin": 8},
        crypto={"key_bits": 512, "insecure_test_keys": True},
    )


def _transport(
    folder: Path, *, disclose: bool = True, roles: tuple[str, str] = ("bank", "platform"), tap=None
) -> InProcessTransport:
    bank, platform = make_vertical(folder)
    parties = {
        "bank": PartyRuntime(
            PartyBinding("bank", roles[0], bank, store=folder / "bank-store"),  # type: ignore[arg-type]
            DictStore(),
            party_protocols(),  # type: ignore[arg-type]
            disclose_errors=disclose,
            limits=TEST_LIMITS,
        ),
        "platform": PartyRuntime(
            PartyBinding("platform", roles[1], platform, store=folder / "platform-store"),  # type: ignore[arg-type]
            DictStore(),
            party_protocols(),  # type: ignore[arg-type]
            disclose_errors=disclose,
            limits=TEST_LIMITS,
        ),
    }
    return InProcessTransport(parties, tap=tap)


def test_job_runs_and_reports_aggregates(tmp_path: Path) -> None:
    transport = _transport(tmp_path)
    result = run_job(_spec(), transport)
    assert [p.name for p in result.parties] == ["bank", "platform"]
    assert result.parties[0].n_rows == 200
    assert result.parties[0].n_features == 3
    assert result.parties[1].feature_kinds == {"tax_grade": "categorical", "score": "numeric"}
    assert result.n_train == 160
    assert result.n_test == 40
    assert result.joint.status == "trained"
    assert result.joint.report is not None
    assert result.joint.report.n == 40
    assert len(result.joint.details["per_tree"]) == 2
    assert 0.0 <= result.bank_only["bank"].auc <= 1.0
    # hello, 4 PSI hops, split, baseline, then SecureBoost's own hops.
    assert result.traffic["hops"] > 7
    assert set(result.stage_seconds) == {"connect", "align", "split", "baseline", "joint"}
    assert result.n_aligned == 200
    assert result.alignment["n_bank"] == 200
    assert result.alignment["n_platform"] == {"platform": 200}


def test_coordinator_sees_no_ids_or_labels(tmp_path: Path) -> None:
    seen: list[Envelope] = []
    transport = _transport(tmp_path, tap=lambda direction, env: seen.append(env))
    run_job(_spec(), transport)
    bank = pd.read_csv(tmp_path / "bank.csv", dtype=str)
    ids = set(bank["id"])
    labels = bank["y"].astype(int).to_numpy()
    for env in seen:
        for key, value in env.payload.items():
            if isinstance(value, np.ndarray):
                assert not ids & {str(v) for v in value.ravel().tolist()}, key
                if env.protocol == "job":  # only PSI (blinded points, positions) is row-level
                    assert value.size < 50, f"{env.stage}/{key}: row-level array crossed domains"
                assert not (value.size == labels.size and np.array_equal(value.ravel(), labels))
            else:
                assert not any(i in str(value) for i in ids), f"{env.stage}/{key} leaks an id"


def test_stage_out_of_order_is_reported_by_the_party(tmp_path: Path) -> None:
    transport = _transport(tmp_path)
    run_job(_spec(), transport)  # completes hello/split/baseline and closes with end
    with pytest.raises(PartyError, match="not allowed after 'end'") as info:
        run_protocol(transport, [Envelope("job", "split", COORDINATOR, "bank")])
    assert info.value.error_type == "ProtocolError"


def test_message_before_hello_is_refused(tmp_path: Path) -> None:
    transport = _transport(tmp_path)
    with pytest.raises(PartyError, match=r"not allowed after 'idle'"):
        run_protocol(transport, [Envelope("job", "baseline", COORDINATOR, "bank")])


def test_unknown_protocol_is_refused(tmp_path: Path) -> None:
    transport = _transport(tmp_path)
    with pytest.raises(PartyError, match="does not speak protocol 'gossip'"):
        run_protocol(transport, [Envelope("gossip", "x", COORDINATOR, "bank")])


def test_bad_data_error_is_redacted_unless_disclosed(tmp_path: Path) -> None:
    transport = _transport(tmp_path, disclose=False)
    path = tmp_path / "platform.csv"
    frame = pd.read_csv(path, dtype=str)
    frame.loc[1, "id"] = frame.loc[0, "id"]
    frame.to_csv(path, index=False)
    secret = frame.loc[0, "id"]
    with pytest.raises(PartyError) as info:
        run_job(_spec(), transport)
    assert info.value.party == "platform"
    assert info.value.error_type == "DataError"
    assert "duplicate id" in str(info.value)
    assert secret not in str(info.value)

    disclosed = _transport(tmp_path / "again", disclose=True)
    frame.to_csv(tmp_path / "again" / "platform.csv", index=False)
    with pytest.raises(PartyError, match=secret):
        run_job(_spec(), disclosed)


def test_role_mismatch_is_refused(tmp_path: Path) -> None:
    transport = _transport(tmp_path, roles=("bank", "bank"))
    with pytest.raises(PartyError, match="is a bank on this node but a platform"):
        run_job(_spec(), transport)


def test_missing_party_and_extra_node(tmp_path: Path) -> None:
    transport = _transport(tmp_path)
    spec = replace(_spec(), parties=(*_spec().parties, PartySpec("platform2", "platform", "id")))
    with pytest.raises(TransportError, match=r"\['platform2'\] .* did not join"):
        run_job(spec, transport)
    # A node whose party the job does not name declines instead of failing the job.
    crowded = _transport(tmp_path / "b")
    stranger = crowded.parties["platform"].binding
    crowded.parties["stranger"] = PartyRuntime(
        PartyBinding("stranger", "platform", stranger.data), DictStore(), party_protocols()
    )
    result = run_job(_spec(), crowded)
    assert [p.name for p in result.parties] == ["bank", "platform"]


def test_file_changed_during_job_is_detected(tmp_path: Path) -> None:
    transport = _transport(tmp_path)
    run_protocol(
        transport,
        [Envelope("job", "hello", COORDINATOR, "bank", {"job": _spec().to_json()})],
    )
    bank = tmp_path / "bank.csv"
    bank.write_text(bank.read_text() + "EXTRA,0,1,1,credit\n")
    with pytest.raises(PartyError, match="changed while the job was running"):
        run_protocol(transport, [Envelope("job", "split", COORDINATOR, "bank")])
