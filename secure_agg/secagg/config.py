"""The parameters of one secure-aggregation round, agreed by the server and every client."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from secure_agg.secagg import fixedpoint, prg, shamir
from secure_agg.secagg.errors import MessageError, SecAggConfigError

#: Version tag of :meth:`SecAggConfig.to_bytes` (changing the encoding changes this tag).
CONFIG_VERSION = "lab/secagg/config/v1"

#: Default clipping range ``R`` (Flower's SecAgg+ default, too).
DEFAULT_CLIPPING_RANGE = 8.0

#: Default quantization bits ``q``: a step of ``R / (2^23 - 1)``, about 1e-6 for ``R = 8``.
DEFAULT_QUANTIZATION_BITS = 24

#: Default ring bits ``m``: 4 bytes per masked coordinate; no wrap-around up to 256 clients
#: at the default ``q``.
DEFAULT_MODULUS_BITS = 32

#: Ids and round ids travel as int64 arrays and 8-byte fields.
MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class SecAggConfig:
    """What server and clients agree on before a round; validated on construction.

    Parameters
    ----------
    round_id : int
        Identifies the round; bound into every key derivation and ciphertext, so messages of one
        round are useless in another. ``0 <= round_id < 2^63``.
    client_ids : iterable of int
        The sampled clients (distinct, ``0 <= id < 2^63``); stored sorted.
    threshold : int
        ``t``: shares needed to reconstruct a secret, per neighbourhood. ``t - 1`` clients
        colluding with the server learn nothing; at most ``neighbourhood_size - t`` clients of
        any neighbourhood may drop. ``2 <= t <= neighbourhood_size``.
    vector_length : int
        Coordinates of every client's vector.
    clipping_range : float
        ``R``: coordinates are clipped to ``[-R, R]``.
    quantization_bits : int
        ``q``: levels per coordinate are ``-(2^(q-1) - 1) .. 2^(q-1) - 1`` (``2 <= q <= 32``).
    modulus_bits : int
        ``m``: arithmetic modulo ``2^m``; must hold the sum of all clients without wrap-around.
    neighbours : int or None
        ``None`` for SecAgg (all pairs); an even ``k >= 2`` for SecAgg+ (each client pairs with
        ``k`` others in a random ring, see :mod:`secure_agg.secagg.graph`).
    stochastic_rounding : bool
        Unbiased stochastic rounding instead of round-to-nearest (twice the worst-case error).

    Raises
    ------
    SecAggConfigError
        Naming the value and the fix.
    """

    round_id: int
    client_ids: tuple[int, ...]
    threshold: int
    vector_length: int
    clipping_range: float = DEFAULT_CLIPPING_RANGE
    quantization_bits: int = DEFAULT_QUANTIZATION_BITS
    modulus_bits: int = DEFAULT_MODULUS_BITS
    neighbours: int | None = None
    stochastic_rounding: bool = False

    def __post_init__(self) -> None:
        _require_int("round_id", self.round_id, 0, MAX_ID)
        ids = _client_ids(self.client_ids)
        object.__setattr__(self, "client_ids", ids)
        if self.neighbours is not None:
            _require_int("neighbours", self.neighbours, 2, MAX_ID)
            if self.neighbours % 2:
                raise SecAggConfigError(
                    f"neighbours={self.neighbours} must be even (k/2 on each side of a ring); "
                    f"use {self.neighbours + 1} or {self.neighbours - 1}"
                )
        size = self.neighbourhood_size
        _require_int("threshold", self.threshold, 2, size)
        _require_int("vector_length", self.vector_length, 1, prg.MAX_WORDS)
        clip_value: object = self.clipping_range
        if isinstance(clip_value, bool) or not isinstance(clip_value, float | int):
            raise SecAggConfigError(f"clipping_range must be a float, got {self.clipping_range!r}")
        clip = float(self.clipping_range)
        if not math.isfinite(clip) or clip <= 0:
            raise SecAggConfigError(f"clipping_range must be finite and > 0, got {clip}")
        object.__setattr__(self, "clipping_range", clip)
        _require_int(
            "quantization_bits", self.quantization_bits, 2, fixedpoint.MAX_QUANTIZATION_BITS
        )
        _require_int("modulus_bits", self.modulus_bits, 2, fixedpoint.MAX_MODULUS_BITS)
        if not fixedpoint.fits(len(ids), self.quantization_bits, self.modulus_bits):
            needed = fixedpoint.required_modulus_bits(len(ids), self.quantization_bits)
            raise SecAggConfigError(
                f"the sum of {len(ids)} clients at quantization_bits={self.quantization_bits} "
                f"needs modulus_bits >= {needed} (got {self.modulus_bits}) and must stay below "
                "2^53; raise modulus_bits or lower quantization_bits"
            )
        if not isinstance(self.stochastic_rounding, bool):
            raise SecAggConfigError(
                f"stochastic_rounding must be a bool, got {self.stochastic_rounding!r}"
            )

    @property
    def n_clients(self) -> int:
        """Number of sampled clients ``n``."""
        return len(self.client_ids)

    @property
    def neighbourhood_size(self) -> int:
        """Clients in each neighbourhood, the client itself included (shares per secret)."""
        n = len(self.client_ids)
        if self.neighbours is None or self.neighbours >= n - 1:
            return n
        return self.neighbours + 1

    @property
    def max_dropouts(self) -> int:
        """Dropouts tolerated per neighbourhood: ``neighbourhood_size - threshold``."""
        return self.neighbourhood_size - self.threshold

    @property
    def word_dtype(self) -> type[np.unsignedinteger[Any]]:
        """The dtype of masked vectors on the wire: uint32 for ``m <= 32``, else uint64."""
        return np.uint32 if self.modulus_bits <= 32 else np.uint64

    def evaluation_point(self, client_id: int) -> int:
        """The Shamir ``x`` of a client: 1 + its position in :attr:`client_ids`."""
        return self.client_ids.index(client_id) + 1

    def error_bound(self, n_summands: int | None = None) -> float:
        """Worst-case error per coordinate of the decoded sum of ``n_summands`` (default n)."""
        return fixedpoint.error_bound(
            self.n_clients if n_summands is None else n_summands,
            clipping_range=self.clipping_range,
            quantization_bits=self.quantization_bits,
            stochastic=self.stochastic_rounding,
        )

    def to_bytes(self) -> bytes:
        """Canonical encoding (sorted-key JSON, the float in hex): equal configs, equal bytes."""
        document = {
            "version": CONFIG_VERSION,
            "round_id": self.round_id,
            "client_ids": list(self.client_ids),
            "threshold": self.threshold,
            "vector_length": self.vector_length,
            "clipping_range": self.clipping_range.hex(),
            "quantization_bits": self.quantization_bits,
            "modulus_bits": self.modulus_bits,
            "neighbours": self.neighbours,
            "stochastic_rounding": self.stochastic_rounding,
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes) -> SecAggConfig:
        """Parse :meth:`to_bytes` (e.g. a client building its config from a setup message).

        A client that takes its configuration from the server's setup accepts the server's
        threshold, graph degree and quantization; check them against the client's own policy
        (say, a minimum threshold) before constructing a :class:`SecAggClient` with it.

        Raises
        ------
        MessageError
            If ``data`` is not a valid encoding of a valid configuration.
        """
        try:
            document = json.loads(data.decode("ascii"))
            if not isinstance(document, dict) or document.pop("version", None) != CONFIG_VERSION:
                raise MessageError(f"not a {CONFIG_VERSION} configuration")
            document["clipping_range"] = float.fromhex(document["clipping_range"])
            config = cls(**document)
        except MessageError:
            raise
        except (SecAggConfigError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise MessageError(f"invalid configuration in message: {exc}") from exc
        if config.to_bytes() != data:
            raise MessageError("configuration bytes are not in canonical form")
        return config


def _require_int(name: str, value: object, low: int, high: int) -> None:
    if type(value) is not int or not low <= value <= high:
        raise SecAggConfigError(f"{name} must be an int in {low}..{high}, got {value!r}")


def _client_ids(value: Iterable[int]) -> tuple[int, ...]:
    try:
        ids = tuple(value)
    except TypeError as exc:
        raise SecAggConfigError(f"client_ids must be an iterable of ints: {exc}") from exc
    # numpy integers are welcome (ids often come from arrays); bools are not ids.
    ids = tuple(
        int(client)
        if isinstance(client, np.integer) and not isinstance(client, np.bool_)
        else client
        for client in ids
    )
    for client in ids:
        _require_int("every client id", client, 0, MAX_ID)
    if len(set(ids)) != len(ids):
        raise SecAggConfigError("client_ids must be distinct")
    if not 2 <= len(ids) <= shamir.MAX_X:
        raise SecAggConfigError(
            f"secure aggregation needs 2..{shamir.MAX_X} clients, got {len(ids)}"
        )
    return tuple(sorted(ids))
