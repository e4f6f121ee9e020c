"""Spreading a batch: threads of this process (C kernels) or worker processes (Python kernels).

gmpy2 holds the GIL while it multiplies, so the Python kernels run in parallel only in worker
processes (:mod:`secure_agg.paillier_pool`), which receive the key with each request through
their local pipe (:func:`public_header`, :func:`private_header`). The C kernels release the GIL,
so they run on threads of the calling process (:func:`in_threads`): one set of tables, nothing
to start, and the primes never leave the process. The thresholds below decide, for
``workers=None``, from which batch size either is worth it. A party whose node names a Ray
backend (:mod:`secure_agg.compute`) sends every split batch, C kernels or not, as worker
requests to its own cluster instead (:func:`on_threads`, :func:`run_in_workers`).
"""

from __future__ import annotations

import math
import operator
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeGuard, TypeVar

from secure_agg import compute, paillier_pool
from secure_agg.paillier.errors import PaillierError
from secure_agg.paillier.keys import PublicKey
from secure_agg.paillier.wire import ints_from_bytes

if TYPE_CHECKING:
    from secure_agg.paillier.keys import PrivateKey

#: With ``workers=None``, batches smaller than these run in the calling process (starting the
#: pool costs ~0.2 s; each worker builds its tables once per key, ~0.3 s at 2048 bits).
PARALLEL_MIN_ENCRYPT = 512
PARALLEL_MIN_DECRYPT = 64
PARALLEL_MIN_ADDS = 200_000

#: The same thresholds for the C kernels, which run on threads of the calling process: nothing
#: to start and one set of tables, so a few milliseconds of work (at 2048 bits) suffice.
THREAD_MIN_ENCRYPT = 32
THREAD_MIN_ADDS = 8_192

_Part = TypeVar("_Part")
_Kernels = TypeVar("_Kernels")


def workers_for(workers: int | None, work: int, threshold: int, items: int) -> int:
    """Processes to use: explicit counts are obeyed (capped by items), ``None`` by threshold.

    ``None`` above the threshold means the active compute backend's CPUs
    (:func:`secure_agg.compute.workers`).

    Raises
    ------
    PaillierError
        If ``workers`` is below 1.
    """
    if workers is None:
        if work < threshold:
            return 1
        workers = compute.workers()
    workers = operator.index(workers)
    if workers < 1:
        raise PaillierError(f"workers must be at least 1, got {workers}")
    return max(1, min(workers, items))


def split(n_items: int, parts: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges cutting ``n_items`` into at most ``parts`` nearly equal runs."""
    if n_items <= 0:
        return []
    per = math.ceil(n_items / parts)
    return [(start, min(start + per, n_items)) for start in range(0, n_items, per)]


def byte_parts(data: bytes, width: int, parts: int) -> list[bytes]:
    """``data`` (values of ``width`` bytes) cut into ``parts`` runs of whole values."""
    return [data[start * width : stop * width] for start, stop in split(len(data) // width, parts)]


def gather(replies: list[bytes], width: int) -> list[int]:
    """The integers of the replies of a split batch, in order."""
    out: list[int] = []
    for reply in replies:
        out.extend(ints_from_bytes(reply, width))
    return out


# ---------------------------------------------------------------- threads (C kernels)


_THREADS: tuple[int, ThreadPoolExecutor] | None = None
_THREADS_LOCK = threading.Lock()


def thread_pool(size: int) -> ThreadPoolExecutor:
    """This process's kernel thread pool, with at least ``size`` threads (shared by the schemes)."""
    global _THREADS
    with _THREADS_LOCK:
        if _THREADS is None or _THREADS[0] < size:
            if _THREADS is not None:
                _THREADS[1].shutdown(wait=False)
            _THREADS = (size, ThreadPoolExecutor(size, "he-kernel"))
        return _THREADS[1]


def on_threads(c_kernels: _Kernels | None) -> TypeGuard[_Kernels]:
    """Whether a split batch runs on this process's threads (C kernels, local backend).

    With a remote backend (:mod:`secure_agg.compute`) every split batch goes to its workers
    as requests (:func:`run_in_workers`), which use the C kernels where they are built.
    """
    return c_kernels is not None and not compute.active().remote


def in_threads(fn: Callable[[_Part], bytes], parts: Sequence[_Part]) -> list[bytes]:
    """``[fn(part) for part in parts]`` on this process's threads (C kernels release the GIL).

    The C kernels' tables are shared by the threads, so a batch split over threads builds them
    once, and key material never leaves the process (unlike :func:`run_in_workers`).
    """
    if len(parts) <= 1:
        return [fn(part) for part in parts]
    return list(thread_pool(len(parts)).map(fn, parts))


def _after_fork_in_child() -> None:
    """A forked child has none of its parent's threads, so nothing may wait for them.

    Start a new thread pool on demand and re-create the lock (a parent thread may have held it
    at the fork). :mod:`secure_agg.paillier.tables` resets its own locks and C tables.
    """
    global _THREADS, _THREADS_LOCK
    _THREADS = None
    _THREADS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------- worker processes (Python kernels)


def public_header(pub: PublicKey) -> bytes:
    """The start of every worker request's header: ``length (4) || PublicKey.to_bytes()``."""
    raw = pub.to_bytes()
    return len(raw).to_bytes(4, "big") + raw


def private_header(priv: PrivateKey) -> bytes:
    """The header of the key holder's requests: the public header, then the primes."""
    return public_header(priv.public_key) + priv.to_secret_bytes()


def sums_header(n_rows: int, n_cols: int, n_groups: int) -> bytes:
    """What follows the public header in a group-sum (``S``) request."""
    return n_rows.to_bytes(8, "big") + n_cols.to_bytes(4, "big") + n_groups.to_bytes(4, "big")


def binned_header(n_rows: int, n_cols: int, n_groups: int, width: int, itemsize: int) -> bytes:
    """What follows the public header in a binned group-sum (``B``) request."""
    return sums_header(n_rows, n_cols, n_groups) + width.to_bytes(4, "big") + bytes([itemsize])


def read_header(header: bytes) -> tuple[PublicKey, bytes]:
    """The public key at the start of a worker request's header, and the rest of the header."""
    size = int.from_bytes(header[:4], "big")
    pub = PublicKey.from_bytes(header[4 : 4 + size], allow_insecure_test_keys=True)
    return pub, header[4 + size :]


def run_in_workers(
    op: bytes, parts: Sequence[tuple[bytes, bytes] | tuple[bytes, list[bytes], bytes]]
) -> list[bytes]:
    """Run ``(header, payload)`` parts of request ``op`` on the active backend's workers.

    A part may be ``(header, shared, payload)``: ``shared`` are blocks that precede the payload
    and that later batches are likely to send again (a tree's ciphertexts, a job's bins). A
    remote backend keeps them in its cluster and sends each once
    (:func:`secure_agg.paillier_pool.run_parallel`); local workers get them joined.

    Raises
    ------
    PaillierError
        If a worker refused its input (the message is the worker's).
    secure_agg.worker_pool.WorkerError
        If a worker died, sent a truncated reply or failed.
    """
    try:
        return paillier_pool.run_parallel(op, parts)
    except paillier_pool.RefusedRequestError as exc:
        raise PaillierError(str(exc)) from exc
