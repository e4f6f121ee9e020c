"""Key pairs of the vertical protocols (Paillier, or OU where a protocol runs with it).

Both vertical protocols keep a key pair between messages: SecureBoost's bank and hetero LR's
bank and platforms. The secret half lives only in its owner's own store (node-local state),
never in a model, a log or a message, and is forgotten when the protocol ends. The size of a key
a node makes or accepts is that node's own decision (:class:`~models.guard.NodeLimits`), and
so is the scheme (``crypto.allowed_schemes``): a peer's key is checked against it by its own tag.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.guard import NodeLimits
from models.protocol import PartyStore, ProtocolError
from secure_agg import paillier, precompute
from secure_agg.backends import HEBackend
from secure_agg.schemes import DEFAULT_SCHEME, SCHEMES, HEScheme, get_scheme, scheme_of_public_key

#: The fields a vertical job's params take from the job's ``crypto`` section, never from its
#: ``model`` section.
CRYPTO_FIELDS = ("key_bits", "insecure_test_keys", "scheme")


class UnsupportedSchemeError(ProtocolError):
    """A job or a peer's key uses a homomorphic scheme the protocol does not run with."""


class JobKeyMismatchError(ProtocolError):
    """A peer's key is not of the scheme or size of the job this node approved."""


def check_key_matches_job(
    scheme: str, key_bits: int, crypto: Mapping[str, Any], supported: Sequence[str], whose: str
) -> None:
    """Refuse a peer's key that is not what the approved job's ``crypto`` section names.

    The key must be of the job's ``crypto.scheme`` (default
    :data:`~secure_agg.schemes.DEFAULT_SCHEME`) and have at least its ``crypto.key_bits``: a
    node approves a job, and a peer must not swap in another scheme or a shorter key later.

    Raises
    ------
    JobKeyMismatchError
        Naming the key's scheme and size and the job's setting.
    """
    job = crypto_fields(crypto, supported)
    if scheme != job["scheme"]:
        raise JobKeyMismatchError(
            f"{whose}: a {scheme!r} key, but the job this node approved has crypto.scheme="
            f"{job['scheme']!r}"
        )
    if key_bits < job["key_bits"]:
        raise JobKeyMismatchError(
            f"{whose}: {key_bits} bits, but the job this node approved has crypto.key_bits="
            f"{job['key_bits']}"
        )


def check_scheme_supported(scheme: str, supported: Sequence[str], what: str) -> str:
    """``scheme`` if the protocol runs with it (``supported``), else a clear refusal.

    Raises
    ------
    UnsupportedSchemeError
        Naming the scheme and the supported ones: nothing silently runs another scheme.
    """
    if scheme not in supported:
        raise UnsupportedSchemeError(
            f"{what}={scheme!r}: this protocol runs with {', '.join(supported)} only; "
            f"set crypto.scheme: {supported[0]}"
        )
    return scheme


def crypto_fields(
    crypto: Mapping[str, Any], schemes: Sequence[str] = (DEFAULT_SCHEME,)
) -> dict[str, Any]:
    """:data:`CRYPTO_FIELDS` of a job's ``crypto`` section, with their defaults.

    Parameters
    ----------
    crypto : mapping
        The job's ``crypto`` section.
    schemes : sequence of str
        The homomorphic schemes the calling protocol runs with.

    Raises
    ------
    UnsupportedSchemeError
        If the section names a scheme outside ``schemes``.
    """
    scheme = str(crypto.get("scheme", DEFAULT_SCHEME))
    return {
        "key_bits": int(crypto.get("key_bits", paillier.DEFAULT_KEY_BITS)),
        "insecure_test_keys": bool(crypto.get("insecure_test_keys", False)),
        "scheme": check_scheme_supported(scheme, schemes, "crypto.scheme"),
    }


class KeyPair:
    """A party's key pair of one homomorphic scheme, kept in its own party store between messages.

    ``public`` and ``private`` are the scheme's own key classes (:mod:`secure_agg.paillier` by
    default, :mod:`secure_agg.ou`); :attr:`backend` operates on them.
    """

    def __init__(self, public: Any, private: Any, scheme: str = DEFAULT_SCHEME) -> None:
        self.scheme: HEScheme = get_scheme(scheme)
        self.public = public
        self.private = private

    @property
    def backend(self) -> HEBackend:
        """The scheme's operations (:mod:`secure_agg.backends`)."""
        return self.scheme.backend

    @classmethod
    def generate(
        cls, key_bits: int, *, scheme: str = DEFAULT_SCHEME, allow_insecure_test_keys: bool = False
    ) -> KeyPair:
        """A fresh key pair (2048 bits unless the caller allows test keys)."""
        public, private = get_scheme(scheme).backend.generate_keypair(
            key_bits, allow_insecure_test_keys=allow_insecure_test_keys
        )
        return cls(public, private, scheme)

    @classmethod
    def for_node(
        cls, limits: NodeLimits, requested_bits: int, scheme: str = DEFAULT_SCHEME
    ) -> KeyPair:
        """A fresh key pair of the size a job asks for, never below the node's own floor.

        Raises
        ------
        PolicyRefusalError
            If the node's policy does not allow ``scheme`` (``crypto.allowed_schemes``).
        """
        limits.check_scheme(scheme, "this node's own key pair")
        return cls.generate(
            limits.key_bits_for(requested_bits),
            scheme=scheme,
            allow_insecure_test_keys=limits.allow_insecure_test_keys,
        )

    @property
    def fingerprint(self) -> str:
        """Short identifier of the public key."""
        return str(self.public.fingerprint)

    def save(self, store: PartyStore, *, prefix: str) -> None:
        """Keep the key pair in the party's own store under ``prefix`` (never sent)."""
        store.put_json(f"{prefix}.public", self.public.to_bytes().hex())
        store.put_json(f"{prefix}.scheme", self.scheme.name)
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
        scheme = str(store.get_json(f"{prefix}.scheme") or DEFAULT_SCHEME)
        backend = get_scheme(scheme).backend
        public = backend.public_from_bytes(
            bytes.fromhex(raw), allow_insecure_test_keys=allow_insecure_test_keys
        )
        private = backend.private_from_secret_bytes(
            public, store.get_array(f"{prefix}.secret").astype(np.uint8).tobytes()
        )
        return cls(public, private, scheme)

    @staticmethod
    def forget(store: PartyStore, *, prefix: str) -> None:
        """Delete the key pair from the store and key-derived state from memory (at the end).

        Key-derived state: the schemes' private tables and precomputed encryption randomness
        (:mod:`secure_agg.precompute`).
        """
        precompute.forget_pools()
        store.delete(f"{prefix}.secret")
        store.delete(f"{prefix}.public")
        store.delete(f"{prefix}.scheme")
        for scheme in SCHEMES.values():
            scheme.backend.forget_private_tables()


def peer_public_key(raw: bytes | str, limits: NodeLimits, whose: str) -> paillier.PublicKey:
    """A peer's Paillier public key (bytes or their hex), refused unless this node accepts it.

    For protocols that run with Paillier only (hetero LR); see :func:`peer_scheme_key`.

    Raises
    ------
    PolicyRefusalError
        If the key is shorter than the node's ``crypto.min_key_bits``, longer than its
        ``crypto.max_key_bits``, or a test key the node does not allow (see
        :meth:`models.guard.NodeLimits.check_key`).
    """
    data = bytes.fromhex(raw) if isinstance(raw, str) else raw
    key = paillier.PublicKey.from_bytes(
        data, allow_insecure_test_keys=limits.allow_insecure_test_keys
    )
    limits.check_key(key.key_bits, whose)
    return key


def peer_scheme_key(
    raw: bytes | str, limits: NodeLimits, whose: str, supported: Sequence[str]
) -> tuple[HEScheme, Any]:
    """A peer's public key of any scheme the protocol runs with and this node's policy allows.

    The scheme is read from the key itself (its tag), not from what the peer says it is, and
    checked against this node's own ``crypto.allowed_schemes`` before the key is parsed.

    Raises
    ------
    PolicyRefusalError
        If this node's policy does not allow the key's scheme, or its size (``check_key``:
        ``crypto.min_key_bits`` to ``crypto.max_key_bits``, checked before any table is built).
    UnsupportedSchemeError
        If the protocol does not run with the key's scheme.
    ProtocolError
        If the bytes are no public key of a known scheme.
    """
    data = bytes.fromhex(raw) if isinstance(raw, str) else raw
    try:
        scheme = scheme_of_public_key(data)
    except ValueError as exc:
        raise ProtocolError(f"{whose}: {exc}") from None
    limits.check_scheme(scheme.name, whose)
    check_scheme_supported(scheme.name, supported, f"{whose}: scheme")
    # Parsed without the library's floor so that the node's own check names its policy setting.
    key = scheme.backend.public_from_bytes(data, allow_insecure_test_keys=True)
    limits.check_key(int(key.key_bits), whose)
    return scheme, key
