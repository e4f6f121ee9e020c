"""ECDH private set intersection over X25519: hashing to the group, blinding, truncation.

The primitive behind the lab's PSI protocol (Meadows 1986; Huberman, Franklin & Hogg 1999;
the "DH-PSI" of Pinkas, Schneider & Zohner 2014). Each party hashes its ids to group elements
and raises them to a secret scalar; since scalar multiplication commutes,
``a·(b·H(x)) == b·(a·H(x))``, doubly-blinded values of common ids coincide while everything
else looks random to whoever lacks the scalars (decisional Diffie-Hellman).

Group
-----
X25519 (RFC 7748): through the system's libsodium when present (about 36 µs per scalar
multiplication on one core here), else through ``cryptography`` (OpenSSL, 43-46 µs with its
per-call key objects). Both compute the same function; tests check they agree byte for byte.
When the optional extension :mod:`secure_agg._x25519_kernels` is built, a blinding worker hashes
and blinds a whole request in one C call over libsodium (no Python object, ctypes call or
hashlib call per id: ~4-5 µs less per point here); otherwise it calls libsodium once per point
through ctypes. Batches are cut into chunks of :data:`CHUNK_POINTS`, each given to the next
free worker (:meth:`secure_agg.worker_pool.WorkerPool.map`).
``H(x)`` is SHA-512 of a domain-separation tag and the id, truncated to 32 bytes with the top
bit cleared, read as a u-coordinate. A u-coordinate lies on
Curve25519 or on its quadratic twist; both have a large prime-order subgroup (the twist order
is 4 times a 253-bit prime) and X25519's clamped scalars are multiples of the cofactor, so the
blinded value always lands in the prime-order part, where DDH is believed hard. Two distinct ids
hash to the same u with probability about 2^-254.

What a holder of blinded values learns
--------------------------------------
- From ``b·H(x)`` without ``b``: nothing about ``x`` (even for an enumerable id space: testing a
  guess needs ``b``). This is what makes DH-PSI safe where salted hashing is not: a salted hash
  of a public, enumerable code (1.6e8 registered entities) is inverted by trying them all.
- From doubly-blinded values ``a·b·H(x)``: only equality with other doubly-blinded values.
  They are used for nothing else, so they may be truncated (:func:`comparison_bytes`).

Security notes
--------------
Scalars come from the OS CSPRNG (``X25519PrivateKey.generate``), fresh per job, and never leave
the party: :class:`BlindingKey` refuses pickling and hides itself from ``repr``. The party's own
worker processes (:class:`BlindingPool`, the generic :class:`secure_agg.worker_pool.WorkerPool`
running :mod:`secure_agg._blind_worker`) receive the scalar with each batch through the pool's
local pipe and keep it only while they blind that batch. A value that would blind to the
neutral element (a low-order point, which only a malicious peer can produce) is refused.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import importlib
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from secure_agg import compute
from secure_agg.worker_pool import (
    RefusedRequestError,
    SharedPool,
    WorkerPool,
    encode_request,
)


def _load_kernels() -> ModuleType | None:
    """The C batch loops (``secure_agg/_x25519_kernels.c``), or None when they are not built.

    The extension is optional at install (no compiler) and refuses to load without libsodium;
    blinding then calls libsodium (or OpenSSL) once per point.
    """
    try:
        return importlib.import_module("secure_agg._x25519_kernels")
    except ImportError:
        return None


_KERNELS = _load_kernels()

#: Bytes of a group element (an X25519 u-coordinate).
POINT_BYTES = 32

#: Domain-separation tag of the hash to the group (versioned: changing it breaks interop).
HASH_DOMAIN = b"lab/psi/x25519/sha512/v1"

#: Statistical security of truncated comparisons: the chance of any false match is below
#: 2^-STATISTICAL_BITS.
STATISTICAL_BITS = 40

#: Below this many points, blinding runs in the calling process (a pool costs ~0.3 s to start).
PARALLEL_THRESHOLD = 20_000

#: Points per request to a blinding worker (~0.6 s of X25519 at 36 µs): requests go to whichever
#: worker is free, so a worker slowed by other load delays at most one chunk at the end.
CHUNK_POINTS = 16_384

#: The module every blinding worker runs.
WORKER_MODULE = "secure_agg._blind_worker"

Points = npt.NDArray[np.uint8]


class PSIError(ValueError):
    """Malformed input to a PSI primitive (bad shapes, low-order points, misuse of keys)."""


class LowOrderPointError(PSIError):
    """A point whose blinding would be the neutral element (only a malicious peer sends one)."""

    def __init__(self, index: int) -> None:
        super().__init__(f"point {index} is of low order; refusing to blind it")
        self.index = index


class BlindingKey:
    """A party's secret X25519 scalar for one PSI run.

    Generate one per job with :meth:`generate`. It cannot be pickled, and its ``repr`` shows no
    key material.
    """

    __slots__ = ("_key",)

    def __init__(self, key: X25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> BlindingKey:
        """A fresh scalar from the operating system's CSPRNG."""
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_secret_bytes(cls, raw: bytes) -> BlindingKey:
        """Restore a key kept in the party's own state between protocol messages."""
        if len(raw) != POINT_BYTES:
            raise PSIError("a blinding key is 32 bytes")
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def secret_bytes(self) -> bytes:
        """The raw scalar, for the party's own state store only. Never log or send it."""
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def public_bytes(self) -> bytes:
        """``scalar · basepoint``: safe to send (used for the key agreement of checks)."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def agree(self, peer_public: bytes) -> bytes:
        """X25519 key agreement with a peer's :meth:`public_bytes` (a shared secret)."""
        return self._key.exchange(X25519PublicKey.from_public_bytes(peer_public))

    def __repr__(self) -> str:
        return "BlindingKey(<secret>)"

    def __reduce__(self) -> Any:
        raise TypeError("a BlindingKey must not be pickled")


def hash_to_group(ids: Iterable[bytes], domain: bytes = HASH_DOMAIN) -> Points:
    """Map ids to X25519 u-coordinates: ``SHA-512(len(domain) || domain || id)[:32]``.

    Parameters
    ----------
    ids : iterable of bytes
        Normalised ids (both parties must normalise the same way).
    domain : bytes
        Domain-separation tag; a job may append its own id so values never repeat across jobs.

    Returns
    -------
    numpy.ndarray of uint8, shape (n, 32)
    """
    prefix = len(domain).to_bytes(2, "big") + domain
    out = bytearray()
    for value in ids:
        out += hashlib.sha512(prefix + value).digest()[:POINT_BYTES]
    points = np.frombuffer(bytes(out), dtype=np.uint8).reshape(-1, POINT_BYTES).copy()
    points[:, -1] &= 0x7F  # RFC 7748 ignores the top bit; clear it for a canonical encoding
    return points


def _load_sodium() -> Callable[..., int] | None:
    """Load ``crypto_scalarmult_curve25519`` from the system's libsodium, if present.

    It computes the same RFC 7748 function as OpenSSL and measured faster here (about 36 µs
    against 43-46 µs per scalar multiplication through ``cryptography``), and it takes raw
    bytes, so no key object is built per point.
    """
    names = ["libsodium.so.23", "libsodium.so.26", ctypes.util.find_library("sodium")]
    for name in filter(None, names):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if lib.sodium_init() < 0:
            continue
        function: Callable[..., int] = lib.crypto_scalarmult_curve25519
        function.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]  # type: ignore[attr-defined]
        function.restype = ctypes.c_int  # type: ignore[attr-defined]
        return function
    return None


_SODIUM = _load_sodium()


def backend() -> str:
    """Which X25519 implementation blinds: ``libsodium`` or ``openssl`` (via cryptography)."""
    return "libsodium" if _SODIUM is not None or _KERNELS is not None else "openssl"


def batch_kernel() -> bool:
    """Whether the C batch loops (:mod:`secure_agg._x25519_kernels`) hash and blind."""
    return _KERNELS is not None


def _blind_kernel(raw_key: bytes, data: bytes) -> bytes:
    if _KERNELS is None:
        raise PSIError("the X25519 batch kernel is not built")
    try:
        result, bad = _KERNELS.blind(raw_key, data)
    except ValueError as exc:
        raise PSIError(str(exc)) from exc
    if result is None:
        raise LowOrderPointError(bad)
    return bytes(result)


def _blind_sodium(raw_key: bytes, data: bytes) -> bytes:
    if _SODIUM is None:
        raise PSIError("libsodium is not available")
    source = (ctypes.c_char * len(data)).from_buffer_copy(data)
    target = ctypes.create_string_buffer(len(data))
    src, dst = ctypes.addressof(source), ctypes.addressof(target)
    scalarmult = _SODIUM
    for offset in range(0, len(data), POINT_BYTES):
        if scalarmult(dst + offset, raw_key, src + offset) != 0:  # all-zero result
            raise LowOrderPointError(offset // POINT_BYTES)
    return target.raw


def _blind_openssl(raw_key: bytes, data: bytes) -> bytes:
    key = X25519PrivateKey.from_private_bytes(raw_key)
    exchange = key.exchange
    from_public = X25519PublicKey.from_public_bytes
    out = []
    for start in range(0, len(data), POINT_BYTES):
        try:
            out.append(exchange(from_public(data[start : start + POINT_BYTES])))
        except ValueError as exc:  # all-zero result: a low-order input point
            raise LowOrderPointError(start // POINT_BYTES) from exc
    return b"".join(out)


def _blind_bytes(raw_key: bytes, data: bytes) -> bytes:
    """X25519(raw_key, u) for every 32-byte u in ``data`` (every back end gives equal bytes)."""
    if _KERNELS is not None:
        return _blind_kernel(raw_key, data)
    if _SODIUM is not None:
        return _blind_sodium(raw_key, data)
    return _blind_openssl(raw_key, data)


def _hash_blind_records(raw_key: bytes, domain: bytes, records: bytes) -> bytes:
    """``_blind_bytes(raw_key, hash_to_group(ids, domain))`` for ids as ``length (4) + id``.

    In one C call when the batch kernel is built (no Python object per id), else through
    :func:`hash_to_group` and :func:`_blind_bytes`; both give equal bytes.

    Raises
    ------
    LowOrderPointError
        With the index of the first id whose point is of low order.
    PSIError
        On malformed records or a domain over 65535 bytes.
    """
    if _KERNELS is None:
        return _blind_bytes(raw_key, hash_to_group(_decode_id_records(records), domain).tobytes())
    try:
        result, bad = _KERNELS.hash_blind(raw_key, domain, records)
    except ValueError as exc:
        raise PSIError(str(exc)) from exc
    if result is None:
        raise LowOrderPointError(bad)
    return bytes(result)


class BlindingPool(WorkerPool):
    """Worker processes that blind in parallel, kept for the life of this process.

    Each worker is ``python -m secure_agg._blind_worker`` on pipes (see
    :class:`secure_agg.worker_pool.WorkerPool` for starting, framing, the truncated-reply check
    and closing): it imports only this module (``multiprocessing`` workers would re-import the
    caller's program, a Flower node or a Ray worker), holds no key between requests, and exits
    when this process closes its pipes. The scalar travels with each request through the local
    pipe, at the start of the request's header.

    Parameters
    ----------
    workers : int
        Processes to start (at least 1).
    """

    def __init__(self, workers: int) -> None:
        super().__init__(WORKER_MODULE, workers, label="blinding")

    def blind(
        self, op: bytes, raw_key: bytes, domain: bytes, parts: Iterable[tuple[int, bytes]]
    ) -> bytes:
        """Run ``(offset, payload)`` parts of request ``op`` on free workers; the joined results.

        ``op`` is ``B`` (payload: points) or ``H`` (payload: id records, hashed under ``domain``
        first); ``offset`` is the index of the part's first point in the whole batch. ``parts``
        may be a generator, drawn one part ahead of the free workers
        (:meth:`secure_agg.worker_pool.WorkerPool.map`), so parts are made while workers compute.

        Raises
        ------
        LowOrderPointError
            With the index of the first low-order point in the whole batch.
        PSIError
            If a worker refused its input.
        secure_agg.worker_pool.WorkerError
            If a worker died, sent a truncated reply or failed.
        """
        return _blind_parts(self.map, op, raw_key, domain, parts)


def _blind_parts(
    run: Callable[[Iterable[bytes]], list[bytes]],
    op: bytes,
    raw_key: bytes,
    domain: bytes,
    parts: Iterable[tuple[int, bytes]],
) -> bytes:
    """:meth:`BlindingPool.blind` with ``run`` (a pool's ``map``, or a Ray gateway's batch)."""
    header = raw_key + domain
    offsets: list[int] = []

    def requests() -> Iterator[bytes]:
        for offset, payload in parts:
            offsets.append(offset)
            yield encode_request(op, header, payload)

    try:
        replies = run(requests())
    except RefusedRequestError as exc:
        if exc.item is not None and exc.request is not None:
            raise LowOrderPointError(offsets[exc.request] + exc.item) from exc
        raise PSIError(exc.message) from exc
    return b"".join(replies)


_POOL: SharedPool[BlindingPool] = SharedPool(BlindingPool)


def _parallel(
    op: bytes, raw_key: bytes, domain: bytes, workers: int, parts: Iterable[tuple[int, bytes]]
) -> bytes:
    """Run ``parts`` (offset, payload) on the active compute backend, ``workers`` at once.

    The local backend is the shared pool of ``workers`` processes; a Ray backend
    (:mod:`secure_agg.compute`) runs the parts as tasks of the party's own cluster.
    """
    if compute.active().remote:
        gateway = compute.gateway()
        return _blind_parts(
            lambda requests: gateway.run_batch(b"B", list(requests), label="blinding"),
            op,
            raw_key,
            domain,
            parts,
        )
    return _POOL.get(workers).blind(op, raw_key, domain, parts)


def _chunks(n: int, workers: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the requests a batch of ``n`` points is cut into.

    Pieces of about :data:`CHUNK_POINTS` (at least one per worker, all of nearly equal size).
    """
    count = max(workers, math.ceil(n / CHUNK_POINTS))
    per = math.ceil(n / count)
    return [(start, min(n, start + per)) for start in range(0, n, per)]


def _encode_id_records(ids: Sequence[bytes]) -> bytes:
    return b"".join(len(i).to_bytes(4, "big") + i for i in ids)


def _decode_id_records(payload: bytes) -> list[bytes]:
    ids: list[bytes] = []
    offset = 0
    while offset < len(payload):
        length = int.from_bytes(payload[offset : offset + 4], "big")
        offset += 4
        if offset + length > len(payload):
            raise PSIError(
                f"id record {len(ids)} claims {length} bytes but only "
                f"{max(0, len(payload) - offset)} remain; records are length (4) + id"
            )
        ids.append(payload[offset : offset + length])
        offset += length
    return ids


def blind(points: Points, key: BlindingKey, *, workers: int | None = None) -> Points:
    """Raise every point to the key's scalar (X25519), in parallel over processes.

    Parameters
    ----------
    points : numpy.ndarray of uint8, shape (n, 32)
        Hashed ids or a peer's blinded points.
    key : BlindingKey
        This party's secret scalar.
    workers : int, optional
        Processes to use (default: all usable CPUs of the active compute backend,
        :func:`secure_agg.compute.workers`); small inputs run in-process.

    Raises
    ------
    PSIError
        On a malformed array or a low-order point.
    """
    points = _check_points(points)
    workers = compute.workers() if workers is None else workers
    secret = key.secret_bytes()
    if workers <= 1 or len(points) < PARALLEL_THRESHOLD:
        result = _blind_bytes(secret, points.tobytes())
    else:
        parts = (
            (start, points[start:stop].tobytes()) for start, stop in _chunks(len(points), workers)
        )
        result = _parallel(b"B", secret, b"", workers, parts)
    return np.frombuffer(result, dtype=np.uint8).reshape(-1, POINT_BYTES).copy()


def hash_and_blind(
    ids: Sequence[bytes],
    key: BlindingKey,
    domain: bytes = HASH_DOMAIN,
    *,
    workers: int | None = None,
) -> Points:
    """``blind(hash_to_group(ids, domain), key)``, with the hashing spread over the workers too."""
    workers = compute.workers() if workers is None else workers
    secret = key.secret_bytes()
    if workers <= 1 or len(ids) < PARALLEL_THRESHOLD:
        result = _hash_blind_records(secret, domain, _encode_id_records(ids))
    else:
        parts = (
            (start, _encode_id_records(ids[start:stop]))
            for start, stop in _chunks(len(ids), workers)
        )
        result = _parallel(b"H", secret, domain, workers, parts)
    return np.frombuffer(result, dtype=np.uint8).reshape(-1, POINT_BYTES).copy()


def _check_points(points: npt.NDArray[Any]) -> Points:
    array = np.asarray(points)
    if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != POINT_BYTES:
        raise PSIError(
            f"points must be a uint8 array of shape (n, 32), got {array.dtype} {array.shape}"
        )
    return np.ascontiguousarray(array)


def comparison_bytes(n_left: int, n_right: int, statistical_bits: int = STATISTICAL_BITS) -> int:
    """Bytes of doubly-blinded values to keep so that no false match occurs w.p. > 2^-bits.

    Comparing ``n_left`` values with ``n_right`` others, a false match among truncated
    pseudo-random values of ``8t`` bits has probability at most ``n_left * n_right / 2^(8t)``.
    """
    pairs = max(1, n_left) * max(1, n_right)
    bits = math.log2(pairs) + statistical_bits
    return min(POINT_BYTES, max(8, math.ceil(bits / 8)))


def truncate(points: Points, length: int) -> Points:
    """Keep the first ``length`` bytes of each doubly-blinded value (comparison only)."""
    if not 1 <= length <= POINT_BYTES:
        raise PSIError(f"truncation length {length} outside 1..32")
    return np.ascontiguousarray(_check_points(points)[:, :length])


def match(left: Points, right: Points) -> npt.NDArray[np.bool_]:
    """For each row of ``left``, whether an equal row occurs in ``right`` (exact bytes)."""
    if left.ndim != 2 or right.ndim != 2 or left.shape[1] != right.shape[1]:
        raise PSIError("compared values must have equal widths")
    width = left.shape[1]
    dtype = np.dtype((np.void, width))
    lv = np.ascontiguousarray(left).view(dtype).ravel()
    rv = np.ascontiguousarray(right).view(dtype).ravel()
    return np.isin(lv, rv)


def permutation(n: int) -> npt.NDArray[np.intp]:
    """A random permutation drawn from the OS CSPRNG (hides file order from the peer).

    Sorts ``n`` random 64-bit keys from ``os.urandom``; ties (probability below n^2/2^65) only
    make a few orders slightly likelier and reveal nothing.
    """
    keys = np.frombuffer(os.urandom(8 * n), dtype=np.uint64)
    return np.argsort(keys, kind="stable")


def encode_ids(ids: Sequence[str]) -> list[bytes]:
    """UTF-8 bytes of normalised ids, as hashed by both parties."""
    return [i.encode("utf-8") for i in ids]
