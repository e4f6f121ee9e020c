"""A private certificate authority and the SuperLink's server certificate, for local use.

Everything is generated with ``cryptography`` into one folder: ``ca.crt`` (the root every
party trusts), ``ca.key`` (kept only to issue certificates; 0600), ``server.crt`` and
``server.key`` (0600) for the coordinator's SuperLink, valid for ``127.0.0.1`` and
``localhost``. The same server certificate serves each SuperNode's local Runtime API
(loopback only), so every link is TLS.

What it gives up: this CA is meant for a loopback or lab deployment; a production
deployment uses each organisation's PKI and never ships the CA key next to the services.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Validity of the generated certificates. Short on purpose: a lab deployment is re-created.
VALID_DAYS = 30
#: Names the server certificate is valid for (the deployment listens on loopback only).
SERVER_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class TlsFiles:
    """Paths of a deployment's TLS material."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def in_folder(cls, folder: Path) -> TlsFiles:
        """The standard file names inside ``folder``."""
        return cls(
            ca_cert=folder / "ca.crt",
            ca_key=folder / "ca.key",
            server_cert=folder / "server.crt",
            server_key=folder / "server.key",
        )


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file readable by its owner only (0600 from creation)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _subject_alternative_names(hosts: tuple[str, ...]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def generate_tls(folder: Path, *, hosts: tuple[str, ...] = SERVER_HOSTS) -> TlsFiles:
    """Create a private CA and a server certificate for ``hosts`` in ``folder``.

    Parameters
    ----------
    folder : Path
        Where to write ``ca.crt``, ``ca.key``, ``server.crt``, ``server.key`` (created).
    hosts : tuple of str
        IP addresses or DNS names the server certificate is valid for.

    Returns
    -------
    TlsFiles
        The written paths; private keys are mode 0600.
    """
    files = TlsFiles.in_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    not_before = now - dt.timedelta(minutes=5)
    not_after = now + dt.timedelta(days=VALID_DAYS)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "joint-modeling lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, "joint-modeling lab local CA"),
        ]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA384())
    )

    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(_subject_alternative_names(hosts), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA384())
    )

    files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    write_private(files.ca_key, _pem_key(ca_key))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    write_private(files.server_key, _pem_key(server_key))
    return files
