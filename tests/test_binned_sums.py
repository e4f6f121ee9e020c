"""Histogram sums from bins and node slots: equal to the group-id kernel, without its matrix.

:func:`secure_agg.paillier.sum_binned_many` and the worker's ``B`` request must give exactly what
:func:`secure_agg.paillier.sum_groups_many` gives on the matrix ``slot * width + bin``; a bad bin,
slot or length is refused naming it. A remote backend's gateway keeps shared blocks (a tree's
ciphertexts, a job's bins) and sends each once while kept; the Ray cluster itself is exercised in
tests/test_compute_ray.py.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from secure_agg import _paillier_worker, ou, paillier, ray_backend
from secure_agg.backends import OU
from secure_agg.paillier import extension, kernels, parallel
from secure_agg.paillier.wire import ints_from_bytes, ints_to_bytes
from secure_agg.worker_pool import decode_requests

KERNELS = [pytest.param(None, id="python"), pytest.param("c", id="c")]


@pytest.fixture(params=KERNELS)
def use_kernels(request: pytest.FixtureRequest) -> Iterator[None]:
    loaded = extension.load()
    if request.param == "c" and loaded is None:
        pytest.skip("C kernels not built")
    extension.use(loaded if request.param == "c" else None)
    yield
    extension.use(loaded)


@pytest.fixture(scope="module")
def keys() -> tuple[paillier.PublicKey, paillier.PrivateKey]:
    return paillier.generate_keypair(1024, allow_insecure_test_keys=True)


def _level(rows: int, cols: int, width: int, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(rows + cols)
    bins = rng.integers(0, width, size=(rows, cols)).astype(np.uint8)
    slots = rng.integers(-1, nodes, size=rows).astype(np.int32)
    return bins, slots


def test_binned_sums_equal_group_sums_on_every_path(
    use_kernels: None, keys: tuple[paillier.PublicKey, paillier.PrivateKey]
) -> None:
    pub, priv = keys
    width, nodes = 5, 3
    bins, slots = _level(300, 40, width, nodes)
    values = [secrets.randbelow(1000) for _ in range(300)]
    cts = paillier.encrypt_many_private(priv, values)
    groups = kernels.binned_groups(bins, slots, width)
    expected = paillier.sum_groups_many(pub, cts, groups, nodes * width, workers=1)
    for workers in (1, 2):  # one thread; blocks of rows or columns on two
        got = paillier.sum_binned_many(pub, cts, bins, slots, width, nodes * width, workers=workers)
        assert got == expected
    # And the plaintext: each (column, group) sum is what the bins and slots say.
    column = 7
    decrypted = paillier.decrypt_many(priv, expected[column])
    for group, total in enumerate(decrypted):
        slot, b = divmod(group, width)
        rows = (slots == slot) & (bins[:, column] == b)
        assert total == sum(v for v, r in zip(values, rows, strict=True) if r)


def test_ou_binned_sums_equal_group_sums() -> None:
    pub, priv = ou.generate_keypair(1024, allow_insecure_test_keys=True)
    bins, slots = _level(120, 6, 4, 2)
    cts = OU.encrypt_private(priv, [secrets.randbelow(100) for _ in range(120)])
    expected = ou.sum_groups_many(pub, cts, kernels.binned_groups(bins, slots, 4), 8)
    assert OU.sum_binned_many(pub, cts, bins, slots, 4, 8) == expected


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
def test_the_workers_b_request_equals_its_s_request(
    use_kernels: None, keys: tuple[paillier.PublicKey, paillier.PrivateKey], dtype: Any
) -> None:
    pub, priv = keys
    width, nodes = 7, 4
    bins, slots = _level(64, 9, width, nodes)
    bins = bins.astype(dtype)
    cts = paillier.encrypt_many_private(priv, [secrets.randbelow(50) for _ in range(64)])
    data = ints_to_bytes(cts, pub.ciphertext_bytes)
    head = parallel.public_header(pub)
    groups = kernels.binned_groups(bins, slots, width)
    s_reply = _paillier_worker.handle(
        b"S", head + parallel.sums_header(64, 9, nodes * width), data + groups.tobytes()
    )
    itemsize = np.dtype(dtype).itemsize
    b_header = head + parallel.binned_header(64, 9, nodes * width, width, itemsize)
    b_reply = _paillier_worker.handle(b"B", b_header, data + bins.tobytes() + slots.tobytes())
    assert b_reply == s_reply
    # Shared blocks before the payload: the local pool gets them joined, with the same reply.
    [pooled] = parallel.run_in_workers(b"B", [(b_header, [data, bins.tobytes()], slots.tobytes())])
    assert pooled == s_reply
    assert len(ints_from_bytes(b_reply, pub.ciphertext_bytes)) == 9 * nodes * width


def test_bad_bins_slots_and_lengths_are_refused_naming_them(
    keys: tuple[paillier.PublicKey, paillier.PrivateKey],
) -> None:
    pub, priv = keys
    bins, slots = _level(20, 3, 4, 2)
    cts = paillier.encrypt_many_private(priv, [1] * 20)
    with pytest.raises(paillier.PaillierError, match=r"bin is outside \[0, 4\)"):
        paillier.sum_binned_many(pub, cts, bins + 4, slots, 4, 8)
    with pytest.raises(paillier.PaillierError, match="node slot is outside"):
        paillier.sum_binned_many(pub, cts, bins, slots + 5, 4, 8)
    with pytest.raises(paillier.PaillierError, match="do not match 19 rows"):
        paillier.sum_binned_many(pub, cts[:19], bins, slots, 4, 8)
    head = parallel.public_header(pub) + parallel.binned_header(20, 3, 8, 4, 1)
    data = ints_to_bytes(cts, pub.ciphertext_bytes) + bins.tobytes() + slots.tobytes()
    with pytest.raises(paillier.PaillierError, match="wrong length"):
        _paillier_worker.handle(b"B", head, data[:-1])
    bad_size = parallel.public_header(pub) + parallel.binned_header(20, 3, 8, 4, 3)
    with pytest.raises(paillier.PaillierError, match="bin size 3"):
        _paillier_worker.handle(b"B", bad_size, data)
    too_many = parallel.public_header(pub) + parallel.binned_header(20, 3, 4, 4, 1)
    # Slots up to 1 with 4 groups of width 4: the C kernel names the slot, Python the group id.
    refused = r"(node slot 1 of row \d+|group id) is outside"
    with pytest.raises(paillier.PaillierError, match=refused):
        _paillier_worker.handle(b"B", too_many, data)


class _Recorded(ray_backend.RayGateway):
    """A gateway client whose frames are recorded instead of sent to a gateway process."""

    def __init__(self) -> None:  # no process: only the client's bookkeeping is tested
        self.sent: list[tuple[bytes, bytes, bytes]] = []
        self._kept = OrderedDict()

    def run(self, requests: Any) -> list[bytes]:
        for request in requests:
            self.sent.extend(decode_requests(request))
        return [b"" for _ in requests]


def test_a_gateway_sends_each_shared_block_once_and_drops_the_least_recently_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ray_backend, "SHARED_BYTES", 250)
    gateway = _Recorded()
    tree, bins = b"c" * 100, b"b" * 100
    first = gateway.requests(b"B", [(b"h", [tree, bins], b"slots-1")])
    uploads = [frame for frame in gateway.sent if frame[0] == b"U"]
    assert [frame[2] for frame in uploads] == [tree, bins]
    gateway.sent.clear()
    second = gateway.requests(b"B", [(b"h", [tree, bins], b"slots-2")])
    assert gateway.sent == []  # kept: the level sends only its slots
    [(op, header, payload)] = decode_requests(second[0])
    assert op == b"X"
    assert payload == b"slots-2"
    assert header[0] == 2
    assert header[1 + 2 * ray_backend.KEY_BYTES :] == b"B" + b"h"
    assert decode_requests(first[0])[0][1] == header
    # A new tree's ciphertexts: over the budget, the oldest block not in use is dropped.
    gateway.requests(b"B", [(b"h", [b"d" * 100, bins], b"slots-3")])
    ops = [frame[0] for frame in gateway.sent]
    assert ops == [b"U", b"D"]
    dropped = gateway.sent[1][2]
    assert dropped == header[1 : 1 + ray_backend.KEY_BYTES]  # the first tree's ciphertexts
    assert list(gateway._kept.values()) == [100, 100]


def test_a_batch_never_drops_its_own_blocks_even_beyond_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ray_backend, "SHARED_BYTES", 250)
    gateway = _Recorded()
    gateway.requests(b"B", [(b"h", [b"o" * 100], b"old")])
    parts = [(b"h", [b"c" * 100, b"b" * 100], b"1"), (b"h", [b"d" * 100, b"e" * 100], b"2")]
    requests = gateway.requests(b"B", parts)  # 400 bytes of blocks, over a budget of 250
    ops = [frame[0] for frame in gateway.sent]
    assert ops == [b"U", b"U", b"U", b"U", b"U", b"D"]
    assert len(gateway.sent[-1][2]) == ray_backend.KEY_BYTES  # only the old block is dropped
    kept = set(gateway._kept)
    for request in requests:
        [(_, header, _)] = decode_requests(request)
        size = ray_backend.KEY_BYTES
        named = {header[1 + i * size : 1 + (i + 1) * size] for i in range(header[0])}
        assert named <= kept


def _c_kernels() -> Any:
    loaded = extension.load()
    if loaded is None:
        pytest.skip("C kernels not built")
    return loaded


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32])
def test_the_c_kernel_reads_any_block_of_the_bins_in_place(
    keys: tuple[paillier.PublicKey, paillier.PrivateKey], dtype: Any
) -> None:
    c = _c_kernels()
    pub, priv = keys
    width, nodes = 6, 3
    bins, slots = _level(90, 11, width, nodes)
    bins = bins.astype(dtype)
    data = ints_to_bytes(paillier.encrypt_many_private(priv, list(range(90))), pub.ciphertext_bytes)
    groups = kernels.binned_groups(bins, slots, width)
    for start, stop in [(0, 11), (0, 3), (3, 4), (4, 11), (5, 5)]:  # digits and row-table loops
        expected = kernels.group_sums_c(
            c, pub, data, 90, nodes * width, np.ascontiguousarray(groups[:, start:stop])
        )
        got = kernels.binned_sums_c(c, pub, data, bins, slots, width, nodes * width, (start, stop))
        assert got == expected
    # A block of rows: a view of the bins, the ciphertexts' bytes sliced without a copy.
    view = memoryview(data)[30 * pub.ciphertext_bytes : 70 * pub.ciphertext_bytes]
    expected = kernels.group_sums_c(c, pub, bytes(view), 40, nodes * width, groups[30:70].copy())
    got = kernels.binned_sums_c(
        c, pub, view, bins[30:70], slots[30:70], width, nodes * width, (0, 11)
    )
    assert got == expected


def test_the_c_kernel_names_a_bad_bin_or_slot_by_row_and_column(
    keys: tuple[paillier.PublicKey, paillier.PrivateKey],
) -> None:
    c = _c_kernels()
    pub, priv = keys
    bins, slots = _level(20, 4, 4, 2)
    bins[7, 2] = 4
    data = ints_to_bytes(paillier.encrypt_many_private(priv, [1] * 20), pub.ciphertext_bytes)
    with pytest.raises(ValueError, match=r"bin 4 at row 7, column 2 is outside \[0, 4\)"):
        kernels.binned_sums_c(c, pub, data, bins, slots, 4, 8, (0, 4))
    bins[7, 2] = 0
    slots[5] = 2
    with pytest.raises(ValueError, match=r"node slot 2 of row 5 is outside \[-1, 2\)"):
        kernels.binned_sums_c(c, pub, data, bins, slots, 4, 8, (0, 4))


def test_a_level_split_by_rows_over_threads_equals_the_group_id_kernel(
    keys: tuple[paillier.PublicKey, paillier.PrivateKey],
) -> None:
    _c_kernels()
    pub, priv = keys
    width, nodes = 4, 2
    bins, slots = _level(2000, 6, width, nodes)  # blocks of 3 columns: too few, rows are split
    cts = paillier.encrypt_many_private(priv, [secrets.randbelow(9) for _ in range(2000)])
    groups = kernels.binned_groups(bins, slots, width)
    expected = paillier.sum_groups_many(pub, cts, groups, nodes * width, workers=1)
    assert paillier.sum_binned_many(pub, cts, bins, slots, width, nodes * width, workers=2) == (
        expected
    )


def test_a_ray_task_reads_its_kept_blocks_in_place(
    use_kernels: None, keys: tuple[paillier.PublicKey, paillier.PrivateKey]
) -> None:
    """``handle_parts`` with the blocks as separate read-only arrays, as Ray hands them over."""
    pub, priv = keys
    width, nodes = 5, 2
    bins, slots = _level(50, 8, width, nodes)
    data = ints_to_bytes(paillier.encrypt_many_private(priv, list(range(50))), pub.ciphertext_bytes)
    header = parallel.public_header(pub) + parallel.binned_header(50, 8, nodes * width, width, 1)
    joined = _paillier_worker.handle(b"B", header, data + bins.tobytes() + slots.tobytes())
    blocks = [np.frombuffer(data, dtype=np.uint8), np.frombuffer(bins.tobytes(), dtype=np.uint8)]
    assert not blocks[0].flags.writeable
    assert _paillier_worker.handle_parts(b"B", header, [*blocks, slots.tobytes()]) == joined
    # Blocks cut elsewhere than the request's own layout are joined first: the same reply.
    cut = [data[:100], data[100:] + bins.tobytes(), slots.tobytes()]
    assert _paillier_worker.handle_parts(b"B", header, cut) == joined
    with pytest.raises(paillier.PaillierError, match="wrong length"):
        _paillier_worker.handle_parts(b"B", header, [data, bins.tobytes()])


def test_a_local_level_holds_no_matrix_of_group_ids(
    keys: tuple[paillier.PublicKey, paillier.PrivateKey],
) -> None:
    """Peak memory of a level on this process's threads stays well below one int32 id matrix."""
    import tracemalloc

    _c_kernels()
    pub, priv = keys
    rows, cols, width, nodes = 3000, 800, 4, 1
    bins, slots = _level(rows, cols, width, nodes)
    cts = paillier.encrypt_many_private(priv, [1] * rows)
    matrix_bytes = rows * cols * 4
    for workers in (1, 2):
        tracemalloc.start()
        try:
            paillier.sum_binned_many(pub, cts, bins, slots, width, nodes * width, workers=workers)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # The ciphertexts as bytes (3000 x 256, briefly twice) and the sums (800 x 4 x 256) are
        # all a level allocates: O(rows + columns x groups), not rows x columns.
        assert peak < matrix_bytes / 2, (workers, peak, matrix_bytes)
