"""A party's gateway to its Ray cluster: ``python -m secure_agg._ray_gateway HOST:PORT``.

Started by :class:`secure_agg.ray_backend.RayGateway` with pipes for stdin and stdout; it
serves the requests described in :mod:`secure_agg.ray_backend` with
:func:`secure_agg.worker_pool.serve` until its stdin closes, then disconnects from the cluster.
It is the only process of the party's node that is a Ray driver of that cluster.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from collections import Counter
from typing import Any

from secure_agg import ray_backend, worker_pool
from secure_agg.compute import split_address

#: Seconds to wait for the head's port to accept a connection before refusing.
CONNECT_TIMEOUT = 5.0


class Gateway:
    """The gateway's state: the connection and what it ran (see the module docstring)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.task: Any = None
        self.batches = 0
        self.nodes: Counter[str] = Counter()
        self.kept: dict[bytes, Any] = {}
        self.uploads = 0
        self.uploaded_bytes = 0

    def handle(self, op: bytes, header: bytes, payload: bytes) -> bytes:
        """Answer one request (``I``, ``R``, ``T``, ``U`` or ``D``)."""
        if op == b"I":
            return self.connect()
        if op == b"R":
            return self.run(header[:1], int.from_bytes(header[1:5], "big"), payload)
        if op == b"T":
            counts = {
                "batches": self.batches,
                "tasks": sum(self.nodes.values()),
                "uploads": self.uploads,
                "uploaded_bytes": self.uploaded_bytes,
            }
            return json.dumps({**counts, "nodes": dict(self.nodes)}).encode()
        if op == b"U":
            return self.keep(header, payload)
        if op == b"D":
            size = ray_backend.KEY_BYTES
            for start in range(0, len(payload), size):
                self.kept.pop(payload[start : start + size], None)
            return b""
        raise ValueError(f"unknown gateway request {op!r}; the requests are I, R, T, U and D")

    def keep(self, key: bytes, block: bytes) -> bytes:
        """Put ``block`` in the cluster's object store under ``key`` (``U``)."""
        import numpy as np
        import ray

        if self.task is None:
            raise ValueError("the gateway is not connected; send I first")
        if len(key) != ray_backend.KEY_BYTES:
            raise ValueError(
                f"a kept block's key has {ray_backend.KEY_BYTES} bytes, not {len(key)}"
            )
        self.kept[key] = ray.put(np.frombuffer(block, dtype=np.uint8))
        self.uploads += 1
        self.uploaded_bytes += len(block)
        return b""

    def _submit(self, kind: bytes, op: bytes, header: bytes, body: bytes) -> Any:
        """Start one request's task; an ``X`` request's kept blocks go as object references."""
        if op != b"X":
            return self.task.remote(kind, op, header, body)
        count = header[0] if header else 0
        size = ray_backend.KEY_BYTES
        keys = [header[1 + i * size : 1 + (i + 1) * size] for i in range(count)]
        missing = [key.hex() for key in keys if key not in self.kept]
        if missing:
            raise ValueError(f"kept blocks {missing} are not in this gateway; send them (U) first")
        rest = header[1 + count * size :]
        refs = [self.kept[key] for key in keys]
        return self.task.remote(kind, rest[:1], rest[1:], body, *refs)

    def connect(self) -> bytes:
        """Connect to the cluster as its driver; the cluster's CPUs and nodes."""
        host, port = split_address(self.address)
        fix = (
            f"start the party's Ray head there (ray start --head --node-ip-address {host} "
            f"--port {port}) or fix compute.address in this node's policy (lab policy set "
            "compute.address=HOST:PORT, or compute.backend=local)"
        )
        try:
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
        except OSError as exc:
            raise ValueError(f"no Ray cluster answers at {self.address} ({exc}); {fix}") from exc
        import ray

        if not ray.is_initialized():
            try:
                ray.init(
                    address=self.address,
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                    configure_logging=False,
                )
            except Exception as exc:  # Ray raises ConnectionError, RuntimeError, TimeoutError
                cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
                raise ValueError(
                    f"could not connect to a Ray cluster at {self.address} "
                    f"({type(exc).__name__}: {exc}{cause}); {fix}"
                ) from exc
            self.task = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(ray_backend.run_part)
        nodes = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
        cpus = int(ray.cluster_resources().get("CPU", 0))  # type: ignore[no-untyped-call]
        if cpus < 1:
            raise ValueError(f"the Ray cluster at {self.address} has no CPUs; add worker nodes")
        return json.dumps({"cpus": cpus, "nodes": len(nodes)}).encode()

    def run(self, kind: bytes, in_flight: int, payload: bytes) -> bytes:
        """Run the joined requests as Ray tasks, at most ``in_flight`` at once; joined replies."""
        import ray

        if self.task is None:
            raise ValueError("the gateway is not connected; send I first")
        if kind not in ray_backend.KINDS:
            raise ValueError(f"unknown worker kind {kind!r}")
        requests = worker_pool.decode_requests(payload)
        del payload
        replies: list[tuple[int, bytes] | None] = [None] * len(requests)
        pending: dict[Any, int] = {}
        upcoming = 0
        while upcoming < len(requests) or pending:
            while upcoming < len(requests) and len(pending) < max(1, in_flight):
                op, header, body = requests[upcoming]
                pending[self._submit(kind, op, header, body)] = upcoming
                requests[upcoming] = (op, b"", b"")  # the task holds its copy
                upcoming += 1
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                index = pending.pop(ref)
                try:
                    status, data, node = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    status, data, node = worker_pool.STATUS_FAILED, str(exc).encode(), "failed"
                replies[index] = (status, data)
                self.nodes[node] += 1
        self.batches += 1
        return b"".join(worker_pool.encode_reply(s, d) for s, d in filter(None, replies))


def main(argv: list[str]) -> None:
    """Serve the gateway's requests for the cluster at ``argv[0]`` until stdin closes."""
    if len(argv) != 1:
        raise SystemExit("usage: python -m secure_agg._ray_gateway HOST:PORT")
    gateway = Gateway(argv[0])
    # Frames go to the pipe on fd 1; anything Ray prints goes to stderr instead of into them.
    frames = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    worker_pool.serve(gateway.handle, sys.stdin.buffer, frames)
    frames.close()
    # The cluster sees its driver go when the connection drops; ray.shutdown() can wait many
    # seconds flushing task events, and nothing of this process needs to outlive its pipes.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
