"""Requests signed with a party's SuperNode key, for the coordinator's job endpoint.

A party proves who it is with the key pair its SuperNode already authenticates with: the
coordinator holds every admitted party's public key (``parties/N.pub``, handed over by the
party's operator), so no new secret is exchanged. A request is a JSON body (party, action,
time, a random nonce, arguments) and an ECDSA P-384 / SHA-384 signature over its exact bytes.
The coordinator accepts a body only within :data:`MAX_SKEW` seconds of its own clock and each
nonce once (:class:`ReplayGuard`), so a captured request cannot be replayed later; TLS keeps
it from being read in transit. The coordinator keeps the nonces it saw in a database file of
its home, so a restart within a request's validity window does not let it be replayed.
"""

from __future__ import annotations

import base64
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lab.deploy.errors import DeploymentError

#: Seconds a signed request stays valid (clock difference plus transit).
MAX_SKEW = 300.0


class RequestRefusedError(DeploymentError):
    """A request whose signature, party, age or nonce the coordinator does not accept."""


def sign_request(private_key: Path, party: str, action: str, args: Mapping[str, Any]) -> bytes:
    """The wire form of one request: ``{"body": ..., "signature": ...}`` as JSON bytes."""
    key = serialization.load_ssh_private_key(private_key.read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise DeploymentError(f"{private_key} is not an EC private key")
    body = json.dumps(
        {
            "party": party,
            "action": action,
            "time": time.time(),
            "nonce": secrets.token_hex(16),
            "args": dict(args),
        },
        sort_keys=True,
    )
    signature = key.sign(body.encode(), ec.ECDSA(hashes.SHA384()))
    return json.dumps({"body": body, "signature": base64.b64encode(signature).decode()}).encode()


class ReplayGuard:
    """Nonces seen within the validity window, in memory or in a file that outlives the process.

    The coordinator's job endpoint keeps them in a sqlite file of its home (``path``).

    A nonce is kept ``2 * max_skew`` seconds after it was seen: a replay must still be within
    ``max_skew`` of the time it was signed, which was within ``max_skew`` of the first sight.

    Parameters
    ----------
    path : Path, optional
        The database file (created if missing); ``None`` keeps the nonces in memory only.
    max_skew : float
        Seconds a request stays valid (:data:`MAX_SKEW`).
    """

    def __init__(self, path: Path | None = None, max_skew: float = MAX_SKEW) -> None:
        self.max_skew = max_skew
        self.path = path
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        if path is not None:
            with self._connect() as conn:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS seen_nonces "
                    "(nonce TEXT PRIMARY KEY, seen REAL NOT NULL)"
                )

    def _connect(self) -> sqlite3.Connection:
        assert self.path is not None
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")  # a nonce accepted is on disk before it is used
        return conn

    def check(self, nonce: str, sent: float, now: float | None = None) -> None:
        """Accept ``nonce`` once, if ``sent`` is within the window of ``now``."""
        now = time.time() if now is None else now
        if abs(now - sent) > self.max_skew:
            raise RequestRefusedError(
                f"the request is {now - sent:+.0f} s off the coordinator's clock "
                f"(at most {self.max_skew:.0f} s); check both hosts' clocks"
            )
        with self._lock:
            fresh = self._remember(nonce, now) if self.path else self._remember_here(nonce, now)
        if not fresh:
            raise RequestRefusedError("the request was already used (replay)")

    def _remember_here(self, nonce: str, now: float) -> bool:
        for old in [n for n, t in self._seen.items() if now - t > 2 * self.max_skew]:
            del self._seen[old]
        if nonce in self._seen:
            return False
        self._seen[nonce] = now
        return True

    def _remember(self, nonce: str, now: float) -> bool:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM seen_nonces WHERE seen < ?", (now - 2 * self.max_skew,))
                conn.execute("INSERT INTO seen_nonces VALUES (?, ?)", (nonce, now))
            except sqlite3.IntegrityError:
                conn.execute("ROLLBACK")
                return False
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return True
        finally:
            conn.close()


def verify_request(
    raw: bytes, public_keys: Mapping[str, Path], guard: ReplayGuard
) -> tuple[str, str, dict[str, Any]]:
    """Check one request and return ``(party, action, args)``.

    Raises
    ------
    RequestRefusedError
        Malformed, from a party with no admitted key, badly signed, too old, or replayed.
    """
    try:
        envelope = json.loads(raw)
        body = str(envelope["body"])
        signature = base64.b64decode(str(envelope["signature"]), validate=True)
        payload = json.loads(body)
        party = str(payload["party"])
        action = str(payload["action"])
        sent = float(payload["time"])
        nonce = str(payload["nonce"])
        args = dict(payload["args"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RequestRefusedError(f"malformed request ({type(exc).__name__})") from None
    path = public_keys.get(party)
    if path is None:
        raise RequestRefusedError(f"party '{party}' is not admitted on this coordinator")
    key = serialization.load_ssh_public_key(path.read_bytes())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise RequestRefusedError(f"the admitted key of '{party}' is not an EC key")
    try:
        key.verify(signature, body.encode(), ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise RequestRefusedError(f"the request is not signed by party '{party}'") from None
    guard.check(nonce, sent)
    return party, action, args
