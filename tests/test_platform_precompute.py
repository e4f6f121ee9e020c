"""The platform's own re-randomisation factors made ahead (``y^n``, :mod:`secure_agg.precompute`).

A factor made ahead re-randomises exactly like one made during the pack; a pool hands each
out once, refuses pickling and is capped; SecureBoost trains the same model with and without
the platform's pool, uses every factor once over a whole run, reports the counts per tree, and
forgets the pools at the end of the job, finished or failed.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import gmpy2
import numpy as np
import pytest

from federated.estimators import SecureBoostClassifier
from federated.transport import PartyError
from models.protocol import Envelope, ProtocolError
from models.secureboost import bank_trees, crypto, timing
from models.secureboost.platform import _pool_settings
from secure_agg import ou, own_randomness, paillier, precompute
from secure_agg.backends import OU, PAILLIER, HEBackend
from tests.test_precompute import PARAMS, _wait_for
from tests.test_secureboost_protocol import _core, _data


@pytest.mark.parametrize("backend", [PAILLIER, OU], ids=["paillier", "ou"])
def test_an_own_pool_hands_out_nth_powers_once_and_is_never_pickled(backend: HEBackend) -> None:
    pub, priv = backend.generate_keypair(1024, allow_insecure_test_keys=True)
    pool = precompute.RandomnessPool(backend, pub, chunk=precompute.OWN_CHUNK, own=True)
    pool.fill(10)
    _wait_for(pool, 10)
    factors, _ = pool.take(6)
    rest, _ = pool.take(100)
    assert len(factors) == 6
    assert len(rest) == 4
    assert len(set(factors + rest)) == 10  # never the same factor twice
    assert len(pool) == 0
    assert pool.taken == pool.made == 10
    # A factor made ahead re-randomises like a fresh one: c · f, the same plaintext.
    plaintexts = [5, 7, 11]
    cts = backend.encrypt(pub, plaintexts)
    scheme = ou if backend is OU else paillier
    out = scheme.rerandomize_own(pub, cts, factors=factors[:2])  # the third: made now
    assert backend.decrypt(priv, out) == plaintexts
    n = int(pub.n)
    mod = n if backend is OU else n * n
    assert out[:2] == [c * f % mod for c, f in zip(cts[:2], factors[:2], strict=True)]
    assert out[2] != cts[2]
    for f in factors:  # an n-th power of a unit: (y^n)
        assert gmpy2.gcd(f, n) == 1
    assert "own" in repr(pool)
    assert str(factors[0]) not in repr(pool)
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(pool)
    pool.fill(8)
    pool.forget()
    assert len(pool) == 0


def test_factors_made_ahead_must_be_in_range() -> None:
    n = 15
    with pytest.raises(ValueError, match="outside"):
        own_randomness.nth_power_rerandomize([2], n, n, factors=[0])
    with pytest.raises(ValueError, match="outside"):
        own_randomness.nth_power_rerandomize([2], n, n, factors=[15])
    assert own_randomness.nth_power_factors(n, n, 0) == []


def test_pool_size_follows_the_packing_layout_and_is_capped() -> None:
    pub, _ = PAILLIER.generate_keypair(1024, allow_insecure_test_keys=True)
    cipher = crypto.PlatformCipher(pub, crypto.RowLayout(300), PAILLIER)
    capacity = PAILLIER.sum_packer(pub, cipher.layout.sum_bits).capacity
    sums = 3 * 9  # three features of eight bins (+ missing)
    expected = sum(-(-k * sums // capacity) for k in (1, 1, 2, 4))  # depths 0, 1, 2, 3
    assert cipher.packs_per_tree(sums, 4) == expected
    assert cipher.packs_per_tree(sums, 1) == -(-sums // capacity)
    assert precompute.capped_target(10, 512) == 10
    assert precompute.capped_target(10**9, 512) == precompute.MAX_POOL_BYTES // 512
    assert precompute.capped_target(-3, 512) == 0


def test_the_process_keeps_own_pools_per_party_and_forgets_them() -> None:
    precompute.forget_pools()
    pub, _ = OU.generate_keypair(1024, allow_insecure_test_keys=True)
    a = precompute.own_pool_for("platform-a", OU, pub)
    b = precompute.own_pool_for("platform-b", OU, pub)
    assert a is not b  # parties in one process never share factors
    assert precompute.own_pool_for("platform-a", OU, pub) is a
    a.fill(4)
    b.fill(4)
    _wait_for(a, 4)
    _wait_for(b, 4)
    precompute.forget_own_pools("platform-a")
    assert len(a) == 0
    assert len(b) == 4
    precompute.forget_pools()
    assert not precompute._OWN_POOLS
    assert len(b) == 0


def test_a_platform_cannot_report_negative_or_fractional_pack_counts() -> None:
    state: dict[str, Any] = {}
    timing.open_tree(state, 0, 0.0)
    good = Envelope("secureboost", "hist", "p", "bank", {timing.PRECOMPUTED_PACKS: 3})
    timing.platform_replied(state, good)
    timing.platform_replied(state, good)
    assert state["timing"]["platform_precomputed_packs"] == 6
    for bad in (-1, 1.5, True):
        env = Envelope("secureboost", "hist", "p", "bank", {timing.FRESH_PACKS: bad})
        with pytest.raises(ProtocolError, match=timing.FRESH_PACKS):
            timing.platform_replied(state, env)


class _Recorder:
    """Records every ``y^n`` made (ahead or fresh) and every factor made ahead that was used."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[int] = []
        self.used: list[int] = []
        make, apply = own_randomness.nth_power_factors, own_randomness.nth_power_rerandomize

        def recording_make(n: int, modulus: int, count: int, **kw: Any) -> list[int]:
            out = make(n, modulus, count, **kw)
            self.made += out
            return out

        def recording_apply(
            cts: Sequence[int], n: int, modulus: int, *, factors: Sequence[int] = (), **kw: Any
        ) -> list[int]:
            self.used += list(factors)
            return apply(cts, n, modulus, factors=factors, **kw)

        monkeypatch.setattr(own_randomness, "nth_power_factors", recording_make)
        monkeypatch.setattr(own_randomness, "nth_power_rerandomize", recording_apply)


def _packs(clf: SecureBoostClassifier, key: str) -> list[int]:
    return [t["critical_path"][key] for t in clf.outcome_.per_tree]


@pytest.mark.parametrize("scheme", ["paillier", "ou"])
def test_the_platform_pool_trains_the_same_model_each_factor_used_once(
    scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank, y, platforms = _data(300, seed=5)
    monkeypatch.setenv(precompute.PRECOMPUTE_ENV, "off")
    plain = SecureBoostClassifier(**PARAMS, scheme=scheme).fit(bank, y, platforms)
    assert sum(_packs(plain, "platform_precomputed_packs")) == 0
    fresh_only = _packs(plain, "platform_fresh_packs")
    assert all(count > 0 for count in fresh_only)
    monkeypatch.delenv(precompute.PRECOMPUTE_ENV)

    recorder = _Recorder(monkeypatch)
    fast = SecureBoostClassifier(**PARAMS, scheme=scheme).fit(bank, y, platforms)
    monkeypatch.undo()

    core, tables = _core(bank, y, platforms, **PARAMS)
    proba = fast.predict_proba(bank, platforms)[:, 1]
    assert np.abs(proba - core.predict_proba(tables)).max() < 1e-6
    assert np.abs(proba - plain.predict_proba(bank, platforms)[:, 1]).max() < 1e-12
    ahead = _packs(fast, "platform_precomputed_packs")
    fresh = _packs(fast, "platform_fresh_packs")
    # Same model, same packs per tree: only where each pack's factor was made differs.
    assert [a + f for a, f in zip(ahead, fresh, strict=True)] == fresh_only
    assert sum(ahead) == len(recorder.used) > 0  # the pool served packs
    assert len(set(recorder.used)) == len(recorder.used)  # each factor used exactly once
    assert set(recorder.used) <= set(recorder.made)
    assert len(set(recorder.made)) == len(recorder.made)  # fresh y per factor
    assert not precompute._OWN_POOLS  # forgotten at the end of the protocol
    assert not precompute._POOLS


def test_a_failed_job_forgets_the_platform_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    bank, y, platforms = _data(300, seed=5)
    made: list[precompute.RandomnessPool] = []
    own_pool_for = precompute.own_pool_for

    def recording(party: str, backend: HEBackend, public: Any) -> precompute.RandomnessPool:
        pool = own_pool_for(party, backend, public)
        made.append(pool)
        return pool

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ProtocolError("injected failure after the first federated level")

    monkeypatch.setattr(precompute, "own_pool_for", recording)
    monkeypatch.setattr(bank_trees, "finish_tree", broken)
    with pytest.raises((PartyError, ProtocolError), match="injected failure"):
        SecureBoostClassifier(**PARAMS, scheme="ou").fit(bank, y, platforms)
    assert made  # the platform had a pool (and filled it) before the failure
    assert not precompute._OWN_POOLS
    assert all(len(pool) == 0 for pool in made)


@pytest.mark.parametrize(
    "settings",
    [{"max_depth": 10**9}, {"max_depth": 0}, {"max_depth": "3"}, {"n_estimators": -1}],
)
def test_the_pool_settings_from_the_bank_are_bounded(settings: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError, match="secureboost/init"):
        _pool_settings({"max_bin": 8, **settings})
    assert _pool_settings({"max_bin": 8}) == {"max_depth": 3, "n_estimators": None}
