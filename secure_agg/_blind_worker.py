"""A blinding worker process: ``python -m secure_agg._blind_worker``.

Started by :class:`secure_agg.psi.BlindingPool` with pipes for stdin and stdout, it imports only
:mod:`secure_agg` (never the caller's program, unlike ``multiprocessing`` workers) and serves
requests with :func:`secure_agg.worker_pool.serve` until its stdin closes. Frames are those of
:mod:`secure_agg.worker_pool`; here

request
    ``op`` is ``B`` (blind points) or ``H`` (hash ids, then blind); the header is the scalar
    (32 bytes) followed by the hashing domain (``H`` only); the payload is points
    (``32 * n`` bytes) for ``B``, ids as ``length (4) + bytes`` records for ``H``.
reply
    the blinded points; a low-order point is refused with its index in the payload as the
    refused item; malformed input is refused with a message.

The scalar arrives with each request and is dropped when the request is done.
"""

from __future__ import annotations

import sys
from typing import BinaryIO

from secure_agg import psi, worker_pool


def handle(op: bytes, header: bytes, payload: bytes) -> bytes:
    """Blind one request's points (see the module docstring).

    Raises
    ------
    secure_agg.worker_pool.RefusedRequestError
        For a low-order point, with its index in the payload as ``item``.
    PSIError
        On an unknown request or malformed input.
    """
    if len(header) < psi.POINT_BYTES:
        raise psi.PSIError(
            f"a blinding request's header of {len(header)} bytes lacks the "
            f"{psi.POINT_BYTES}-byte scalar"
        )
    key, domain = header[: psi.POINT_BYTES], header[psi.POINT_BYTES :]
    try:
        if op == b"B":
            if len(payload) % psi.POINT_BYTES:
                raise psi.PSIError(
                    f"{len(payload)} bytes are not a whole number of {psi.POINT_BYTES}-byte points"
                )
            return psi._blind_bytes(key, payload)
        if op == b"H":
            return psi._hash_blind_records(key, domain, payload)
        raise psi.PSIError(f"unknown request {op!r}; the requests are B and H")
    except psi.LowOrderPointError as exc:
        raise worker_pool.RefusedRequestError(str(exc), item=exc.index) from exc
    finally:
        del key


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """Answer requests until the input closes (refused input and failures are replies)."""
    worker_pool.serve(handle, inp, out)


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
