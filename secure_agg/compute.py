"""Where a party's batches run: its local worker processes, or a Ray cluster in its own domain.

The Paillier batches (encryption, the key holder's encryption, re-randomisation, decryption,
histogram sums, packing: :mod:`secure_agg.paillier.parallel`) and the PSI blinding
(:mod:`secure_agg.psi`) run, beyond a small size, on this party's *compute backend*:

``local`` (the default)
    Threads of the calling process (C kernels) or this machine's worker processes
    (:mod:`secure_agg.worker_pool`).
``ray``
    The tasks of a Ray cluster that the party operates inside its own domain (``ray start
    --head`` and worker nodes), reached through one long-lived *gateway* process per cluster
    (:mod:`secure_agg.ray_backend`): a child of this process, started like the local workers and
    speaking their frames over pipes, which connects to the cluster as a Ray driver and fans a
    batch's requests out as Ray tasks. The calling process never initialises Ray itself, so this
    works inside a Flower simulation, whose ClientApps already run in Ray actors of *another*
    cluster.

Which backend runs a party's batches is its node's own policy (``compute`` in
:mod:`lab.governance.policy`, carried to protocol steps by :class:`models.guard.NodeLimits`):
a job spec, a bank or a coordinator cannot choose it or name another party's cluster. The node
sets it around each protocol step it runs (:func:`using`); code outside a step (notebooks,
benchmarks) may do the same.

Key material: a key holder's decryption and CRT-encryption requests carry its primes to its own
cluster's Ray workers (in the task's arguments, a few hundred bytes, never through the object
store's spill files), which drop them when the request is answered; nothing here logs them.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

from secure_agg.worker_pool import default_workers

if TYPE_CHECKING:
    from secure_agg.ray_backend import RayGateway

#: The compute backends (see the module docstring).
BACKENDS = ("local", "ray")
BackendName = Literal["local", "ray"]
#: The backend a node uses unless its policy names another.
DEFAULT_BACKEND: BackendName = "local"

_ADDRESS = re.compile(r"^(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>[0-9]{1,5})$")


class ComputeBackendError(RuntimeError):
    """A compute backend is misconfigured, unreachable or failed (the message names the fix)."""


@dataclass(frozen=True)
class ComputeSettings:
    """A party's compute backend (from its node's policy).

    Attributes
    ----------
    backend : {"local", "ray"}
    address : str or None
        ``host:port`` of the Ray cluster's head (its GCS), for ``ray`` only.
    cpus : int or None
        CPUs a batch is spread over: at most this many parts run at once. ``None``: all the
        CPUs of this machine (``local``) or of the cluster (``ray``).

    Raises
    ------
    ComputeBackendError
        On an unknown backend, a ``ray`` backend without a valid address, or ``cpus < 1``.
    """

    backend: BackendName = DEFAULT_BACKEND
    address: str | None = None
    cpus: int | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ComputeBackendError(
                f"compute backend {self.backend!r} is unknown; use one of {list(BACKENDS)}"
            )
        if self.cpus is not None and self.cpus < 1:
            raise ComputeBackendError(f"compute.cpus must be at least 1, got {self.cpus}")
        if self.backend == "ray":
            if not self.address:
                raise ComputeBackendError(
                    "compute.backend=ray needs compute.address, the host:port of the party's "
                    "Ray head (e.g. 127.0.0.1:6379)"
                )
            split_address(self.address)
        elif self.address:
            raise ComputeBackendError(
                f"compute.address={self.address!r} is set but compute.backend is "
                f"{self.backend!r}; set compute.backend=ray or remove the address"
            )

    @property
    def remote(self) -> bool:
        """Whether batches leave this process for a cluster (not threads or local workers)."""
        return self.backend != "local"

    def to_dict(self) -> dict[str, object]:
        """JSON form."""
        return {"backend": self.backend, "address": self.address, "cpus": self.cpus}

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> ComputeSettings:
        """Inverse of :meth:`to_dict`."""
        cpus = raw.get("cpus")
        address = raw.get("address")
        return cls(
            backend=cast(BackendName, raw.get("backend", DEFAULT_BACKEND)),
            address=None if address is None else str(address),
            cpus=None if cpus is None else int(cast(int, cpus)),
        )


#: The settings of the default backend.
LOCAL = ComputeSettings()


def split_address(address: str) -> tuple[str, int]:
    """``(host, port)`` of a ``host:port`` address.

    Raises
    ------
    ComputeBackendError
        Naming the address and the form expected.
    """
    match = _ADDRESS.match(address)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ComputeBackendError(
            f"compute.address={address!r} is not host:port (e.g. 127.0.0.1:6379)"
        )
    return match["host"].strip("[]"), int(match["port"])


_ACTIVE: contextvars.ContextVar[ComputeSettings] = contextvars.ContextVar(
    "secure_agg_compute", default=LOCAL
)


def active() -> ComputeSettings:
    """The compute backend of the code running now (:data:`LOCAL` unless :func:`using` set one)."""
    return _ACTIVE.get()


@contextlib.contextmanager
def using(settings: ComputeSettings) -> Iterator[ComputeSettings]:
    """Run the batches of the enclosed code on ``settings``' backend (this thread/context only).

    A node wraps each protocol step of a party in it, so two parties served by one process
    (the in-process runtime, a simulation actor) each use their own backend.
    """
    token = _ACTIVE.set(settings)
    try:
        yield settings
    finally:
        _ACTIVE.reset(token)


def workers() -> int:
    """Parts a batch is spread over by default on the active backend.

    ``local``: ``cpus`` or this machine's CPUs. ``ray``: ``cpus`` or the cluster's CPUs
    (which connects to the cluster if this process has not yet).
    """
    settings = active()
    if settings.cpus is not None:
        return settings.cpus
    if not settings.remote:
        return default_workers()
    return gateway(settings).cluster_cpus


def gateway(settings: ComputeSettings | None = None) -> RayGateway:
    """The running gateway to ``settings``' (default: the active) cluster, started on demand.

    Raises
    ------
    ComputeBackendError
        If the backend is ``local`` or the cluster cannot be reached (naming the address).
    """
    settings = active() if settings is None else settings
    if not settings.remote:
        raise ComputeBackendError("the local compute backend has no gateway")
    from secure_agg import ray_backend

    return ray_backend.get_gateway(settings)


def check(settings: ComputeSettings) -> None:
    """Make sure ``settings``' backend can run batches now (a node calls it before a job).

    ``local`` always can; ``ray`` starts (or reuses) this process's gateway to the cluster and
    connects it.

    Raises
    ------
    ComputeBackendError
        Naming the address and the fix; no gateway process is left behind.
    """
    if settings.remote:
        gateway(settings)
