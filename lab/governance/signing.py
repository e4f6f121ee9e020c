"""The audit log's signing key and witness, held outside the audited folder.

Every entry of an audit log is signed with Ed25519 (RFC 8032, via ``cryptography``) by the party
that keeps the log. The key pair and a *witness* of the last entry written live in the party's
key folder, not in ``$LAB_HOME/audit``::

    $LAB_KEYS/audit-<log id>/ed25519.key   private key, PKCS#8 PEM, mode 0600 (never logged)
    $LAB_KEYS/audit-<log id>/ed25519.pub   public key, base64 of the 32 raw bytes
    $LAB_KEYS/audit-<log id>/witness.json  seq and hash of the last entry, and where signing began

``$LAB_KEYS`` defaults to ``$XDG_CONFIG_HOME/lab/keys`` (``~/.config/lab/keys``); ``<log id>`` is
derived from the log's absolute path, so one key folder serves every lab home of the account
and each log has its own key. A key folder inside the audited folder is refused.

What this adds, and what it still trusts
----------------------------------------
Whoever can write ``$LAB_HOME/audit`` but cannot read the private key cannot forge or re-chain
an entry (the signature breaks), and whoever cannot write the key folder cannot hide a
truncation or the deletion of the whole log (the witness remembers the last seq). Whoever holds
the private key *and* can write the witness can still rewrite the log consistently: that is the
remaining trust, and what anchors kept elsewhere (``lab audit anchor``, the head in each job's
MLflow run, the peer party's log) defend against.

Durability: the witness is rewritten in place (one ``pwrite`` of a fixed 512-byte record, one
disk sector) after the log line and its head are durable, without an ``fsync`` of its own: it
costs no extra disk flush per entry. After a power cut it may lag behind the log (the last
entries before the cut), never run ahead of it; a lagging witness only narrows what it proves.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from lab.governance.errors import AuditKeyError

#: Environment variable naming the folder of the parties' audit keys.
KEYS_ENV = "LAB_KEYS"

PRIVATE_NAME = "ed25519.key"
PUBLIC_NAME = "ed25519.pub"
WITNESS_NAME = "witness.json"

#: Hex digits of a key fingerprint (SHA-256 of the raw public key): 128 bits.
FINGERPRINT_HEX = 32

#: Size of the witness record, bytes: one disk sector, so an in-place write is not torn.
WITNESS_BYTES = 512


def keys_root() -> Path:
    """The folder holding every audit key folder: ``$LAB_KEYS``, else the user's config dir."""
    raw = os.environ.get(KEYS_ENV)
    if raw:
        return Path(raw).expanduser().resolve()
    config = os.environ.get("XDG_CONFIG_HOME")
    base = Path(config).expanduser() if config else Path.home() / ".config"
    return (base / "lab" / "keys").resolve()


def log_id(log_path: Path) -> str:
    """Identifier of a log in the key folder: 16 hex digits of SHA-256 of its absolute path."""
    return hashlib.sha256(str(log_path.resolve()).encode("utf-8")).hexdigest()[:16]


def fingerprint(public_raw: bytes) -> str:
    """Short identifier of a public key: the first hex digits of SHA-256 of its raw bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:FINGERPRINT_HEX]


@dataclass(frozen=True)
class PublicKey:
    """A verifying key and where it came from.

    Attributes
    ----------
    raw : bytes
        The 32-byte Ed25519 public key.
    source : str
        Where it was read (a file, an anchor), for reports.
    """

    raw: bytes
    source: str

    @property
    def fingerprint(self) -> str:
        """See :func:`fingerprint`."""
        return fingerprint(self.raw)

    @property
    def b64(self) -> str:
        """Base64 of the raw key (the form anchors and ``ed25519.pub`` carry)."""
        return base64.b64encode(self.raw).decode("ascii")

    @classmethod
    def from_b64(cls, text: str, source: str) -> PublicKey:
        """Parse a base64 public key.

        Raises
        ------
        AuditKeyError
            If the text is not base64 of 32 bytes.
        """
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise AuditKeyError(f"{source}: the public key is not base64 ({exc})") from exc
        if len(raw) != 32:
            raise AuditKeyError(
                f"{source}: an Ed25519 public key has 32 bytes, this one {len(raw)}"
            )
        return cls(raw, source)

    def verify(self, signature_b64: str, digest_hex: str) -> bool:
        """Whether ``signature_b64`` is this key's signature of the entry hash ``digest_hex``.

        Only the canonical base64 of a signature verifies: base64's last character before the
        padding carries unused bits, so several texts decode to the same bytes, and a changed
        character of the log must never go unnoticed.
        """
        try:
            signature = base64.b64decode(signature_b64, validate=True)
            if base64.b64encode(signature).decode("ascii") != signature_b64:
                return False
            message = bytes.fromhex(digest_hex)
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True


@dataclass(frozen=True)
class Witness:
    """The last entry a log's writer signed, as remembered in its key folder.

    Attributes
    ----------
    seq, hash : int, str
        The last entry written (0 and ``""`` before the first signed one).
    signed_from : int
        First seq written with this key (earlier entries predate signing).
    key : str
        Fingerprint of the signing key.
    log : str
        The log's absolute path.
    """

    seq: int
    hash: str
    signed_from: int
    key: str
    log: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "seq": self.seq,
            "hash": self.hash,
            "signed_from": self.signed_from,
            "key": self.key,
            "log": self.log,
        }


class AuditKeys:
    """The key folder of one audit log.

    Parameters
    ----------
    log_path : Path
        The log (``.../audit/log.jsonl``).
    root : Path, optional
        Folder of key folders; default :func:`keys_root`.

    Raises
    ------
    AuditKeyError
        If the key folder would lie inside the audited folder.
    """

    def __init__(self, log_path: Path, root: Path | None = None) -> None:
        self.log_path = log_path.resolve()
        base = (root if root is not None else keys_root()).resolve()
        self.folder = base / f"audit-{log_id(self.log_path)}"
        audited = self.log_path.parent
        if self.folder == audited or self.folder.is_relative_to(audited):
            raise AuditKeyError(
                f"the audit key folder {self.folder} is inside the audited folder {audited}; "
                f"set {KEYS_ENV} to a folder outside it (e.g. ~/.config/lab/keys)"
            )
        self._private: Ed25519PrivateKey | None = None

    def __repr__(self) -> str:
        return f"AuditKeys({str(self.folder)!r})"

    @property
    def private_path(self) -> Path:
        """The private key file (mode 0600)."""
        return self.folder / PRIVATE_NAME

    @property
    def public_path(self) -> Path:
        """The public key file."""
        return self.folder / PUBLIC_NAME

    @property
    def witness_path(self) -> Path:
        """The witness file."""
        return self.folder / WITNESS_NAME

    def exists(self) -> bool:
        """Whether this log has a key folder with a public key."""
        try:
            return self.public_path.is_file()
        except PermissionError:
            return False

    # -- signing (the log's writer) -------------------------------------------------------------

    def create(self, signed_from: int) -> PublicKey:
        """Create the key pair and an empty witness (signing starts at ``signed_from``).

        Raises
        ------
        AuditKeyError
            If a key already exists (keys are never replaced silently) or cannot be written.
        """
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o711)
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            fd = os.open(self.private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, pem)
                os.fsync(fd)
            finally:
                os.close(fd)
            raw = key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            public = PublicKey(raw, str(self.public_path))
            _replace(self.public_path, (public.b64 + "\n").encode("ascii"), 0o644)
            self.write_witness(
                Witness(signed_from - 1, "", signed_from, public.fingerprint, str(self.log_path))
            )
            _fsync(self.witness_path)
            _fsync(self.folder)
        except FileExistsError as exc:
            raise AuditKeyError(
                f"{self.private_path} already exists; an audit key is never replaced"
            ) from exc
        except OSError as exc:
            raise AuditKeyError(f"cannot create the audit key in {self.folder}: {exc}") from exc
        self._private = key
        return public

    def sign(self, digest_hex: str) -> str:
        """Base64 Ed25519 signature of an entry hash (hex).

        Raises
        ------
        AuditKeyError
            If the private key cannot be read.
        """
        if self._private is None:
            try:
                pem = self.private_path.read_bytes()
                loaded = serialization.load_pem_private_key(pem, password=None)
            except (OSError, ValueError, TypeError) as exc:
                raise AuditKeyError(
                    f"cannot read the audit signing key {self.private_path} "
                    f"({type(exc).__name__}); restore the key folder or point {KEYS_ENV} at it"
                ) from exc
            if not isinstance(loaded, Ed25519PrivateKey):
                raise AuditKeyError(f"{self.private_path} is not an Ed25519 private key")
            self._private = loaded
        signature = self._private.sign(bytes.fromhex(digest_hex))
        return base64.b64encode(signature).decode("ascii")

    def write_witness(self, witness: Witness) -> None:
        """Rewrite the witness in place: one ``pwrite`` of :data:`WITNESS_BYTES` (see above).

        Raises
        ------
        AuditKeyError
            If the record does not fit (a log path too long) or cannot be written.
        """
        text = json.dumps(witness.to_dict(), sort_keys=True)
        data = text.encode("utf-8")
        if len(data) >= WITNESS_BYTES:
            raise AuditKeyError(
                f"the witness of {witness.log} needs {len(data)} bytes (> {WITNESS_BYTES - 1}); "
                "use a shorter path for the lab home"
            )
        record = data + b" " * (WITNESS_BYTES - 1 - len(data)) + b"\n"
        try:
            fd = os.open(self.witness_path, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.pwrite(fd, record, 0)
            finally:
                os.close(fd)
        except OSError as exc:
            raise AuditKeyError(f"cannot write the witness {self.witness_path}: {exc}") from exc

    # -- reading (the writer and auditors) -------------------------------------------------------

    def public(self) -> PublicKey | None:
        """The public key, or ``None`` if this log has no key folder.

        Raises
        ------
        AuditKeyError
            If the public key file exists but is unreadable or malformed.
        """
        try:  # read every time: an append must notice a key folder that went away
            text = self.public_path.read_text("ascii")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise AuditKeyError(f"cannot read {self.public_path}: {exc}") from exc
        return PublicKey.from_b64(text, str(self.public_path))

    def witness(self) -> Witness | None:
        """The witness, or ``None`` if there is none.

        Raises
        ------
        AuditKeyError
            If the witness exists but is unreadable or malformed.
        """
        try:
            data = json.loads(self.witness_path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise AuditKeyError(f"cannot read the witness {self.witness_path}: {exc}") from exc
        try:
            witness = Witness(
                seq=int(data["seq"]),
                hash=str(data["hash"]),
                signed_from=int(data["signed_from"]),
                key=str(data["key"]),
                log=str(data["log"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AuditKeyError(f"{self.witness_path} is not a witness ({exc})") from exc
        return witness


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(path: Path, data: bytes, mode: int) -> None:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(name, mode)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
