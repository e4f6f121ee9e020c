"""Shamir secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

A secret ``s`` (read as a big-endian integer, so ``s < 2^256``) becomes the constant term of a
random polynomial ``f(X) = s + a_1 X + ... + a_{t-1} X^{t-1}`` over GF(p); the share of the party
with evaluation point ``x`` (a small positive integer) is ``(x, f(x))`` (Shamir, "How to share a
secret", CACM 1979). Any ``t`` shares determine ``f`` by Lagrange interpolation and so ``s = f(0)``.

What fewer than ``t`` shares reveal
-----------------------------------
Nothing: for any ``t - 1`` shares and *every* candidate secret ``s'`` there is exactly one
polynomial of degree ``< t`` through those shares with ``f(0) = s'``, and since ``a_1 .. a_{t-1}``
are uniform, each is equally likely. The secrecy is information-theoretic; it rests only on the
coefficients being uniform, which they are (``secrets.randbelow`` over the whole field).
:func:`combine` refuses to run on fewer than ``t`` shares rather than return a meaningless value.

The field
---------
``p = 2^521 - 1``, the Mersenne prime M521 (Robinson 1952, by the Lucas-Lehmer test), which is
also the field prime of the NIST curve P-521 (FIPS 186-4, SP 800-186). Any prime above ``2^256``
would hold a 32-byte secret; a Mersenne prime is the one nobody has to take on trust. A field
element takes 66 bytes.

Consistency
-----------
Given more than ``t`` shares, :func:`combine` interpolates from the first ``t`` and checks that
every further share lies on the same polynomial, so a corrupted share is reported
(:class:`BadShareError`) instead of silently yielding a wrong secret. With exactly ``t`` shares a
corrupted share cannot be detected; callers that can should verify the result (the protocol checks
a reconstructed mask key against its public key).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from secure_agg.secagg import _entropy
from secure_agg.secagg.errors import BadShareError, InputError, NotEnoughSharesError

#: The field prime: the Mersenne prime 2^521 - 1 (also the field of NIST P-521).
PRIME = 2**521 - 1

#: Bytes of a shared secret (an X25519 private key or a 32-byte seed).
SECRET_BYTES = 32

#: Bytes of a field element, big-endian.
FIELD_BYTES = (PRIME.bit_length() + 7) // 8

#: Bytes of an evaluation point ``x`` in a serialised share.
X_BYTES = 4

#: Bytes of a serialised share: ``x`` (4 bytes) then ``f(x)`` (66 bytes), both big-endian.
SHARE_BYTES = X_BYTES + FIELD_BYTES

#: Largest evaluation point (it must fit in :data:`X_BYTES`).
MAX_X = 2 ** (8 * X_BYTES) - 1


@dataclass(frozen=True, repr=False)
class Share:
    """One party's share ``(x, f(x))`` of a secret.

    A single share reveals nothing, but ``t`` of them reveal the secret, so a share is treated as
    key material: its ``repr`` hides ``y`` and it cannot be pickled.

    Parameters
    ----------
    x : int
        The evaluation point, in ``1 .. 2^32 - 1`` (never 0: ``f(0)`` is the secret).
    y : int
        ``f(x)``, in ``0 .. p - 1``.
    """

    x: int
    y: int

    def __post_init__(self) -> None:
        if type(self.x) is not int or not 1 <= self.x <= MAX_X:
            raise BadShareError(f"a share's x must be an int in 1..{MAX_X}, got {self.x!r}")
        if type(self.y) is not int or not 0 <= self.y < PRIME:
            raise BadShareError(f"share x={self.x}: y is not a field element")

    def to_bytes(self) -> bytes:
        """``x`` (4 bytes) then ``y`` (66 bytes), big-endian: :data:`SHARE_BYTES` in all."""
        return self.x.to_bytes(X_BYTES, "big") + self.y.to_bytes(FIELD_BYTES, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        """Parse :meth:`to_bytes`.

        Raises
        ------
        BadShareError
            If ``data`` is not :data:`SHARE_BYTES` long or holds no valid share.
        """
        if len(data) != SHARE_BYTES:
            raise BadShareError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
        return cls(int.from_bytes(data[:X_BYTES], "big"), int.from_bytes(data[X_BYTES:], "big"))

    def __repr__(self) -> str:
        return f"Share(x={self.x}, y=<secret>)"

    def __reduce__(self) -> Any:
        raise TypeError("a Shamir share must not be pickled; send Share.to_bytes() encrypted")


def split(secret: bytes, threshold: int, xs: Sequence[int]) -> list[Share]:
    """Share ``secret`` so that any ``threshold`` of the returned shares reconstruct it.

    Parameters
    ----------
    secret : bytes
        Exactly :data:`SECRET_BYTES` bytes.
    threshold : int
        ``t``: how many shares reconstruct (``1 <= t <= len(xs)``).
    xs : sequence of int
        Distinct evaluation points in ``1 .. 2^32 - 1``, one per share holder.

    Returns
    -------
    list of Share
        ``(x, f(x))`` for each ``x`` in ``xs``, in that order.

    Raises
    ------
    InputError
        On a secret of the wrong length, a threshold outside ``1..len(xs)``, or repeated or
        out-of-range evaluation points.
    """
    if len(secret) != SECRET_BYTES:
        raise InputError(f"a shared secret is {SECRET_BYTES} bytes, got {len(secret)}")
    points = list(xs)
    if len(set(points)) != len(points):
        raise InputError("evaluation points must be distinct")
    if any(type(x) is not int or not 1 <= x <= MAX_X for x in points):
        raise InputError(f"evaluation points must be ints in 1..{MAX_X}")
    if type(threshold) is not int or not 1 <= threshold <= len(points):
        raise InputError(f"threshold {threshold!r} must be in 1..{len(points)} (the share count)")
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [_entropy.random_below(PRIME) for _ in range(threshold - 1)]
    return [Share(x, _evaluate(coefficients, x)) for x in points]


def combine(shares: Sequence[Share], threshold: int) -> bytes:
    """Reconstruct the secret from at least ``threshold`` shares.

    Parameters
    ----------
    shares : sequence of Share
        At least ``threshold`` shares with distinct ``x``. Shares beyond the first ``threshold``
        are checked for consistency.
    threshold : int
        The ``t`` the secret was split with.

    Returns
    -------
    bytes
        The :data:`SECRET_BYTES`-byte secret.

    Raises
    ------
    NotEnoughSharesError
        If fewer than ``threshold`` shares are given (they carry no information on the secret).
    BadShareError
        On repeated evaluation points, shares that do not lie on one polynomial of degree
        ``< threshold``, or a result that is not a 32-byte value.
    """
    if type(threshold) is not int or threshold < 1:
        raise NotEnoughSharesError(f"threshold {threshold!r} must be a positive int")
    if len(shares) < threshold:
        raise NotEnoughSharesError(
            f"{len(shares)} shares given but {threshold} are needed; fewer reveal nothing"
        )
    xs = [share.x for share in shares]
    if len(set(xs)) != len(xs):
        raise BadShareError("two shares have the same evaluation point")
    base = list(shares[:threshold])
    weights = _lagrange_denominators_inverse([s.x for s in base])
    value = _interpolate(base, weights, 0)
    for extra in shares[threshold:]:
        if _interpolate(base, weights, extra.x) != extra.y:
            raise BadShareError(
                f"share x={extra.x} is inconsistent with the others (corrupted or mixed secrets)"
            )
    if value >= 2 ** (8 * SECRET_BYTES):
        raise BadShareError("the shares do not encode a 32-byte secret")
    return value.to_bytes(SECRET_BYTES, "big")


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    """Horner's rule for ``sum(c_i x^i) mod p``."""
    result = 0
    for coefficient in reversed(coefficients):
        result = (result * x + coefficient) % PRIME
    return result


def _lagrange_denominators_inverse(xs: Sequence[int]) -> list[int]:
    """``1 / prod_{j != i} (x_i - x_j)`` for each ``i``, in GF(p)."""
    out = []
    for i, xi in enumerate(xs):
        denominator = 1
        for j, xj in enumerate(xs):
            if i != j:
                denominator = denominator * (xi - xj) % PRIME
        out.append(pow(denominator, -1, PRIME))
    return out


def _interpolate(points: Sequence[Share], inverse_denominators: Sequence[int], z: int) -> int:
    """``f(z)`` for the polynomial of degree ``< len(points)`` through ``points`` (Lagrange).

    The numerators ``prod_{j != i} (z - x_j)`` come from prefix and suffix products, so each
    evaluation costs O(t) multiplications once the denominators are known.
    """
    differences = [(z - p.x) % PRIME for p in points]
    count = len(points)
    prefix = [1] * (count + 1)
    for i in range(count):
        prefix[i + 1] = prefix[i] * differences[i] % PRIME
    suffix = [1] * (count + 1)
    for i in range(count - 1, -1, -1):
        suffix[i] = suffix[i + 1] * differences[i] % PRIME
    total = 0
    for i, point in enumerate(points):
        numerator = prefix[i] * suffix[i + 1] % PRIME
        total = (total + point.y * numerator % PRIME * inverse_denominators[i]) % PRIME
    return total
