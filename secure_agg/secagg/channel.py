"""Pairwise keys between clients: X25519 key pairs, agreement, and share encryption.

Each client makes two X25519 key pairs per round (RFC 7748): one *encryption* pair, whose
agreement with a peer keys the channel its Shamir shares travel on (through the server), and one
*mask* pair, whose agreement ``s_uv`` seeds the pairwise mask. They are separate so that
revealing a dropped client's mask key (which unmasking needs) reveals nothing about the shares it
exchanged.

Share encryption
----------------
``AES-256-GCM`` (NIST SP 800-38D) under

    K_{u->v} = HKDF-SHA256(X25519(c_u, C_v), info = domain || round_id || u || v)

with a fresh 96-bit random nonce per message and associated data ``domain || round_id || u || v``.
The key is directional and per round; the associated data makes a ciphertext fail
authentication if it is replayed in another round, attributed to another sender, or delivered
to another recipient. The server, which relays the ciphertexts, learns nothing from them
(IND-CCA of AES-GCM under a key it cannot compute without ``c_u`` or ``c_v``).
"""

from __future__ import annotations

from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secure_agg.secagg import _entropy, shamir
from secure_agg.secagg.errors import AuthenticationError, MessageError

#: Bytes of an X25519 public or private key.
KEY_BYTES = 32

#: Domain tag of the share channel's key derivation and associated data.
SHARE_DOMAIN = b"lab/secagg/v1/share-encryption"

#: AES-GCM nonce bytes (random per message).
NONCE_BYTES = 12

#: AES-GCM tag bytes.
TAG_BYTES = 16

#: Plaintext of one encrypted message: the share of ``b_u`` then the share of the mask key.
PLAINTEXT_BYTES = 2 * shamir.SHARE_BYTES

#: Bytes of one encrypted share pair on the wire: nonce, ciphertext, tag.
CIPHERTEXT_BYTES = NONCE_BYTES + PLAINTEXT_BYTES + TAG_BYTES


class KeyPair:
    """An X25519 key pair whose private half comes from the OS CSPRNG.

    The private key never leaves the object except through :meth:`secret_bytes` (to be Shamir
    shared); the object cannot be pickled and its ``repr`` shows no key material.
    """

    __slots__ = ("_private", "public_bytes")

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private
        self.public_bytes: bytes = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh key pair (32 bytes from ``secrets``)."""
        return cls(X25519PrivateKey.from_private_bytes(_entropy.random_bytes(KEY_BYTES)))

    @classmethod
    def from_secret_bytes(cls, raw: bytes) -> KeyPair:
        """Rebuild a key pair from :meth:`secret_bytes` (the server, after reconstruction)."""
        if len(raw) != KEY_BYTES:
            raise MessageError(f"an X25519 private key is {KEY_BYTES} bytes, got {len(raw)}")
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def secret_bytes(self) -> bytes:
        """The raw private key. Never log or send it except as encrypted Shamir shares."""
        return self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def agree(self, peer_public: bytes) -> bytes:
        """X25519 with a peer's public key.

        Raises
        ------
        MessageError
            If the peer's key is not 32 bytes or is a low-order point (all-zero agreement).
        """
        if len(peer_public) != KEY_BYTES:
            raise MessageError(f"an X25519 public key is {KEY_BYTES} bytes, got {len(peer_public)}")
        try:
            return self._private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError as exc:
            raise MessageError("a peer's public key is a low-order point") from exc

    def __repr__(self) -> str:
        return "KeyPair(<secret>)"

    def __reduce__(self) -> Any:
        raise TypeError("a KeyPair must not be pickled")


def _binding(round_id: int, sender: int, recipient: int) -> bytes:
    return (
        len(SHARE_DOMAIN).to_bytes(2, "big")
        + SHARE_DOMAIN
        + round_id.to_bytes(8, "big")
        + sender.to_bytes(8, "big")
        + recipient.to_bytes(8, "big")
    )


def channel_key(shared_secret: bytes, *, round_id: int, sender: int, recipient: int) -> bytes:
    """``K_{sender->recipient}``: HKDF-SHA256 of the encryption keys' agreement."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=_binding(round_id, sender, recipient),
    ).derive(shared_secret)


def encrypt(
    shared_secret: bytes, plaintext: bytes, *, round_id: int, sender: int, recipient: int
) -> bytes:
    """``nonce || AES-256-GCM(K_{sender->recipient}, plaintext, aad)``."""
    key = channel_key(shared_secret, round_id=round_id, sender=sender, recipient=recipient)
    nonce = _entropy.random_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, _binding(round_id, sender, recipient))


def decrypt(
    shared_secret: bytes, ciphertext: bytes, *, round_id: int, sender: int, recipient: int
) -> bytes:
    """Inverse of :func:`encrypt`.

    Raises
    ------
    AuthenticationError
        If the ciphertext was altered, or belongs to another round, sender or recipient.
    """
    if len(ciphertext) < NONCE_BYTES + TAG_BYTES:
        raise AuthenticationError(f"share ciphertext from client {sender} is too short")
    key = channel_key(shared_secret, round_id=round_id, sender=sender, recipient=recipient)
    try:
        return AESGCM(key).decrypt(
            ciphertext[:NONCE_BYTES],
            ciphertext[NONCE_BYTES:],
            _binding(round_id, sender, recipient),
        )
    except InvalidTag as exc:
        raise AuthenticationError(
            f"encrypted shares from client {sender} to client {recipient} failed authentication "
            f"in round {round_id} (tampered, replayed or misaddressed)"
        ) from exc
