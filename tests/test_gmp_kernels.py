"""C kernels (secure_agg._gmp_kernels): the same integers as the Python reference kernels.

Every kernel is compared with the Python kernel it replaces on the same inputs and the same
randomness, at several key sizes including 2048 bits, with crypto edges (0, n-1, n²-1, empty
groups, -1 rows, capacity-full packs); malformed inputs must raise; the package must work
without the extension; repeated calls must not leak; the key holder's encryptor must keep its
tables to itself.
"""

from __future__ import annotations

import copy
import functools
import gc
import os
import pickle
import secrets
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import gmpy2
import numpy as np
import psutil
import pytest

from secure_agg import packing, paillier
from secure_agg.packing import SumPacker
from secure_agg.paillier import PrivateKey, PublicKey, parallel, tables
from secure_agg.paillier.kernels import group_sums

try:
    from secure_agg import _gmp_kernels as gk
except ImportError:  # pragma: no cover - a build without compiler or gmp.h
    gk = None

REPO = Path(__file__).resolve().parents[1]

needs_c = pytest.mark.skipif(gk is None, reason="secure_agg._gmp_kernels is not built")


@pytest.fixture(autouse=True)
def c_kernels_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests use the extension whenever it is built, whatever SECURE_AGG_KERNELS says."""
    monkeypatch.setattr(paillier, "_C", gk)


@functools.cache
def keys(bits: int) -> tuple[PublicKey, PrivateKey]:
    return paillier.generate_keypair(bits, allow_insecure_test_keys=True)


def to_bytes(values: list[int], width: int) -> bytes:
    return b"".join(int(v).to_bytes(width, "big") for v in values)


def from_bytes(data: bytes, width: int) -> list[int]:
    return [int.from_bytes(data[i : i + width], "big") for i in range(0, len(data), width)]


def edge_plaintexts(pub: PublicKey, count: int) -> list[int]:
    return [0, 1, pub.n - 1, pub.n // 2] + [secrets.randbelow(pub.n) for _ in range(count)]


def edge_randomness(size: int, count: int) -> bytes:
    """Exponent 0, the largest exponent, a single low/high digit, then random ones."""
    fixed = [bytes(size), b"\xff" * size, b"\x01" + bytes(size - 1), bytes(size - 1) + b"\x80"]
    return b"".join(fixed) + secrets.token_bytes(size * (count - len(fixed)))


def crt_encryptor(priv: PrivateKey, window: int) -> Any:
    pub = priv.public_key
    width = pub.ciphertext_bytes
    assert gk is not None
    return gk.CrtEncryptor(
        int(priv._p2).to_bytes(width, "big"),
        int(priv._q2).to_bytes(width, "big"),
        pub.h_s.to_bytes(width, "big"),
        8 * pub.encryption_exponent_bytes,
        window,
    )


def random_ciphertexts(pub: PublicKey, count: int) -> list[int]:
    """Valid ciphertexts including the range edges 1 and n²-1."""
    return [1, pub.nsquare - 1] + [secrets.randbelow(pub.nsquare - 1) + 1 for _ in range(count)]


# ---------------------------------------------------------------- CRT encryption


@needs_c
@pytest.mark.parametrize(
    ("bits", "window"), [(256, 1), (256, 16), (512, 8), (1024, 10), (2048, 11), (2048, 10)]
)
def test_crt_encryptor_equals_python_reference(bits: int, window: int) -> None:
    pub, priv = keys(bits)
    reference = tables.CrtEncryptor(priv)
    encryptor = crt_encryptor(priv, window)
    size, kb = pub.encryption_exponent_bytes, pub.key_bytes
    plaintexts = edge_plaintexts(pub, 12)
    randomness = edge_randomness(size, len(plaintexts))
    out = encryptor.encrypt(
        pub.n.to_bytes(kb, "big"), to_bytes(plaintexts, kb), kb, randomness, size
    )
    expected = [
        int(reference.encrypt(m, int.from_bytes(randomness[i * size : (i + 1) * size], "little")))
        for i, m in enumerate(plaintexts)
    ]
    assert from_bytes(out, pub.ciphertext_bytes) == expected
    assert paillier.decrypt_many(priv, expected, workers=1) == plaintexts
    # shorter exponents use the first rows only, as the Python table does
    short = encryptor.encrypt(pub.n.to_bytes(kb, "big"), to_bytes([5], kb), kb, b"\x07", 1)
    assert from_bytes(short, pub.ciphertext_bytes) == [int(reference.encrypt(5, 7))]
    assert encryptor.encrypt(pub.n.to_bytes(kb, "big"), b"", kb, b"", size) == b""


@needs_c
def test_encrypt_many_private_uses_c_and_equals_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same randomness through the public API in both modes gives the same ciphertexts."""
    pub, priv = keys(1024)
    values = edge_plaintexts(pub, 20)
    stream = secrets.token_bytes(pub.encryption_exponent_bytes * len(values))
    monkeypatch.setattr(secrets, "token_bytes", lambda size: stream[:size])
    fast = paillier.encrypt_many_private(priv, values, workers=1)
    monkeypatch.setattr(paillier, "_C", None)
    assert paillier.encrypt_many_private(priv, values, workers=1) == fast
    assert paillier.decrypt_many(priv, fast) == values


# ---------------------------------------------------------------- public fixed base


@needs_c
@pytest.mark.parametrize("bits", [256, 512, 1024, 2048])
def test_public_fixed_base_equals_python_reference(bits: int) -> None:
    pub, priv = keys(bits)
    assert gk is not None
    kb, cb = pub.key_bytes, pub.ciphertext_bytes
    size, big = pub.encryption_exponent_bytes, pub.obfuscation_exponent_bytes
    table = gk.FixedBase(pub.n.to_bytes(kb, "big"), pub.h_s.to_bytes(cb, "big"), big)
    reference = tables.FixedBaseTable(pub._hs, pub._n2)
    for digits in (b"", bytes(3), b"\x01", secrets.token_bytes(size), b"\xff" * big):
        expected = int(reference.power(digits))
        assert expected == gmpy2.powmod(pub.h_s, int.from_bytes(digits, "little"), pub.nsquare)
        assert int.from_bytes(table.power(digits), "big") == expected
    plaintexts = edge_plaintexts(pub, 10)
    randomness = edge_randomness(size, len(plaintexts))
    out = from_bytes(table.encrypt(to_bytes(plaintexts, kb), kb, randomness, size), cb)
    assert out == [
        int((1 + m * pub._n) * reference.power(randomness[i * size : (i + 1) * size]) % pub._n2)
        for i, m in enumerate(plaintexts)
    ]
    assert paillier.decrypt_many(priv, out, workers=1) == plaintexts
    cts = random_ciphertexts(pub, 8)
    randomness = edge_randomness(big, len(cts))
    fresh = from_bytes(table.rerandomize(to_bytes(cts, cb), cb, randomness, big), cb)
    assert fresh == [
        int(gmpy2.mpz(c) * reference.power(randomness[i * big : (i + 1) * big]) % pub._n2)
        for i, c in enumerate(cts)
    ]


@needs_c
def test_public_paths_equal_python_with_the_same_randomness(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pub, _ = keys(512)
    values = edge_plaintexts(pub, 6)
    cts = random_ciphertexts(pub, 6)
    stream = secrets.token_bytes(4096)
    monkeypatch.setattr(secrets, "token_bytes", lambda size: stream[:size])
    results = []
    for kernels in (paillier._C, None):
        monkeypatch.setattr(paillier, "_C", kernels)
        results.append(
            (
                paillier.encrypt_many(pub, values, workers=1),
                paillier.obfuscate_many(pub, cts, workers=1),
                pub.encrypt_int(values[-1]),
                pub.obfuscate(cts[-1]),
            )
        )
    assert results[0] == results[1]


@needs_c
def test_concurrent_row_building_is_consistent() -> None:
    """Threads racing to extend a fresh table (GIL released) all see the right powers."""
    pub, _ = keys(512)
    assert gk is not None
    big = pub.obfuscation_exponent_bytes
    table = gk.FixedBase(pub.n.to_bytes(pub.key_bytes, "big"), pub.h_s.to_bytes(128, "big"), big)
    exponents = [secrets.token_bytes(secrets.randbelow(big) + 1) for _ in range(16)]
    results: dict[int, int] = {}

    def work(index: int) -> None:
        results[index] = int.from_bytes(table.power(exponents[index]), "big")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(exponents))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, e in enumerate(exponents):
        assert results[i] == gmpy2.powmod(pub.h_s, int.from_bytes(e, "little"), pub.nsquare)
    assert table.rows == max(len(e) for e in exponents)


# ---------------------------------------------------------------- group sums


def c_group_sums(
    pub: PublicKey,
    cts: list[int],
    matrix: np.ndarray,
    n_groups: int,
    table_min_cols: int,
    adx: bool = True,
) -> list[list[int]]:
    assert gk is not None
    width = pub.ciphertext_bytes
    n_rows, n_cols = matrix.shape
    out = gk.group_sums(
        pub.nsquare.to_bytes(width, "big"),
        to_bytes(cts, width),
        width,
        np.ascontiguousarray(matrix, dtype=np.int32).tobytes(),
        n_rows,
        n_cols,
        n_groups,
        table_min_cols=table_min_cols,
        adx=adx,
    )
    values = from_bytes(out, width)
    return [values[j * n_groups : (j + 1) * n_groups] for j in range(n_cols)]


def python_group_sums(
    pub: PublicKey, cts: list[int], matrix: np.ndarray, n_groups: int
) -> list[list[int]]:
    """The reference kernel, empty groups as 0 (the worker's encoding)."""
    saved, paillier._C = paillier._C, None
    try:
        sums = group_sums(pub._n2, [gmpy2.mpz(c) for c in cts], matrix, n_groups)
    finally:
        paillier._C = saved
    return [[0 if a is None else int(a) for a in column] for column in sums]


@needs_c
@pytest.mark.parametrize("bits", [256, 512, 2048])
@pytest.mark.parametrize("n_cols", [1, 3, 13])
@pytest.mark.parametrize("table_min_cols", [1, 10**9], ids=["row-tables", "digits"])
def test_group_sums_equal_python_reference(bits: int, n_cols: int, table_min_cols: int) -> None:
    pub, _ = keys(bits)
    rng = np.random.default_rng(bits + n_cols)
    n_rows, n_groups = 40, 7
    cts = random_ciphertexts(pub, n_rows - 2)
    matrix = rng.integers(-1, n_groups - 1, size=(n_rows, n_cols))  # group 6 stays empty
    matrix[5] = -1  # a row in no group
    matrix[:, 0][matrix[:, 0] == 2] = -1  # group 2 empty in column 0
    expected = python_group_sums(pub, cts, matrix, n_groups)
    assert c_group_sums(pub, cts, matrix, n_groups, table_min_cols) == expected
    assert all(column[6] == 0 for column in expected)
    assert expected[0][2] == 0


@needs_c
@pytest.mark.parametrize("bits", [288, 352, 1024])  # n² of 9, 11 and 32 limbs
@pytest.mark.parametrize("adx", [True, False], ids=["fast-addmul", "mpn-addmul"])
def test_row_table_addmul_paths_agree(bits: int, adx: bool) -> None:
    """The mulx/adx kernel (where the CPU has it) and mpn_addmul_1 give the reference sums."""
    pub, _ = keys(bits)
    rng = np.random.default_rng(bits)
    cts = random_ciphertexts(pub, 48)
    matrix = rng.integers(-1, 5, size=(50, 9))
    expected = python_group_sums(pub, cts, matrix, 5)
    assert c_group_sums(pub, cts, matrix, 5, 1, adx=adx) == expected


@needs_c
@pytest.mark.parametrize("table_min_cols", [1, 10**9], ids=["row-tables", "digits"])
def test_group_sums_edges(table_min_cols: int) -> None:
    pub, _ = keys(512)
    cts = random_ciphertexts(pub, 3)
    for matrix, n_groups in [
        (np.zeros((0, 2), dtype=np.int32), 3),  # no rows: every group empty
        (np.full((5, 2), -1), 2),  # every row skipped
        (np.zeros((5, 0), dtype=np.int32), 4),  # no columns
        (np.zeros((5, 3), dtype=np.int32), 1),  # one group with everything
        (np.arange(5).reshape(5, 1), 5),  # one row per group: the ciphertext itself
    ]:
        rows = cts[: matrix.shape[0]]
        assert c_group_sums(pub, rows, matrix, n_groups, table_min_cols) == python_group_sums(
            pub, rows, matrix, n_groups
        )
    assert c_group_sums(pub, cts[:5], np.arange(5).reshape(5, 1), 5, table_min_cols) == [cts[:5]]


@needs_c
def test_sum_groups_many_many_columns_c_equals_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """The public API through both C methods, serial and column-split workers, vs Python."""
    pub, priv = keys(1024)
    rng = np.random.default_rng(11)
    values = [int(v) for v in rng.integers(0, 2**40, size=60)]
    cts = paillier.encrypt_many(pub, values, workers=1)
    matrix = rng.integers(-1, 4, size=(60, 14))
    serial = paillier.sum_groups_many(pub, cts, matrix, 4, workers=1)
    assert paillier.sum_groups_many(pub, cts, matrix, 4, workers=2) == serial  # columns split
    assert paillier.sum_groups_many(pub, cts, matrix[:, :5], 4, workers=2) == serial[:5]  # rows
    assert paillier.sum_groups_many(pub, cts, matrix[:, :0], 4, workers=2) == []
    monkeypatch.setattr(paillier, "_C", None)
    assert paillier.sum_groups_many(pub, cts, matrix, 4, workers=1) == serial
    assert paillier.sum_groups_many(pub, cts, matrix[:, :0], 4, workers=2) == []
    for j in (0, 13):
        assert paillier.decrypt_many(priv, serial[j]) == [
            sum(v for v, g in zip(values, matrix[:, j], strict=True) if g == b) % pub.n
            for b in range(4)
        ]


# ---------------------------------------------------------------- packing


@needs_c
@pytest.mark.parametrize("bits", [256, 1024, 2048])
def test_pack_equals_python_reference(bits: int, monkeypatch: pytest.MonkeyPatch) -> None:
    pub, _ = keys(bits)
    assert gk is not None
    width = pub.ciphertext_bytes
    cts = random_ciphertexts(pub, 25)
    n2 = pub.nsquare.to_bytes(width, "big")
    cases = [(1, 1), (37, 3), (150, (bits - 64) // 150 or 1), (bits - 64, 1), (5, 27), (5, 40)]
    with monkeypatch.context() as patch:
        patch.setattr(paillier, "_C", None)
        expected = {case: packing._pack_kernel(pub, cts, case[0], case[1], False) for case in cases}
    for (value_bits, capacity), reference in expected.items():
        out = from_bytes(gk.pack(n2, to_bytes(cts, width), width, value_bits, capacity), width)
        assert out == reference, (value_bits, capacity)
        assert len(out) == -(-len(cts) // capacity)
    assert gk.pack(n2, b"", width, 10, 3) == b""
    assert from_bytes(gk.pack(n2, to_bytes(cts[:1], width), width, 10, 3), width) == cts[:1]


@needs_c
def test_sum_packer_c_round_trip_at_capacity(monkeypatch: pytest.MonkeyPatch) -> None:
    pub, priv = keys(2048)
    packer = SumPacker(150, 2048)
    k = packer.capacity
    values = [0, (1 << 150) - 1] + [secrets.randbits(150) for _ in range(k - 2)]
    cts = paillier.encrypt_many(pub, [*values, 7], workers=1)
    plain = packer.pack(pub, cts, rerandomize=False, workers=1)
    assert packer.unpack(paillier.decrypt_many(priv, plain), k + 1) == [*values, 7]
    fresh = packer.pack(pub, cts, workers=1)
    assert fresh != plain
    assert packer.unpack(paillier.decrypt_many(priv, fresh), k + 1) == [*values, 7]
    monkeypatch.setattr(paillier, "_C", None)
    assert packer.pack(pub, cts, rerandomize=False, workers=1) == plain


# ---------------------------------------------------------------- malformed input


@needs_c
def test_crt_encryptor_refuses_bad_construction() -> None:
    pub, priv = keys(512)
    assert gk is not None
    w = pub.ciphertext_bytes
    p2, q2 = int(priv._p2).to_bytes(w, "big"), int(priv._q2).to_bytes(w, "big")
    hs = pub.h_s.to_bytes(w, "big")
    for args, match in [
        ((q2, p2, hs, 256, 8), "smaller than q2"),
        ((p2, p2, hs, 256, 8), "smaller than q2"),
        ((p2[:-1] + b"\x02", q2, hs, 256, 8), "square"),
        ((p2, q2, hs, 256, 0), "window_bits"),
        ((p2, q2, hs, 256, 17), "window_bits"),
        ((p2, q2, hs, 0, 8), "exponent_bits"),
        ((p2, q2, bytes(w), 256, 8), "h_s must be a positive"),
        ((p2, q2, pub.nsquare.to_bytes(w, "big"), 256, 8), "below p2"),
        ((b"\x09", b"\x51", b"\x02", 16, 4), "coprime"),
        ((b"\x04", b"\x09", b"\x02", 16, 4), "above 2"),
    ]:
        with pytest.raises(ValueError, match=match):
            gk.CrtEncryptor(*args)
    with pytest.raises(TypeError):
        gk.CrtEncryptor(int(priv._p2), q2, hs, 256, 8)


@needs_c
def test_crt_encrypt_refuses_bad_batches() -> None:
    pub, priv = keys(512)
    encryptor = crt_encryptor(priv, 8)
    kb, size = pub.key_bytes, pub.encryption_exponent_bytes
    n = pub.n.to_bytes(kb, "big")
    good = to_bytes([1, 2], kb)
    rnd = secrets.token_bytes(2 * size)
    other = keys(256)[0].n.to_bytes(kb, "big")
    for args, match in [
        ((other, good, kb, rnd, size), "does not match"),
        ((n, to_bytes([1, pub.n], kb), kb, rnd, size), "plaintext 1 is outside"),
        ((n, to_bytes([pub.n + 5], kb + 1), kb + 1, rnd[:size], size), "plaintext 0"),
        ((n, good[:-1], kb, rnd, size), "whole number"),
        ((n, good, kb, rnd[:-1], size), "randomness"),
        ((n, good, 0, rnd, size), "plaintext_width must be positive"),
        ((n, good, kb, rnd, 0), "randomness_width must be positive"),
        ((n, to_bytes([1], kb), kb, bytes(size + 1), size + 1), "exceeds"),
        ((bytes(kb), good, kb, rnd, size), "n must be a positive"),
    ]:
        with pytest.raises(ValueError, match=match):
            encryptor.encrypt(*args)


@needs_c
def test_fixed_base_refuses_bad_input() -> None:
    pub, _ = keys(512)
    assert gk is not None
    kb, cb, big = pub.key_bytes, pub.ciphertext_bytes, pub.obfuscation_exponent_bytes
    n = pub.n.to_bytes(kb, "big")
    with pytest.raises(ValueError, match="below n"):
        gk.FixedBase(n, pub.nsquare.to_bytes(cb, "big"), big)
    with pytest.raises(ValueError, match="max_exponent_bytes"):
        gk.FixedBase(n, pub.h_s.to_bytes(cb, "big"), 0)
    with pytest.raises(ValueError, match="at least 2"):
        gk.FixedBase(b"\x01", b"\x01", 4)
    table = gk.FixedBase(n, pub.h_s.to_bytes(cb, "big"), big)
    with pytest.raises(ValueError, match="exceed"):
        table.power(bytes(big + 1))
    with pytest.raises(ValueError, match="plaintext 0 is outside"):
        table.encrypt(to_bytes([pub.n], kb), kb, bytes(4), 4)
    for bad in (0, pub.nsquare, pub.nsquare + 1):
        with pytest.raises(ValueError, match="ciphertext 1 is outside"):
            table.rerandomize(to_bytes([5, bad], cb + 1), cb + 1, bytes(8), 4)
    with pytest.raises(ValueError, match="randomness"):
        table.rerandomize(to_bytes([5], cb), cb, bytes(3), 4)


@needs_c
def test_group_sums_and_pack_refuse_bad_input() -> None:
    pub, _ = keys(512)
    assert gk is not None
    w = pub.ciphertext_bytes
    n2 = pub.nsquare.to_bytes(w, "big")
    cts = to_bytes([3, 5], w)
    matrix = np.zeros((2, 1), dtype=np.int32)

    def sums(**changes: Any) -> bytes:
        args: dict[str, Any] = {
            "n2": n2,
            "ciphertexts": cts,
            "width": w,
            "groups": matrix.tobytes(),
            "n_rows": 2,
            "n_cols": 1,
            "n_groups": 1,
        }
        args.update(changes)
        assert gk is not None
        return gk.group_sums(**args)

    for changes, match in [
        ({"width": w - 1, "ciphertexts": cts[2:]}, "cannot hold"),
        ({"ciphertexts": cts[:-1]}, "need"),
        ({"groups": matrix.tobytes()[:-1]}, "int32 group matrix"),
        ({"groups": np.array([[0], [1]], dtype=np.int32).tobytes()}, "group id 1 at row 1"),
        ({"groups": np.array([[-2], [0]], dtype=np.int32).tobytes()}, "group id -2 at row 0"),
        ({"ciphertexts": to_bytes([3, pub.nsquare], w)}, "ciphertext 1 is outside"),
        ({"ciphertexts": to_bytes([0, 5], w)}, "ciphertext 0 is outside"),
        ({"n2": (pub.nsquare + 2).to_bytes(w, "big")}, "square"),
        ({"n_groups": -1}, "non-negative"),
        ({"n_rows": -2}, "non-negative"),
    ]:
        with pytest.raises(ValueError, match=match):
            sums(**changes)
    with pytest.raises(ValueError, match="ciphertext 1 is outside"):
        sums(ciphertexts=to_bytes([3, pub.nsquare], w), table_min_cols=1)
    for args, match in [
        ((n2, cts, w, 0, 2), "bits"),
        ((n2, cts, w, 3, 0), "capacity"),
        ((n2, cts[:-1], w, 3, 2), "whole number"),
        ((n2, to_bytes([pub.nsquare, 3], w), w, 3, 2), "ciphertext 0 is outside"),
        ((b"\x01", cts, w, 3, 2), "n >= 2"),
    ]:
        with pytest.raises(ValueError, match=match):
            gk.pack(*args)


# ---------------------------------------------------------------- key material


@needs_c
def test_crt_encryptor_keeps_its_tables_to_itself() -> None:
    _, priv = keys(1024)
    encryptor = crt_encryptor(priv, 8)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError, match="must not be pickled"):
            pickle.dumps(encryptor, protocol=protocol)
    with pytest.raises(TypeError):
        copy.copy(encryptor)
    with pytest.raises(TypeError):
        copy.deepcopy(encryptor)
    text = repr(encryptor) + str(encryptor)
    assert text == "CrtEncryptor(<secret>, exponent_bits=512, window_bits=8)" * 2
    for secret in (int(priv._p), int(priv._q), int(priv._p2), int(priv._q2)):
        assert str(secret)[:12] not in text
        assert f"{secret:x}"[:12] not in text
    assert not hasattr(encryptor, "__dict__")
    public = {name for name in dir(encryptor) if not name.startswith("__")}
    assert public == {"encrypt", "exponent_bits", "window_bits"}
    with pytest.raises(AttributeError):
        encryptor.table = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):

        class Leaky(type(encryptor)):  # type: ignore[misc]
            pass


@needs_c
def test_forget_private_tables_drops_the_c_encryptor() -> None:
    """The cache holds the only reference, so forgetting frees (and so wipes) the tables."""
    _, priv = keys(512)
    paillier.forget_private_tables()  # earlier tests' keys (the cache keeps a few)
    paillier.encrypt_many_private(priv, [1, 2], workers=1)
    [(_, encryptor)] = tables.c_crt_encryptors.values()
    assert sys.getrefcount(encryptor) == 3  # the cache, this name, the call's argument
    del encryptor
    paillier.forget_private_tables()
    assert tables.c_crt_encryptors == {}


# ---------------------------------------------------------------- memory and the GIL


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


@needs_c
def test_repeated_calls_do_not_leak() -> None:
    pub, priv = keys(512)
    assert gk is not None
    kb, cb = pub.key_bytes, pub.ciphertext_bytes
    size, big = pub.encryption_exponent_bytes, pub.obfuscation_exponent_bytes
    n, n2 = pub.n.to_bytes(kb, "big"), pub.nsquare.to_bytes(cb, "big")
    plaintexts = to_bytes(edge_plaintexts(pub, 196), kb)
    cts = to_bytes(random_ciphertexts(pub, 198), cb)
    matrix = np.random.default_rng(0).integers(-1, 64, size=(200, 16)).astype(np.int32).tobytes()
    encryptor = crt_encryptor(priv, 8)
    table = gk.FixedBase(n, pub.h_s.to_bytes(cb, "big"), big)

    def round_() -> None:
        encryptor.encrypt(n, plaintexts, kb, secrets.token_bytes(200 * size), size)
        table.encrypt(plaintexts, kb, secrets.token_bytes(200 * size), size)
        table.rerandomize(cts, cb, secrets.token_bytes(200 * big), big)
        gk.group_sums(n2, cts, cb, matrix, 200, 16, 64, table_min_cols=1)
        gk.group_sums(n2, cts, cb, matrix, 200, 16, 64, table_min_cols=100)
        gk.pack(n2, cts, cb, 20, 5)
        crt_encryptor(priv, 9)  # ~4 MB of tables, freed at once
        for call, match in (
            (lambda: encryptor.encrypt(n, plaintexts[:-1], kb, b"", size), "whole number"),
            (lambda: gk.group_sums(n2, cts[:-1], cb, matrix, 200, 16, 64), "need"),
            (lambda: gk.pack(n2, cts[:-cb] + b"\xff" * cb, cb, 20, 5), "outside"),
            (lambda: gk.CrtEncryptor(b"\x09", b"\x51", b"\x02", 16, 4), "coprime"),
        ):
            with pytest.raises(ValueError, match=match):
                call()

    for _ in range(3):
        round_()
    before = rss()
    for _ in range(40):
        round_()
    grown = rss() - before
    assert grown < 8 * 2**20, f"RSS grew by {grown / 2**20:.1f} MB over 40 rounds"
    # The extension allocates with PyMem_Raw*, which tracemalloc sees byte by byte.
    tracemalloc.start()
    try:
        round_()
        gc.collect()
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(10):
            round_()
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert traced < 16 * 2**10, f"{traced} traced bytes stayed allocated over 10 rounds"


@needs_c
def test_kernels_release_the_gil() -> None:
    """Python code keeps running in another thread while a kernel computes."""
    pub, _ = keys(1024)
    assert gk is not None
    width = pub.ciphertext_bytes
    cts = to_bytes(random_ciphertexts(pub, 6), width)
    n2 = pub.nsquare.to_bytes(width, "big")
    started = time.perf_counter()
    gk.pack(n2, cts, width, 2000, 8)
    single = time.perf_counter() - started
    done = threading.Event()
    ticks = 0

    def run() -> None:
        gk.pack(n2, cts, width, 20000, 8)  # ~10x the single call, ~0.15 s
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    while not done.is_set():
        ticks += 1
        time.sleep(single / 20)
    thread.join()
    # With the GIL held for the whole call, this loop would run about once.
    assert ticks >= 20


# ---------------------------------------------------------------- worker processes


@needs_c
def test_worker_requests_agree_between_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker hands payloads to C as bytes; its replies equal the Python kernels' replies."""
    from secure_agg import _paillier_worker as worker

    pub, priv = keys(512)
    kb, cb = pub.key_bytes, pub.ciphertext_bytes
    values = edge_plaintexts(pub, 8)
    cts = random_ciphertexts(pub, 10)
    matrix = np.random.default_rng(2).integers(-1, 3, size=(12, 5)).astype(np.int32)
    public = parallel.public_header(pub)
    secret = parallel.private_header(priv)
    sums_header = public + parallel.sums_header(12, 5, 3)
    pack_header = public + (40).to_bytes(4, "big") + (3).to_bytes(4, "big")
    replies = {}
    for kernels in (paillier._C, None):
        monkeypatch.setattr(paillier, "_C", kernels)
        replies[kernels is None] = (
            worker.handle(b"S", sums_header, to_bytes(cts, cb) + matrix.tobytes()),
            worker.handle(b"P", pack_header + b"\x00", to_bytes(cts, cb)),
        )
        for op, header in ((b"E", public), (b"C", secret)):
            out = from_bytes(worker.handle(op, header, to_bytes(values, kb)), cb)
            assert paillier.decrypt_many(priv, out, workers=1) == values
        fresh = from_bytes(worker.handle(b"O", public, to_bytes(cts, cb)), cb)
        assert paillier.decrypt_many(priv, fresh, workers=1) == paillier.decrypt_many(
            priv, cts, workers=1
        )
        with pytest.raises(ValueError, match="outside"):
            worker.handle(b"E", public, to_bytes([pub.n], kb))
    assert replies[False] == replies[True]


def _use_threads_in_forked_child() -> None:
    pub, priv = keys(512)
    values = list(range(50))
    cts = paillier.encrypt_many_private(priv, values, workers=2)
    assert paillier.decrypt_many(priv, paillier.obfuscate_many(pub, cts, workers=2)) == values
    os._exit(0)


@needs_c
def test_thread_pool_works_after_fork() -> None:
    """A child forked after the kernels' threads ran gets a fresh pool instead of hanging."""
    import multiprocessing

    pub, priv = keys(512)
    paillier.encrypt_many_private(priv, list(range(50)), workers=2)
    paillier.obfuscate_many(pub, [1, 2, 3], workers=2)
    child = multiprocessing.get_context("fork").Process(target=_use_threads_in_forked_child)
    child.start()
    child.join(120)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung on the parent's thread pool")
    assert child.exitcode == 0


# ---------------------------------------------------------------- without the extension


def test_python_fallback_gives_the_same_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forcing the Python kernels changes nothing that can be compared (same randomness)."""
    pub, priv = keys(512)
    rng = np.random.default_rng(5)
    values = [int(v) for v in rng.integers(0, 2**30, size=30)]
    matrix = rng.integers(-1, 5, size=(30, 13))
    stream = secrets.token_bytes(pub.encryption_exponent_bytes * 30)
    monkeypatch.setattr(secrets, "token_bytes", lambda size: stream[:size])
    packer = SumPacker(40, 512)
    results = []
    for kernels in (paillier._C, None):
        monkeypatch.setattr(paillier, "_C", kernels)
        cts = paillier.encrypt_many_private(priv, values, workers=1)
        results.append(
            (
                cts,
                paillier.encrypt_many(pub, values, workers=1),
                paillier.sum_groups_many(pub, cts, matrix, 5, workers=1),
                paillier.sum_groups(pub, cts, matrix[:, 0], 5),
                packer.pack(pub, cts, rerandomize=False, workers=1),
            )
        )
    assert results[0] == results[1]
    cts, _, _, _, packed = results[1]
    assert paillier.decrypt_many(priv, cts) == values
    assert packer.unpack(paillier.decrypt_many(priv, packed), len(cts)) == values


FALLBACK_SCRIPT = textwrap.dedent(
    """
    import sys
    if sys.argv[1] == "no-extension":
        sys.modules["secure_agg._gmp_kernels"] = None  # as if it had not been built
    import numpy as np
    from secure_agg import paillier
    from secure_agg.packing import SumPacker

    assert paillier._C is None, paillier._C
    pub, priv = paillier.generate_keypair(512, allow_insecure_test_keys=True)
    values = list(range(600))
    cts = paillier.encrypt_many_private(priv, values, workers=2)
    assert paillier.decrypt_many(priv, cts, workers=2) == values
    groups = np.arange(600).reshape(600, 1) % 3
    sums = paillier.sum_groups_many(pub, cts, np.hstack([groups, groups]), 3, workers=2)
    assert paillier.decrypt_many(priv, sums[1]) == [sum(range(g, 600, 3)) for g in range(3)]
    packer = SumPacker(40, 512)
    packed = packer.pack(pub, cts[:20], workers=2)
    assert packer.unpack(paillier.decrypt_many(priv, packed), 20) == values[:20]
    print("fallback ok")
    """
)


@pytest.mark.parametrize("how", ["no-extension", "environment"])
def test_package_works_without_the_extension(how: str) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    if how == "environment":
        env[paillier.KERNELS_ENV] = "python"
    done = subprocess.run(
        [sys.executable, "-c", FALLBACK_SCRIPT, how],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "fallback ok" in done.stdout


def test_crt_tables_of_a_few_keys_stay_cached_together() -> None:
    """An embedded job's bank and platforms each hold a key pair: no rebuilding per message."""
    paillier.forget_private_tables()
    privs = [paillier.generate_keypair(512, allow_insecure_test_keys=True)[1] for _ in range(3)]
    for priv in privs * 2:
        paillier.encrypt_many_private(priv, [1, 2], workers=1)
    cache = tables.c_crt_encryptors if paillier._C is not None else tables.crt_encryptors
    assert set(cache) == {p.public_key.fingerprint for p in privs}
    for priv in privs:
        paillier.encrypt_many_private(priv, [3], workers=1)
    extra = paillier.generate_keypair(512, allow_insecure_test_keys=True)[1]
    paillier.encrypt_many_private(extra, [1], workers=1)
    paillier.encrypt_many_private(
        paillier.generate_keypair(512, allow_insecure_test_keys=True)[1], [1], workers=1
    )
    assert len(cache) == paillier.CRT_CACHE_SIZE
    paillier.forget_private_tables()
    assert not cache
