"""Choosing the homomorphic scheme: one registry and default, the job's ask, each node's policy.

A job names ``crypto.scheme`` (default Paillier); every node refuses a scheme its own policy
(``crypto.allowed_schemes``, default ``[paillier]``) does not allow, before anything else
happens; and the vertical protocols refuse a scheme they do not run with rather than quietly
running another one.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd
import pytest

from federated.estimators import SecureBoostClassifier
from federated.party import DictStore, PartyRuntime
from federated.protocols import party_protocols
from federated.spec import AlignmentSpec, GovernanceSpec, JobSpec, PartyBinding, PartySpec
from lab.config import NODE_POLICY, experiment_from_dict
from lab.config.schema import CryptoConfig
from lab.errors import ConfigError
from lab.governance.errors import PolicyFileError
from lab.governance.policy import read_policy, set_policy
from models.guard import NodeLimits, PolicyRefusalError, single_operator
from models.protocol import COORDINATOR, Envelope, ProtocolError
from models.secureboost.params import SecureBoostParams
from models.vertical.keys import UnsupportedSchemeError, crypto_fields, peer_scheme_key
from models.vertical_lr.params import HeteroLRParams
from secure_agg import schemes
from tests.conftest import TEST_KEY_POLICY, make_vertical, vertical_config

# ---------------------------------------------------------------- registry and defaults


def test_one_registry_one_default() -> None:
    assert tuple(schemes.SCHEMES) == get_args(schemes.SchemeName)
    assert schemes.DEFAULT_SCHEME == "paillier"
    assert schemes.get_scheme("ou").module == "secure_agg.ou"
    with pytest.raises(schemes.UnknownSchemeError, match="known: paillier, ou"):
        schemes.get_scheme("rsa")
    # Every default reads the registry's: job configs, node limits, node policies.
    assert CryptoConfig().scheme == schemes.DEFAULT_SCHEME
    assert NodeLimits().allowed_schemes == (schemes.DEFAULT_SCHEME,)
    assert read_policy().crypto.allowed_schemes == [schemes.DEFAULT_SCHEME]


@pytest.mark.parametrize("name", list(schemes.SCHEMES))
def test_every_backend_sums_packs_and_decrypts_histograms_exactly(name: str) -> None:
    backend = schemes.get_scheme(name).backend
    public, private = backend.generate_keypair(1024, allow_insecure_test_keys=True)
    rng = np.random.default_rng(1)
    bits = 60
    values = [int(v) for v in rng.integers(0, 2**40, 50)]
    groups = rng.integers(-1, 6, size=(50, 3))
    rows = backend.from_array(
        public, backend.to_array(public, backend.encrypt_private(private, values))
    )
    sums = backend.sum_groups_many(public, rows, groups, 6)
    flat = [c for column in sums for c in column]
    noised = [
        backend.add(public, c, z)
        for c, z in zip(flat, backend.encrypt(public, [1] * len(flat)), strict=True)
    ]
    packed = backend.pack(public, noised, bits)
    packer = backend.sum_packer(public, bits)
    assert len(packed) == packer.n_packed(len(flat))
    decoded = packer.unpack(backend.decrypt(private, packed), len(flat))
    expected = [
        1 + sum(v for v, g in zip(values, groups[:, j], strict=True) if g == k)
        for j in range(3)
        for k in range(6)
    ]
    assert decoded == expected
    back = backend.public_from_bytes(public.to_bytes(), allow_insecure_test_keys=True)
    assert back.fingerprint == public.fingerprint
    restored = backend.private_from_secret_bytes(back, private.to_secret_bytes())
    assert backend.decrypt(restored, packed[:1]) == backend.decrypt(private, packed[:1])
    other = schemes.get_scheme("ou" if name == "paillier" else "paillier").backend
    with pytest.raises(ValueError, match="bad tag"):
        other.public_from_bytes(public.to_bytes(), allow_insecure_test_keys=True)
    backend.forget_private_tables()


def test_ou_packs_fewer_sums_per_ciphertext_than_paillier() -> None:
    ou_pub, _ = schemes.get_scheme("ou").backend.generate_keypair(2048)
    p_pub, _ = schemes.get_scheme("paillier").backend.generate_keypair(2048)
    assert schemes.get_scheme("ou").backend.sum_packer(ou_pub, 150).capacity == 4
    assert schemes.get_scheme("paillier").backend.sum_packer(p_pub, 150).capacity == 13


# ---------------------------------------------------------------- node limits and policy


def test_node_limits_refuse_a_scheme_by_naming_the_policy_key() -> None:
    limits = NodeLimits()
    limits.check_scheme("paillier", "the job")
    with pytest.raises(PolicyRefusalError, match=r"crypto\.allowed_schemes=\['paillier'\]"):
        limits.check_scheme("ou", "the job's homomorphic scheme (crypto.scheme)")
    opted_in = NodeLimits(allowed_schemes=("paillier", "ou"))
    opted_in.check_scheme("ou", "the job")
    assert NodeLimits.from_dict(opted_in.to_dict()) == opted_in
    # One operator holding every party's data in one process has no peer to refuse.
    single_operator().check_scheme("ou", "the job")


def test_a_node_opts_in_to_ou_by_its_own_policy(lab_home: Path) -> None:
    set_policy(["crypto.allowed_schemes=[paillier,ou]"], lab_home)
    policy = read_policy(lab_home)
    assert policy.crypto.allowed_schemes == ["paillier", "ou"]
    assert policy.limits().allowed_schemes == ("paillier", "ou")
    with pytest.raises(PolicyFileError, match=r"crypto\.allowed_schemes"):
        set_policy(["crypto.allowed_schemes=[paillier,rsa]"], lab_home)
    with pytest.raises(PolicyFileError, match=r"crypto\.allowed_schemes"):
        set_policy(["crypto.allowed_schemes=[]"], lab_home)
    assert read_policy(lab_home).crypto.allowed_schemes == ["paillier", "ou"]


# ---------------------------------------------------------------- the job's ask


def test_job_configs_name_a_scheme_their_model_runs_with() -> None:
    raw = vertical_config()
    default = experiment_from_dict(json.loads(json.dumps(raw)), source=None, check_data=False)
    assert default.config.crypto.scheme == "paillier"
    raw["crypto"] = {"key_bits": 2048, "scheme": "rsa"}
    with pytest.raises(ConfigError, match=r"crypto\.scheme"):
        experiment_from_dict(json.loads(json.dumps(raw)), source=None, check_data=False)
    raw["crypto"] = {"key_bits": 2048, "scheme": "ou"}
    ou_job = experiment_from_dict(json.loads(json.dumps(raw)), source=None, check_data=False)
    assert ou_job.config.crypto.scheme == "ou"
    raw["model"] = {"type": "hetero_lr"}
    with pytest.raises(ConfigError, match="'hetero_lr' runs with paillier only"):
        experiment_from_dict(raw, source=None, check_data=False)


def test_protocol_params_refuse_a_scheme_they_do_not_run_with() -> None:
    assert crypto_fields({"key_bits": 2048}) == {
        "key_bits": 2048,
        "insecure_test_keys": False,
        "scheme": "paillier",
    }
    assert SecureBoostParams.from_spec({}, {"key_bits": 2048, "scheme": "ou"}).scheme == "ou"
    with pytest.raises(UnsupportedSchemeError, match=r"crypto\.scheme='ou'"):
        HeteroLRParams.from_spec({}, {"key_bits": 2048, "scheme": "ou"})
    with pytest.raises(UnsupportedSchemeError, match="runs with paillier only"):
        HeteroLRParams(scheme="ou")
    with pytest.raises(UnsupportedSchemeError):
        SecureBoostParams(scheme="rsa")


def _data(n: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, dict[str, pd.DataFrame]]:
    rng = np.random.default_rng(seed)
    bank = pd.DataFrame({"deposits": rng.normal(size=n)})
    score = rng.normal(size=n)
    platform = pd.DataFrame(
        {"tax_score": score, "grade": pd.Categorical(rng.choice(list("ABMCD"), size=n))}
    )
    logit = 1.5 * score + 0.7 * bank["deposits"].to_numpy()
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    return bank, y, {"platform": platform}


@pytest.mark.parametrize("dp_epsilon", [None, 8.0], ids=["exact", "dp"])
def test_secureboost_with_ou_equals_secureboost_with_paillier(dp_epsilon: float | None) -> None:
    bank, y, platforms = _data()
    params: dict[str, Any] = {
        "n_estimators": 3,
        "max_depth": 2,
        "max_bin": 8,
        "min_child_samples": 5,
        "key_bits": 1024,
        "insecure_test_keys": True,
        "dp_epsilon": dp_epsilon,
    }
    with_ou = SecureBoostClassifier(**params, scheme="ou").fit(bank, y, platforms)
    proba = with_ou.predict_proba(bank, platforms)[:, 1]
    if dp_epsilon is None:
        with_paillier = SecureBoostClassifier(**params).fit(bank, y, platforms)
        reference = with_paillier.predict_proba(bank, platforms)[:, 1]
        assert np.abs(proba - reference).max() < 1e-9
    else:  # noisy histograms: a valid model, not the same one
        assert np.all((proba > 0) & (proba < 1))
    assert with_ou.get_params()["scheme"] == "ou"


# ---------------------------------------------------------------- the platform's node decides


def _platform(tmp_path: Path, home: Path, *policy: str) -> PartyRuntime:
    _, platform = make_vertical(tmp_path / "data", n=200)
    set_policy([*TEST_KEY_POLICY, "unpublished=serve", *policy], home)
    binding = PartyBinding(
        "platform",
        "platform",
        platform,
        store=tmp_path / "ps",
        policy=NODE_POLICY,
        governance_home=home,
    )
    return PartyRuntime(binding, DictStore(), party_protocols(), disclose_errors=True)


def _hello(runtime: PartyRuntime, crypto: dict[str, Any]) -> Envelope:
    spec = JobSpec(
        job_id="job-scheme",
        name="probe",
        kind="vertical",
        parties=(PartySpec("bank", "bank", "id", "y"), PartySpec("platform", "platform", "id")),
        model={"type": "secureboost", "n_estimators": 2, "max_depth": 2, "max_bin": 8},
        crypto=crypto,
        alignment=AlignmentSpec(reveal="both", id_scheme="text", min_intersection=10),
        governance=GovernanceSpec(require_authorization=False),
        task="train",
    )
    [reply] = runtime.dispatch(
        Envelope("job", "hello", COORDINATOR, "platform", {"job": spec.to_json()})
    )
    return reply


TEST_KEYS = {"key_bits": 512, "insecure_test_keys": True}


def test_the_platform_refuses_a_scheme_its_policy_does_not_allow(
    tmp_path: Path, lab_home: Path
) -> None:
    runtime = _platform(tmp_path, lab_home)
    reply = _hello(runtime, {**TEST_KEYS, "scheme": "ou"})
    assert reply.stage == "error"
    message = str(reply.payload["message"])
    assert "crypto.allowed_schemes=['paillier']" in message
    assert "crypto.scheme" in message
    # Paillier, named or by default, passes the same node.
    assert _hello(_platform(tmp_path / "b", lab_home), {**TEST_KEYS}).stage == "hello"
    named = _hello(_platform(tmp_path / "c", lab_home), {**TEST_KEYS, "scheme": "paillier"})
    assert named.stage == "hello"


def test_a_platform_that_allows_ou_takes_the_ou_job(tmp_path: Path, lab_home: Path) -> None:
    runtime = _platform(tmp_path, lab_home, "crypto.allowed_schemes=[paillier,ou]")
    assert _hello(runtime, {**TEST_KEYS, "scheme": "ou"}).stage == "hello"


def test_the_platform_checks_the_banks_key_itself_not_the_job(
    tmp_path: Path, lab_home: Path
) -> None:
    """A bank that sends an OU key in a Paillier job meets the platform's own policy."""
    limits = NodeLimits(min_key_bits=512, allow_insecure_test_keys=True)
    ou_key, _ = schemes.get_scheme("ou").backend.generate_keypair(
        1024, allow_insecure_test_keys=True
    )
    with pytest.raises(PolicyRefusalError, match=r"crypto\.allowed_schemes"):
        peer_scheme_key(ou_key.to_bytes(), limits, "the bank's key", ("paillier", "ou"))
    opted_in = NodeLimits(
        min_key_bits=512, allow_insecure_test_keys=True, allowed_schemes=("paillier", "ou")
    )
    scheme, key = peer_scheme_key(ou_key.to_bytes(), opted_in, "the bank's key", ("paillier", "ou"))
    assert scheme.name == "ou"
    assert key == ou_key
    with pytest.raises(UnsupportedSchemeError):
        peer_scheme_key(ou_key.to_bytes(), opted_in, "the bank's key", ("paillier",))
    with pytest.raises(PolicyRefusalError, match=r"crypto\.min_key_bits=2048"):
        peer_scheme_key(ou_key.to_bytes(), NodeLimits(allowed_schemes=("ou",)), "k", ("ou",))
    with pytest.raises(ProtocolError, match="known scheme"):
        peer_scheme_key(b"junk", opted_in, "the bank's key", ("paillier", "ou"))


# ---------------------------------------------------------------- the peer's key: size and job


def _huge_ou_key(bits: int) -> bytes:
    """A structurally valid OU public key of ``bits`` bits (t6: a bank sizing the platform's
    tables); nobody can decrypt under it, which the platform cannot tell."""
    from secure_agg.ou import PublicKey

    n = secrets.randbits(bits) | (1 << (bits - 1)) | 1
    return bytes(PublicKey(n, 2, 4).to_bytes())  # odd n: 2 and 4 are units


def test_a_peers_oversized_key_is_refused_by_the_nodes_ceiling() -> None:
    from models.guard import MAX_KEY_BITS

    assert NodeLimits().max_key_bits == MAX_KEY_BITS == 8192
    assert read_policy().crypto.max_key_bits == MAX_KEY_BITS  # one source of truth
    limits = NodeLimits(allowed_schemes=("paillier", "ou"))
    with pytest.raises(PolicyRefusalError, match=r"65536 bits.*crypto\.max_key_bits=8192"):
        peer_scheme_key(_huge_ou_key(65_536), limits, "the bank's key", ("paillier", "ou"))
    _, key = peer_scheme_key(_huge_ou_key(8192), limits, "the bank's key", ("ou",))
    assert key.key_bits == 8192
    lower = NodeLimits(allowed_schemes=("ou",), max_key_bits=4096)
    with pytest.raises(PolicyRefusalError, match=r"crypto\.max_key_bits=4096"):
        peer_scheme_key(_huge_ou_key(8192), lower, "the bank's key", ("ou",))


def test_max_key_bits_is_a_validated_policy_setting(lab_home: Path) -> None:
    with pytest.raises(PolicyFileError, match=r"max_key_bits"):
        set_policy(["crypto.max_key_bits=1024"], lab_home)  # below min_key_bits=2048
    set_policy(["crypto.max_key_bits=4096"], lab_home)
    assert read_policy(lab_home).limits().max_key_bits == 4096


def _sb_init(runtime: PartyRuntime, key: bytes) -> Envelope:
    [reply] = runtime.dispatch(
        Envelope(
            "secureboost",
            "init",
            "bank",
            "platform",
            {
                "settings": json.dumps({"max_bin": 4}),
                "public_key": key,
                "train_mask": np.ones(1, dtype=bool),
            },
        )
    )
    return reply


def test_the_platform_refuses_a_huge_bank_key_before_building_anything(
    tmp_path: Path, lab_home: Path
) -> None:
    from secure_agg.ou import tables

    runtime = _platform(tmp_path, lab_home, "crypto.allowed_schemes=[paillier,ou]")
    assert _hello(runtime, {**TEST_KEYS, "scheme": "ou"}).stage == "hello"
    reply = _sb_init(runtime, _huge_ou_key(16_384))
    assert reply.stage == "error"
    assert "crypto.max_key_bits=8192" in str(reply.payload["message"])
    cached = [*tables._TABLES, *tables._C_TABLES]
    assert all(key[0].bit_length() < 16_384 for key in cached)  # no table of the huge key


def test_the_platform_ties_the_banks_key_to_the_job_it_approved(
    tmp_path: Path, lab_home: Path
) -> None:
    """A bank that swaps in another scheme, or a shorter key than the job named, is refused."""
    backend_ou = schemes.get_scheme("ou").backend
    backend_paillier = schemes.get_scheme("paillier").backend
    ou_key, _ = backend_ou.generate_keypair(1024, allow_insecure_test_keys=True)
    short, _ = backend_paillier.generate_keypair(512, allow_insecure_test_keys=True)
    # The node allows both schemes; the job it approved is a Paillier job of 1024-bit keys.
    runtime = _platform(tmp_path, lab_home, "crypto.allowed_schemes=[paillier,ou]")
    assert _hello(runtime, {"key_bits": 1024, "insecure_test_keys": True}).stage == "hello"
    reply = _sb_init(runtime, ou_key.to_bytes())
    assert reply.stage == "error"
    assert reply.payload["error_type"] == "JobKeyMismatchError"
    assert "crypto.scheme='paillier'" in str(reply.payload["message"])
    runtime = _platform(tmp_path / "b", lab_home, "crypto.allowed_schemes=[paillier,ou]")
    assert _hello(runtime, {"key_bits": 1024, "insecure_test_keys": True}).stage == "hello"
    reply = _sb_init(runtime, short.to_bytes())
    assert reply.stage == "error"
    assert "512 bits" in str(reply.payload["message"])
    assert "crypto.key_bits=1024" in str(reply.payload["message"])
