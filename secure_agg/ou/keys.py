"""OU keys: the public key ``(n, g, h)``, the private key ``p, q``, key sizes, serialisation.

A 2048-bit ``n = p²q`` is the floor (see :mod:`secure_agg.ou` for the estimate):
:func:`secure_agg.ou.generate_keypair` and :meth:`PublicKey.from_bytes` refuse shorter keys
unless the caller passes ``allow_insecure_test_keys=True`` by name (tests do, for speed). Keys
serialise to tagged, length-prefixed bytes (:meth:`PublicKey.to_bytes`,
:meth:`PrivateKey.to_secret_bytes`); a private key refuses pickling and hides itself from
``repr``, so key material does not end up in models, logs or registries.
"""

from __future__ import annotations

import hashlib
import math
import operator
import secrets
from typing import Any

import gmpy2

from secure_agg.ou import kernels
from secure_agg.ou.errors import InsecureKeyError, KeyMismatchError, OUError, PlaintextOverflowError

#: Default modulus length. ``n = p²q`` of 2048 bits (``p``, ``q`` of ~683 bits) is HEU's default
#: for OU; its factoring is rated like a 2048-bit RSA modulus, 112 bits of security (NIST SP
#: 800-57 Part 1 Rev. 5, Table 2), see :mod:`secure_agg.ou` for why the special form does not
#: weaken it.
DEFAULT_KEY_BITS = 2048

#: Shortest modulus accepted even with ``allow_insecure_test_keys=True`` (test keys only): the
#: primes keep 170 bits, the plaintext space 169.
MIN_TEST_KEY_BITS = 512

#: Statistical distance of a re-randomiser from uniform in ``<h>``: at most 2^-STATISTICAL_BITS.
STATISTICAL_BITS = 128

#: (modulus bits, security bits) of factoring, NIST SP 800-57 Part 1 Rev. 5, Table 2. Shorter
#: test keys are rated 80 so that their encryption exponent never falls below 160 bits.
_SECURITY_LEVELS = ((15360, 256), (7680, 192), (3072, 128), (2048, 112), (0, 80))

#: Leading bytes of a serialised public key (:meth:`PublicKey.to_bytes`): tells the schemes apart.
PUBLIC_KEY_TAG = b"lab/ou/pk/v1"
_PUBLIC_TAG = PUBLIC_KEY_TAG
_SECRET_TAG = b"lab/ou/sk/v1"


def prime_bits(key_bits: int) -> int:
    """Bit length of ``p`` (and about of ``q``) for a ``key_bits``-bit ``n = p²q``: ``⌊k/3⌋``."""
    return key_bits // 3


def security_bits(key_bits: int) -> int:
    """The security level NIST rates a ``key_bits``-bit factoring modulus at (80 below 2048)."""
    return next(level for bits, level in _SECURITY_LEVELS if key_bits >= bits)


def check_key_bits(key_bits: int, allow_insecure_test_keys: bool) -> None:
    """Refuse a key below :data:`DEFAULT_KEY_BITS` unless ``allow_insecure_test_keys`` is set.

    Raises
    ------
    InsecureKeyError
        Naming the key's length and the floor.
    """
    if key_bits < DEFAULT_KEY_BITS and not allow_insecure_test_keys:
        raise InsecureKeyError(
            f"a {key_bits}-bit OU key is below the {DEFAULT_KEY_BITS}-bit floor "
            f"(112-bit security); use {DEFAULT_KEY_BITS}+ bits, or pass "
            "allow_insecure_test_keys=True in tests"
        )


class PublicKey:
    """An Okamoto–Uchiyama public key: ``n = p²q``, ``g`` and ``h = g^n mod n``.

    Parameters
    ----------
    n : int
        The modulus (odd, at least :data:`MIN_TEST_KEY_BITS` bits).
    g : int
        A unit modulo ``n`` whose ``g^(p-1) mod p²`` has order ``p`` (checked by the key holder).
    h : int
        ``g^n mod n`` (or another unit of the subgroup of ``n``-th powers): the base of the
        randomiser.

    Attributes
    ----------
    n, g, h : int
    key_bits : int
        Bit length of ``n``.
    key_bytes : int
        Bytes of ``n``, and of a serialised ciphertext (residues modulo ``n``).
    plaintext_bits : int
        Plaintexts lie in ``[0, 2^plaintext_bits)``, ``plaintext_bits = ⌊k/3⌋ - 1``: ``p`` has
        exactly ``⌊k/3⌋`` bits with the top two set, so ``p >= 1.5 · 2^plaintext_bits``.
    randomness_bits : int
        Length of the encryption exponent ``r``: twice the key's security level (224 at 2048).
    fingerprint : str
        First 16 hex digits of SHA-256 of a tag, ``n``, ``g`` and ``h``: names the whole public
        key (two keys that differ only in ``h`` are told apart), different from every Paillier
        key's fingerprint.

    Notes
    -----
    Construction checks only what the public values allow; it does not impose the 2048-bit floor
    (:meth:`from_bytes` and :func:`secure_agg.ou.generate_keypair` do). Public keys pickle (as
    ``n``, ``g``, ``h``) but protocol messages should carry :meth:`to_bytes`.
    """

    __slots__ = (
        "_g",
        "_h",
        "_n",
        "fingerprint",
        "g",
        "h",
        "key_bits",
        "key_bytes",
        "n",
        "plaintext_bits",
        "randomness_bits",
    )

    def __init__(self, n: int, g: int, h: int) -> None:
        n, g, h = operator.index(n), operator.index(g), operator.index(h)
        if n < 0 or n.bit_length() < MIN_TEST_KEY_BITS or n % 2 == 0 or gmpy2.is_square(n):
            raise OUError(
                f"not an OU modulus ({n.bit_length()} bits): it must be odd, not a square and "
                f"at least {MIN_TEST_KEY_BITS} bits"
            )
        for name, value in (("g", g), ("h", h)):
            if not 1 < value < n - 1 or math.gcd(value, n) != 1:
                raise OUError(f"{name} must be a unit modulo n other than 1 and -1")
        self.n, self.g, self.h = n, g, h
        self.key_bits = n.bit_length()
        self.key_bytes = (self.key_bits + 7) // 8
        self.plaintext_bits = prime_bits(self.key_bits) - 1
        self.randomness_bits = 2 * security_bits(self.key_bits)
        width = self.key_bytes
        raw = b"".join(value.to_bytes(width, "big") for value in (n, g, h))
        digest = hashlib.sha256(_PUBLIC_TAG + raw)
        self.fingerprint = digest.hexdigest()[:16]
        self._n, self._g, self._h = gmpy2.mpz(n), gmpy2.mpz(g), gmpy2.mpz(h)

    # ------------------------------------------------------------ sizes

    @property
    def ciphertext_bytes(self) -> int:
        """Width of a serialised ciphertext (a residue modulo ``n``)."""
        return self.key_bytes

    @property
    def plaintext_bound(self) -> int:
        """``2^plaintext_bits``: every plaintext and every honest sum must stay below it."""
        return 1 << self.plaintext_bits

    @property
    def plaintext_bytes(self) -> int:
        """Bytes of a plaintext below :attr:`plaintext_bound`."""
        return (self.plaintext_bits + 7) // 8

    @property
    def randomness_bytes(self) -> int:
        """Bytes of the encryption exponent (:attr:`randomness_bits` is a multiple of 8)."""
        return (self.randomness_bits + 7) // 8

    @property
    def obfuscation_exponent_bytes(self) -> int:
        """Bytes of a re-randomising exponent: ``k + STATISTICAL_BITS`` bits, rounded up."""
        return (self.key_bits + STATISTICAL_BITS + 7) // 8

    # ------------------------------------------------------------ encryption

    def encrypt_int(self, m: int) -> int:
        """``g^m · h^r mod n`` for ``m`` in ``[0, 2^plaintext_bits)``, ``r`` from :mod:`secrets`.

        Raises
        ------
        OUError
            If ``m`` is outside the plaintext space.
        """
        m = self._check_plaintext(m)
        r = secrets.token_bytes(self.randomness_bytes)
        return int(kernels.encrypt_one(self, m, r))

    def obfuscate(self, c: int) -> int:
        """Re-randomise a ciphertext: same plaintext, randomiser uniform in ``<h>``.

        Multiplies by ``h^b`` for ``b`` uniform in ``[0, 2^(k + 128))``. ``h`` is the key
        holder's choice, so a ciphertext that goes back to the key holder after homomorphic
        operations is re-randomised with :func:`secure_agg.ou.rerandomize_own` instead (the
        sender's own randomness, which a crafted ``h`` cannot switch off).
        """
        c = self._check_ciphertext(c)
        digits = secrets.token_bytes(self.obfuscation_exponent_bytes)
        return int(kernels.obfuscate_one(self, gmpy2.mpz(c), digits))

    # ------------------------------------------------------------ checks

    def _check_plaintext(self, m: int) -> int:
        m = operator.index(m)
        if not 0 <= m < self.plaintext_bound:
            raise OUError(
                f"plaintext of {m.bit_length()} bits (sign {'-' if m < 0 else '+'}) is outside "
                f"[0, 2^{self.plaintext_bits}) for this {self.key_bits}-bit OU key"
            )
        return m

    def _check_ciphertext(self, c: int) -> int:
        c = operator.index(c)
        if not 0 < c < self.n:
            raise OUError(f"ciphertext outside (0, n) for the OU key {self.fingerprint}")
        return c

    # ------------------------------------------------------------ serialisation

    def to_bytes(self) -> bytes:
        """``tag || (len || value)`` for ``n``, ``g``, ``h`` (lengths 4 bytes, big-endian)."""
        out = [_PUBLIC_TAG]
        for value in (self.n, self.g, self.h):
            raw = value.to_bytes(self.key_bytes, "big")
            out += [len(raw).to_bytes(4, "big"), raw]
        return b"".join(out)

    @classmethod
    def from_bytes(cls, raw: bytes, *, allow_insecure_test_keys: bool = False) -> PublicKey:
        """Parse :meth:`to_bytes`, checking the structure and the 2048-bit floor.

        Raises
        ------
        OUError
            On malformed bytes or an invalid key.
        InsecureKeyError
            For a key shorter than :data:`DEFAULT_KEY_BITS` without
            ``allow_insecure_test_keys=True``.
        """
        raw = bytes(raw)
        if not raw.startswith(_PUBLIC_TAG):
            raise OUError("not a serialised OU public key (bad tag)")
        values, offset = [], len(_PUBLIC_TAG)
        try:
            for _ in range(3):
                value, offset = _read_int(raw, offset)
                values.append(value)
        except IndexError as exc:
            raise OUError("truncated OU public key") from exc
        if offset != len(raw):
            raise OUError("trailing bytes after an OU public key")
        key = cls(*values)
        check_key_bits(key.key_bits, allow_insecure_test_keys)
        return key

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return (self.n, self.g, self.h) == (other.n, other.g, other.h)

    def __hash__(self) -> int:
        return hash((self.n, self.g, self.h))

    def __repr__(self) -> str:
        return f"ou.PublicKey(bits={self.key_bits}, fingerprint={self.fingerprint})"

    def __reduce__(self) -> tuple[type[PublicKey], tuple[int, int, int]]:
        return (PublicKey, (self.n, self.g, self.h))


class PrivateKey:
    """The factors ``p, q`` of a :class:`PublicKey`'s ``n = p²q``, with decryption.

    Decryption: ``m = L(c^(p-1) mod p²) · L(g^(p-1) mod p²)^-1 mod p`` with
    ``L(x) = (x - 1) / p`` (Okamoto & Uchiyama 1998, §3). It cannot be pickled (``__reduce__``
    raises ``TypeError``, so ``copy`` refuses too) and its ``repr`` shows only the public
    fingerprint. :meth:`to_secret_bytes` / :meth:`from_secret_bytes` exist only so that the key
    holder can keep the key in its own node-local state between protocol messages.

    Parameters
    ----------
    public_key : PublicKey
    p, q : int
        Distinct primes with ``p² · q == public_key.n``.

    Raises
    ------
    KeyMismatchError
        If ``p²q`` is not ``n``, or ``g`` is not a valid base for ``p`` (``g^(p-1) ≡ 1 mod p²``).
    """

    __slots__ = ("_gp_inv", "_p", "_p2", "_pm1", "_q", "public_key")

    def __init__(self, public_key: PublicKey, p: int, q: int) -> None:
        p, q = operator.index(p), operator.index(q)
        if p == q or min(p, q) < 3 or p * p * q != public_key.n:
            raise KeyMismatchError("p and q are not the factors of this key's n = p²q")
        self.public_key = public_key
        self._p, self._q = gmpy2.mpz(p), gmpy2.mpz(q)
        self._p2 = self._p * self._p
        self._pm1 = self._p - 1
        lg = (gmpy2.powmod(public_key._g % self._p2, self._pm1, self._p2) - 1) // self._p
        if lg % self._p == 0:
            raise KeyMismatchError("g^(p-1) is 1 modulo p²: g is not a valid OU base for p")
        self._gp_inv = gmpy2.invert(lg, self._p)

    def decrypt_int(self, c: int) -> int:
        """The plaintext in ``[0, 2^plaintext_bits)`` of ciphertext ``c``.

        Raises
        ------
        PlaintextOverflowError
            If ``c`` decrypts at or above the plaintext bound: an overflowing sum, a negative
            result (see :meth:`decrypt_signed_int`), another key or a tampered ciphertext.
        """
        c = self.public_key._check_ciphertext(c)
        return int(self._check_bound(self._decrypt(gmpy2.mpz(c)), signed=False))

    def decrypt_signed_int(self, c: int) -> int:
        """The plaintext in ``(-2^(plaintext_bits-1), 2^(plaintext_bits-1))``.

        Residues above ``p/2`` are read as negative (``m - p``), e.g. after
        :func:`secure_agg.ou.mul_const` by a negative constant. The signed range is half the
        unsigned one so that the two signs cannot be confused: ``2^(plaintext_bits-1) <= p/3``
        (``p >= 1.5 · 2^plaintext_bits``, e.g. ``p >= 3 · 2^680`` at 2048 bits), so every
        magnitude below it lies below ``p/2`` and ``p - m`` of a negative one above.

        Raises
        ------
        PlaintextOverflowError
            If the magnitude reaches ``2^(plaintext_bits-1)``.
        """
        c = self.public_key._check_ciphertext(c)
        return int(self._check_bound(self._decrypt(gmpy2.mpz(c)), signed=True))

    def _decrypt(self, c: Any) -> Any:
        p, p2 = self._p, self._p2
        return (gmpy2.powmod(c % p2, self._pm1, p2) - 1) // p * self._gp_inv % p

    def _check_bound(self, m: Any, *, signed: bool) -> Any:
        pub = self.public_key
        if not signed:
            if m < pub.plaintext_bound:
                return m
            interval = f"[0, 2^{pub.plaintext_bits})"
        else:
            if m > self._p // 2:
                m -= self._p
            if abs(m) < pub.plaintext_bound // 2:
                return m
            interval = f"(-2^{pub.plaintext_bits - 1}, 2^{pub.plaintext_bits - 1})"
        raise PlaintextOverflowError(
            f"a ciphertext decrypts outside {interval} under OU key {pub.fingerprint}: an "
            "overflowing sum (pack fewer or narrower values), the wrong key or tampering"
        )

    def to_secret_bytes(self) -> bytes:
        """The primes, for the key holder's own node-local state only. Never log or send them."""
        width = (max(int(self._p), int(self._q)).bit_length() + 7) // 8
        out = [_SECRET_TAG]
        for value in (self._p, self._q):
            out += [width.to_bytes(4, "big"), int(value).to_bytes(width, "big")]
        return b"".join(out)

    @classmethod
    def from_secret_bytes(cls, public_key: PublicKey, raw: bytes) -> PrivateKey:
        """Restore a key kept by :meth:`to_secret_bytes` in the key holder's own state.

        Raises
        ------
        OUError
            On malformed bytes (the message never quotes them).
        KeyMismatchError
            If the primes do not factor ``public_key.n``.
        """
        raw = bytes(raw)
        if not raw.startswith(_SECRET_TAG):
            raise OUError("not a serialised OU private key (bad tag)")
        try:
            p, offset = _read_int(raw, len(_SECRET_TAG))
            q, offset = _read_int(raw, offset)
        except IndexError as exc:
            raise OUError("truncated OU private key") from exc
        if offset != len(raw):
            raise OUError("trailing bytes after an OU private key")
        return cls(public_key, p, q)

    def __repr__(self) -> str:
        return f"ou.PrivateKey(<secret>, fingerprint={self.public_key.fingerprint})"

    def __reduce__(self) -> Any:
        raise TypeError("an OU PrivateKey must not be pickled; keep to_secret_bytes() local")


def _read_int(raw: bytes, offset: int) -> tuple[int, int]:
    size = int.from_bytes(raw[offset : offset + 4], "big")
    end = offset + 4 + size
    if len(raw) < offset + 4 or end > len(raw):
        raise IndexError("truncated")
    return int.from_bytes(raw[offset + 4 : end], "big"), end
