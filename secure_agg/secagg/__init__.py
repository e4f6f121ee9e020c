"""Secure aggregation (SecAgg / SecAgg+) with a cryptographic mask generator.

The coordinator learns the sum of the surviving clients' vectors and who dropped, and nothing
else about any client's vector: every vector it receives is masked by a one-time pad from a
ChaCha20 keystream keyed through HKDF by an X25519 agreement or a fresh 32-byte seed. See
:mod:`secure_agg.secagg.protocol` for the stages and exactly what each party learns.

Public API
----------
- :class:`SecAggConfig` -- the agreed parameters of one round.
- :class:`SecAggClient` -- ``setup``, ``share_keys``, ``collect_masked_vectors``, ``unmask``
  (or ``handle``), each taking the server's message and returning the client's reply.
- :class:`SecAggServer` -- ``setup``, ``share_keys``, ``collect_masked_vectors``, ``unmask``,
  ``finish``, each taking the previous stage's replies and returning the next messages by
  recipient; ``result()`` gives the float64 sum.
- Messages (frozen dataclasses of ints, bytes and numpy arrays), :class:`Stage`,
  :func:`encode_message` / :func:`decode_message` (flat records, no pickle).
- Errors: :class:`SecAggError` and one subclass per meaning.
- :func:`run_round` -- the whole round in one process (tests, notebooks, benchmarks).

This package imports nothing from the rest of the project.
"""

from __future__ import annotations

from secure_agg.secagg.config import SecAggConfig
from secure_agg.secagg.errors import (
    AuthenticationError,
    BadShareError,
    InputError,
    MessageError,
    NotEnoughSharesError,
    SecAggConfigError,
    SecAggError,
    StageError,
    TooManyDropoutsError,
)
from secure_agg.secagg.messages import (
    ClientMessage,
    EncryptedSharesMessage,
    MaskedVectorMessage,
    MaskedVectorRequest,
    Message,
    PublicKeysMessage,
    ServerMessage,
    SetupMessage,
    ShareKeysRequest,
    Stage,
    UnmaskRequest,
    UnmaskSharesMessage,
    decode_message,
    encode_message,
    encoded_size,
)
from secure_agg.secagg.protocol import SecAggClient, SecAggServer
from secure_agg.secagg.simulate import run_round

__all__ = [
    "AuthenticationError",
    "BadShareError",
    "ClientMessage",
    "EncryptedSharesMessage",
    "InputError",
    "MaskedVectorMessage",
    "MaskedVectorRequest",
    "Message",
    "MessageError",
    "NotEnoughSharesError",
    "PublicKeysMessage",
    "SecAggClient",
    "SecAggConfig",
    "SecAggConfigError",
    "SecAggError",
    "SecAggServer",
    "ServerMessage",
    "SetupMessage",
    "ShareKeysRequest",
    "Stage",
    "StageError",
    "TooManyDropoutsError",
    "UnmaskRequest",
    "UnmaskSharesMessage",
    "decode_message",
    "encode_message",
    "encoded_size",
    "run_round",
]
