"""The ``ray`` compute backend: a gateway process per cluster that fans batches out as Ray tasks.

Why a gateway: a Ray driver is one per process (``ray.init``), and a Flower simulation's
ClientApps already run inside Ray actors of the simulation's own cluster, where connecting to the
party's cluster would clash. So this process never imports Ray; it starts
``python -m secure_agg._ray_gateway ADDRESS`` (a :class:`secure_agg.worker_pool.WorkerPool` of
one process, on pipes, like the local workers), which connects to the party's cluster and
answers the frames of :mod:`secure_agg.worker_pool`:

``I``
    Connect. Reply: JSON ``{"cpus": <the cluster's CPUs>, "nodes": <alive nodes>}``; a refusal
    names the address and the fix when nothing (or no Ray head) answers there.
``R``
    Run a batch. Header: the worker kind (``P``: :mod:`secure_agg._paillier_worker`, ``B``:
    :mod:`secure_agg._blind_worker`) and the most requests in flight (4 bytes). Payload: the
    batch's request frames, joined. Each request becomes one Ray task (:func:`run_part`, one
    CPU) that computes it with the kind's worker ``handle``; reply: the reply frames, joined, in
    request order.
``T``
    Counts: JSON ``{"batches": .., "tasks": .., "nodes": {node id: tasks}, "uploads": ..,
    "uploaded_bytes": ..}`` (tests, benchmarks).
``U``
    Keep a block in the cluster's object store. Header: its key (:data:`KEY_BYTES`, a digest of
    the block); payload: the block. Empty reply.
``D``
    Drop kept blocks. Payload: their keys, joined. Empty reply.

Inside a batch, a request ``X`` carries references to kept blocks. Header: their count (1
byte), their keys, the inner request's op (1 byte) and header; payload: the inner payload. Its
task gets the blocks (from the object store, on whichever node it runs) and computes the inner
request on the blocks joined with the payload, in order. :meth:`RayGateway.requests` makes
them: a block is sent to the gateway once while it is kept (most recently used first, at most
:data:`SHARED_BYTES` in all), so a SecureBoost level ships only its rows' node slots, not the
tree's ciphertexts and the job's bins again.

A task that fails (or whose Ray worker dies) becomes that request's failure reply; a refused
input its refusal, exactly as from a local worker. A key holder's CRT tables (built by its ``C``
requests) stay in the Ray workers that built them, which serve only this gateway's Ray job;
:func:`secure_agg.paillier.forget_private_tables` (the end of a job) closes the gateways, the
job ends and Ray stops its workers, tables and all. The next batch starts a new gateway.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from secure_agg.compute import ComputeBackendError, ComputeSettings, split_address
from secure_agg.worker_pool import (
    RefusedRequestError,
    WorkerError,
    WorkerPool,
    answer,
    decode_replies,
    encode_request,
    result_of,
)

#: The gateway's module.
GATEWAY_MODULE = "secure_agg._ray_gateway"
#: Worker kinds a batch may name, and the module whose ``handle`` computes its requests.
KINDS = {b"P": "secure_agg._paillier_worker", b"B": "secure_agg._blind_worker"}
#: Environment variables a gateway keeps from this process's ``RAY_*`` ones: the others (set
#: inside a Flower simulation's Ray actors) describe *that* cluster, not the party's.
_RAY_ENV_KEPT = ("RAY_USAGE_STATS_ENABLED",)
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: Bytes of a kept block's key (BLAKE2b of the block).
KEY_BYTES = 16
#: The most bytes of blocks a gateway keeps in the cluster's object store; the least recently
#: used are dropped first.
SHARED_BYTES = 4 << 30


def run_part(
    kind: bytes, op: bytes, header: bytes, payload: bytes, *shared: Any
) -> tuple[int, bytes, str]:
    """One request of a batch, on a Ray worker: ``(status, data, node id)``.

    The body of the gateway's Ray task (:func:`secure_agg.worker_pool.answer` with the kind's
    worker ``handle``); ``shared``: kept blocks (read-only arrays in the object store) that
    precede the payload: a worker with ``handle_parts`` reads them in place (a binned group
    sum's ciphertexts and bins), otherwise they are joined with it. A key holder's CRT tables
    stay in the Ray worker, as in a local worker, until the gateway closes (see the module
    docstring).
    """
    import importlib

    import ray

    module = importlib.import_module(KINDS[kind])
    handle: Callable[[bytes, bytes, bytes], bytes] = module.handle
    if shared:
        blocks = [*shared, payload]
        del shared
        parts_handler = getattr(module, "handle_parts", None)
        if parts_handler is None:
            payload = b"".join(blocks)
        else:  # the worker reads the kept blocks in place (e.g. a binned group sum's bins)
            handle = functools.partial(_with_blocks, parts_handler, blocks)
    status, data = answer(handle, op, header, payload)
    del header  # may hold key material
    return status, data, ray.get_runtime_context().get_node_id()


def _with_blocks(
    parts_handler: Callable[[bytes, bytes, list[Any]], bytes],
    blocks: list[Any],
    op: bytes,
    header: bytes,
    _payload: bytes,
) -> bytes:
    """A worker's ``handle`` for a request whose payload is ``blocks``, read in place."""
    return parts_handler(op, header, blocks)


def gateway_env(address: str | None = None) -> dict[str, str]:
    """This process's environment without the Ray settings of another cluster.

    For a cluster on loopback, Ray is told to keep the driver on loopback too: by default it
    replaces ``127.0.0.1`` in a cluster address with the machine's outward address (the only
    switch for that is the variable Ray names for Windows and macOS, which on Linux does
    nothing else for a driver).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") or k in _RAY_ENV_KEPT}
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is not None and split_address(address)[0] in _LOOPBACK:
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return env


class RayGateway(WorkerPool):
    """This process's gateway to one Ray cluster (see the module docstring).

    Parameters
    ----------
    settings : ComputeSettings
        A ``ray`` backend: its address, and ``cpus`` (the most tasks of one batch in flight).

    Raises
    ------
    ComputeBackendError
        If the gateway cannot start or connect (naming the address and the fix); the gateway
        process is stopped before this is raised.
    """

    def __init__(self, settings: ComputeSettings) -> None:
        if not settings.remote or settings.address is None:
            raise ComputeBackendError(f"{settings} is no Ray backend")
        self.settings = settings
        address = settings.address
        try:
            super().__init__(
                GATEWAY_MODULE, 1, label="Ray gateway", args=[address], env=gateway_env(address)
            )
            info = json.loads(self.run([encode_request(b"I", b"", b"")])[0])
        except RefusedRequestError as exc:
            self.close()
            raise ComputeBackendError(exc.message) from exc
        except WorkerError as exc:
            self.close()
            raise ComputeBackendError(
                f"the gateway to the Ray cluster at {address} failed while connecting: {exc}; "
                "check that the cluster's head runs there (ray status --address "
                f"{address}) or fix compute.address in this node's policy"
            ) from exc
        self.cluster_cpus, self.nodes = 1, 0
        self._take(info)
        self._kept: OrderedDict[bytes, int] = OrderedDict()

    def _take(self, info: dict[str, int]) -> None:
        #: CPUs of the cluster when the gateway last looked.
        self.cluster_cpus = max(1, int(info["cpus"]))
        #: Alive nodes of the cluster when the gateway last looked.
        self.nodes = int(info["nodes"])

    def refresh(self) -> None:
        """Look at the cluster's CPUs and nodes again (:attr:`cluster_cpus`, :attr:`nodes`)."""
        self._take(json.loads(self.run([encode_request(b"I", b"", b"")])[0]))

    def run_batch(self, kind: bytes, requests: list[bytes], *, label: str) -> list[bytes]:
        """Run encoded requests of worker ``kind`` as Ray tasks; their results in order.

        Raises
        ------
        RefusedRequestError
            If a task refused its input (the first in order; ``request`` is its index).
        WorkerError
            If a task failed or the gateway died (then it is closed; the next call starts a
            new one).
        """
        if kind not in KINDS:
            raise ValueError(f"unknown worker kind {kind!r}; the kinds are {sorted(KINDS)}")
        if not requests:
            return []
        in_flight = self.settings.cpus or self.cluster_cpus
        header = kind + in_flight.to_bytes(4, "big")
        [reply] = self.run([encode_request(b"R", header, b"".join(requests))])
        replies = decode_replies(reply)
        if len(replies) != len(requests):
            self.close()
            raise WorkerError(
                f"the Ray gateway answered {len(replies)} of {len(requests)} requests; it was "
                "closed and the next batch starts a new one"
            )
        return [result_of(label, i, status, data) for i, (status, data) in enumerate(replies)]

    def share(self, blocks: Sequence[bytes]) -> list[bytes]:
        """Keep ``blocks`` in the cluster (each sent once while kept); their keys, in order.

        The least recently used blocks beyond :data:`SHARED_BYTES` are dropped first, never one
        of ``blocks``.
        """
        keys = [hashlib.blake2b(block, digest_size=KEY_BYTES).digest() for block in blocks]
        for key, block in zip(keys, blocks, strict=True):
            if key in self._kept:
                self._kept.move_to_end(key)
                continue
            self.run([encode_request(b"U", key, block)])
            self._kept[key] = len(block)
        wanted = set(keys)
        stale = []
        total = sum(self._kept.values())
        for key, size in self._kept.items():
            if total <= SHARED_BYTES:
                break
            if key not in wanted:
                stale.append(key)
                total -= size
        if stale:
            for key in stale:
                del self._kept[key]
            self.run([encode_request(b"D", b"", b"".join(stale))])
        return keys

    def requests(
        self, op: bytes, parts: Sequence[tuple[bytes, bytes] | tuple[bytes, list[bytes], bytes]]
    ) -> list[bytes]:
        """Requests of ``(header, payload)`` or ``(header, shared blocks, payload)`` parts.

        A part with shared blocks becomes an ``X`` request that names them by key (see the
        module docstring); they are sent to the cluster first unless it keeps them already, and
        none of the batch's blocks is dropped to make room for another of them.
        """
        blocks = [block for part in parts if len(part) == 3 for block in part[1]]
        keys = iter(self.share(blocks))
        out = []
        for part in parts:
            if len(part) == 2:
                out.append(encode_request(op, part[0], part[1]))
                continue
            header, shared, payload = part
            named = [next(keys) for _ in shared]
            inner = bytes([len(named)]) + b"".join(named) + op + header
            out.append(encode_request(b"X", inner, payload))
        return out

    def counts(self) -> dict[str, object]:
        """Batches and tasks this gateway ran, and tasks per Ray node id."""
        counts: dict[str, object] = json.loads(self.run([encode_request(b"T", b"", b"")])[0])
        return counts


_GATEWAYS: dict[str, RayGateway] = {}
_OWNER = os.getpid()
_LOCK = threading.Lock()
_AT_EXIT = False


def get_gateway(settings: ComputeSettings) -> RayGateway:
    """This process's gateway to ``settings.address``, started (and connected) on demand.

    Raises
    ------
    ComputeBackendError
        If it cannot connect (see :class:`RayGateway`).
    """
    global _OWNER, _AT_EXIT
    address = str(settings.address)
    with _LOCK:
        if os.getpid() != _OWNER:  # forked: the parent's gateways are not ours
            _GATEWAYS.clear()
            _OWNER = os.getpid()
        gateway = _GATEWAYS.get(address)
        if gateway is not None and gateway.alive and gateway.settings == settings:
            return gateway
        if gateway is not None:
            gateway.close()
            del _GATEWAYS[address]
        gateway = RayGateway(settings)
        _GATEWAYS[address] = gateway
        if not _AT_EXIT:
            atexit.register(shutdown)
            _AT_EXIT = True
        return gateway


def running() -> list[RayGateway]:
    """The gateways this process started that are running."""
    with _LOCK:
        if os.getpid() != _OWNER:
            return []
        return [g for g in _GATEWAYS.values() if g.alive]


def shutdown() -> None:
    """Stop every gateway this process started (registered with :mod:`atexit`).

    What each ran is added to :func:`totals` first.
    """
    with _LOCK:
        gateways = list(_GATEWAYS.values()) if os.getpid() == _OWNER else []
        _GATEWAYS.clear()
    for gateway in gateways:
        if gateway.alive:
            with contextlib.suppress(WorkerError, ValueError):
                _add(_CLOSED, gateway.counts())
        gateway.close()


def totals() -> dict[str, Any]:
    """Batches and tasks the gateways of this process ran, closed ones included, per node."""
    out: dict[str, Any] = {"batches": 0, "tasks": 0, "uploads": 0, "uploaded_bytes": 0, "nodes": {}}
    _add(out, _CLOSED)
    for gateway in running():
        _add(out, gateway.counts())
    return out


_CLOSED: dict[str, Any] = {"batches": 0, "tasks": 0, "uploads": 0, "uploaded_bytes": 0, "nodes": {}}


def _add(total: dict[str, Any], counts: dict[str, Any]) -> None:
    for name in ("batches", "tasks", "uploads", "uploaded_bytes"):
        total[name] = total.get(name, 0) + int(counts.get(name, 0))
    for node, tasks in dict(counts["nodes"]).items():
        total["nodes"][node] = total["nodes"].get(node, 0) + int(tasks)
