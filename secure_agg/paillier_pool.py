"""Worker processes for Paillier batches: ``python -m secure_agg._paillier_worker`` on pipes.

:class:`PaillierPool` is the generic :class:`secure_agg.worker_pool.WorkerPool` (process start,
framing, the truncated-reply check, close) running :mod:`secure_agg._paillier_worker`, whose
requests are documented there. :mod:`secure_agg.paillier` uses one shared pool per process
(:func:`run_parallel`), started on demand and stopped at exit.

What a worker holds: the public key of a request and, for a decryption request only, the primes
of the private key, which arrive in the request's header and are dropped when it is answered
(Python cannot wipe integers from memory; the worker is this party's own child process on this
machine, reached only through its pipes). A worker caches the fixed-base tables of the last few
public keys (public data) so that later batches do not rebuild them.
"""

from __future__ import annotations

from collections.abc import Sequence

from secure_agg import compute
from secure_agg.worker_pool import (
    STATUS_FAILED,
    STATUS_OK,
    STATUS_REFUSED,
    RefusedRequestError,
    SharedPool,
    WorkerError,
    WorkerPool,
    default_workers,
    encode_request,
)

__all__ = [
    "STATUS_FAILED",
    "STATUS_OK",
    "STATUS_REFUSED",
    "WORKER_MODULE",
    "PaillierPool",
    "RefusedRequestError",
    "WorkerError",
    "broadcast",
    "default_workers",
    "encode_request",
    "get_pool",
    "run_parallel",
    "shutdown",
]

#: The module every Paillier worker runs.
WORKER_MODULE = "secure_agg._paillier_worker"


class PaillierPool(WorkerPool):
    """Paillier worker processes, kept for the life of this process (see :class:`WorkerPool`).

    Parameters
    ----------
    workers : int
        Processes to start (at least 1).
    """

    def __init__(self, workers: int) -> None:
        super().__init__(WORKER_MODULE, workers, label="Paillier")


_SHARED: SharedPool[PaillierPool] = SharedPool(PaillierPool)


def get_pool(workers: int) -> PaillierPool:
    """The shared pool, (re)started with at least ``workers`` processes."""
    return _SHARED.get(workers)


def shutdown() -> None:
    """Stop the shared pool if it is running (registered with :mod:`atexit`)."""
    _SHARED.shutdown()


def broadcast(op: bytes) -> None:
    """Send a header-less request to every worker of the running pool (if any).

    Only the local pool: a Ray backend's tasks keep nothing between requests (see
    :mod:`secure_agg.ray_backend`).
    """
    pool = _SHARED.running()
    if pool is not None:
        pool.run([encode_request(op, b"", b"")] * pool.workers)


def run_parallel(
    op: bytes, parts: Sequence[tuple[bytes, bytes] | tuple[bytes, list[bytes], bytes]]
) -> list[bytes]:
    """Run ``(header, payload)`` parts of one operation, one per worker, on the active backend.

    The local backend runs them on the shared pool; a Ray backend
    (:func:`secure_agg.compute.active`) as tasks of the party's cluster, through its gateway. A
    part ``(header, shared, payload)`` has blocks ``shared`` before its payload: the gateway
    keeps them in the cluster (:meth:`secure_agg.ray_backend.RayGateway.share`) so that a later
    batch with the same blocks sends only its payload; local workers get them joined.
    """
    if compute.active().remote:
        gateway = compute.gateway()
        return gateway.run_batch(b"P", gateway.requests(op, parts), label="Paillier")
    requests = [
        encode_request(op, part[0], part[-1] if len(part) == 2 else b"".join([*part[1], part[2]]))
        for part in parts
    ]
    return get_pool(len(parts)).run(requests)
