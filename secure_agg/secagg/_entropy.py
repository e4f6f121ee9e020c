"""The one source of randomness of the secure-aggregation package: the OS CSPRNG via ``secrets``.

Every key, seed, nonce, Shamir coefficient, neighbour graph and stochastic-rounding draw goes
through these two functions, so that a reviewer can check the randomness in one place (and tests
can replay a run by substituting them).
"""

from __future__ import annotations

import secrets


def random_bytes(n: int) -> bytes:
    """``n`` bytes from the operating system's CSPRNG."""
    return secrets.token_bytes(n)


def random_below(n: int) -> int:
    """A uniform integer in ``[0, n)`` from the operating system's CSPRNG."""
    return secrets.randbelow(n)
