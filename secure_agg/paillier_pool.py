"""Worker processes for Paillier batches: ``python -m secure_agg._paillier_worker`` on pipes.

gmpy2 holds the GIL while it multiplies, so threads do not run Paillier arithmetic in parallel;
processes do. The workers are plain subprocesses rather than ``multiprocessing`` children because
those re-import the caller's main program, which inside a Flower SuperNode or a Ray worker is
someone else's program (the same reason as :class:`secure_agg.psi.BlindingPool`). A worker
imports only :mod:`secure_agg`, serves one request at a time and exits when its stdin closes.

Frames (integers big-endian):

request
    ``op`` (1 byte), ``header length`` (4) + ``header``, ``payload length`` (8) + ``payload``.
response
    ``status`` (1 byte: 0 ok, 2 refused input, 3 internal failure), ``length`` (8) + ``data``
    (the result, or a UTF-8 message).

What a worker holds: the public key of a request and, for a decryption request only, the primes
of the private key, which arrive in the request's header and are dropped when it is answered
(Python cannot wipe integers from memory; the worker is this party's own child process on this
machine, reached only through its pipes). A worker caches the fixed-base tables of the last few
public keys (public data) so that later batches do not rebuild them.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

#: Status byte of a worker's reply.
STATUS_OK = 0
STATUS_REFUSED = 2
STATUS_FAILED = 3

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


class WorkerError(RuntimeError):
    """A worker process died, closed its pipe or failed unexpectedly."""


class RefusedRequestError(ValueError):
    """A worker refused a request's input (the message says why; it never contains key material)."""


def default_workers() -> int:
    """Processes to use by default: the CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def encode_request(op: bytes, header: bytes, payload: bytes) -> bytes:
    """One request frame (see the module docstring)."""
    if len(op) != 1:
        raise ValueError("an op is one byte")
    return op + len(header).to_bytes(4, "big") + header + len(payload).to_bytes(8, "big") + payload


class PaillierPool:
    """A fixed set of worker processes, kept for the life of this process.

    Parameters
    ----------
    workers : int
        Processes to start (at least 1).

    Notes
    -----
    :meth:`run` sends at most one request to each worker, then collects the replies in order,
    so requests run concurrently. Calls are serialised by a lock; a failed worker closes the pool
    and a later :func:`get_pool` starts a new one.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"a pool needs at least one worker, got {workers}")
        env = dict(os.environ)
        # The workers import secure_agg from this checkout even when it is not installed.
        env["PYTHONPATH"] = os.pathsep.join(
            [_PACKAGE_ROOT, *filter(None, [env.get("PYTHONPATH", "")])]
        )
        self.workers = workers
        self._lock = threading.Lock()
        self._procs = [
            subprocess.Popen(
                [sys.executable, "-m", "secure_agg._paillier_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
            for _ in range(workers)
        ]
        logger.debug("started %d Paillier worker processes", workers)

    @property
    def alive(self) -> bool:
        """Whether every worker is still running."""
        return bool(self._procs) and all(proc.poll() is None for proc in self._procs)

    def run(self, requests: list[bytes]) -> list[bytes]:
        """Send one encoded request per worker and return the replies' data in order.

        Raises
        ------
        RefusedRequestError
            If a worker refused its input.
        WorkerError
            If a worker died or failed.
        """
        if len(requests) > self.workers:
            raise ValueError(f"{len(requests)} requests for {self.workers} workers")
        with self._lock:
            try:
                for proc, request in zip(self._procs, requests, strict=False):
                    if proc.stdin is None:
                        raise EOFError("worker has no input pipe")
                    proc.stdin.write(request)
                    proc.stdin.flush()
                replies = [self._reply(proc) for proc in self._procs[: len(requests)]]
            except (OSError, EOFError) as exc:
                self.close()
                raise WorkerError(f"a Paillier worker stopped: {exc}") from exc
        out = []
        for status, data in replies:
            if status == STATUS_REFUSED:
                raise RefusedRequestError(data.decode(errors="replace"))
            if status != STATUS_OK:
                raise WorkerError(data.decode(errors="replace"))
            out.append(data)
        return out

    @staticmethod
    def _reply(proc: subprocess.Popen[bytes]) -> tuple[int, bytes]:
        if proc.stdout is None:
            raise EOFError("worker has no output pipe")
        head = proc.stdout.read(9)
        if len(head) != 9:
            raise EOFError("no reply")
        size = int.from_bytes(head[1:], "big")
        data = proc.stdout.read(size)
        if len(data) != size:
            raise EOFError("truncated reply")
        return head[0], data

    def close(self) -> None:
        """Stop the workers (closing their input ends their loop)."""
        for proc in self._procs:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        for proc in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self._procs = []


_POOL: PaillierPool | None = None
_POOL_LOCK = threading.Lock()
_ATEXIT_REGISTERED = False


def get_pool(workers: int) -> PaillierPool:
    """The shared pool, (re)started with at least ``workers`` processes."""
    global _POOL, _ATEXIT_REGISTERED
    with _POOL_LOCK:
        if _POOL is None or _POOL.workers < workers or not _POOL.alive:
            if _POOL is not None:
                _POOL.close()
            _POOL = PaillierPool(workers)
            if not _ATEXIT_REGISTERED:
                atexit.register(shutdown)
                _ATEXIT_REGISTERED = True
        return _POOL


def shutdown() -> None:
    """Stop the shared pool if it is running (registered with :mod:`atexit`)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is not None:
            _POOL.close()
            _POOL = None


def broadcast(op: bytes) -> None:
    """Send a header-less request to every worker of the running pool (if any)."""
    with _POOL_LOCK:
        pool = _POOL
    if pool is not None and pool.alive:
        pool.run([encode_request(op, b"", b"")] * pool.workers)


def run_parallel(op: bytes, parts: list[tuple[bytes, bytes]]) -> list[bytes]:
    """Run ``(header, payload)`` parts of one operation on the shared pool, one per worker."""
    pool = get_pool(len(parts))
    return pool.run([encode_request(op, header, payload) for header, payload in parts])
