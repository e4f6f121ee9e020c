"""A protection belongs to the party whose data it protects: the platform's node decides.

Each test drives a node the way a curious bank (or coordinator) would: a job spec that asks for
less protection, a candidate list that probes membership, a tiny batch, a weak key, a noise
level or a release count of its own choosing. The nodes are real :class:`PartyRuntime` objects
with the lab's node policy reading their own governance homes; messages go through the
in-process transport (the Flower runtime is exercised in tests/test_node_policy_flower.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from federated import party as party_module
from federated.driver import run_job
from federated.party import DictStore, PartyRuntime
from federated.protocols import party_protocols
from federated.spec import (
    AlignmentSpec,
    GovernanceSpec,
    JobSpec,
    PartyBinding,
    PartySpec,
)
from federated.transport import InProcessTransport, PartyError, run_protocol
from lab.config import NODE_POLICY
from lab.demo import publish_feature_set, synthesize
from lab.governance.audit import AuditLog
from lab.governance.authorizations import AuthorizationRegistry
from lab.governance.ledger import BudgetLedger
from lab.governance.policy import read_policy, set_policy
from models import secureboost, vertical_lr
from models.alignment import ALIGNED_ROWS_KEY, AlignmentSettings, conclude, start_envelopes
from models.guard import PolicyRefusalError
from models.protocol import COORDINATOR, Envelope
from secure_agg import paillier
from tests.conftest import TEST_KEY_POLICY

REF = "sme_node@1"
TEST_KEYS = {"key_bits": 512, "insecure_test_keys": True}


# -- fixtures: a platform home that governs its data, and a bank home of its own ----------------


@pytest.fixture
def platform_data(tmp_path: Path, lab_home: Path) -> dict[str, Any]:
    """Synthetic data published in the platform's home (LAB_HOME); 40% authorised the bank."""
    folder = tmp_path / "sme"
    synthesize(folder, n_enterprises=3000, n_banks=1, bank_size=1400, unmatched_rate=0.1, seed=3)
    publish_feature_set(folder, REF)
    set_policy(list(TEST_KEY_POLICY), lab_home, actor="platform")
    ids = pd.read_csv(folder / "platform.csv", usecols=["enterprise_id"], dtype=str)
    rng = np.random.default_rng(0)
    allowed = ids["enterprise_id"][rng.uniform(size=len(ids)) < 0.4].tolist()
    groups = sorted(
        {
            str(v["group"])
            for v in json.loads((folder / "columns.json").read_text()).values()
            if v.get("party") == "platform"
        }
    )
    today = datetime.now(UTC).date()
    frame = pd.DataFrame(
        {
            "enterprise_id": allowed,
            "bank": "bank",
            "purpose": "credit_risk_modeling",
            "valid_from": (today - timedelta(days=1)).isoformat(),
            "valid_to": (today + timedelta(days=30)).isoformat(),
            "groups": ";".join(groups),
            "personal_consent": "true",
            "reference": "T",
        }
    )
    frame.to_csv(folder / "auth.csv", index=False)
    with AuthorizationRegistry() as registry:
        registry.import_csv(folder / "auth.csv")
    bank_ids = pd.read_csv(folder / "bank_1.csv", usecols=["enterprise_id"], dtype=str)
    return {
        "folder": folder,
        "allowed": set(allowed),
        "expected": set(bank_ids["enterprise_id"]) & set(allowed),
        "n_platform": len(ids),
    }


def _bank_home(tmp_path: Path) -> Path:
    home = tmp_path / "bank-home"
    set_policy(list(TEST_KEY_POLICY), home, actor="bank")
    return home


def _runtime(name: str, role: str, data: Path, home: Path, store: Path) -> PartyRuntime:
    binding = PartyBinding(
        name,
        role,  # type: ignore[arg-type]
        data,
        store=store,
        policy=NODE_POLICY,
        governance_home=home,
    )
    return PartyRuntime(binding, DictStore(), party_protocols(), disclose_errors=True)


def _spec(
    model: dict[str, Any] | None = None,
    *,
    feature_set: str | None = None,
    require_authorization: bool = False,
    reveal: str = "both",
    task: str = "train",
    crypto: dict[str, Any] | None = None,
) -> JobSpec:
    return JobSpec(
        job_id=f"job{np.random.default_rng().integers(1 << 30)}",
        name="probe",
        kind="vertical",
        parties=(
            PartySpec("bank", "bank", "enterprise_id", "default_12m"),
            PartySpec("platform", "platform", "enterprise_id", feature_set=feature_set),
        ),
        model=model or {"type": "secureboost", "n_estimators": 2, "max_depth": 2, "max_bin": 8},
        crypto=crypto or dict(TEST_KEYS),
        alignment=AlignmentSpec(reveal=reveal, id_scheme="uscc", min_intersection=10),  # type: ignore[arg-type]
        governance=GovernanceSpec(require_authorization=require_authorization),
        task=task,  # type: ignore[arg-type]
    )


def _plain(spec: JobSpec) -> JobSpec:
    """``spec`` for make_vertical's files (columns id and y, text ids)."""
    return replace(
        spec,
        parties=(PartySpec("bank", "bank", "id", "y"), PartySpec("platform", "platform", "id")),
        alignment=replace(spec.alignment, id_scheme="text"),
    )


def _pair(
    tmp_path: Path, lab_home: Path, bank_file: Path, platform_file: Path
) -> InProcessTransport:
    runtimes = {
        "bank": _runtime("bank", "bank", bank_file, _bank_home(tmp_path), tmp_path / "bs"),
        "platform": _runtime("platform", "platform", platform_file, lab_home, tmp_path / "ps"),
    }
    return InProcessTransport(runtimes)  # type: ignore[arg-type]


def _hello(transport: InProcessTransport, spec: JobSpec) -> list[Envelope]:
    return transport.hello(Envelope("job", "hello", COORDINATOR, "*", {"job": spec.to_json()}))


def _align(transport: InProcessTransport, spec: JobSpec) -> int:
    settings = AlignmentSettings(reveal=spec.alignment.reveal, min_intersection=10)
    replies = run_protocol(transport, start_envelopes(spec.job_id, "bank", ["platform"], settings))
    return conclude(replies, "bank", settings).n_aligned


def _events(kind: str, home: Path | None = None) -> list[dict[str, Any]]:
    log = AuditLog(home / "audit" / "log.jsonl") if home else AuditLog()
    return [e.payload for e in log.entries(kind)]


# -- authorization before alignment, whatever the job spec says ----------------------------------


@pytest.mark.parametrize(
    ("feature_set", "require_authorization"),
    [(None, False), (REF, False), (None, True)],
    ids=["spec-names-nothing", "authorization-off", "feature-set-left-out"],
)
def test_a_job_spec_cannot_turn_authorizations_off(
    platform_data: dict[str, Any],
    tmp_path: Path,
    lab_home: Path,
    feature_set: str | None,
    require_authorization: bool,
) -> None:
    folder = platform_data["folder"]
    transport = _pair(tmp_path, lab_home, folder / "bank_1.csv", folder / "platform.csv")
    spec = _spec(feature_set=feature_set, require_authorization=require_authorization, task="align")
    _hello(transport, spec)
    # The platform put only authorised enterprises into the PSI: the bank learns no other.
    assert _align(transport, spec) == len(platform_data["expected"])
    bank = transport.parties["bank"]
    rows = bank.store.get_array(ALIGNED_ROWS_KEY)
    assert set(bank.table().ids[rows]) == platform_data["expected"]
    [alignment] = _events("alignment")
    assert alignment["n_platform"] == platform_data["n_platform"]
    assert alignment["n_authorized"] == len(platform_data["allowed"])
    [served] = [e for e in _events("job_served") if e["party"] == "platform"]
    assert served["feature_set"] == REF
    assert served["authorization"] is True


def test_a_platform_that_governs_nothing_serves_nothing_governed_and_says_so(
    tmp_path: Path, lab_home: Path
) -> None:
    from tests.conftest import make_vertical

    bank, platform = make_vertical(tmp_path / "plain")
    set_policy(list(TEST_KEY_POLICY), lab_home, actor="platform")
    runtimes = {
        "bank": _runtime("bank", "bank", bank, _bank_home(tmp_path), tmp_path / "bs"),
        "platform": _runtime("platform", "platform", platform, lab_home, tmp_path / "ps"),
    }
    spec = _plain(_spec(require_authorization=True))
    replies = _hello(InProcessTransport(runtimes), spec)  # type: ignore[arg-type]
    [error] = [e for e in replies if e.stage == "error"]
    assert error.sender == "platform"
    assert error.payload["error_type"] == "PolicyRefusalError"
    assert "serves nothing governed" in str(error.payload["message"])


def test_unpublished_files_are_refused_once_the_home_governs(
    platform_data: dict[str, Any], tmp_path: Path, lab_home: Path
) -> None:
    from tests.conftest import make_vertical

    bank, platform = make_vertical(tmp_path / "plain")
    runtimes = {
        "bank": _runtime("bank", "bank", bank, _bank_home(tmp_path), tmp_path / "bs"),
        "platform": _runtime("platform", "platform", platform, lab_home, tmp_path / "ps"),
    }
    spec = _plain(_spec())
    replies = _hello(InProcessTransport(runtimes), spec)  # type: ignore[arg-type]
    [error] = [e for e in replies if e.stage == "error"]
    assert "unpublished=serve" in str(error.payload["message"])
    # Its owner can decide otherwise, in its own home.
    set_policy(["unpublished=serve"], lab_home)
    runtimes["platform"] = _runtime("platform", "platform", platform, lab_home, tmp_path / "p2")
    runtimes["bank"] = _runtime("bank", "bank", bank, _bank_home(tmp_path), tmp_path / "b2")
    replies = _hello(InProcessTransport(runtimes), spec)  # type: ignore[arg-type]
    assert not [e for e in replies if e.stage == "error"]


def test_a_job_for_another_published_version_is_refused(
    platform_data: dict[str, Any], tmp_path: Path, lab_home: Path
) -> None:
    folder = platform_data["folder"]
    transport = _pair(tmp_path, lab_home, folder / "bank_1.csv", folder / "platform.csv")
    # A version that was never published is named as such.
    replies = _hello(transport, _spec(feature_set="sme_node@2", task="align"))
    [error] = [e for e in replies if e.stage == "error"]
    assert "sme_node@2 is not published; versions of sme_node: 1" in error.payload["message"]
    # Published from another file: this node's file is @1, so @2 is not what it serves.
    other = tmp_path / "v2"
    other.mkdir()
    frame = pd.read_csv(folder / "platform.csv", dtype=str)
    frame.iloc[:-1].to_csv(other / "platform.csv", index=False)
    (other / "columns.json").write_text((folder / "columns.json").read_text())
    publish_feature_set(other, "sme_node@2")
    transport = _pair(tmp_path, lab_home, folder / "bank_1.csv", folder / "platform.csv")
    replies = _hello(transport, _spec(feature_set="sme_node@2", task="align"))
    [error] = [e for e in replies if e.stage == "error"]
    assert "this node serves sme_node@1" in str(error.payload["message"])


# -- PSI: reveal modes, probing ------------------------------------------------------------------


def _probe_file(folder: Path, real: list[str], n_fake: int, seed: int = 1) -> Path:
    from features.synth import generate_uscc

    rng = np.random.default_rng(seed)
    fake = [str(u) for u in generate_uscc(n_fake, rng)]
    ids = list(dict.fromkeys(real + fake))
    frame = pd.DataFrame(
        {
            "enterprise_id": ids,
            "default_12m": rng.integers(0, 2, size=len(ids)),
            "x": rng.normal(size=len(ids)).round(3),
        }
    )
    path = folder / f"probe-{n_fake}.csv"
    frame.to_csv(path, index=False)
    return path


def test_a_probing_candidate_list_is_refused_before_the_platform_blinds_it(
    platform_data: dict[str, Any], tmp_path: Path, lab_home: Path
) -> None:
    folder = platform_data["folder"]
    platform_ids = pd.read_csv(folder / "platform.csv", usecols=["enterprise_id"], dtype=str)
    # Every platform id hidden among invented ones: 26x the set the platform serves the bank.
    n_fake = 26 * len(platform_data["allowed"]) - platform_data["n_platform"]
    probe = _probe_file(tmp_path, platform_ids["enterprise_id"].tolist(), n_fake)
    transport = _pair(tmp_path, lab_home, probe, folder / "platform.csv")
    spec = _spec(task="align")
    _hello(transport, spec)
    seen: list[Envelope] = []
    transport.tap = lambda direction, env: seen.append(env)
    with pytest.raises(PartyError, match=r"psi\.max_bank_ratio") as info:
        _align(transport, spec)
    assert info.value.party == "platform"
    assert info.value.error_type == "PolicyRefusalError"
    # The platform answered nothing with the bank's points: no double-blinded values left it.
    assert not [e for e in seen if e.sender == "platform" and e.stage == "double"]
    [alert] = _events("psi_probe_suspected")
    assert alert["refused"] is True
    assert alert["n_served"] == len(platform_data["allowed"])


def test_a_borderline_candidate_list_runs_but_raises_an_alert_auditors_can_list(
    platform_data: dict[str, Any], tmp_path: Path, lab_home: Path
) -> None:
    folder = platform_data["folder"]
    bank_ids = pd.read_csv(folder / "bank_1.csv", usecols=["enterprise_id"], dtype=str)
    # 10x the served set, mostly unknown to the platform: under the refusal ratio (20), so it
    # runs, but above the alert ratio (5) and below the alert hit rate (5%): flagged twice.
    n_fake = 10 * len(platform_data["allowed"]) - len(bank_ids)
    probe = _probe_file(tmp_path, bank_ids["enterprise_id"].tolist(), n_fake)
    transport = _pair(tmp_path, lab_home, probe, folder / "platform.csv")
    spec = _spec(task="align")
    _hello(transport, spec)
    # Still only authorised enterprises: the bank learns what it is entitled to.
    assert _align(transport, spec) == len(platform_data["expected"])
    rules = sorted(a["rule"].split("=")[0] for a in _events("psi_probe_suspected"))
    assert rules == ["psi.alert_bank_ratio", "psi.alert_min_hit_rate"]


def test_reveal_bank_is_refused_unless_the_platform_allows_it(
    platform_data: dict[str, Any], tmp_path: Path, lab_home: Path
) -> None:
    folder = platform_data["folder"]
    transport = _pair(tmp_path, lab_home, folder / "bank_1.csv", folder / "platform.csv")
    replies = _hello(transport, _spec(reveal="bank", task="align"))
    [error] = [e for e in replies if e.stage == "error"]
    assert "psi.reveal" in str(error.payload["message"])
    set_policy(["psi.reveal=[both, size, bank]"], lab_home)
    transport = _pair(tmp_path, lab_home, folder / "bank_1.csv", folder / "platform.csv")
    spec = _spec(reveal="bank", task="align")
    assert not [e for e in _hello(transport, spec) if e.stage == "error"]
    assert _align(transport, spec) == len(platform_data["expected"])


# -- keys ----------------------------------------------------------------------------------------


def test_the_platform_refuses_test_keys_its_own_policy_does_not_allow(
    platform_data: dict[str, Any], tmp_path: Path, lab_home: Path
) -> None:
    folder = platform_data["folder"]
    set_policy(["crypto.min_key_bits=2048", "crypto.allow_insecure_test_keys=false"], lab_home)
    transport = _pair(tmp_path, lab_home, folder / "bank_1.csv", folder / "platform.csv")
    replies = _hello(transport, _spec(task="align"))
    [error] = [e for e in replies if e.stage == "error"]
    assert error.sender == "platform"
    assert "crypto.min_key_bits=2048" in str(error.payload["message"])


def _platform_runtime(tmp_path: Path, home: Path, **limits: Any) -> PartyRuntime:
    from tests.conftest import make_vertical

    _, platform = make_vertical(tmp_path / "plain-kb", n=400)
    set_policy([*TEST_KEY_POLICY, "unpublished=serve", *limits.get("extra", [])], home)
    runtime = _runtime("platform", "platform", platform, home, tmp_path / "ps-kb")
    # The job declares 1024-bit keys; what the bank's messages then carry is another matter.
    spec = _plain(
        _spec(model={"type": "hetero_lr"}, crypto={"key_bits": 1024, "insecure_test_keys": True})
    )
    hello = Envelope("job", "hello", COORDINATOR, "platform", {"job": spec.to_json()})
    out = runtime.dispatch(hello)
    assert out[0].stage == "hello", out
    runtime.store.put_array(ALIGNED_ROWS_KEY, np.arange(400))
    return runtime


def _init(key_bits: int, bank_key: paillier.PublicKey, n_train: int = 300) -> Envelope:
    train = np.zeros(400, dtype=bool)
    train[:n_train] = True
    enc_y = paillier.encrypt_many(bank_key, [0] * n_train)
    return Envelope(
        "hetero_lr",
        "init",
        "bank",
        "platform",
        {
            "settings": json.dumps(
                {"max_bin": 4, "key_bits": key_bits, "seed_commitment": "0" * 64}
            ),
            "public_key": bank_key.to_bytes(),
            "key": bank_key.fingerprint,
            "train_mask": train,
            "enc_y": paillier.ciphertexts_to_array(bank_key, enc_y),
        },
    )


def test_a_bank_cannot_make_the_platform_use_a_key_it_can_factor(
    tmp_path: Path, lab_home: Path
) -> None:
    # The platform's policy: at least 1024 bits (test homes only go lower on purpose).
    runtime = _platform_runtime(tmp_path, lab_home, extra=["crypto.min_key_bits=1024"])
    weak, _ = paillier.generate_keypair(512, allow_insecure_test_keys=True)
    out = runtime.dispatch(_init(512, weak))
    assert out[0].stage == "error"
    assert "crypto.min_key_bits=1024" in str(out[0].payload["message"])
    # A 1024-bit bank key, but the bank asks the platform for a 512-bit key of its own: the
    # platform makes its own key at its own floor.
    runtime = _platform_runtime(tmp_path / "b", lab_home, extra=["crypto.min_key_bits=1024"])
    ok, _ = paillier.generate_keypair(1024, allow_insecure_test_keys=True)
    out = runtime.dispatch(_init(512, ok))
    assert out[0].stage == "counts", out
    own = paillier.PublicKey.from_bytes(out[0].payload["public_key"], allow_insecure_test_keys=True)  # type: ignore[arg-type]
    assert own.key_bits == 1024


# -- hetero LR: batches, norms, what the coordinator sees -----------------------------------------


def _hlr_pair(tmp_path: Path, lab_home: Path, *policy: str) -> tuple[InProcessTransport, Path]:
    from tests.conftest import make_vertical

    bank, platform = make_vertical(tmp_path / "hlr", n=900)
    set_policy([*TEST_KEY_POLICY, "unpublished=serve", *policy], lab_home)
    runtimes = {
        "bank": _runtime("bank", "bank", bank, _bank_home(tmp_path), tmp_path / "bs"),
        "platform": _runtime("platform", "platform", platform, lab_home, tmp_path / "ps"),
    }
    return InProcessTransport(runtimes), bank  # type: ignore[arg-type]


def _hlr_spec(batch_size: int, **extra: Any) -> JobSpec:
    return _plain(
        _spec(model={"type": "hetero_lr", "batch_size": batch_size, "max_epochs": 2, **extra})
    )


def test_a_tiny_batch_in_the_job_spec_is_refused_at_hello(tmp_path: Path, lab_home: Path) -> None:
    transport, _ = _hlr_pair(tmp_path, lab_home)
    with pytest.raises(PartyError, match=r"hetero_lr\.min_batch_size=256") as info:
        run_job(_hlr_spec(batch_size=1), transport)
    assert info.value.party == "platform"


def test_a_bank_that_sends_a_tiny_batch_schedule_is_refused(tmp_path: Path, lab_home: Path) -> None:
    """The job spec says 300 rows per batch; the bank's own message says 1."""
    transport, _ = _hlr_pair(tmp_path, lab_home)
    original = transport.exchange

    def tamper(envelopes: list[Envelope]) -> list[Envelope]:
        out = []
        for env in envelopes:
            if env.protocol == "hetero_lr" and env.stage == "bins":
                settings = json.loads(env.text("settings"))
                settings["batch_size"] = 1
                env = replace(env, payload={**env.payload, "settings": json.dumps(settings)})
            out.append(env)
        return original(out)

    transport.exchange = tamper  # type: ignore[method-assign]
    with pytest.raises(PartyError, match=r"hetero_lr\.min_batch_size") as info:
        run_job(_hlr_spec(batch_size=300), transport)
    assert info.value.party == "platform"
    assert info.value.error_type == "PolicyRefusalError"


def _edit_bins(transport: InProcessTransport, edit: Callable[[dict[str, Any]], None]) -> None:
    """Have the bank's ``bins`` message carry settings changed by ``edit``."""

    def change(env: Envelope) -> Envelope:
        if env.protocol == "hetero_lr" and env.stage == "bins":
            settings = json.loads(env.text("settings"))
            edit(settings)
            return replace(env, payload={**env.payload, "settings": json.dumps(settings)})
        return env

    _tamper_bank(transport, change)


def _grind(settings: dict[str, Any]) -> None:
    """A bank that picks its own seed after seeing the platform's share."""
    from models.vertical_lr import batch_seed

    nonce = batch_seed.draw()
    settings["seed_nonce"] = nonce
    settings["seed"] = batch_seed.joint_seed(nonce, settings["seed_shares"])


def _own_share(settings: dict[str, Any]) -> None:
    from models.vertical_lr import batch_seed

    settings["seed_shares"] = {"platform": batch_seed.draw()}
    settings["seed"] = batch_seed.joint_seed(settings["seed_nonce"], settings["seed_shares"])


def _plain_seed(settings: dict[str, Any]) -> None:
    settings["seed"] = 7


@pytest.mark.parametrize(
    ("edit", "refusal"),
    [
        (_grind, "not the one the bank committed to"),
        (_own_share, "leaves out or changes platform 'platform''s seed share"),
        (_plain_seed, "a seed other than the joint one"),
    ],
    ids=["new-nonce", "replaced-share", "chosen-seed"],
)
def test_the_bank_cannot_choose_the_batch_schedule(
    tmp_path: Path, lab_home: Path, edit: Callable[[dict[str, Any]], None], refusal: str
) -> None:
    """The seed is committed by the bank before the platform adds its share (batch_seed.py)."""
    transport, _ = _hlr_pair(tmp_path, lab_home)
    _edit_bins(transport, edit)
    with pytest.raises(PartyError, match=refusal) as info:
        run_job(_hlr_spec(batch_size=300), transport)
    assert info.value.party == "platform"


def test_the_schedule_seed_is_the_joint_one(tmp_path: Path, lab_home: Path) -> None:
    from models.vertical_lr import batch_seed

    transport, _ = _hlr_pair(tmp_path, lab_home)
    seen: list[Envelope] = []
    transport.tap = lambda direction, env: seen.append(env)
    result = run_job(_hlr_spec(batch_size=300, max_epochs=1), transport)
    init = next(e for e in seen if e.protocol == "hetero_lr" and e.stage == "init")
    counts = next(e for e in seen if e.protocol == "hetero_lr" and e.stage == "counts")
    bins = next(e for e in seen if e.protocol == "hetero_lr" and e.stage == "bins")
    committed = json.loads(init.text("settings"))["seed_commitment"]
    revealed = json.loads(bins.text("settings"))
    assert batch_seed.commitment(revealed["seed_nonce"]) == committed
    assert revealed["seed_shares"] == {"platform": counts.text("seed_share")}
    seed = batch_seed.joint_seed(revealed["seed_nonce"], {"platform": counts.text("seed_share")})
    assert revealed["seed"] == seed
    assert result.joint.status == "trained"
    done = next(e for e in seen if e.protocol == "hetero_lr" and e.stage == "done")
    assert int(done.text("seed")) == seed


def test_too_many_cross_terms_per_batch_are_refused(tmp_path: Path, lab_home: Path) -> None:
    # The bank has 3 columns (4 weighted sums per batch); at 100 rows per sum, 300-row batches
    # do not suffice.
    transport, _ = _hlr_pair(tmp_path, lab_home, "hetero_lr.rows_per_cross_term=100")
    with pytest.raises(PartyError, match=r"rows_per_cross_term=100"):
        run_job(_hlr_spec(batch_size=300), transport)


def test_hetero_lr_sends_no_platform_norms_and_the_coordinator_no_bin_counts(
    tmp_path: Path, lab_home: Path
) -> None:
    transport, _ = _hlr_pair(tmp_path, lab_home)
    seen: list[Envelope] = []
    transport.tap = lambda direction, env: seen.append(env)
    result = run_job(_hlr_spec(batch_size=300, tol=0.0), transport)
    assert result.joint.status == "trained"
    from_platform = [e for e in seen if e.sender == "platform" and e.protocol == "hetero_lr"]
    keys = {k for e in from_platform for k in e.payload}
    assert not keys & {"moved2", "size2"}
    sums = [e for e in from_platform if e.stage == "cross_sums"]
    votes = [e.payload["converged"] for e in sums if "converged" in e.payload]
    assert votes
    assert all(isinstance(v, bool) for v in votes)
    [done] = [
        e
        for e in seen
        if e.recipient == COORDINATOR and e.stage == "done" and e.protocol == "hetero_lr"
    ]
    assert set(done.payload) == {
        "report",
        "history",
        "converged",
        "seed",
        "bank_part",
        "platform_parts",
        "clock",
    }
    assert "bad" not in done.text("history")


# -- SecureBoost DP: the platform's noise, the platform's count ----------------------------------


@pytest.fixture
def budgeted(platform_data: dict[str, Any], lab_home: Path) -> dict[str, Any]:
    with BudgetLedger() as ledger:
        ledger.set_cap(REF, "bank", epsilon=30.0, delta=1e-5)
    return platform_data


DP_MODEL = {
    "type": "secureboost",
    "n_estimators": 2,
    "max_depth": 2,
    "max_bin": 8,
    "dp_epsilon": 4.0,
    "dp_delta": 1e-5,
}


def test_the_ledger_is_charged_from_the_platforms_own_count(
    budgeted: dict[str, Any], tmp_path: Path, lab_home: Path
) -> None:
    folder = budgeted["folder"]
    transport = _pair(tmp_path, lab_home, folder / "bank_1.csv", folder / "platform.csv")
    result = run_job(_spec(DP_MODEL, feature_set=REF), transport)
    report = result.nodes["platform"]
    assert report["ledger"] == "committed"
    with BudgetLedger() as ledger:
        [job] = ledger.jobs()
    assert job.state == "committed"
    assert job.actual_events is not None
    steps = sum(e.steps for e in job.actual_events)
    assert steps == report["releases"][secureboost.DP_MECHANISM] == 2 * 2
    [grant] = secureboost.release_grants(
        secureboost.SecureBoostParams.from_spec(DP_MODEL, TEST_KEYS), 1
    )
    assert {e.noise_multiplier for e in job.actual_events} == {grant.noise_multiplier}


def _tamper_bank(transport: InProcessTransport, edit: Callable[[Envelope], Envelope]) -> None:
    original = transport.exchange

    def exchange(envelopes: list[Envelope]) -> list[Envelope]:
        return original([edit(e) if e.sender == "bank" else e for e in envelopes])

    transport.exchange = exchange  # type: ignore[method-assign]


def test_a_bank_that_drops_the_noise_from_its_layout_is_refused(
    budgeted: dict[str, Any], tmp_path: Path, lab_home: Path
) -> None:
    folder = budgeted["folder"]
    transport = _pair(tmp_path, lab_home, folder / "bank_1.csv", folder / "platform.csv")

    def no_noise(env: Envelope) -> Envelope:
        if env.protocol == "secureboost" and env.stage == "tree":
            layout = {**json.loads(env.text("layout")), "noise": None}
            return replace(env, payload={**env.payload, "layout": json.dumps(layout)})
        return env

    _tamper_bank(transport, no_noise)
    with pytest.raises(PartyError, match="less noise than this node's DP grant") as info:
        run_job(_spec(DP_MODEL, feature_set=REF), transport)
    assert info.value.party == "platform"


def test_a_bank_cannot_choose_the_noise_or_add_releases(
    budgeted: dict[str, Any], tmp_path: Path, lab_home: Path
) -> None:
    """The bank runs 5 trees where the job (and the platform's reservation) said 2."""
    folder = budgeted["folder"]
    transport = _pair(tmp_path, lab_home, folder / "bank_1.csv", folder / "platform.csv")
    spec = _spec(DP_MODEL, feature_set=REF)
    _hello(transport, spec)
    _align(transport, spec)
    run_protocol(transport, [Envelope("job", "split", COORDINATOR, "bank")])
    greedy = secureboost.SecureBoostParams.from_spec(
        {**DP_MODEL, "n_estimators": 5, "dp_epsilon": 1000.0}, TEST_KEYS
    )
    start = secureboost.start_envelope("bank", ["platform"], ["bank", "platform"], greedy, "x")
    with pytest.raises(PartyError, match="exceeds the 4 this node reserved") as info:
        run_protocol(transport, [start])
    assert info.value.party == "platform"
    # The platform's noise is its own: the bank's 1000-epsilon plan changed nothing of it.
    platform = transport.parties["platform"]
    state = platform.store.get_json("sb.state")
    [grant] = secureboost.release_grants(
        secureboost.SecureBoostParams.from_spec(DP_MODEL, TEST_KEYS), 1
    )
    n_features = len(platform.table().feature_names)
    expected = grant.noise_multiplier * np.sqrt(n_features * (1 + 1 / 16 + 1))
    assert state["noise"]["sigma_count"] == pytest.approx(expected)
    # Closing the job charges exactly the 4 releases made, never the bank's plan.
    report = platform.close("failed")
    assert report["releases"] == {secureboost.DP_MECHANISM: 4}


# -- the ledger lives with the data --------------------------------------------------------------


def test_a_job_the_platforms_ledger_refuses_never_reads_its_data(
    budgeted: dict[str, Any], tmp_path: Path, lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = budgeted["folder"]
    with BudgetLedger() as ledger:
        ledger.set_cap(REF, "bank", epsilon=0.5, delta=1e-5)
    transport = _pair(tmp_path, lab_home, folder / "bank_1.csv", folder / "platform.csv")
    reads: list[str] = []
    real = party_module.load_table

    def spy(binding: PartyBinding, *args: Any, **kwargs: Any) -> Any:
        reads.append(binding.name)
        return real(binding, *args, **kwargs)

    monkeypatch.setattr(party_module, "load_table", spy)
    replies = _hello(transport, _spec(DP_MODEL, feature_set=REF))
    [error] = [e for e in replies if e.stage == "error"]
    assert error.sender == "platform"
    assert "cap" in str(error.payload["message"])
    assert reads == ["bank"]  # the platform never read its table
    with BudgetLedger() as ledger:
        assert ledger.jobs() == []


def test_a_job_no_row_is_authorized_for_is_refused_before_any_reservation(
    budgeted: dict[str, Any], tmp_path: Path, lab_home: Path
) -> None:
    folder = budgeted["folder"]
    transport = _pair(tmp_path, lab_home, folder / "bank_1.csv", folder / "platform.csv")
    spec = _spec(DP_MODEL, feature_set=REF)
    spec = replace(spec, governance=GovernanceSpec(purpose="pre_loan_screening"))
    replies = _hello(transport, spec)
    [error] = [e for e in replies if e.stage == "error"]
    assert error.sender == "platform"
    message = str(error.payload["message"])
    assert (
        f"none of the {budgeted['n_platform']:,} rows of {REF} has a valid authorization for "
        "bank 'bank' and purpose 'pre_loan_screening'"
    ) in message
    assert "no authorization valid today for that bank and purpose" in message
    with BudgetLedger() as ledger:
        assert ledger.jobs() == []  # refused before the reservation: nothing to release
    [refused] = [e for e in _events("job_refused") if e["party"] == "platform"]
    assert refused["reason"].startswith("NoAuthorizedRowsError")


def test_a_node_that_never_used_its_data_after_hello_is_charged_nothing(
    budgeted: dict[str, Any], tmp_path: Path, lab_home: Path
) -> None:
    from federated.driver import close_parties
    from lab.governance.node import settle_job

    folder = budgeted["folder"]
    # Stopped after hello (Ctrl-C before any release; no job/end): settled from its journal.
    transport = _pair(tmp_path, lab_home, folder / "bank_1.csv", folder / "platform.csv")
    spec = _spec(DP_MODEL, feature_set=REF)
    _hello(transport, spec)
    [served] = [e for e in _events("job_served") if e["party"] == "platform"]
    assert served["n_rows"] == budgeted["n_platform"]
    assert served["n_authorized"] == len(budgeted["allowed"])
    with BudgetLedger() as ledger:
        [job] = ledger.jobs()
    assert job.state == "reserved"
    assert settle_job(spec.job_id) == {job.job_id: "released"}
    assert settle_job(spec.job_id) == {}  # nothing left open
    # Told the job ended right after hello: released too (hello reads but releases nothing).
    transport = _pair(tmp_path, lab_home, folder / "bank_1.csv", folder / "platform.csv")
    second = _spec(DP_MODEL, feature_set=REF)
    _hello(transport, second)
    assert close_parties(transport, "failed")["platform"]["ledger"] == "released"
    with BudgetLedger() as ledger:
        assert [j.state for j in ledger.jobs()] == ["released", "released"]
        [status] = ledger.status()
    assert status.spent_epsilon == 0.0
    assert status.reserved_epsilon == 0.0


def test_an_unclosed_reservation_is_settled_from_the_nodes_journal(
    budgeted: dict[str, Any], tmp_path: Path, lab_home: Path
) -> None:
    from lab.governance.node import settle

    folder = budgeted["folder"]
    transport = _pair(tmp_path, lab_home, folder / "bank_1.csv", folder / "platform.csv")
    spec = _spec(DP_MODEL, feature_set=REF)
    _hello(transport, spec)
    _align(transport, spec)
    run_protocol(transport, [Envelope("job", "split", COORDINATOR, "bank")])
    params = secureboost.SecureBoostParams.from_spec({**DP_MODEL, "n_estimators": 1}, TEST_KEYS)
    start = secureboost.start_envelope("bank", ["platform"], ["bank", "platform"], params, "x")
    run_protocol(transport, [start])
    # The coordinator never sends job/end (it crashed): the reservation is open.
    with BudgetLedger() as ledger:
        [job] = ledger.jobs()
    assert job.state == "reserved"
    assert settle(job.job_id) == "committed"
    with BudgetLedger() as ledger:
        [job] = ledger.jobs()
    assert job.outcome == "failed"
    assert job.actual_events is not None
    assert sum(e.steps for e in job.actual_events) == 2  # the one tree's two levels


def _pair_in_run(tmp_path: Path, lab_home: Path, folder: Path, run_id: int) -> InProcessTransport:
    """:func:`_pair` whose platform node serves the job in Flower run ``run_id``."""
    binding = PartyBinding(
        "platform",
        "platform",
        folder / "platform.csv",
        store=tmp_path / "ps",
        policy=NODE_POLICY,
        governance_home=lab_home,
    )
    runtimes = {
        "bank": _runtime(
            "bank", "bank", folder / "bank_1.csv", _bank_home(tmp_path), tmp_path / "bs"
        ),
        "platform": PartyRuntime(
            binding, DictStore(), party_protocols(), disclose_errors=True, run_id=run_id
        ),
    }
    return InProcessTransport(runtimes)  # type: ignore[arg-type]


def _ended(run: int) -> None:
    """The SuperLink's answer about a run it no longer runs (what Flower's client raises)."""
    from flwr.supercore.run import RunNotRunningException

    raise RunNotRunningException


def test_the_node_settles_a_lost_run_from_its_own_journal_and_releases_nothing_after(
    budgeted: dict[str, Any], tmp_path: Path, lab_home: Path
) -> None:
    """A run the SuperLink lost (coordinator restarted): the platform's node settles it itself.

    What is charged is the node's own journal; a coordinator claiming the run ended (before
    any release, or never started) and carrying on gets no release uncharged.
    """
    from lab.deploy.run_watch import RunWatch
    from lab.governance.node import open_journals, settle, settle_open

    folder = budgeted["folder"]
    transport = _pair_in_run(tmp_path, lab_home, folder, run_id=7)
    platform = transport.parties["platform"]
    spec = _spec(DP_MODEL, feature_set=REF)
    _hello(transport, spec)
    _align(transport, spec)
    run_protocol(transport, [Envelope("job", "split", COORDINATOR, "bank")])
    params = secureboost.SecureBoostParams.from_spec({**DP_MODEL, "n_estimators": 1}, TEST_KEYS)
    start = secureboost.start_envelope("bank", ["platform"], ["bank", "platform"], params, "x")
    run_protocol(transport, [start])  # one tree: two releases left the node
    [journal] = open_journals(lab_home)
    assert journal.run == 7
    settled: list[str] = []

    def settle_now(reservation: str, run: int, reason: str) -> bool:
        settled.append(settle(reservation, lab_home, reason=reason, run=run))
        return True

    watch = RunWatch(lab_home, settle=settle_now, background=False)
    # While the SuperLink runs the run, nothing is settled.
    assert watch.look(lambda run: {"run_id": run}) == []
    # The SuperLink no longer runs it (restarted mid-job; or a coordinator says so).
    assert watch.look(_ended) == [journal.reservation]
    assert settled == ["committed"]
    with BudgetLedger() as ledger:
        [job] = ledger.jobs()
    assert (job.state, job.outcome) == ("committed", "failed")
    assert job.actual_events is not None
    assert sum(e.steps for e in job.actual_events) == 2  # the releases made, none refunded
    [entry] = _events("reservation_settled")
    assert entry["reservation"] == journal.reservation
    assert entry["outcome"] == "committed"
    assert entry["releases"] == {secureboost.DP_MECHANISM: 2}
    assert "no longer running" in entry["reason"]
    assert AuditLog().verify().ok
    assert open_journals(lab_home) == []
    # The coordinator carries on with the "ended" job: the node's next release is refused
    # before it leaves (the count every DP step of the node goes through).
    with pytest.raises(PolicyRefusalError, match="settled its reservation"):
        platform.record_release(secureboost.DP_MECHANISM)
    with BudgetLedger() as ledger:
        [job] = ledger.jobs()
    assert job.actual_events is not None
    assert sum(e.steps for e in job.actual_events) == 2
    # Nor can it end the job as finished (no model on a settled reservation).
    with pytest.raises(PolicyRefusalError, match="settled its reservation"):
        platform.close("finished")

    # A node that starts again (lab node start) settles what its previous process left open:
    # here a job that got no further than hello (no data used, nothing released): released.
    second = _pair_in_run(tmp_path, lab_home, folder, run_id=8)
    _hello(second, _spec(DP_MODEL, feature_set=REF))
    [left] = open_journals(lab_home)
    assert left.run == 8
    assert settle_open(lab_home, reason="the node started again") == {left.reservation: "released"}
    with BudgetLedger() as ledger:
        assert [j.state for j in ledger.jobs()] == ["committed", "released"]
    assert [e["outcome"] for e in _events("reservation_settled")] == ["committed", "released"]


def test_policy_settings_are_validated_and_audited(lab_home: Path) -> None:
    from lab.governance.errors import PolicyFileError

    with pytest.raises(PolicyFileError, match=r"crypto\.min_key_bits"):
        set_policy(["crypto.min_key_bits=64"], lab_home)
    with pytest.raises(PolicyFileError, match=r"unknown key 'psi\.max_ratio'"):
        set_policy(["psi.max_ratio=3"], lab_home)
    assert read_policy(lab_home).crypto.min_key_bits == 2048  # nothing was written
    set_policy(["psi.max_bank_ratio=3"], lab_home, actor="platform-security")
    [entry] = _events("policy_set")
    assert entry["changes"] == {"psi.max_bank_ratio": {"from": 20.0, "to": 3.0}}
    assert read_policy(lab_home).limits().psi_max_bank_ratio == 3.0


def test_vertical_lr_params_default_is_not_a_protection(tmp_path: Path) -> None:
    """The hetero LR job default batch size passes the platform's default minimum."""
    assert vertical_lr.HeteroLRParams().batch_size >= read_policy(tmp_path).hetero_lr.min_batch_size


def test_each_party_records_its_peers_audit_heads_at_start_and_end(
    tmp_path: Path, lab_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lab.cli import run as lab_run

    transport, _ = _hlr_pair(tmp_path, lab_home)
    result = run_job(_hlr_spec(batch_size=300, tol=0.0), transport)
    bank_home = tmp_path / "bank-home"
    platform_log = AuditLog(lab_home / "audit" / "log.jsonl")
    bank_log = AuditLog(bank_home / "audit" / "log.jsonl")
    at_bank = bank_log.peer_heads(party="platform")
    at_platform = platform_log.peer_heads(party="bank")
    assert sorted(h.when for h in at_bank) == ["end", "start"]
    assert sorted(h.when for h in at_platform) == ["end", "start"]
    assert {h.job_id for h in at_bank + at_platform} == {result.job_id}
    assert {h.key for h in at_bank} == {platform_log.key_fingerprint()}
    # The platform's log, checked against the heads the bank's log holds of it.
    end = next(h for h in at_bank if h.when == "end")
    assert platform_log.verify().ok
    assert end.seq <= (platform_log.head().seq if platform_log.head() else 0)
    monkeypatch.setenv("LAB_HOME", str(bank_home))
    assert lab_run(["audit", "verify", "--peer-log", str(platform_log.path)]) == 0


# -- resume: the reservation kept or re-checked, each release charged once ---------------------

RESUME_MODEL = {**DP_MODEL, "n_estimators": 3}


class _Killed(BaseException):
    """The job's process died (nothing more is delivered while ``dead``)."""


def _kill_after_bank_got(tree: int, *, stays_dead: bool) -> Callable[[str, Envelope], None]:
    """Kill the job right after the bank handled the platform's histogram of ``tree`` level 1."""
    state = {"armed": False, "dead": False}

    def tap(direction: str, env: Envelope) -> None:
        if state["dead"] and stays_dead:
            raise _Killed("gone")
        if direction != "to_party" or state["dead"]:
            return
        if state["armed"]:
            state["dead"] = True
            raise _Killed("killed")
        if env.recipient == "bank" and env.stage == "hist" and env.payload.get("tree") == tree:
            state["armed"] = env.payload.get("level") == 1

    return tap


@pytest.mark.parametrize("ended", ["killed", "closed"])
def test_a_resumed_dp_job_charges_every_release_once(
    budgeted: dict[str, Any], tmp_path: Path, lab_home: Path, ended: str
) -> None:
    """Killed: the reservation stays open and is kept. Closed (the run ended in order, the
    platform committed what it released): what is left of the plan is re-checked and reserved
    again, and only releases made after the resume are charged to it."""
    folder = budgeted["folder"]
    files = (folder / "bank_1.csv", folder / "platform.csv")
    spec = _spec(RESUME_MODEL, feature_set=REF)
    transport = _pair(tmp_path, lab_home, *files)
    transport.tap = _kill_after_bank_got(1, stays_dead=ended == "killed")
    with pytest.raises(_Killed):
        run_job(spec, transport)
    with BudgetLedger() as ledger:
        [first] = ledger.jobs()
    assert first.state == ("reserved" if ended == "killed" else "committed")

    result = run_job(spec, _pair(tmp_path, lab_home, *files), resume=True)
    report = result.nodes["platform"]
    assert report["ledger"] == "committed"
    with BudgetLedger() as ledger:
        jobs = ledger.jobs()
    assert {j.state for j in jobs} == {"committed"}
    assert len(jobs) == (1 if ended == "killed" else 2)
    charged = sum(e.steps for j in jobs for e in (j.actual_events or ()))
    # Every tree's two levels released once: the replayed tree's releases are not charged again.
    assert charged == report["releases"][secureboost.DP_MECHANISM] == 3 * 2
    [resumed] = _events("job_resumed", lab_home)[-1:]
    assert resumed["party"] == "platform"
    assert resumed["releases_before"] == {secureboost.DP_MECHANISM: 4}
    assert resumed["reservation"] == jobs[-1].job_id


# -- bins: how finely the platform's rows are cut for the bank's statistics ----------------------


def _binned_spec(kind: str, bins: int) -> JobSpec:
    from federated.spec import ScreeningSpec

    if kind == "secureboost":
        return _plain(
            _spec(model={"type": "secureboost", "n_estimators": 1, "max_depth": 2, "max_bin": bins})
        )
    if kind == "hetero_lr":
        return _hlr_spec(batch_size=300, max_bin=bins)
    spec = _plain(_spec(model={"type": "secureboost", "n_estimators": 1, "max_depth": 2}))
    return replace(spec, screening=ScreeningSpec(min_iv=0.01, bins=bins))


@pytest.mark.parametrize(
    ("kind", "setting"),
    [
        ("secureboost", "model.max_bin=100"),
        ("hetero_lr", "model.max_bin=100"),
        ("screening", "screening.bins=100"),
    ],
)
def test_bins_finer_than_the_platforms_policy_are_refused_at_hello(
    tmp_path: Path, lab_home: Path, kind: str, setting: str
) -> None:
    """The bank picks the bins in its job; the platform's own policy caps them (default 64)."""
    transport, _ = _hlr_pair(tmp_path, lab_home)
    with pytest.raises(PartyError, match=rf"{setting}.*binning\.max_bins=64") as info:
        run_job(_binned_spec(kind, 100), transport)
    assert info.value.party == "platform"
    assert info.value.error_type == "PolicyRefusalError"
    # Its owner may allow finer bins (or ask for coarser ones): then the same job runs.
    assert read_policy(lab_home).binning.max_bins == 64
    set_policy(["binning.max_bins=16"], lab_home)
    with pytest.raises(PartyError, match=r"binning\.max_bins=16"):
        run_job(_binned_spec(kind, 20), _hlr_pair(tmp_path / "again", lab_home)[0])


def test_a_bank_that_asks_for_finer_bins_in_its_message_is_refused(
    tmp_path: Path, lab_home: Path
) -> None:
    """The job spec says 8 bins; the bank's own ``init`` says 512: the platform bins nothing."""
    transport, _ = _hlr_pair(tmp_path, lab_home)

    def finer(env: Envelope) -> Envelope:
        if env.protocol == "secureboost" and env.stage == "init":
            settings = {**json.loads(env.text("settings")), "max_bin": 512}
            return replace(env, payload={**env.payload, "settings": json.dumps(settings)})
        return env

    _tamper_bank(transport, finer)
    with pytest.raises(PartyError, match=r"model\.max_bin=512.*binning\.max_bins=64") as info:
        run_job(_binned_spec("secureboost", 8), transport)
    assert info.value.party == "platform"
    assert info.value.error_type == "PolicyRefusalError"


def test_the_bins_cap_is_validated(lab_home: Path) -> None:
    from lab.governance.errors import PolicyFileError

    with pytest.raises(PolicyFileError, match=r"binning\.max_bins"):
        set_policy(["binning.max_bins=1"], lab_home)
    assert read_policy(lab_home).limits().max_bins == 64


def test_a_governed_table_is_copied_once_per_admitted_rows_not_per_read() -> None:
    """A party reads its table several times per message; the admitted rows are one copy."""
    from features.io import PartyTable

    def table() -> PartyTable:
        return PartyTable(
            path=Path("platform.csv"),
            digest="sha256:x",
            ids=np.array([f"e{i}" for i in range(6)]),
            features=pd.DataFrame({"x": np.arange(6.0), "y": np.arange(6.0) * 2}),
            label=None,
            id_column="id",
            label_column=None,
        )

    full, other = table(), table()
    assert party_module._admitted_rows(full, np.ones(6, dtype=bool)) is full  # all admitted
    mask = np.array([True, False, True, True, False, True])
    first = party_module._admitted_rows(full, mask)
    assert list(first.ids) == ["e0", "e2", "e3", "e5"]
    assert first.features["y"].tolist() == [0.0, 4.0, 6.0, 10.0]
    assert party_module._admitted_rows(full, mask.copy()) is first  # the same rows: no new copy
    assert party_module._admitted_rows(full, ~mask) is not first
    assert party_module._admitted_rows(other, mask) is not first  # another table's rows
