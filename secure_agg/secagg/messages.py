"""The protocol's stages and messages, and their encoding to flat records (no pickle).

Every message is a frozen dataclass of ints, bytes and read-only numpy arrays, validated on
construction (so a decoded message is as trustworthy in form as a constructed one). Each class
names its :class:`Stage`; the state machines check it against their own stage before anything
else runs. :func:`encode_message` gives a flat ``dict`` of ``bytes | int | numpy.ndarray`` that a
transport (Flower's ``ConfigRecord``/``ArrayRecord``, or the in-process one) can carry;
:func:`decode_message` is its inverse and refuses anything else.

Message flow (``->`` server to client, ``<-`` client to server)
--------------------------------------------------------------
=========================  ============================  ==========================================
stage                      server sends                  client replies
=========================  ============================  ==========================================
``setup``                  :class:`SetupMessage`         :class:`PublicKeysMessage`
``share_keys``             :class:`ShareKeysRequest`     :class:`EncryptedSharesMessage`
``collect_masked_vectors`` :class:`MaskedVectorRequest`  :class:`MaskedVectorMessage`
``unmask``                 :class:`UnmaskRequest`        :class:`UnmaskSharesMessage`
=========================  ============================  ==========================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeAlias

import numpy as np
import numpy.typing as npt

from secure_agg.secagg import channel, shamir
from secure_agg.secagg.errors import MessageError

#: Record key holding a message's kind.
KIND_KEY = "kind"

#: Ids, round ids and counts fit in a signed 64-bit integer.
MAX_INT = 2**63 - 1

Ids = npt.NDArray[np.int64]
Rows = npt.NDArray[np.uint8]
Record: TypeAlias = dict[str, "bytes | int | npt.NDArray[Any]"]


class Stage:
    """Names of the protocol's stages (as in Flower's ``secaggplus_constants.Stage``).

    A client's stage is the one whose server message it accepts next; a server's stage is the one
    whose client replies it is collecting. ``NEW``, ``DONE`` and ``ABORTED`` are the states
    before and after the four stages.
    """

    NEW = "new"
    SETUP = "setup"
    SHARE_KEYS = "share_keys"
    COLLECT_MASKED_VECTORS = "collect_masked_vectors"
    UNMASK = "unmask"
    DONE = "done"
    ABORTED = "aborted"
    ALL = (SETUP, SHARE_KEYS, COLLECT_MASKED_VECTORS, UNMASK)

    def __new__(cls) -> Stage:
        """Prevent instantiation: a namespace of constants."""
        raise TypeError(f"{cls.__name__} cannot be instantiated")


@dataclass(frozen=True, eq=False, repr=False)
class _Message:
    """Fields common to every message."""

    KIND: ClassVar[bytes]
    STAGE: ClassVar[str]

    round_id: int

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type in ("int", int):
                object.__setattr__(self, field.name, _int(self, field.name, value))
            elif field.type in ("bytes", bytes):
                if not isinstance(value, bytes | bytearray):
                    raise MessageError(f"{_name(self)}.{field.name} must be bytes")
                object.__setattr__(self, field.name, bytes(value))

    def __repr__(self) -> str:
        parts = []
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, np.ndarray):
                parts.append(f"{field.name}={value.dtype}{list(value.shape)}")
            elif isinstance(value, bytes):
                parts.append(f"{field.name}=<{len(value)} bytes>")
            else:
                parts.append(f"{field.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"


# ------------------------------------------------------------------ server -> client


@dataclass(frozen=True, eq=False, repr=False)
class SetupMessage(_Message):
    """Server -> every client: the round's configuration and the neighbour graph.

    Parameters
    ----------
    round_id : int
    config : bytes
        :meth:`SecAggConfig.to_bytes` of the server's configuration; a client refuses a setup
        that differs from its own.
    ring : numpy.ndarray of int64
        The clients in the random ring order that defines the neighbour graph.
    """

    KIND: ClassVar[bytes] = b"secagg/setup"
    STAGE: ClassVar[str] = Stage.SETUP

    config: bytes
    ring: Ids

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "ring", _ids(self, "ring", self.ring))


@dataclass(frozen=True, eq=False, repr=False)
class ShareKeysRequest(_Message):
    """Server -> client: the public keys of its neighbours who advertised them (itself included).

    Row ``i`` of both key arrays belongs to ``client_ids[i]``.
    """

    KIND: ClassVar[bytes] = b"secagg/share_keys"
    STAGE: ClassVar[str] = Stage.SHARE_KEYS

    recipient: int
    client_ids: Ids
    encryption_keys: Rows
    mask_keys: Rows

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "client_ids", _ids(self, "client_ids", self.client_ids))
        count = len(self.client_ids)
        for name in ("encryption_keys", "mask_keys"):
            object.__setattr__(
                self, name, _rows(self, name, getattr(self, name), channel.KEY_BYTES, count)
            )


@dataclass(frozen=True, eq=False, repr=False)
class MaskedVectorRequest(_Message):
    """Server -> client: the encrypted shares addressed to it, and a request to mask its vector.

    Row ``i`` of ``ciphertexts`` came from ``sender_ids[i]``.
    """

    KIND: ClassVar[bytes] = b"secagg/collect_masked_vectors"
    STAGE: ClassVar[str] = Stage.COLLECT_MASKED_VECTORS

    recipient: int
    sender_ids: Ids
    ciphertexts: Rows

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "sender_ids", _ids(self, "sender_ids", self.sender_ids))
        rows = _rows(
            self, "ciphertexts", self.ciphertexts, channel.CIPHERTEXT_BYTES, len(self.sender_ids)
        )
        object.__setattr__(self, "ciphertexts", rows)


@dataclass(frozen=True, eq=False, repr=False)
class UnmaskRequest(_Message):
    """Server -> client: which of its neighbours survived (sent a masked vector) and which dropped.

    The client returns its share of the self-mask seed of each survivor and its share of the
    mask key of each dropped neighbour; never both for one client.
    """

    KIND: ClassVar[bytes] = b"secagg/unmask"
    STAGE: ClassVar[str] = Stage.UNMASK

    recipient: int
    survivor_ids: Ids
    dropped_ids: Ids

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "survivor_ids", _ids(self, "survivor_ids", self.survivor_ids))
        object.__setattr__(self, "dropped_ids", _ids(self, "dropped_ids", self.dropped_ids))


# ------------------------------------------------------------------ client -> server


@dataclass(frozen=True, eq=False, repr=False)
class PublicKeysMessage(_Message):
    """Client -> server (setup): the client's two X25519 public keys for this round."""

    KIND: ClassVar[bytes] = b"secagg/public_keys"
    STAGE: ClassVar[str] = Stage.SETUP

    sender: int
    encryption_key: bytes
    mask_key: bytes

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("encryption_key", "mask_key"):
            if len(getattr(self, name)) != channel.KEY_BYTES:
                raise MessageError(f"{_name(self)}.{name} must be {channel.KEY_BYTES} bytes")


@dataclass(frozen=True, eq=False, repr=False)
class EncryptedSharesMessage(_Message):
    """Client -> server (share_keys): one ciphertext of its two shares per neighbour.

    Row ``i`` of ``ciphertexts`` is for ``recipient_ids[i]``; the server only relays it.
    """

    KIND: ClassVar[bytes] = b"secagg/encrypted_shares"
    STAGE: ClassVar[str] = Stage.SHARE_KEYS

    sender: int
    recipient_ids: Ids
    ciphertexts: Rows

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "recipient_ids", _ids(self, "recipient_ids", self.recipient_ids))
        rows = _rows(
            self, "ciphertexts", self.ciphertexts, channel.CIPHERTEXT_BYTES, len(self.recipient_ids)
        )
        object.__setattr__(self, "ciphertexts", rows)


@dataclass(frozen=True, eq=False, repr=False)
class MaskedVectorMessage(_Message):
    """Client -> server (collect_masked_vectors): ``y = x + PRG(b) + sum ±PRG(s_uv) mod 2^m``."""

    KIND: ClassVar[bytes] = b"secagg/masked_vector"
    STAGE: ClassVar[str] = Stage.COLLECT_MASKED_VECTORS

    sender: int
    masked_vector: npt.NDArray[np.unsignedinteger[Any]]

    def __post_init__(self) -> None:
        super().__post_init__()
        array = np.asarray(self.masked_vector)
        if array.dtype not in (np.uint32, np.uint64) or array.ndim != 1:
            raise MessageError(
                f"{_name(self)}.masked_vector must be a 1-d uint32/uint64 array, "
                f"got {array.dtype} of shape {array.shape}"
            )
        object.__setattr__(self, "masked_vector", _frozen(array))


@dataclass(frozen=True, eq=False, repr=False)
class UnmaskSharesMessage(_Message):
    """Client -> server (unmask): shares of survivors' seeds and of dropped clients' mask keys.

    Row ``i`` of ``seed_shares`` is the sender's share of ``b`` of ``seed_owner_ids[i]``; row
    ``i`` of ``mask_key_shares`` its share of the mask private key of ``mask_key_owner_ids[i]``.
    """

    KIND: ClassVar[bytes] = b"secagg/unmask_shares"
    STAGE: ClassVar[str] = Stage.UNMASK

    sender: int
    seed_owner_ids: Ids
    seed_shares: Rows
    mask_key_owner_ids: Ids
    mask_key_shares: Rows

    def __post_init__(self) -> None:
        super().__post_init__()
        for ids_name, rows_name in (
            ("seed_owner_ids", "seed_shares"),
            ("mask_key_owner_ids", "mask_key_shares"),
        ):
            ids = _ids(self, ids_name, getattr(self, ids_name))
            object.__setattr__(self, ids_name, ids)
            rows = _rows(self, rows_name, getattr(self, rows_name), shamir.SHARE_BYTES, len(ids))
            object.__setattr__(self, rows_name, rows)


ServerMessage: TypeAlias = SetupMessage | ShareKeysRequest | MaskedVectorRequest | UnmaskRequest
ClientMessage: TypeAlias = (
    PublicKeysMessage | EncryptedSharesMessage | MaskedVectorMessage | UnmaskSharesMessage
)
Message: TypeAlias = ServerMessage | ClientMessage

_KINDS: dict[bytes, type[Message]] = {
    cls.KIND: cls
    for cls in (
        SetupMessage,
        ShareKeysRequest,
        MaskedVectorRequest,
        UnmaskRequest,
        PublicKeysMessage,
        EncryptedSharesMessage,
        MaskedVectorMessage,
        UnmaskSharesMessage,
    )
}


def encode_message(message: Message) -> Record:
    """A flat record ``{"kind": bytes, field: int | bytes | numpy.ndarray, ...}``.

    Arrays are returned as the message's own read-only arrays (no copy).
    """
    record: Record = {KIND_KEY: message.KIND}
    for field in fields(message):
        record[field.name] = getattr(message, field.name)
    return record


def decode_message(record: Mapping[str, Any]) -> Message:
    """Rebuild a message from :func:`encode_message`'s record, validating every field.

    Raises
    ------
    MessageError
        On an unknown kind, missing or unexpected keys, or any invalid field.
    """
    kind = record.get(KIND_KEY)
    if not isinstance(kind, bytes) or kind not in _KINDS:
        raise MessageError(f"unknown secure-aggregation message kind {kind!r}")
    cls = _KINDS[kind]
    expected = {field.name for field in fields(cls)}
    present = set(record) - {KIND_KEY}
    if present != expected:
        missing, extra = sorted(expected - present), sorted(present - expected)
        raise MessageError(f"{kind.decode()}: missing keys {missing}, unexpected keys {extra}")
    return cls(**{name: record[name] for name in expected})


def encoded_size(message: Message) -> int:
    """Payload bytes of a message on the wire: bytes and array data, 8 bytes per int.

    Keys and framing are the transport's and are not counted.
    """
    total = len(message.KIND)
    for field in fields(message):
        value = getattr(message, field.name)
        if isinstance(value, np.ndarray):
            total += value.nbytes
        elif isinstance(value, bytes):
            total += len(value)
        else:
            total += 8
    return total


def _name(message: object) -> str:
    return type(message).__name__


def _int(message: object, name: str, value: object) -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise MessageError(f"{_name(message)}.{name} must be an int, got {type(value).__name__}")
    number = int(value)
    if not 0 <= number <= MAX_INT:
        raise MessageError(f"{_name(message)}.{name}={number} outside 0..2^63-1")
    return number


def _frozen(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    out = np.array(array, copy=True, order="C")
    out.flags.writeable = False
    return out


def _ids(message: object, name: str, value: object) -> Ids:
    array = np.asarray(value)
    if array.size == 0:
        array = array.reshape(0).astype(np.int64)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise MessageError(f"{_name(message)}.{name} must be a 1-d integer array")
    if array.size and (int(array.min()) < 0 or int(array.max()) > MAX_INT):
        raise MessageError(f"{_name(message)}.{name} holds ids outside 0..2^63-1")
    return _frozen(array.astype(np.int64))


def _rows(message: object, name: str, value: object, width: int, count: int) -> Rows:
    array = np.asarray(value)
    if array.size == 0:
        array = array.reshape(0, width).astype(np.uint8)
    if array.dtype != np.uint8 or array.shape != (count, width):
        raise MessageError(
            f"{_name(message)}.{name} must be uint8 of shape ({count}, {width}), "
            f"got {array.dtype} {array.shape}"
        )
    return _frozen(array)
