"""Run a whole round in one process: the in-process transport for tests, notebooks and benchmarks.

Every message goes through :func:`encode_message` and :func:`decode_message`, as it would on a
real transport, and every record the server receives can be observed (that is all a curious
coordinator gets to see).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

import numpy.typing as npt

from secure_agg.secagg.config import SecAggConfig
from secure_agg.secagg.errors import InputError, MessageError
from secure_agg.secagg.messages import Message, Record, Stage, decode_message, encode_message
from secure_agg.secagg.protocol import SecAggClient, SecAggServer

_M = TypeVar("_M", bound=Message)


def run_round(
    config: SecAggConfig,
    vectors: Mapping[int, npt.ArrayLike],
    *,
    drop: Mapping[int, str] | None = None,
    observe: Callable[[Record], None] | None = None,
) -> SecAggServer:
    """Run every stage for every client, with optional dropouts; return the finished server.

    Parameters
    ----------
    config : SecAggConfig
        The round.
    vectors : mapping of client id to array_like
        Each client's vector.
    drop : mapping of client id to stage, optional
        A client listed here stops replying from that stage on (``Stage.SETUP`` to
        ``Stage.UNMASK``): e.g. ``Stage.COLLECT_MASKED_VECTORS`` drops it after it shared keys
        and before it sent its masked vector.
    observe : callable, optional
        Called with the encoded record of every message the server receives.

    Returns
    -------
    SecAggServer
        In stage ``done``; its :meth:`~SecAggServer.result` is the sum.

    Raises
    ------
    SecAggError
        Whatever the server or a client raises (e.g. ``TooManyDropoutsError``).
    """
    drops = dict(drop or {})
    unknown = set(drops.values()) - set(Stage.ALL)
    if unknown:
        raise InputError(f"drop stages must be among {Stage.ALL}, got {sorted(unknown)}")
    missing = set(config.client_ids) - set(vectors)
    if missing:
        raise InputError(f"no vector for clients {sorted(missing)[:5]}")
    clients = {cid: SecAggClient(cid, config) for cid in config.client_ids}
    server = SecAggServer(config)
    order = {stage: i for i, stage in enumerate(Stage.ALL)}

    def replying(cids: Iterable[int], stage: str) -> list[int]:
        return [cid for cid in cids if cid not in drops or order[drops[cid]] > order[stage]]

    setup = _wire(server.setup())
    keys = [
        _wire(clients[cid].setup(setup), observe)
        for cid in replying(config.client_ids, Stage.SETUP)
    ]
    share_requests = server.share_keys(keys)
    shares = [
        _wire(clients[cid].share_keys(_wire(share_requests[cid])), observe)
        for cid in replying(share_requests, Stage.SHARE_KEYS)
    ]
    mask_requests = server.collect_masked_vectors(shares)
    masked = [
        _wire(clients[cid].collect_masked_vectors(_wire(mask_requests[cid]), vectors[cid]), observe)
        for cid in replying(mask_requests, Stage.COLLECT_MASKED_VECTORS)
    ]
    unmask_requests = server.unmask(masked)
    unmask_shares = [
        _wire(clients[cid].unmask(_wire(unmask_requests[cid])), observe)
        for cid in replying(unmask_requests, Stage.UNMASK)
    ]
    server.finish(unmask_shares)
    return server


def _wire(message: _M, observe: Callable[[Record], None] | None = None) -> _M:
    """Encode, show to ``observe``, decode: what a transport does to a message."""
    record = encode_message(message)
    if observe is not None:
        observe(record)
    decoded = decode_message(record)
    if not isinstance(decoded, type(message)):
        raise MessageError(f"{type(message).__name__} did not survive encoding")
    return decoded
