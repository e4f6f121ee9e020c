"""The one worker pool behind Paillier batches and PSI blinding: framing, failures, close.

Both users (``PaillierPool`` through ``secure_agg.paillier``, ``BlindingPool`` through
``secure_agg.psi``) are driven through their public functions with real workers killed
mid-request, and with this module run as a worker that breaks the protocol on purpose
(``python -m tests.test_worker_pool``, see :func:`misbehave`): a reply cut short, no reply, a
failure, an unknown status, a worker that ignores SIGTERM. Every case must raise a
``WorkerError`` naming the worker and how it ended, and leave no process behind.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import psutil
import pytest

from secure_agg import paillier, paillier_pool, psi, worker_pool
from secure_agg.paillier import PrivateKey, PublicKey
from secure_agg.worker_pool import (
    RefusedRequestError,
    WorkerError,
    WorkerPool,
    encode_reply,
    encode_request,
    read_request,
    serve,
)

#: Environment variable telling :func:`misbehave` what to do.
MODE_ENV = "LAB_TEST_WORKER_MISBEHAVES"

THIS_MODULE = "tests.test_worker_pool"


def misbehave(mode: str) -> None:
    """The main loop of a worker that breaks the protocol in the way ``mode`` names."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    if mode == "raise":

        def failing(op: bytes, header: bytes, payload: bytes) -> bytes:
            raise RuntimeError(f"boom on {op!r}")

        serve(failing, inp, out)
        return
    if mode == "sleep":  # sleep the seconds the header says, answer with this process's id

        def sleeping(op: bytes, header: bytes, payload: bytes) -> bytes:
            time.sleep(float(header))
            return str(os.getpid()).encode()

        serve(sleeping, inp, out)
        return
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    request = read_request(inp)
    if request is None:
        return
    if mode == "truncate":  # announce 1000 bytes, send 300, die
        out.write(bytes([worker_pool.STATUS_OK]) + (1000).to_bytes(8, "big") + bytes(300))
        out.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "silent":
        sys.exit(3)
    if mode == "status":
        out.write(encode_reply(7, b"what"))
        out.flush()
    if mode == "stubborn":  # answer, then outlive the end of the input and SIGTERM
        out.write(encode_reply(worker_pool.STATUS_OK, b"ready"))
        out.flush()
        while True:
            time.sleep(1)
    inp.read()


# ---------------------------------------------------------------- helpers


def gone(pids: list[int]) -> bool:
    """No process with these ids exists, not even a zombie (so each was reaped)."""
    return not any(psutil.pid_exists(pid) for pid in pids)


@pytest.fixture
def keys() -> tuple[PublicKey, PrivateKey]:
    return paillier.generate_keypair(512, allow_insecure_test_keys=True)


@pytest.fixture
def fresh_pools() -> Iterator[None]:
    """Each test starts and ends without shared pools (none of its workers outlive it)."""
    paillier_pool.shutdown()
    psi._POOL.shutdown()
    yield
    paillier_pool.shutdown()
    psi._POOL.shutdown()


@pytest.fixture
def misbehaving(monkeypatch: pytest.MonkeyPatch, fresh_pools: None) -> Callable[[str], None]:
    """Make both users' pools start this module as their workers, misbehaving as told."""

    def use(mode: str) -> None:
        monkeypatch.setenv(MODE_ENV, mode)
        monkeypatch.setattr(paillier_pool, "WORKER_MODULE", THIS_MODULE)
        monkeypatch.setattr(psi, "WORKER_MODULE", THIS_MODULE)

    return use


def paillier_call(keys: tuple[PublicKey, PrivateKey]) -> Callable[[], object]:
    pub, priv = keys
    cts = paillier.encrypt_many(pub, list(range(10)), workers=1)
    return lambda: paillier.decrypt_many(priv, cts, workers=2)


def psi_call() -> Callable[[], object]:
    points = psi.hash_to_group([b"%d" % i for i in range(psi.PARALLEL_THRESHOLD + 10)])
    key = psi.BlindingKey.generate()
    return lambda: psi.blind(points, key, workers=2)


USERS = {
    "paillier": ("Paillier", lambda: paillier_pool.get_pool(2)),
    "psi": ("blinding", lambda: psi._POOL.get(2)),
}


def call_of(user: str, keys: tuple[PublicKey, PrivateKey]) -> Callable[[], object]:
    return paillier_call(keys) if user == "paillier" else psi_call()


# ---------------------------------------------------------------- both users, broken workers


@pytest.mark.parametrize("user", list(USERS))
def test_a_reply_cut_short_is_reported_not_returned(
    user: str, keys: tuple[PublicKey, PrivateKey], misbehaving: Callable[[str], None]
) -> None:
    misbehaving("truncate")
    label, start = USERS[user]
    pids = start().pids
    call = call_of(user, keys)
    with pytest.raises(WorkerError) as info:
        call()
    message = str(info.value)
    assert f"{label} worker 0 (pid {pids[0]}) sent a truncated reply" in message
    assert "300 of the 1000 bytes it announced" in message
    assert "killed by SIGKILL" in message
    assert "the next call starts new workers" in message
    assert gone(pids)


@pytest.mark.parametrize("user", list(USERS))
def test_a_worker_that_exits_without_replying_is_reported(
    user: str, keys: tuple[PublicKey, PrivateKey], misbehaving: Callable[[str], None]
) -> None:
    misbehaving("silent")
    label, start = USERS[user]
    pids = start().pids
    with pytest.raises(WorkerError, match=f"{label} worker 0 .*before replying.*code 3"):
        call_of(user, keys)()
    assert gone(pids)


@pytest.mark.parametrize("user", list(USERS))
def test_a_failing_worker_reports_its_error_and_stays_usable(
    user: str, keys: tuple[PublicKey, PrivateKey], misbehaving: Callable[[str], None]
) -> None:
    misbehaving("raise")
    label, start = USERS[user]
    pool = start()
    call = call_of(user, keys)
    with pytest.raises(WorkerError, match=f"{label} worker 0 failed: RuntimeError: boom on"):
        call()
    assert pool.alive  # the reply was whole: the pool is still consistent
    with pytest.raises(WorkerError, match="boom"):
        call()


@pytest.mark.parametrize("user", list(USERS))
def test_an_unknown_status_closes_the_pool(
    user: str, keys: tuple[PublicKey, PrivateKey], misbehaving: Callable[[str], None]
) -> None:
    misbehaving("status")
    label, start = USERS[user]
    pool = start()
    pids = pool.pids
    with pytest.raises(WorkerError, match=f"{label} worker 0 answered with status 7"):
        call_of(user, keys)()
    assert not pool.alive
    assert gone(pids)


@pytest.mark.parametrize("user", list(USERS))
def test_close_kills_a_worker_that_ignores_its_input_and_sigterm(
    user: str, misbehaving: Callable[[str], None]
) -> None:
    misbehaving("stubborn")
    _, start = USERS[user]
    pool = start()
    assert pool.run([encode_request(b"x", b"", b"")] * 2) == [b"ready", b"ready"]
    pids = pool.pids
    started = time.monotonic()
    pool.close(timeout=0.3)
    assert time.monotonic() - started >= 0.6  # waited after closing the input, then after TERM
    assert gone(pids)
    assert pool.pids == []
    assert not pool.alive


# ---------------------------------------------------------------- both users, real workers


def kill_mid_request(pool: WorkerPool, run: Callable[[], object]) -> BaseException:
    """Run ``run`` in a thread, SIGKILL worker 0 while it works, return what ``run`` raised."""
    outcome: list[BaseException] = []

    def target() -> None:
        try:
            run()
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    worker = psutil.Process(pool.pids[0])
    deadline = time.monotonic() + 60
    while worker.cpu_times().user < 0.5 and time.monotonic() < deadline:  # imported, working
        time.sleep(0.05)
    os.kill(worker.pid, signal.SIGKILL)
    thread.join(120)
    assert not thread.is_alive()
    assert len(outcome) == 1
    return outcome[0]


def test_a_real_paillier_worker_killed_mid_request_is_reported(fresh_pools: None) -> None:
    pub, priv = paillier.generate_keypair(2048)
    cts = paillier.encrypt_many(pub, list(range(1200)), workers=1)
    pool = paillier_pool.get_pool(2)
    pids = pool.pids
    error = kill_mid_request(pool, lambda: paillier.decrypt_many(priv, cts, workers=2))
    assert isinstance(error, WorkerError), error
    assert f"Paillier worker 0 (pid {pids[0]}) closed its output before replying" in str(error)
    assert "killed by SIGKILL" in str(error)
    assert gone(pids)
    assert paillier.decrypt_many(priv, cts[:70], workers=2) == list(range(70))  # new workers


def test_a_real_blinding_worker_killed_mid_request_is_reported(fresh_pools: None) -> None:
    points = psi.hash_to_group([b"%d" % i for i in range(100_000)])
    key = psi.BlindingKey.generate()
    pool = psi._POOL.get(2)
    pids = pool.pids
    error = kill_mid_request(pool, lambda: psi.blind(points, key, workers=2))
    assert isinstance(error, WorkerError), error
    assert f"blinding worker 0 (pid {pids[0]}) closed its output before replying" in str(error)
    assert gone(pids)
    few = points[: psi.PARALLEL_THRESHOLD + 1]
    assert np.array_equal(psi.blind(few, key, workers=2), psi.blind(few, key, workers=1))


def test_a_worker_dead_before_its_request_is_reported(fresh_pools: None) -> None:
    pool = paillier_pool.PaillierPool(2)
    pids = pool.pids
    try:
        victim = pids[1]
        os.kill(victim, signal.SIGKILL)
        while psutil.Process(victim).status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.01)
        with pytest.raises(WorkerError, match=f"worker 1 \\(pid {victim}\\) did not take its"):
            pool.run([encode_request(b"F", b"", b"")] * 2)
        assert gone(pids)
    finally:
        pool.close()


@pytest.mark.parametrize("make", [paillier_pool.PaillierPool, psi.BlindingPool])
def test_close_leaves_no_process(make: Callable[[int], WorkerPool]) -> None:
    pool = make(2)
    pids = pool.pids
    assert len(pids) == 2
    assert pool.alive
    pool.close()
    assert gone(pids)
    assert not pool.alive
    pool.close()  # closing twice is harmless
    with pytest.raises(WorkerError, match="pool is closed"):
        pool.run([encode_request(b"F", b"", b"")])


def test_shared_pools_are_stopped_by_shutdown(fresh_pools: None) -> None:
    pids = paillier_pool.get_pool(2).pids + psi._POOL.get(2).pids
    paillier_pool.shutdown()
    psi._POOL.shutdown()
    assert gone(pids)


# ---------------------------------------------------------------- refusals


def test_a_low_order_point_in_a_later_part_keeps_its_global_index(fresh_pools: None) -> None:
    points = psi.hash_to_group([b"%d" % i for i in range(psi.PARALLEL_THRESHOLD + 5)])
    index = psi.PARALLEL_THRESHOLD + 3  # in the second of two parts
    points[index] = 0
    key = psi.BlindingKey.generate()
    for workers in (1, 2):
        with pytest.raises(psi.LowOrderPointError, match=f"point {index} is of low order"):
            psi.blind(points, key, workers=workers)
    assert psi._POOL.running() is not None  # a refusal is a whole reply: the pool stays


def test_refusals_of_blinding_requests_are_psi_errors(fresh_pools: None) -> None:
    pool = psi._POOL.get(1)
    key = psi.BlindingKey.generate().secret_bytes()
    with pytest.raises(psi.PSIError, match="not a whole number of 32-byte points"):
        pool.blind(b"B", key, b"", [(0, bytes(33))])
    with pytest.raises(psi.PSIError, match="unknown request b'Q'"):
        pool.blind(b"Q", key, b"", [(0, b"")])
    with pytest.raises(psi.PSIError, match="lacks the 32-byte scalar"):
        pool.blind(b"B", b"short", b"", [(0, b"")])
    with pytest.raises(psi.PSIError, match="claims 99 bytes"):
        pool.blind(b"H", key, b"d", [(0, (99).to_bytes(4, "big") + b"abc")])
    assert pool.alive


def test_more_requests_than_workers_are_refused(fresh_pools: None) -> None:
    with (
        paillier_pool.PaillierPool(1) as pool,
        pytest.raises(ValueError, match="2 requests for a pool of 1 Paillier workers"),
    ):
        pool.run([encode_request(b"F", b"", b"")] * 2)
    with pytest.raises(ValueError, match="at least one worker"):
        paillier_pool.PaillierPool(0)


# ---------------------------------------------------------------- framing, in process


def frames(*requests: bytes) -> io.BytesIO:
    return io.BytesIO(b"".join(requests))


def replies(data: bytes) -> list[tuple[int, bytes]]:
    out, offset = [], 0
    while offset < len(data):
        size = int.from_bytes(data[offset + 1 : offset + 9], "big")
        out.append((data[offset], data[offset + 9 : offset + 9 + size]))
        offset += 9 + size
    return out


def test_serve_answers_refuses_and_reports_in_order() -> None:
    def handle(op: bytes, header: bytes, payload: bytes) -> bytes:
        if op == b"I":
            raise RefusedRequestError("point 4 is bad", item=4)
        if op == b"V":
            raise ValueError("bad input")
        if op == b"X":
            raise KeyError("oops")
        return header + payload

    out = io.BytesIO()
    serve(
        handle,
        frames(
            encode_request(b"A", b"h", b"p"),
            encode_request(b"I", b"", b""),
            encode_request(b"V", b"", b""),
            encode_request(b"X", b"", b""),
        ),
        out,
    )
    assert replies(out.getvalue()) == [
        (worker_pool.STATUS_OK, b"hp"),
        (worker_pool.STATUS_REFUSED, (4).to_bytes(8, "big") + b"point 4 is bad"),
        (worker_pool.STATUS_REFUSED, b"\xff" * 8 + b"bad input"),
        (worker_pool.STATUS_FAILED, b"KeyError: 'oops'"),
    ]


def test_serve_exits_on_a_request_cut_short() -> None:
    request = encode_request(b"A", b"header", b"payload")
    with pytest.raises(SystemExit, match="inside a request"):
        serve(lambda op, header, payload: b"", frames(request[:-3]), io.BytesIO())
    assert read_request(frames()) is None


def test_a_request_op_is_one_byte() -> None:
    with pytest.raises(ValueError, match="one byte"):
        encode_request(b"AB", b"", b"")


# ---------------------------------------------------------------- map: more requests than workers


@pytest.fixture
def sleepers(monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkerPool]:
    """Two workers answering ``sleep`` requests (header: seconds) with their process id."""
    monkeypatch.setenv(MODE_ENV, "sleep")
    pool = WorkerPool(THIS_MODULE, 2, label="sleeping")
    yield pool
    pool.close()


def test_map_gives_each_request_to_the_next_free_worker(sleepers: WorkerPool) -> None:
    slow, fast = sleepers.pids
    requests = [encode_request(b"S", b"2.5", b"")] + [encode_request(b"S", b"0.05", b"")] * 8
    answers = sleepers.map(iter(requests))
    # In request order; the fast worker took all the rest meanwhile, not a fixed half.
    assert [int(a) for a in answers] == [slow] + [fast] * 8


def test_a_failing_request_generator_closes_the_pool(sleepers: WorkerPool) -> None:
    pids = sleepers.pids

    def requests() -> Iterator[bytes]:
        yield from [encode_request(b"S", b"0.2", b"")] * 3
        raise RuntimeError("cannot make the next request")

    with pytest.raises(RuntimeError, match="cannot make the next request"):
        sleepers.map(requests())
    assert not sleepers.alive  # replies still in flight must not reach the next call
    assert gone(pids)


def test_blinding_in_many_chunks_equals_serial_and_keeps_global_indices(
    fresh_pools: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(psi, "CHUNK_POINTS", 3_000)  # 7 requests for 2 workers
    points = psi.hash_to_group([b"%d" % i for i in range(psi.PARALLEL_THRESHOLD + 5)])
    key = psi.BlindingKey.generate()
    assert len(psi._chunks(len(points), 2)) == 7
    assert np.array_equal(psi.blind(points, key, workers=2), psi.blind(points, key, workers=1))
    ids = [b"%d" % i for i in range(psi.PARALLEL_THRESHOLD + 5)]
    assert np.array_equal(
        psi.hash_and_blind(ids, key, b"d", workers=2), psi.hash_and_blind(ids, key, b"d", workers=1)
    )
    index = 6 * 2_858 + 11  # in the last of seven parts
    points[index] = 0
    with pytest.raises(psi.LowOrderPointError, match=f"point {index} is of low order"):
        psi.blind(points, key, workers=2)
    assert psi._POOL.running() is not None


if __name__ == "__main__":
    misbehave(os.environ[MODE_ENV])
