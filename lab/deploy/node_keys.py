"""SuperNode authentication keys: one EC key pair per party node.

Flower 1.41's CLI-managed node authentication: the SuperLink starts with
``--enable-supernode-auth`` and accepts a SuperNode only if its public key was registered
through the Control API (what ``flwr supernode register`` does). The SuperNode signs its
requests with its private key (``--auth-supernode-private-key``, OpenSSH format). Keys are
NIST P-384 (Flower accepts NIST curves only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lab.deploy.tls import write_private


@dataclass(frozen=True)
class NodeKey:
    """A party node's key pair on disk."""

    private_key: Path
    public_key: Path

    def public_bytes(self) -> bytes:
        """The public key in Flower's wire form (X.509 SubjectPublicKeyInfo, PEM)."""
        from flwr.supercore.primitives.asymmetric import public_key_to_bytes

        key = serialization.load_ssh_public_key(self.public_key.read_bytes())
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError(f"{self.public_key} is not an EC public key")
        raw: bytes = public_key_to_bytes(key)
        return raw


def generate_node_key(folder: Path, name: str) -> NodeKey:
    """Write ``<name>`` (private, 0600) and ``<name>.pub`` (OpenSSH) into ``folder``."""
    key = ec.generate_private_key(ec.SECP384R1())
    pair = NodeKey(folder / name, folder / f"{name}.pub")
    write_private(
        pair.private_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    pair.public_key.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + f" {name}\n".encode()
    )
    return pair
