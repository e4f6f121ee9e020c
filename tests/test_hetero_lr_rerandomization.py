"""Hetero LR re-randomises returned ciphertexts with the sender's own randomness.

A key holder that chooses its Paillier key can make the DJN base trivial on one CRT component
(``h_s ≡ 1 mod q²``), tag each of its per-row ciphertexts there without changing the plaintext,
and read from every ciphertext the peer returns which tagged rows were summed into it. These
tests run that attack (adapted from ``tests/test_own_rerandomization.py``) on hetero LR:

- end to end, a bank whose key is crafted and whose encrypted labels are tagged reads the
  platform's per-fine-bin bad counts: through the key's base it learns the platform's fine bin of
  every tagged row in every column; through the platform's own randomness, nothing;
- on :func:`models.vertical_lr.arithmetic.masked` (the masked gradient or cross terms), the same:
  the tags survive the key's base and are gone with ``c · y^n``.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from typing import Any

import gmpy2
import numpy as np
import pandas as pd
import pytest

from federated.estimators import HeteroLRClassifier
from federated.transport import InProcessTransport
from models.protocol import Envelope
from models.vertical import KeyPair
from models.vertical_lr import arithmetic
from models.vertical_lr import bank as bank_role
from models.vertical_lr import fixedpoint as fp
from secure_agg import paillier

KEY_BITS = 512
TAGGED = 6  # rows the bank tags: 2^6 tag products to recognise
TAU = 3


def _crt(a: int, m1: int, b: int, m2: int) -> int:
    """The residue modulo ``m1·m2`` that is ``a`` modulo ``m1`` and ``b`` modulo ``m2``."""
    return int(a + m1 * ((b - a) * gmpy2.invert(m1, m2) % m2))


@functools.cache
def _malicious() -> tuple[paillier.PublicKey, paillier.PrivateKey, int, list[int]]:
    """A key of honest primes with ``h_s ≡ 1 mod q²``, ``q²``, and one tag per tagged row.

    Row ``i``'s tag is ``τ^(q·2^i)`` modulo ``q²`` and 1 modulo ``p²``: an ``n``-th residue (so
    decryption ignores it) that ``h_s`` never touches.
    """
    honest, secret = paillier.generate_keypair(KEY_BITS, allow_insecure_test_keys=True)
    p, q = int(secret._p), int(secret._q)
    p2, q2 = p * p, q * q
    h_s = _crt(honest.h_s % p2, p2, 1, q2)
    public = paillier.PublicKey(p * q, h_s)
    tags = [_crt(1, p2, pow(TAU, q << i, q2), q2) for i in range(TAGGED)]
    return public, paillier.PrivateKey(public, p, q), q2, tags


def _residual(public: paillier.PublicKey, c: int, plaintext: int, q2: int) -> int:
    """What the key holder reads: the ciphertext without its plaintext part, modulo ``q²``."""
    return c * pow((1 + plaintext * public.n) % q2, -1, q2) % q2


def _tag_table(tags: list[int], q2: int) -> dict[int, frozenset[int]]:
    """Every product of tags modulo ``q²`` and the rows it names."""
    table: dict[int, frozenset[int]] = {}
    for members in range(1 << len(tags)):
        acc = 1
        for i, tag in enumerate(tags):
            if members >> i & 1:
                acc = acc * tag % q2
        table[acc] = frozenset(i for i in range(len(tags)) if members >> i & 1)
    return table


def _old_path(public: paillier.PublicKey, cts: Any, **_: Any) -> list[int]:
    """Re-randomisation with the key holder's base ``h_s`` (what hetero LR used to do)."""
    return paillier.obfuscate_many(public, list(cts))


# ---------------------------------------------------------------- end to end: the bad counts


def _data(n: int = 300, seed: int = 11) -> tuple[pd.DataFrame, Any, dict[str, pd.DataFrame]]:
    rng = np.random.default_rng(seed)
    bank = pd.DataFrame({"deposits": rng.normal(size=n)})
    platform = pd.DataFrame(
        {"tax_score": rng.normal(size=n), "grade": pd.Categorical(rng.choice(list("ABCD"), n))}
    )
    logit = platform["tax_score"].to_numpy() + 0.7 * bank["deposits"].to_numpy()
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return bank, y, {"platform": platform}


class _TaggingPaillier:
    """The bank's view of :mod:`secure_agg.paillier`: its label ciphertexts carry tags."""

    def __init__(self, tags: list[int]) -> None:
        self.tags = tags

    def __getattr__(self, name: str) -> Any:
        return getattr(paillier, name)

    def encrypt_many_private(self, private: Any, values: Any, **_: Any) -> list[int]:
        # Randomised through h_s only (trivial modulo q²), then the first rows tagged.
        public = private.public_key
        cts = paillier.encrypt_many(public, list(values))
        tagged = [c * t % public.nsquare for c, t in zip(cts, self.tags, strict=False)]
        return tagged + cts[len(self.tags) :]


@pytest.fixture
def crafted_bank(monkeypatch: pytest.MonkeyPatch) -> list[Envelope]:
    """A bank with the crafted key that tags its first label ciphertexts; the messages seen."""
    public, private, _, tags = _malicious()
    monkeypatch.setattr(
        bank_role, "bank_key_pair", lambda *_a, **_k: KeyPair(public, private, "paillier")
    )
    monkeypatch.setattr(bank_role, "paillier", _TaggingPaillier(tags))
    seen: list[Envelope] = []
    original = InProcessTransport.__init__

    def tapped(self: InProcessTransport, parties: Any, tap: Any = None) -> None:
        original(self, parties, tap=lambda _d, env: seen.append(env))

    monkeypatch.setattr(InProcessTransport, "__init__", tapped)
    return seen


def _bank_reads_bins(seen: list[Envelope]) -> tuple[list[frozenset[int] | None], list[int]]:
    """Per returned bad count: the tagged rows the bank recognises in it (None: no tag product)."""
    public, private, q2, tags = _malicious()
    # The tap sees the platform's reply once per hop (to the coordinator, then relayed).
    counts = [e for e in seen if e.protocol == "hetero_lr" and e.stage == "counts"]
    assert counts
    assert {e.sender for e in counts} == {"platform"}
    enc_bad = paillier.ciphertexts_from_array(public, counts[0].array("enc_bad"))
    plain = paillier.decrypt_many(private, enc_bad)
    table = _tag_table(tags, q2)
    read = [table.get(_residual(public, c, m, q2)) for c, m in zip(enc_bad, plain, strict=True)]
    n_fine = [int(f["n_fine"]) for f in counts[0].json("features")]
    return read, n_fine


def _fit(bank: pd.DataFrame, y: Any, platforms: dict[str, pd.DataFrame]) -> None:
    HeteroLRClassifier(
        max_epochs=1, batch_size=150, key_bits=KEY_BITS, insecure_test_keys=True
    ).fit(bank, y, platforms)


def test_through_the_banks_base_tagged_labels_give_each_rows_platform_bins(
    crafted_bank: list[Envelope], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack works if the platform re-randomises with ``h_s``: every tagged row's bins."""
    monkeypatch.setattr(paillier, "rerandomize_own", _old_path)
    _fit(*_data())
    read, n_fine = _bank_reads_bins(crafted_bank)
    assert all(r is not None for r in read)
    start = 0
    for size in n_fine:  # per platform column, the bins partition the tagged rows
        column = [r for r in read[start : start + size] if r is not None]
        start += size
        assert sorted(i for r in column for i in r) == list(range(TAGGED))
        assert sum(1 for r in column if r) >= 2  # and tell them apart


def test_the_platforms_own_randomness_hides_which_rows_are_in_a_bin(
    crafted_bank: list[Envelope],
) -> None:
    """Through ``c · y^n`` the counts still decrypt (training ran), but no bin names a row."""
    _fit(*_data())
    read, n_fine = _bank_reads_bins(crafted_bank)
    assert len(read) == sum(n_fine) > 0
    # A residual uniform in a group of ~2^250 elements hits one of the 64 tag products with
    # probability ~2^-244: no bin is recognised, not even one without tagged rows.
    assert all(r is None for r in read)


# ---------------------------------------------------------------- the masked gradient


def _masked_gradient(
    rerandomize: Callable[..., list[int]], monkeypatch: pytest.MonkeyPatch
) -> tuple[list[int], list[int], int]:
    """The platform's masked gradient over residuals of which the bank tagged row 0.

    The platform sums ``[[d]]`` per coarse bin of its one column, weights the sums by WOE and
    returns them through :func:`arithmetic.masked`. Returns the key holder's residual of each
    returned ciphertext (the column's gradient, then the unweighted total), the residual each
    bin would leave if it held row 0 (``tag^w_b``, then the total's ``tag``), and row 0's bin.
    """
    monkeypatch.setattr(paillier, "rerandomize_own", rerandomize)
    public, private, q2, tags = _malicious()
    rows = 40
    enc_r = paillier.encrypt_many(public, [secrets.randbelow(1 << 30) for _ in range(rows)])
    enc_r[0] = enc_r[0] * tags[0] % public.nsquare
    bins = np.array([[i % 4] for i in range(rows)], dtype=np.int32)
    woe = [[0.4, -0.2, 1.1, -0.9]]
    grads, total = arithmetic.weighted_sums(public, enc_r, bins, woe)
    out, _ = arithmetic.masked(public, [*grads, total])
    plain = paillier.decrypt_many(private, out)
    residuals = [_residual(public, c, m, q2) for c, m in zip(out, plain, strict=True)]
    weights = [int(w) % public.n for w in fp.encode(np.asarray(woe[0]))]
    return residuals, [pow(tags[0], w, q2) for w in [*weights, 1]], int(bins[0, 0])


def test_through_the_keys_base_a_masked_gradient_names_the_tagged_rows_bin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    residuals, candidates, row_bin = _masked_gradient(_old_path, monkeypatch)
    assert [b for b, c in enumerate(candidates[:-1]) if c == residuals[0]] == [row_bin]
    assert residuals[-1] == candidates[-1]  # the unweighted total carries the tag itself


def test_own_randomness_removes_the_tag_from_a_masked_gradient(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    residuals, candidates, _ = _masked_gradient(paillier.rerandomize_own, monkeypatch)
    assert not {*residuals} & {*candidates, 1}


def test_masked_refuses_a_non_unit_ciphertext() -> None:
    """A sum carrying a factor of ``n`` is a tag no re-randomisation removes: refused."""
    public, private, _, _ = _malicious()
    with pytest.raises(paillier.PaillierError, match="not a unit"):
        arithmetic.masked(public, [int(private._p)])
