"""A blinding worker process: ``python -m secure_agg._blind_worker``.

Started by :class:`secure_agg.psi.BlindingPool` with pipes for stdin and stdout, it imports only
:mod:`secure_agg.psi` (never the caller's program, unlike ``multiprocessing`` workers) and
serves requests until its stdin closes. Frames (all integers big-endian):

request
    ``op`` (1 byte: ``B`` blind points, ``H`` hash ids then blind), ``key`` (32 bytes),
    ``domain length`` (4) + ``domain``, ``payload length`` (8) + ``payload``: points
    (``32 * n`` bytes) for ``B``; ids as ``length (4) + bytes`` records for ``H``.
response
    ``status`` (1 byte), ``length`` (8) + ``data``: status 0, the blinded points; status 1, the
    index (8 bytes) of a low-order point; status 2, a UTF-8 error message.

The scalar arrives with each request and is dropped when the request is done.
"""

from __future__ import annotations

import sys
from typing import BinaryIO

from secure_agg import psi


def _read(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if data is None or len(data) != size:
        raise EOFError
    return data


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """Answer requests until the input closes."""
    while True:
        try:
            op = _read(inp, 1)
        except EOFError:
            return
        key = _read(inp, psi.POINT_BYTES)
        domain = _read(inp, int.from_bytes(_read(inp, 4), "big"))
        payload = _read(inp, int.from_bytes(_read(inp, 8), "big"))
        try:
            if op == b"B":
                result = psi._blind_bytes(key, payload)
            elif op == b"H":
                points = psi.hash_to_group(psi._decode_id_records(payload), domain)
                result = psi._blind_bytes(key, points.tobytes())
            else:
                raise psi.PSIError(f"unknown request {op!r}")
            status = b"\x00"
        except psi.LowOrderPointError as exc:
            result = exc.index.to_bytes(8, "big")
            status = b"\x01"
        except psi.PSIError as exc:
            result = str(exc).encode()
            status = b"\x02"
        del key
        out.write(status + len(result).to_bytes(8, "big") + result)
        out.flush()


if __name__ == "__main__":
    serve(sys.stdin.buffer, sys.stdout.buffer)
