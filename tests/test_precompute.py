"""Encryption randomness made ahead, OU on threads, and SecureBoost's per-tree critical path.

Factors equal the randomness half of each scheme's encryption on the same exponents; a pool
hands every factor out once and forgets them all at the end; SecureBoost trains the same model
with and without precomputation (and with OU on one thread or two); every federated tree
reports a critical path whose parts sum to its wall time.
"""

from __future__ import annotations

import pickle
import secrets
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from federated.estimators import SecureBoostClassifier
from models.protocol import Envelope, ProtocolError
from models.secureboost import timing
from secure_agg import ou, paillier, precompute
from secure_agg.backends import OU, PAILLIER, HEBackend
from secure_agg.ou import kernels as ou_kernels
from secure_agg.ou import tables
from secure_agg.paillier import extension
from secure_agg.paillier import tables as paillier_tables
from tests.test_secureboost_protocol import _core, _data

KERNELS = [pytest.param(None, id="python"), pytest.param("c", id="c")]


@pytest.fixture(params=KERNELS)
def kernels(request: pytest.FixtureRequest) -> Iterator[None]:
    loaded = extension.load()
    if request.param == "c" and loaded is None:
        pytest.skip("C kernels not built")
    extension.use(loaded if request.param == "c" else None)
    yield
    extension.use(loaded)


@pytest.fixture(scope="module")
def ou_keys() -> tuple[ou.PublicKey, ou.PrivateKey]:
    return ou.generate_keypair(1024, allow_insecure_test_keys=True)


@pytest.fixture(scope="module")
def paillier_keys() -> tuple[paillier.PublicKey, paillier.PrivateKey]:
    return paillier.generate_keypair(1024, allow_insecure_test_keys=True)


# ---------------------------------------------------------------- factors equal encryption


@pytest.mark.usefixtures("kernels")
def test_ou_factor_times_plaintext_part_is_the_encryption_on_the_same_exponent(
    ou_keys: tuple[ou.PublicKey, ou.PrivateKey],
) -> None:
    pub, priv = ou_keys
    values = [0, 1, pub.plaintext_bound - 1, *(secrets.randbits(150) for _ in range(40))]
    randomness = secrets.token_bytes(pub.randomness_bytes * len(values))
    reference = [int(c) for c in ou_kernels.encrypt(pub, values, randomness)]
    factors = [int(f) for f in ou_kernels.randomness_parts(pub, randomness)]
    assert ou.encrypt_with_factors(pub, values, factors, workers=1) == reference
    assert ou.encrypt_with_factors(pub, values, factors, workers=2) == reference
    fresh = ou.encrypt_with_factors(pub, values, ou.random_factors(pub, len(values), workers=2))
    assert ou.decrypt_many(priv, fresh) == values


@pytest.mark.usefixtures("kernels")
def test_ou_batches_on_threads_decrypt_like_one_thread(
    ou_keys: tuple[ou.PublicKey, ou.PrivateKey],
) -> None:
    pub, priv = ou_keys
    values = [secrets.randbits(200) for _ in range(150)]
    one, two = ou.encrypt_many(pub, values, workers=1), ou.encrypt_many(pub, values, workers=2)
    assert ou.decrypt_many(priv, one) == ou.decrypt_many(priv, two) == values
    assert ou.decrypt_many(priv, ou.obfuscate_many(pub, two, workers=2)) == values
    assert len(set(one) | set(two)) == 2 * len(values)  # fresh randomness on every thread


def test_paillier_factor_is_an_encryption_of_zero_on_the_same_exponent(
    paillier_keys: tuple[paillier.PublicKey, paillier.PrivateKey],
) -> None:
    pub, priv = paillier_keys
    crt = paillier_tables.private_encryptor(priv)
    values = [0, 1, pub.n - 1, *(secrets.randbits(150) for _ in range(20))]
    exponents = [secrets.randbits(8 * pub.encryption_exponent_bytes) for _ in values]
    reference = [int(crt.encrypt(m, a)) for m, a in zip(values, exponents, strict=True)]
    factors = [int(crt.encrypt(0, a)) for a in exponents]
    assert paillier.encrypt_with_factors(pub, values, factors) == reference
    fresh = paillier.encrypt_with_factors(pub, values, paillier.random_factors(priv, len(values)))
    assert paillier.decrypt_many(priv, fresh) == values


def test_factors_are_checked(paillier_keys: tuple[paillier.PublicKey, paillier.PrivateKey]) -> None:
    pub, _ = paillier_keys
    with pytest.raises(paillier.PaillierError, match="2 factors for 1 plaintexts"):
        paillier.encrypt_with_factors(pub, [1], [2, 3])
    with pytest.raises(paillier.PaillierError, match="outside"):
        paillier.encrypt_with_factors(pub, [1], [0])


# ---------------------------------------------------------------- the pool


class _Recorder:
    """A backend wrapper that records every factor made and every factor used."""

    def __init__(self, inner: HEBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.made: list[int] = []
        self.used: list[int] = []

    def random_factors(self, private: Any, count: int, *, workers: int | None = None) -> list[int]:
        out = self.inner.random_factors(private, count, workers=workers)
        self.made += out
        return out

    def encrypt_with_factors(
        self, private: Any, plaintexts: Sequence[int], factors: Sequence[int]
    ) -> list[int]:
        self.used += list(factors)
        return self.inner.encrypt_with_factors(private, plaintexts, factors)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _wait_for(pool: precompute.RandomnessPool, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(pool) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(pool) == count


@pytest.mark.parametrize("backend", [PAILLIER, OU], ids=["paillier", "ou"])
def test_a_pool_hands_out_each_factor_once_and_forgets_them(backend: HEBackend) -> None:
    _, priv = backend.generate_keypair(1024, allow_insecure_test_keys=True)
    recorder = _Recorder(backend)
    pool = precompute.RandomnessPool(recorder, priv, chunk=16)
    pool.fill(50)
    _wait_for(pool, 50)
    first, seconds = pool.take(30)
    assert len(first) == 30
    assert seconds > 0
    pool.fill(40)
    second, _ = pool.take(100)  # pauses the thread first: what is ready
    third, seconds = pool.take(5)
    assert third == []
    assert seconds == 0.0
    taken = first + second
    assert len(set(taken)) == len(taken)  # never the same factor twice
    assert set(taken) <= set(recorder.made)
    assert len(pool) == 0
    assert pool.taken == len(taken)
    assert pool.made == len(recorder.made)
    pool.fill(20)
    pool.forget()
    assert len(pool) == 0
    assert pool.take(10)[0] == []
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(pool)
    assert "ready=" in repr(pool)
    assert str(taken[0]) not in repr(pool)


def test_the_process_keeps_pools_of_few_keys_and_forgets_them_all() -> None:
    precompute.forget_pools()
    keys = [OU.generate_keypair(1024, allow_insecure_test_keys=True)[1] for _ in range(3)]
    pools = [precompute.pool_for(OU, k) for k in keys[:2]]
    assert precompute.pool_for(OU, keys[1]) is pools[1]
    for pool in pools:
        pool.fill(8)
        _wait_for(pool, 8)
    pools.append(precompute.pool_for(OU, keys[2]))
    assert len(precompute._POOLS) == precompute.POOL_CACHE_SIZE
    assert len(pools[0]) == 0  # forgotten with its factors when a third key came
    assert len(pools[1]) == 8
    precompute.forget_pools()
    assert not precompute._POOLS
    assert all(len(p) == 0 for p in pools)


# ---------------------------------------------------------------- SecureBoost


PARAMS: dict[str, Any] = {
    "n_estimators": 3,
    "max_depth": 3,
    "max_bin": 8,
    "min_child_samples": 5,
    "key_bits": 1024,
    "insecure_test_keys": True,
}


@pytest.mark.parametrize("scheme", ["paillier", "ou"])
def test_precomputed_randomness_trains_the_same_model_each_factor_used_once(
    scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank, y, platforms = _data(300, seed=5)
    monkeypatch.setenv(precompute.PRECOMPUTE_ENV, "off")
    plain = SecureBoostClassifier(**PARAMS, scheme=scheme).fit(bank, y, platforms)
    assert all(t["critical_path"]["precomputed_rows"] == 0 for t in plain.outcome_.per_tree)
    monkeypatch.delenv(precompute.PRECOMPUTE_ENV)

    recorder = _Recorder(OU if scheme == "ou" else PAILLIER)
    from models.vertical import keys as vertical_keys

    real_backend = vertical_keys.KeyPair.backend
    monkeypatch.setattr(vertical_keys.KeyPair, "backend", property(lambda self: recorder))
    fast = SecureBoostClassifier(**PARAMS, scheme=scheme).fit(bank, y, platforms)
    monkeypatch.setattr(vertical_keys.KeyPair, "backend", real_backend)

    core, tables = _core(bank, y, platforms, **PARAMS)
    proba = fast.predict_proba(bank, platforms)[:, 1]
    assert np.abs(proba - core.predict_proba(tables)).max() < 1e-6
    assert np.abs(proba - plain.predict_proba(bank, platforms)[:, 1]).max() < 1e-12
    rows = [t["critical_path"]["precomputed_rows"] for t in fast.outcome_.per_tree]
    assert sum(rows) == len(recorder.used) > 0  # the pool served rows
    assert len(set(recorder.used)) == len(recorder.used)  # each factor used exactly once
    assert set(recorder.used) <= set(recorder.made)
    assert not precompute._POOLS  # forgotten at the end of the protocol


def test_every_tree_reports_a_critical_path_whose_parts_sum_to_its_time() -> None:
    bank, y, platforms = _data(300, seed=6)
    params: dict[str, Any] = {**PARAMS, "n_estimators": 3, "bank_only_trees": 1}
    clf = SecureBoostClassifier(**params).fit(bank, y, platforms)
    per_tree = clf.outcome_.per_tree
    for entry in per_tree:
        path = entry["critical_path"]
        assert path["tree"] == entry["tree"]
        parts = sum(path[p] for p in timing.PARTS)
        assert parts == pytest.approx(path["wall"], abs=1e-9)
        # the tree's own clock stops a little earlier (before its critical path is recorded)
        assert path["wall"] == pytest.approx(entry["seconds"], abs=0.05)
        assert path["wall"] >= entry["seconds"] - 1e-6
        assert path["bank_compute"] > 0
        assert path["encrypt_seconds"] <= path["bank_compute"]
        if entry["bank_only"]:
            assert path["platform_compute"] == 0.0
        else:
            assert path["platform_compute"] > 0
            assert path["transport_and_runtime"] >= -1e-6
            assert path["bank_idle"] == pytest.approx(path["wall"] - path["bank_compute"])
    summary = timing.summarize(per_tree)
    assert summary["trees"] == 2  # the bank-only tree is left out
    assert summary["critical_side"] in ("bank", "platform")
    assert timing.summarize([]) == {}


def test_a_platform_cannot_report_negative_compute_time() -> None:
    state: dict[str, Any] = {}
    timing.open_tree(state, 0, 0.0)
    bad = Envelope("secureboost", "hist", "platform", "bank", {timing.COMPUTE_SECONDS: -1.0})
    with pytest.raises(ProtocolError, match="nonnegative"):
        timing.platform_replied(state, bad)
    for seconds in (0.5, 0.25):
        timing.platform_replied(
            state,
            Envelope("secureboost", "hist", "p", "bank", {timing.COMPUTE_SECONDS: seconds}),
        )
    timing.hop_complete(state)
    path = timing.close_tree(state, 2.0)
    assert path is not None
    assert path["platform_compute"] == 0.5  # the longest of the hop
    assert timing.close_tree(state, 3.0) is None


def test_ou_histogram_kernel_in_c_on_threads_equals_python(
    ou_keys: tuple[ou.PublicKey, ou.PrivateKey],
) -> None:
    loaded = extension.load()
    if loaded is None:
        pytest.skip("C kernels not built")
    pub, priv = ou_keys
    values = [secrets.randbits(60) for _ in range(120)]
    cts = ou.encrypt_many(pub, values)
    groups = np.random.default_rng(1).integers(-1, 7, size=(120, 5))
    groups[:, 4] = -1  # a column with every group empty
    in_c = [ou.sum_groups_many(pub, cts, groups, 7, workers=w) for w in (1, 2, 3)]
    extension.use(None)
    try:
        in_python = ou.sum_groups_many(pub, cts, groups, 7)
    finally:
        extension.use(loaded)
    assert in_c[0] == in_c[1] == in_c[2] == in_python
    assert in_c[0][4] == [1] * 7
    sums = ou.decrypt_many(priv, in_c[0][0])
    assert sums == [
        sum(v for v, g in zip(values, groups[:, 0], strict=True) if g == k) for k in range(7)
    ]
    encryptor = tables.public_c_encryptor(loaded, pub)
    zero_row = bytes(pub.ciphertext_bytes)  # the ciphertext 0 is refused
    with pytest.raises(ValueError, match="outside"):
        encryptor.group_sums(
            zero_row, pub.ciphertext_bytes, np.zeros((1, 1), np.int32).tobytes(), 1, 1, 1
        )
