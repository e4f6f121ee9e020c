"""Paillier key pairs of the vertical protocols, kept in their owner's party store.

Both vertical protocols keep a key pair between messages: SecureBoost's bank and hetero LR's
bank and platforms. The secret half lives only in its owner's own store (node-local state),
never in a model, a log or a message, and is forgotten when the protocol ends. The size of a key
a node makes or accepts is that node's own decision (:class:`~models.guard.NodeLimits`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from models.guard import NodeLimits
from models.protocol import PartyStore, ProtocolError
from secure_agg import paillier
from secure_agg.schemes import DEFAULT_SCHEME

#: The fields a vertical job's params take from the job's ``crypto`` section, never from its
#: ``model`` section.
CRYPTO_FIELDS = ("key_bits", "insecure_test_keys")

#: Homomorphic schemes the vertical protocols (SecureBoost, hetero LR) run with. Okamoto–Uchiyama
#: (:mod:`secure_agg.ou`) is a library so far: its key pairs, ciphertext packing and peer-key
#: checks are not wired into these protocols.
VERTICAL_SCHEMES = ("paillier",)


class UnsupportedSchemeError(ProtocolError):
    """A job asks for a homomorphic scheme the vertical protocols do not run with."""


def check_vertical_scheme(crypto: Mapping[str, Any]) -> str:
    """The job's ``crypto.scheme`` (default Paillier), refused unless the protocols support it.

    Raises
    ------
    UnsupportedSchemeError
        Naming the scheme and the supported ones: nothing silently runs another scheme.
    """
    scheme = str(crypto.get("scheme", DEFAULT_SCHEME))
    if scheme not in VERTICAL_SCHEMES:
        raise UnsupportedSchemeError(
            f"crypto.scheme={scheme!r}: the vertical protocols run with "
            f"{', '.join(VERTICAL_SCHEMES)} only so far; set crypto.scheme: {DEFAULT_SCHEME}"
        )
    return scheme


def crypto_fields(crypto: Mapping[str, Any]) -> dict[str, Any]:
    """:data:`CRYPTO_FIELDS` of a job's ``crypto`` section, with their defaults.

    Raises
    ------
    UnsupportedSchemeError
        If the section names a scheme the vertical protocols do not run with.
    """
    check_vertical_scheme(crypto)
    return {
        "key_bits": int(crypto.get("key_bits", paillier.DEFAULT_KEY_BITS)),
        "insecure_test_keys": bool(crypto.get("insecure_test_keys", False)),
    }


class KeyPair:
    """A party's Paillier key pair, kept in its own party store between messages."""

    def __init__(self, public: paillier.PublicKey, private: paillier.PrivateKey) -> None:
        self.public = public
        self.private = private

    @classmethod
    def generate(cls, key_bits: int, *, allow_insecure_test_keys: bool = False) -> KeyPair:
        """A fresh key pair (2048 bits unless the caller allows test keys)."""
        public, private = paillier.generate_keypair(
            key_bits, allow_insecure_test_keys=allow_insecure_test_keys
        )
        return cls(public, private)

    @classmethod
    def for_node(cls, limits: NodeLimits, requested_bits: int) -> KeyPair:
        """A fresh key pair of the size a job asks for, never below the node's own floor."""
        return cls.generate(
            limits.key_bits_for(requested_bits),
            allow_insecure_test_keys=limits.allow_insecure_test_keys,
        )

    @property
    def fingerprint(self) -> str:
        """Short identifier of the public key."""
        return self.public.fingerprint

    def save(self, store: PartyStore, *, prefix: str) -> None:
        """Keep the key pair in the party's own store under ``prefix`` (never sent)."""
        store.put_json(f"{prefix}.public", self.public.to_bytes().hex())
        store.put_array(
            f"{prefix}.secret", np.frombuffer(self.private.to_secret_bytes(), dtype=np.uint8)
        )

    @classmethod
    def load(
        cls, store: PartyStore, *, prefix: str, allow_insecure_test_keys: bool = False
    ) -> KeyPair:
        """Restore the key pair saved by :meth:`save` under the same ``prefix``.

        Raises
        ------
        ProtocolError
            If the party has no key pair under ``prefix`` (the protocol's setup has not run).
        """
        raw = store.get_json(f"{prefix}.public")
        if raw is None:
            raise ProtocolError("this party has no key pair: the protocol's setup has not run")
        public = paillier.PublicKey.from_bytes(
            bytes.fromhex(raw), allow_insecure_test_keys=allow_insecure_test_keys
        )
        private = paillier.PrivateKey.from_secret_bytes(
            public, store.get_array(f"{prefix}.secret").astype(np.uint8).tobytes()
        )
        return cls(public, private)

    @staticmethod
    def forget(store: PartyStore, *, prefix: str) -> None:
        """Delete the key pair from the store and key-derived tables from memory (at the end)."""
        store.delete(f"{prefix}.secret")
        store.delete(f"{prefix}.public")
        paillier.forget_private_tables()


def peer_public_key(raw: bytes | str, limits: NodeLimits, whose: str) -> paillier.PublicKey:
    """A peer's public key (bytes or their hex), refused unless this node's policy accepts it.

    Raises
    ------
    PolicyRefusalError
        If the key is shorter than the node's ``crypto.min_key_bits``, or a test key the node
        does not allow (see :meth:`models.guard.NodeLimits.check_key`).
    """
    data = bytes.fromhex(raw) if isinstance(raw, str) else raw
    key = paillier.PublicKey.from_bytes(
        data, allow_insecure_test_keys=limits.allow_insecure_test_keys
    )
    limits.check_key(key.key_bits, whose)
    return key
