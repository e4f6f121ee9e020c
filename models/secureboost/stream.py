"""Streaming a tree's encrypted gradients: the bank encrypts a piece while the platforms sum one.

With ``gradient_chunks`` ``k > 1`` (:class:`~models.secureboost.settings.SecureBoostSettings`)
the first exchange of a federated tree is a pipeline of ``k`` pieces of consecutive training
rows (:func:`bounds`). The bank encrypts piece 0 and sends it to every platform (stage ``tree``)
together with a ``stream`` message to itself; the coordinator relays both in the same hop, so
while each platform sums piece 0 into its root histogram the bank encrypts piece 1, and so on.
A platform answers nothing until the last piece; then it packs the root's sums and answers
``hist`` as in the unchunked protocol. The first exchange takes ``k + 1`` hops instead of 2.

What is sent is exactly what the unchunked protocol sends: the same ciphertexts of the same
rows, in the same order, cut in pieces; the platform releases the same packed sums once, after
the last piece. So no party learns anything new (the table "What each party learns" of
:mod:`models.secureboost.protocol` holds as it is), and the decrypted sums, hence the model, are
bit-identical. The ``stream`` message carries only the tree and the next piece's index, which
the bank checks against its own state: a coordinator replaying or forging one makes the bank
refuse it.

The per-tree critical path (:mod:`models.secureboost.timing`) counts a streamed hop's platform
compute that ran while the bank computed as ``overlap``: each platform reports its earlier
pieces' seconds in its ``hist`` reply (:data:`STREAM_SECONDS`), and the bank knows its own.
"""

from __future__ import annotations

from models.protocol import ProtocolError

#: Stage of the bank's message to itself: encrypt and send the next piece.
STAGE = "stream"
#: Payload key of a ``tree`` piece: the index of its first training row (absent: row 0).
FIRST_ROW = "first_row"
#: Payload key of a ``stream`` message and of a ``tree`` piece: the piece's index.
CHUNK = "chunk"
#: Payload key of a platform's ``hist`` reply to a streamed tree: the handler seconds of its
#: earlier pieces, in order (the last piece's are its ``compute_seconds``).
STREAM_SECONDS = "stream_seconds"


def bounds(n_rows: int, chunks: int) -> list[int]:
    """Row boundaries of ``min(chunks, n_rows)`` consecutive pieces of nearly equal size.

    Piece ``i`` holds rows ``bounds[i]:bounds[i + 1]``; the first ``n_rows % pieces`` pieces are
    one row longer. No piece is empty (zero rows make one empty piece).

    Raises
    ------
    ProtocolError
        If ``chunks`` is below 1 or ``n_rows`` negative.
    """
    if chunks < 1:
        raise ProtocolError(f"gradient_chunks must be at least 1, got {chunks}")
    if n_rows < 0:
        raise ProtocolError(f"cannot cut {n_rows} rows into pieces")
    pieces = max(1, min(chunks, n_rows))
    base, extra = divmod(n_rows, pieces)
    out = [0]
    for i in range(pieces):
        out.append(out[-1] + base + (1 if i < extra else 0))
    return out


__all__ = ["CHUNK", "FIRST_ROW", "STAGE", "STREAM_SECONDS", "bounds"]
