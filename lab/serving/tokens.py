"""Per-bank credentials of the platform's scoring endpoint, stored hashed in the platform's domain.

``lab platform issue-token --bank NAME`` draws 256 random bits (:func:`secrets.token_urlsafe`),
prints the token once and stores only its SHA-256 in ``<platform dir>/serving/tokens.json``
(mode 0600) with the purposes the bank may score for. Re-issuing replaces the bank's token, so a
leaked token is revoked by issuing a new one.

A plain SHA-256 (no salt, no slow KDF) is enough here because the token is a uniformly random
256-bit secret, not a password: there is no dictionary to grind. Verification hashes the
presented token and compares it with *every* stored hash using :func:`hmac.compare_digest`,
without stopping at a match, so timing reveals neither which bank matched nor how much of a
hash did.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lab.governance._common import atomic_replace, iso, utc_now
from lab.governance.vocabulary import PURPOSES, check_name, check_purpose
from lab.serving.errors import AuthenticationError, ServingSetupError

#: Entropy of an issued token, bytes (256 bits).
TOKEN_BYTES = 32
#: Prefix marking a lab scoring token (helps secret scanners; carries no information).
TOKEN_PREFIX = "labsc_"  # noqa: S105 - a public prefix, not a secret
#: Purposes a token allows unless ``issue`` is told otherwise: scoring, not model development.
DEFAULT_PURPOSES: tuple[str, ...] = tuple(p for p in PURPOSES if p != "credit_risk_modeling")


def token_digest(token: str) -> str:
    """Hex SHA-256 of a token (what the store keeps)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class BankCredential:
    """What the platform knows about one bank's credential (never the token itself)."""

    bank: str
    digest: str
    purposes: frozenset[str]
    issued_at: str


class TokenStore:
    """The token file of one platform directory.

    Parameters
    ----------
    path : Path
        ``tokens.json``; created by :meth:`issue`. Re-read whenever its modification time
        changes, so a token issued (or replaced) while the endpoint runs takes effect at once.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._banks: dict[str, BankCredential] = {}

    @classmethod
    def in_dir(cls, platform_dir: Path) -> TokenStore:
        """The store of a platform directory: ``<dir>/serving/tokens.json``."""
        return cls(platform_dir / "serving" / "tokens.json")

    def issue(self, bank: str, purposes: Iterable[str] = DEFAULT_PURPOSES) -> str:
        """Create (or replace) ``bank``'s token and return it; only its hash is stored."""
        check_name(bank, "bank name")
        allowed = sorted({check_purpose(p) for p in purposes})
        if not allowed:
            raise ServingSetupError(f"token for bank {bank!r} names no purpose; pass --purpose")
        token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
        with self._lock:
            data = self._read_raw()
            data["banks"][bank] = {
                "sha256": token_digest(token),
                "purposes": allowed,
                "issued_at": iso(utc_now()),
            }
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(self.path.parent, 0o700)
            atomic_replace(self.path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
            os.chmod(self.path, 0o600)
            self._stamp = None
        return token

    def banks(self) -> dict[str, BankCredential]:
        """Every bank holding a token (reloaded if the file changed)."""
        with self._lock:
            self._refresh()
            return dict(self._banks)

    def authenticate(self, token: str | None) -> BankCredential:
        """Return the credential ``token`` belongs to.

        Raises
        ------
        AuthenticationError
            If no token was presented or no bank holds it.
        """
        if not token:
            raise AuthenticationError(
                "no credential; send 'Authorization: Bearer <token>' with the token the "
                "platform issued to your bank (lab platform issue-token)"
            )
        presented = token_digest(token).encode("ascii")
        found: BankCredential | None = None
        for credential in self.banks().values():
            # No early exit: every stored hash is compared.
            if hmac.compare_digest(presented, credential.digest.encode("ascii")):
                found = credential
        if found is None:
            raise AuthenticationError(
                "invalid credential; ask the platform to issue your bank a new token"
            )
        return found

    def _read_raw(self) -> dict[str, dict[str, dict[str, object]]]:
        if not self.path.is_file():
            return {"banks": {}}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ServingSetupError(
                f"{self.path}: unreadable token file ({exc}); re-issue the banks' tokens"
            ) from exc
        if not isinstance(data, dict) or not isinstance(data.get("banks"), dict):
            raise ServingSetupError(f"{self.path}: not a token file; re-issue the banks' tokens")
        return data

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp is not None and stamp == self._stamp:
            return
        raw = self._read_raw()
        self._banks = {
            bank: BankCredential(
                bank=bank,
                digest=str(entry["sha256"]),
                purposes=frozenset(str(p) for p in entry["purposes"]),  # type: ignore[attr-defined]
                issued_at=str(entry["issued_at"]),
            )
            for bank, entry in raw["banks"].items()
        }
        self._stamp = stamp
