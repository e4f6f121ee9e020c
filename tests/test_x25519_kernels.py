"""The C batch loops of PSI (``secure_agg._x25519_kernels``) against the Python reference.

The reference is :func:`secure_agg.psi.hash_to_group` (hashlib) and OpenSSL's X25519 through
``cryptography`` (:func:`secure_agg.psi._blind_openssl`): an implementation independent of the
libsodium the kernel calls. Inputs are random (ids of every length around SHA-512's block
boundaries, domains of 0 to 200 bytes, raw u-coordinates with the top bit set or not).
"""

from __future__ import annotations

import importlib
import os
import random
from types import ModuleType

import numpy as np
import pytest

from secure_agg import _blind_worker, psi


@pytest.fixture(scope="module")
def kernels() -> ModuleType:
    if not psi.batch_kernel():
        pytest.skip("secure_agg._x25519_kernels is not built here (no compiler or libsodium)")
    return importlib.import_module("secure_agg._x25519_kernels")


def records(ids: list[bytes]) -> bytes:
    return psi._encode_id_records(ids)


def random_ids(rng: random.Random, n: int) -> list[bytes]:
    lengths = [0, 1, 17, 18, 111, 112, 127, 128, 129, 255, 300]
    return [rng.randbytes(rng.choice(lengths) if i % 3 else rng.randint(0, 40)) for i in range(n)]


@pytest.mark.parametrize("seed", range(3))
def test_blind_equals_openssl_on_random_points(kernels: ModuleType, seed: int) -> None:
    rng = random.Random(seed)
    key = psi.BlindingKey.generate().secret_bytes()
    data = rng.randbytes(32 * 400)  # raw u-coordinates: top bits set half the time
    result, bad = kernels.blind(key, data)
    assert bad == -1
    assert result == psi._blind_openssl(key, data)
    assert psi._blind_bytes(key, data) == result  # what a worker runs


@pytest.mark.parametrize("domain_length", [0, 1, 24, 109, 200])
def test_hash_blind_equals_the_reference_on_random_ids(
    kernels: ModuleType, domain_length: int
) -> None:
    rng = random.Random(domain_length)
    ids = random_ids(rng, 300)
    domain = rng.randbytes(domain_length)
    key = psi.BlindingKey.generate().secret_bytes()
    hashed = psi.hash_to_group(ids, domain)
    only_hashed, bad = kernels.hash_blind(b"", domain, records(ids))
    assert bad == -1
    assert only_hashed == hashed.tobytes()
    blinded, bad = kernels.hash_blind(key, domain, records(ids))
    assert bad == -1
    assert blinded == psi._blind_openssl(key, hashed.tobytes())


def test_hash_and_blind_with_and_without_the_kernel_agree(
    kernels: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [f"91{i:016d}".encode() for i in range(psi.PARALLEL_THRESHOLD + 3)]
    key = psi.BlindingKey.generate()
    with_kernel = psi.hash_and_blind(ids, key, b"d", workers=1)
    monkeypatch.setattr(psi, "_KERNELS", None)
    without = psi.hash_and_blind(ids[:500], key, b"d", workers=1)
    assert np.array_equal(with_kernel[:500], without)


def test_empty_input(kernels: ModuleType) -> None:
    key = psi.BlindingKey.generate().secret_bytes()
    assert kernels.blind(key, b"") == (b"", -1)
    assert kernels.hash_blind(key, b"d", b"") == (b"", -1)


def test_low_order_points_are_reported_by_index(kernels: ModuleType) -> None:
    key = psi.BlindingKey.generate().secret_bytes()
    points = psi.hash_to_group([b"a", b"b", b"c", b"d"])
    points[2] = 0
    points[3, 0] = 1  # u = 1: also of low order, but after the first
    assert kernels.blind(key, points.tobytes()) == (None, 2)
    with pytest.raises(psi.LowOrderPointError, match="point 2 is of low order"):
        psi._blind_kernel(key, points.tobytes())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((bytes(31), bytes(32)), "a scalar is 32 bytes, got 31"),
        ((bytes(33), bytes(32)), "a scalar is 32 bytes, got 33"),
        ((bytes(32), bytes(33)), "33 bytes are not a whole number of 32-byte points"),
    ],
)
def test_blind_refuses_wrong_lengths(
    kernels: ModuleType, args: tuple[bytes, bytes], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        kernels.blind(*args)
    with pytest.raises(psi.PSIError, match=message):
        psi._blind_kernel(*args)


@pytest.mark.parametrize(
    ("scalar", "domain", "payload", "message"),
    [
        (bytes(16), b"d", records([b"x"]), "a scalar is 32 bytes, got 16"),
        (bytes(32), bytes(65536), records([b"x"]), "a hashing domain is at most 65535 bytes"),
        (
            bytes(32),
            b"d",
            records([b"ok"]) + (5).to_bytes(4, "big") + b"abc",
            "id record 1 claims 5 bytes but only 3 remain",
        ),
        (bytes(32), b"d", records([b"ok"]) + b"\x00\x00", "id record 1 has 2 bytes of its 4-byte"),
    ],
)
def test_hash_blind_refuses_malformed_input(
    kernels: ModuleType, scalar: bytes, domain: bytes, payload: bytes, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        kernels.hash_blind(scalar, domain, payload)


def test_inputs_must_be_bytes_like(kernels: ModuleType) -> None:
    with pytest.raises(TypeError):
        kernels.blind("a" * 32, bytes(32))
    with pytest.raises(TypeError):
        kernels.hash_blind(bytes(32), b"d", [b"x"])


def test_a_blinding_worker_hashes_records_with_the_kernel(kernels: ModuleType) -> None:
    """The ``H`` request a worker serves gives the reference's bytes, refusals included."""
    ids = random_ids(random.Random(7), 50)
    key = os.urandom(32)
    expected = psi._blind_openssl(key, psi.hash_to_group(ids, b"job").tobytes())
    assert _blind_worker.handle(b"H", key + b"job", records(ids)) == expected
    with pytest.raises(psi.PSIError, match="claims 9 bytes"):
        _blind_worker.handle(b"H", key, (9).to_bytes(4, "big"))
