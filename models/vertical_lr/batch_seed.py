"""The batch schedule's seed, drawn jointly so that no party chooses it alone.

Per batch the bank learns sums of a platform's partial logits over the batch's rows; a bank
that picked the seed could try seeds until the batches it wants come up (seed grinding).
Commit and reveal:

1. ``init``: the bank draws a 32-byte nonce from the OS CSPRNG and sends only its SHA-256
   (the commitment);
2. ``counts``: each platform answers with its own 32-byte share (drawn the same way), after
   the bank is bound to its nonce;
3. ``bins``: the bank reveals its nonce and every platform's share; each platform checks the
   nonce against the commitment and that its own share is there, and derives the seed itself.

The seed is the first 63 bits of ``SHA-256(nonce || share_1 || ... )``, shares in platform-name
order: as long as the bank or one platform draws honestly, nobody could choose it. What a party
learns: the nonce and the shares (random bytes) and the seed, which every party needs anyway.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping

from models.protocol import ProtocolError

_HEX32 = re.compile(r"^[0-9a-f]{64}$")


def draw() -> str:
    """A fresh 32-byte nonce or share, as 64 lowercase hex digits."""
    return secrets.token_hex(32)


def checked(value: object, what: str) -> str:
    """``value`` if it is 32 bytes as 64 lowercase hex digits (a nonce, share or commitment).

    Raises
    ------
    ProtocolError
        Naming ``what`` otherwise.
    """
    if not isinstance(value, str) or not _HEX32.fullmatch(value):
        raise ProtocolError(f"{what} must be 32 bytes as 64 lowercase hex digits")
    return value


def commitment(nonce: str) -> str:
    """SHA-256 of the bank's nonce (hex)."""
    return hashlib.sha256(bytes.fromhex(checked(nonce, "the bank's seed nonce"))).hexdigest()


def joint_seed(nonce: str, shares: Mapping[str, str]) -> int:
    """The schedule's seed from the bank's nonce and every platform's share.

    Raises
    ------
    ProtocolError
        If a value is not 32 bytes of hex.
    """
    digest = hashlib.sha256(bytes.fromhex(checked(nonce, "the bank's seed nonce")))
    for party in sorted(shares):
        digest.update(bytes.fromhex(checked(shares[party], f"platform '{party}''s seed share")))
    return int.from_bytes(digest.digest()[:8], "big") & (2**63 - 1)


def check_reveal(
    committed: str, nonce: str, shares: Mapping[str, str], party: str, own_share: str
) -> int:
    """A platform's check of the bank's reveal; returns the seed it derives itself.

    Raises
    ------
    ProtocolError
        If the nonce is not the one committed to, or this platform's share is missing or
        changed.
    """
    if not isinstance(nonce, str) or commitment(nonce) != committed:
        raise ProtocolError(
            "hetero_lr/bins reveals a seed nonce that is not the one the bank committed to in "
            "init: the bank may not choose the batch schedule"
        )
    if not isinstance(shares, Mapping) or shares.get(party) != own_share:
        raise ProtocolError(
            f"hetero_lr/bins leaves out or changes platform '{party}''s seed share: the bank "
            "may not choose the batch schedule"
        )
    return joint_seed(nonce, shares)
