"""Worker processes on pipes: the one pool behind Paillier batches and PSI blinding.

gmpy2 and X25519 hold the GIL while they compute, so threads do not run that work in parallel;
processes do. The workers are plain ``python -m <module>`` subprocesses rather than
``multiprocessing`` children, because those re-import the caller's main program, which inside a
Flower SuperNode or a Ray worker is someone else's program. A worker imports only
:mod:`secure_agg`, answers one request at a time (:func:`serve`) and exits when its stdin closes.
:class:`secure_agg.paillier_pool.PaillierPool` and :class:`secure_agg.psi.BlindingPool` are this
pool with their worker module; nothing else about starting, framing or stopping differs.

Frames (integers big-endian)
----------------------------
request
    ``op`` (1 byte), ``header length`` (4) + ``header``, ``payload length`` (8) + ``payload``.
reply
    ``status`` (1 byte), ``length`` (8) + ``data``, where ``data`` is

    - :data:`STATUS_OK`: the result;
    - :data:`STATUS_REFUSED`: the worker refused the request's input: ``item`` (8 bytes: the
      index of the offending item of the payload, all ones for the request as a whole) and a
      UTF-8 message;
    - :data:`STATUS_FAILED`: an unexpected failure in the worker: a UTF-8 message.

Checks
------
- A worker that cannot be started, closes a pipe, dies before or *during* its reply (fewer bytes
  than the reply announced: a truncated reply is never returned as a result) or answers with an
  unknown status raises :class:`WorkerError`, naming the worker, its process id and how it
  ended. The pool then closes itself; :meth:`SharedPool.get` starts a new one on the next call.
- A refusal raises :class:`RefusedRequestError` with the index of the request and of the item.
- :meth:`WorkerPool.close` closes the workers' input (their loop ends), waits up to
  :data:`CLOSE_TIMEOUT` seconds, then terminates them, waits again, kills what is left and
  reaps it: no process, not even a zombie, outlives ``close``.
- Replies have no deadline: a batch takes as long as its size needs (minutes for large
  histograms), so a request is not cut off by a timer; a worker that dies is reported at once.

Key material (the Paillier primes, the PSI scalar) may travel in requests, through these local
pipes, to this party's own child processes; no error message built here contains it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, BinaryIO, Generic, Self, TypeVar

logger = logging.getLogger(__name__)

#: Status byte of a reply: the result follows.
STATUS_OK = 0
#: Status byte of a reply: the request's input was refused (item index and message follow).
STATUS_REFUSED = 2
#: Status byte of a reply: the worker failed unexpectedly (a message follows).
STATUS_FAILED = 3

#: Seconds :meth:`WorkerPool.close` gives the workers to exit after their input closes, and
#: again after ``SIGTERM``, before it kills them.
CLOSE_TIMEOUT = 5.0

_NO_ITEM = (1 << 64) - 1
_REPLY_HEAD_BYTES = 9
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])

#: A worker's computation: ``(op, header, payload) -> result``.
Handler = Callable[[bytes, bytes, bytes], bytes]


class WorkerError(RuntimeError):
    """A worker could not start, died, closed its pipe, sent a truncated reply or failed."""


class RefusedRequestError(ValueError):
    """A worker refused a request's input (the message says why; it never holds key material).

    Parameters
    ----------
    message : str
    item : int, optional
        Index of the offending item in the request's payload (e.g. a point), if one is to blame.
    request : int, optional
        Index of the request in :meth:`WorkerPool.run`'s list (set by the pool).
    """

    def __init__(self, message: str, *, item: int | None = None, request: int | None = None):
        super().__init__(message)
        self.message = message
        self.item = item
        self.request = request


def default_workers() -> int:
    """Processes to use by default: the CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def encode_request(op: bytes, header: bytes, payload: bytes) -> bytes:
    """One request frame (see the module docstring)."""
    if len(op) != 1:
        raise ValueError(f"an op is one byte, got {op!r}")
    return op + len(header).to_bytes(4, "big") + header + len(payload).to_bytes(8, "big") + payload


def encode_reply(status: int, data: bytes) -> bytes:
    """One reply frame (see the module docstring)."""
    return bytes([status]) + len(data).to_bytes(8, "big") + data


# ---------------------------------------------------------------- the worker's side


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if data is None or len(data) != size:
        raise EOFError(f"input ended {size - len(data or b'')} bytes short")
    return data


def read_request(stream: BinaryIO) -> tuple[bytes, bytes, bytes] | None:
    """The next ``(op, header, payload)`` from ``stream``, or None once it has closed.

    Raises
    ------
    EOFError
        If the input ends inside a request.
    """
    op = stream.read(1)
    if not op:
        return None
    header = _read_exactly(stream, int.from_bytes(_read_exactly(stream, 4), "big"))
    payload = _read_exactly(stream, int.from_bytes(_read_exactly(stream, 8), "big"))
    return op, header, payload


def serve(handle: Handler, inp: BinaryIO, out: BinaryIO) -> None:
    """Answer requests with ``handle`` until the input closes (a worker's main loop).

    :class:`RefusedRequestError` and any other ``ValueError`` (the primitives' input errors:
    ``PaillierError``, ``PackingError``, ``PSIError``) become :data:`STATUS_REFUSED`; anything
    else :data:`STATUS_FAILED`, so that the worker reports instead of dying.
    """
    while True:
        try:
            request = read_request(inp)
        except EOFError as exc:
            raise SystemExit(f"worker input closed inside a request ({exc}); exiting") from exc
        if request is None:
            return
        op, header, payload = request
        status, result = answer(handle, op, header, payload)
        del request, header, payload  # the header may hold key material
        out.write(encode_reply(status, result))
        out.flush()


def answer(handle: Handler, op: bytes, header: bytes, payload: bytes) -> tuple[int, bytes]:
    """``(status, data)`` of one request's reply, as :func:`serve` sends it.

    :class:`RefusedRequestError` and any other ``ValueError`` become :data:`STATUS_REFUSED`,
    anything else :data:`STATUS_FAILED` (a worker on a Ray node answers with this too).
    """
    try:
        return STATUS_OK, handle(op, header, payload)
    except RefusedRequestError as exc:
        return STATUS_REFUSED, _refusal(exc.item, exc.message)
    except ValueError as exc:
        return STATUS_REFUSED, _refusal(None, str(exc))
    except Exception as exc:  # report instead of dying; the message holds no key material
        return STATUS_FAILED, f"{type(exc).__name__}: {exc}".encode()


def _refusal(item: int | None, message: str) -> bytes:
    return (_NO_ITEM if item is None else item).to_bytes(8, "big") + message.encode()


# ---------------------------------------------------------------- the pool


class WorkerPool:
    """A fixed set of worker processes running ``python -m module``.

    Parameters
    ----------
    module : str
        The worker's module; its main loop is :func:`serve`.
    workers : int
        Processes to start (at least 1).
    label : str
        What the workers do, for messages ("Paillier", "blinding").
    args : sequence of str
        Command-line arguments after ``-m module`` (not secret: visible in the process list).
    env : mapping, optional
        The workers' environment (default: this process's), ``PYTHONPATH`` extended as below.

    Raises
    ------
    WorkerError
        If a process cannot be started (those already started are stopped).

    Notes
    -----
    :meth:`run` sends at most one request to each worker, then collects the replies in order,
    so the requests run concurrently; :meth:`map` runs any number of requests, giving each to
    the next worker that is free. Calls are serialised by a lock. The workers import
    :mod:`secure_agg` from this checkout even when it is not installed (``PYTHONPATH``), and
    write their own failures to this process's stderr.
    """

    def __init__(
        self,
        module: str,
        workers: int,
        *,
        label: str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"a {label} pool needs at least one worker, got {workers}")
        self.module = module
        self.label = label
        self.workers = workers
        self._lock = threading.Lock()
        self._procs: list[subprocess.Popen[bytes]] = []
        env = dict(os.environ if env is None else env)
        env["PYTHONPATH"] = os.pathsep.join(
            [_PACKAGE_ROOT, *filter(None, [env.get("PYTHONPATH", "")])]
        )
        try:
            for _ in range(workers):
                self._procs.append(
                    subprocess.Popen(  # noqa: S603 - this interpreter, a module we name, no shell
                        [sys.executable, "-m", module, *args],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        env=env,
                    )
                )
        except OSError as exc:
            self.close()
            raise WorkerError(
                f"could not start {label} worker {module!r} with {sys.executable}: {exc}"
            ) from exc
        logger.debug("started %d %s worker processes", workers, label)

    @property
    def alive(self) -> bool:
        """Whether every worker is still running."""
        return bool(self._procs) and all(proc.poll() is None for proc in self._procs)

    @property
    def pids(self) -> list[int]:
        """Process ids of the running workers (empty once closed)."""
        return [proc.pid for proc in self._procs]

    def run(self, requests: Sequence[bytes]) -> list[bytes]:
        """Send one encoded request (:func:`encode_request`) per worker; the results in order.

        Raises
        ------
        RefusedRequestError
            If a worker refused its input (the first in order; its ``request`` is set).
        WorkerError
            If a worker died, closed a pipe, sent a truncated reply or failed. Unless the
            worker reported a failure of its own, the pool is closed before this is raised.
        ValueError
            If there are more requests than workers.
        """
        if len(requests) > self.workers:
            raise ValueError(
                f"{len(requests)} requests for a pool of {self.workers} {self.label} workers; "
                "split the work into at most one request per worker"
            )
        with self._lock:
            procs = self._procs
            if not procs:
                raise WorkerError(f"this {self.label} pool is closed; start a new pool")
            replies: list[tuple[int, bytes]] = []
            index, sending = 0, True
            try:
                for index, request in enumerate(requests):
                    _send(procs[index], request)
                sending = False
                for index in range(len(requests)):
                    replies.append(_receive(procs[index]))
            except (OSError, EOFError) as exc:
                proc = procs[index]
                what = f"did not take its request ({exc})" if sending else str(exc)
                self.close()
                raise WorkerError(
                    f"{self.label} worker {index} (pid {proc.pid}) {what}; it "
                    f"{_how_it_ended(proc)}. The pool was closed and the next call starts new "
                    "workers; the worker's own error, if any, is on this process's stderr"
                ) from exc
        return [self._result(index, status, data) for index, (status, data) in enumerate(replies)]

    def map(self, requests: Iterable[bytes]) -> list[bytes]:
        """Run any number of encoded requests, each on the next free worker; results in order.

        A worker that replies gets the next request at once, so a worker slowed down (by other
        load on its core, or a slower part) holds up only its own request, not a fixed share of
        the batch. ``requests`` may be a generator: it is drawn one request ahead of the free
        workers, so making requests overlaps the workers' computing. With no more requests
        than workers this is :meth:`run`.

        Raises
        ------
        RefusedRequestError
            If a worker refused its input (the first in request order; its ``request`` is the
            index of the request), once every request has been answered.
        WorkerError
            As :meth:`run`, naming the worker (not the request).
        """
        pending = iter(requests)
        first = [request for _, request in zip(range(self.workers + 1), pending, strict=False)]
        if len(first) <= self.workers:
            return self.run(first)
        queued = _chain(first, pending)
        with self._lock:
            procs = self._procs
            if not procs:
                raise WorkerError(f"this {self.label} pool is closed; start a new pool")
            replies: dict[int, tuple[int, int, bytes]] = {}  # request -> (worker, status, data)
            busy: dict[int, int] = {}  # worker -> the request it is answering
            count, worker, sending = 0, 0, True
            try:
                for worker in range(self.workers):
                    request = next(queued, None)
                    if request is not None:
                        _send(procs[worker], request)
                        busy[worker], count = count, count + 1
                upcoming = next(queued, None)  # made while the workers compute
                while busy:
                    streams = {_output(procs[w]).fileno(): w for w in busy}
                    ready, _, _ = select.select(list(streams), [], [])
                    for fd in ready:
                        worker, sending = streams[fd], False
                        status, data = _receive(procs[worker])
                        replies[busy.pop(worker)] = (worker, status, data)
                        if upcoming is not None:
                            sending = True
                            _send(procs[worker], upcoming)
                            busy[worker], count = count, count + 1
                            sending = False
                            upcoming = next(queued, None)
            except (OSError, EOFError) as exc:
                proc = procs[worker]
                what = f"did not take its request ({exc})" if sending else str(exc)
                self.close()
                raise WorkerError(
                    f"{self.label} worker {worker} (pid {proc.pid}) {what}; it "
                    f"{_how_it_ended(proc)}. The pool was closed and the next call starts new "
                    "workers; the worker's own error, if any, is on this process's stderr"
                ) from exc
            except BaseException:
                self.close()  # replies still in flight would be read by the next call
                raise
        results = []
        for index in range(count):
            worker, status, data = replies[index]
            try:
                results.append(self._result(worker, status, data))
            except RefusedRequestError as exc:
                exc.request = index
                raise
        return results

    def _result(self, index: int, status: int, data: bytes) -> bytes:
        if status in (STATUS_OK, STATUS_REFUSED, STATUS_FAILED):
            return result_of(self.label, index, status, data)
        self.close()
        raise WorkerError(
            f"{self.label} worker {index} answered with status {status} and {len(data)} bytes, "
            f"which is no reply of this protocol (is {self.module!r} a worker of this version?); "
            "the pool was closed"
        )

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Stop the workers: close their input, then terminate, then kill; reap every one.

        Parameters
        ----------
        timeout : float
            Seconds to wait after closing the input, and again after ``SIGTERM``.
        """
        procs, self._procs = self._procs, []
        for proc in procs:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        for proc in procs:
            _stop(proc, timeout)
            if proc.stdout is not None:
                proc.stdout.close()
        if procs:
            logger.debug("stopped %d %s worker processes", len(procs), self.label)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def result_of(label: str, index: int, status: int, data: bytes) -> bytes:
    """The result of reply ``index`` of a batch, or the error its status stands for.

    Raises
    ------
    RefusedRequestError
        For :data:`STATUS_REFUSED` (``request`` is ``index``).
    WorkerError
        For :data:`STATUS_FAILED` or an unknown status.
    """
    if status == STATUS_OK:
        return data
    if status == STATUS_REFUSED and len(data) >= 8:
        item = int.from_bytes(data[:8], "big")
        raise RefusedRequestError(
            data[8:].decode(errors="replace"),
            item=None if item == _NO_ITEM else item,
            request=index,
        )
    if status == STATUS_FAILED:
        raise WorkerError(f"{label} worker {index} failed: {data.decode(errors='replace')}")
    raise WorkerError(
        f"{label} worker {index} answered with status {status} and {len(data)} bytes, which is "
        "no reply of this protocol (is the worker of this version?)"
    )


def decode_replies(data: bytes) -> list[tuple[int, bytes]]:
    """The ``(status, data)`` of reply frames joined in ``data`` (a gateway's batch reply).

    Raises
    ------
    WorkerError
        If a frame is cut short.
    """
    out: list[tuple[int, bytes]] = []
    view, offset = memoryview(data), 0
    while offset < len(data):
        if offset + _REPLY_HEAD_BYTES > len(data):
            raise WorkerError(f"a batch reply ends inside a reply header at byte {offset}")
        size = int.from_bytes(view[offset + 1 : offset + _REPLY_HEAD_BYTES], "big")
        start = offset + _REPLY_HEAD_BYTES
        if start + size > len(data):
            raise WorkerError(f"a batch reply ends inside a reply of {size} bytes")
        out.append((data[offset], bytes(view[start : start + size])))
        offset = start + size
    return out


def decode_requests(data: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """The ``(op, header, payload)`` of request frames joined in ``data`` (a batch request).

    Raises
    ------
    ValueError
        If a frame is cut short.
    """
    out: list[tuple[bytes, bytes, bytes]] = []
    view, offset = memoryview(data), 0
    while offset < len(data):
        if offset + 5 > len(data):
            raise ValueError(f"a batch request ends inside a request at byte {offset}")
        op = data[offset : offset + 1]
        size = int.from_bytes(view[offset + 1 : offset + 5], "big")
        start = offset + 5
        header = bytes(view[start : start + size])
        start += size
        length = int.from_bytes(view[start : start + 8], "big")
        start += 8
        if len(header) != size or start + length > len(data):
            raise ValueError(f"a batch request ends inside a request at byte {offset}")
        out.append((op, header, bytes(view[start : start + length])))
        offset = start + length
    return out


def _chain(first: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    yield from first
    yield from rest


def _output(proc: subprocess.Popen[bytes]) -> IO[bytes]:
    if proc.stdout is None:
        raise EOFError("has no output pipe")
    return proc.stdout


def _send(proc: subprocess.Popen[bytes], request: bytes) -> None:
    if proc.stdin is None:
        raise EOFError("has no input pipe")
    proc.stdin.write(request)
    proc.stdin.flush()


def _receive(proc: subprocess.Popen[bytes]) -> tuple[int, bytes]:
    """One reply frame; EOFError if the stream ends early (truncated replies included)."""
    if proc.stdout is None:
        raise EOFError("has no output pipe")
    head = proc.stdout.read(_REPLY_HEAD_BYTES)
    if len(head) != _REPLY_HEAD_BYTES:
        raise EOFError(
            "closed its output before replying"
            if not head
            else f"sent {len(head)} of the {_REPLY_HEAD_BYTES} bytes of a reply header"
        )
    size = int.from_bytes(head[1:], "big")
    data = proc.stdout.read(size)
    if len(data) != size:
        raise EOFError(f"sent a truncated reply: {len(data)} of the {size} bytes it announced")
    return head[0], data


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for ``proc`` to exit; terminate, then kill it if it does not. It is reaped."""
    for escalate in (proc.terminate, proc.kill):
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            escalate()
        else:
            return
    proc.wait()


def _how_it_ended(proc: subprocess.Popen[bytes]) -> str:
    code = proc.poll()
    if code is None:
        return "was still running"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


_Pool = TypeVar("_Pool", bound=WorkerPool)


class SharedPool(Generic[_Pool]):
    """The one pool of a kind in this process: started on demand, stopped at exit.

    Parameters
    ----------
    start : callable
        ``start(workers)`` makes a new pool (e.g. the pool class).

    Notes
    -----
    :meth:`get` restarts the pool when it has fewer workers than asked for or lost one. A child
    process forked from this one does not use its parent's workers (their pipes belong to the
    parent): it starts its own.
    """

    def __init__(self, start: Callable[[int], _Pool]) -> None:
        self._start = start
        self._pool: _Pool | None = None
        self._owner = os.getpid()
        self._lock = threading.Lock()
        self._at_exit = False

    def get(self, workers: int) -> _Pool:
        """The shared pool, (re)started with at least ``workers`` processes."""
        with self._lock:
            pool = self._pool
            if pool is not None and self._owner != os.getpid():
                pool = None  # forked: the parent's workers are not ours to use or stop
            if pool is None or pool.workers < workers or not pool.alive:
                if pool is not None:
                    pool.close()
                pool = self._start(workers)
                self._pool, self._owner = pool, os.getpid()
                if not self._at_exit:
                    atexit.register(self.shutdown)
                    self._at_exit = True
            return pool

    def running(self) -> _Pool | None:
        """The pool if this process started one and it is running, else None."""
        with self._lock:
            pool = self._pool
            if pool is None or self._owner != os.getpid() or not pool.alive:
                return None
            return pool

    def shutdown(self) -> None:
        """Stop the pool if this process started one (registered with :mod:`atexit`)."""
        with self._lock:
            pool, self._pool = self._pool, None
            if pool is not None and self._owner == os.getpid():
                pool.close()
