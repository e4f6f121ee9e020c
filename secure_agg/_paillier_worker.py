"""A Paillier worker process: ``python -m secure_agg._paillier_worker``.

Started by :class:`secure_agg.paillier_pool.PaillierPool` with pipes for stdin and stdout; it
imports only :mod:`secure_agg` (never the caller's program, unlike ``multiprocessing`` workers)
and serves requests with :func:`secure_agg.worker_pool.serve` until its stdin closes. Frames are
described in :mod:`secure_agg.worker_pool`; every header starts with
``length (4) || PublicKey.to_bytes()`` (:func:`secure_agg.paillier.parallel.public_header`).

When the C extension :mod:`secure_agg._gmp_kernels` is built, the payloads of ``E``, ``O``,
``C``, ``S``, ``B`` and ``P`` go to it as they arrive (no conversion to Python integers) through the
``*_payload`` functions of :mod:`secure_agg.paillier.kernels` and :mod:`secure_agg.packing`;
otherwise the Python kernels answer. Both give the same results; the worker inherits
``SECURE_AGG_KERNELS`` from the environment of the process that started the pool. After a ``C``
request the worker keeps the key holder's CRT tables (key material: in C memory, overwritten
when freed) until an ``F`` request; the primes themselves are dropped when the request is
answered.

Operations (integers big-endian, plaintexts ``key_bytes`` wide, ciphertexts ``2 * key_bytes``):

``E`` / ``N``
    DJN / naive encryption. Payload: plaintexts. Reply: ciphertexts.
``O``
    Re-randomisation. Payload: ciphertexts. Reply: ciphertexts.
``C``
    Encryption by the key holder (CRT). Header continues with ``PrivateKey.to_secret_bytes()``;
    the CRT tables built from it are kept until an ``F`` request. Payload: plaintexts. Reply:
    ciphertexts.
``F``
    Forget the key holder's CRT tables. Empty payload and reply.
``D``
    Decryption. Header continues with ``PrivateKey.to_secret_bytes()``; the key is rebuilt for
    this request only and dropped when it is answered. Payload: ciphertexts. Reply: plaintexts.
``S``
    Group sums. Header continues with ``n_rows (8) || n_cols (4) || n_groups (4)``. Payload:
    ``n_rows`` ciphertexts, then the int32 group matrix (C order). Reply: ``n_cols * n_groups``
    partial sums (column by column, groups in order), all-zero bytes for an empty group.
``B``
    Group sums from bins. Header continues with ``n_rows (8) || n_cols (4) || n_groups (4) ||
    width (4) || bin size (1)``. Payload: ``n_rows`` ciphertexts, the bins (C order; ``uint8``,
    ``uint16`` or ``int32`` by the bin size), then each row's node slot (int32, -1: no node).
    The group of a row in a column is ``slot * width + bin``; the worker makes them for its part
    only. Reply: as ``S``.
``P``
    Ciphertext packing (:class:`secure_agg.packing.SumPacker`). Header continues with
    ``bits_per_value (4) || capacity (4) || rerandomize (1)``. Payload: ciphertexts. Reply: the
    packed ciphertexts.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, BinaryIO

from secure_agg import worker_pool
from secure_agg.packing import _pack_payload
from secure_agg.paillier import kernels, tables
from secure_agg.paillier.errors import PaillierError
from secure_agg.paillier.keys import PrivateKey
from secure_agg.paillier.parallel import read_header
from secure_agg.paillier.wire import ints_from_bytes, ints_to_bytes


def handle(op: bytes, header: bytes, payload: bytes) -> bytes:
    """Compute one request's reply (see the module docstring).

    Raises
    ------
    PaillierError
        On an unknown request or refused input (``PackingError`` for packing requests).
    """
    if op == b"F":
        tables.forget_private()
        return b""
    pub, rest = read_header(header)
    width = pub.ciphertext_bytes
    if op in (b"E", b"N"):
        return kernels.encrypt_payload(pub, payload, "djn" if op == b"E" else "naive")
    if op == b"O":
        return kernels.obfuscate_payload(pub, payload)
    if op == b"C":
        key = PrivateKey.from_secret_bytes(pub, rest)
        try:
            return kernels.encrypt_private_payload(key, payload)
        finally:
            del key
    if op == b"D":
        key = PrivateKey.from_secret_bytes(pub, rest)
        try:
            plain = kernels.decrypt(key, ints_from_bytes(payload, width))
        finally:
            del key
        return ints_to_bytes(plain, pub.key_bytes)
    if op == b"S":
        n_rows = int.from_bytes(rest[:8], "big")
        n_cols = int.from_bytes(rest[8:12], "big")
        n_groups = int.from_bytes(rest[12:16], "big")
        return kernels.group_sums_payload(pub, payload, n_rows, n_cols, n_groups)
    if op == b"B":
        return kernels.binned_sums_payload(pub, payload, rest)
    if op == b"P":
        bits = int.from_bytes(rest[:4], "big")
        capacity = int.from_bytes(rest[4:8], "big")
        rerandomize = rest[8:9] == b"\x01"
        return _pack_payload(pub, payload, bits=bits, capacity=capacity, rerandomize=rerandomize)
    raise PaillierError(f"unknown request {op!r}; the requests are E, N, O, C, F, D, S, B and P")


def handle_parts(op: bytes, header: bytes, parts: Sequence[Any]) -> bytes:
    """:func:`handle` of a payload given as consecutive buffers (a Ray task's kept blocks first).

    A binned group sum (``B``) reads its blocks in place; other requests get them joined.
    """
    if op == b"B":
        pub, rest = read_header(header)
        return kernels.binned_sums_parts(pub, parts, rest)
    return handle(op, header, b"".join(parts))


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """Answer requests until the input closes (refused input and failures are replies)."""
    worker_pool.serve(handle, inp, out)


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
