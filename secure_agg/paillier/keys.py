"""Paillier keys: the public key with its DJN base, the private key, key sizes, serialisation.

2048-bit moduli give about 112 bits of security (NIST SP 800-57 Part 1 Rev. 5, Table 2), the
project's floor: :func:`secure_agg.paillier.generate_keypair` and :meth:`PublicKey.from_bytes`
refuse shorter keys unless the caller passes ``allow_insecure_test_keys=True`` by name (tests
do, for speed). Keys serialise to tagged, length-prefixed bytes (:meth:`PublicKey.to_bytes`,
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

from secure_agg.paillier import kernels
from secure_agg.paillier.errors import InsecureKeyError, KeyMismatchError, PaillierError

#: Default modulus length: 2048-bit factoring is rated at 112 bits of security (NIST SP 800-57
#: Part 1 Rev. 5, Table 2), acceptable to 2030. phe's own default is 3072 (128 bits).
DEFAULT_KEY_BITS = 2048

#: Shortest modulus accepted even with ``allow_insecure_test_keys=True`` (test keys only).
MIN_TEST_KEY_BITS = 256

#: Statistical distance of a re-randomiser from uniform in ``<h_s>``: at most 2^-STATISTICAL_BITS.
STATISTICAL_BITS = 128

#: Leading bytes of a serialised public key (:meth:`PublicKey.to_bytes`): tells the schemes apart.
PUBLIC_KEY_TAG = b"lab/paillier/pk/v1"
_PUBLIC_TAG = PUBLIC_KEY_TAG
_SECRET_TAG = b"lab/paillier/sk/v1"


class PublicKey:
    """A Paillier public key ``n`` with the DJN base ``h_s`` of fast encryption.

    Parameters
    ----------
    n : int
        The modulus (odd, not a square, at least :data:`MIN_TEST_KEY_BITS` bits).
    h_s : int
        ``h^n mod n²`` for the key holder's ``h = -x² mod n``: a unit modulo ``n``, not ±1.

    Attributes
    ----------
    n, nsquare, h_s : int
    key_bits : int
        Bit length of ``n``.
    key_bytes : int
        Bytes of a plaintext; a ciphertext takes ``2 * key_bytes``.
    fingerprint : str
        First 16 hex digits of SHA-256 of ``n`` and ``h_s`` (big-endian, ``key_bytes`` and
        ``2 * key_bytes`` long): a tag for messages naming the whole public key, so two keys
        that differ only in ``h_s`` are told apart.

    Notes
    -----
    Construction checks only what the public values allow; it does not impose the 2048-bit floor
    (:meth:`from_bytes` and :func:`secure_agg.paillier.generate_keypair` do). Public keys pickle
    (as ``n`` and ``h_s``) but protocol messages should carry :meth:`to_bytes`.
    """

    __slots__ = (
        "_hs",
        "_n",
        "_n2",
        "fingerprint",
        "h_s",
        "key_bits",
        "key_bytes",
        "n",
        "nsquare",
    )

    def __init__(self, n: int, h_s: int) -> None:
        n = operator.index(n)
        h_s = operator.index(h_s)
        if n < 0 or n.bit_length() < MIN_TEST_KEY_BITS or n % 2 == 0 or gmpy2.is_square(n):
            raise PaillierError(
                f"not a Paillier modulus ({n.bit_length()} bits): it must be odd, not a square "
                f"and at least {MIN_TEST_KEY_BITS} bits"
            )
        nsquare = n * n
        if not 1 < h_s < nsquare - 1 or math.gcd(h_s, n) != 1:
            raise PaillierError("h_s must be a unit modulo n other than 1 and -1")
        self.n = n
        self.nsquare = nsquare
        self.h_s = h_s
        self.key_bits = n.bit_length()
        self.key_bytes = (self.key_bits + 7) // 8
        # h_s is part of what a peer computes with (fast encryption), so it is fingerprinted too.
        digest = hashlib.sha256(
            n.to_bytes(self.key_bytes, "big") + h_s.to_bytes(2 * self.key_bytes, "big")
        )
        self.fingerprint = digest.hexdigest()[:16]
        self._n = gmpy2.mpz(n)
        self._n2 = gmpy2.mpz(nsquare)
        self._hs = gmpy2.mpz(h_s)

    # ------------------------------------------------------------ exponent lengths

    @property
    def encryption_exponent_bytes(self) -> int:
        """Bytes of the DJN exponent ``a``: ``⌈k/2⌉`` bits rounded up to bytes."""
        return (self.key_bits + 15) // 16

    @property
    def obfuscation_exponent_bytes(self) -> int:
        """Bytes of a re-randomising exponent: ``k + STATISTICAL_BITS`` bits, rounded up."""
        return (self.key_bits + STATISTICAL_BITS + 7) // 8

    @property
    def ciphertext_bytes(self) -> int:
        """Width of a serialised ciphertext."""
        return 2 * self.key_bytes

    # ------------------------------------------------------------ encryption

    def encrypt_int(self, m: int) -> int:
        """Encrypt ``m`` in ``[0, n)`` with DJN fast encryption (the safe default).

        See :mod:`secure_agg.paillier` for the assumptions (DCR and short exponents).

        Raises
        ------
        PaillierError
            If ``m`` is outside ``[0, n)``.
        """
        m = self._check_plaintext(m)
        digits = secrets.token_bytes(self.encryption_exponent_bytes)
        return int(kernels.encrypt_one(self, m, digits))

    def encrypt_int_naive(self, m: int) -> int:
        """Textbook Paillier, ``(1 + m·n) · r^n mod n²`` with ``r`` uniform in ``Z*_n``.

        About 11x slower than :meth:`encrypt_int`; kept for tests and comparison. Secure under DCR
        alone.
        """
        m = self._check_plaintext(m)
        return int(kernels.encrypt_naive_one(self, m))

    def obfuscate(self, c: int) -> int:
        """Re-randomise a ciphertext: same plaintext, randomiser uniform in ``<h_s>``.

        Do this to every ciphertext produced by homomorphic operations before it leaves the
        party (see "Re-randomisation" in :mod:`secure_agg.paillier` for what it hides and when).
        ``h_s`` is the key holder's choice, so a ciphertext that goes back to the key holder is
        re-randomised with :func:`secure_agg.paillier.rerandomize_own` instead (the sender's own
        randomness, which a crafted ``h_s`` cannot switch off).
        """
        c = self._check_ciphertext(c)
        return int(kernels.obfuscate_one(self, gmpy2.mpz(c)))

    # ------------------------------------------------------------ checks

    def _check_plaintext(self, m: int) -> int:
        m = operator.index(m)
        if not 0 <= m < self.n:
            raise PaillierError(
                f"plaintext of {m.bit_length()} bits (sign {'-' if m < 0 else '+'}) is outside "
                f"[0, n) for this {self.key_bits}-bit key"
            )
        return m

    def _check_ciphertext(self, c: int) -> int:
        c = operator.index(c)
        if not 0 < c < self.nsquare:
            raise PaillierError(f"ciphertext outside (0, n²) for the key {self.fingerprint}")
        return c

    # ------------------------------------------------------------ serialisation

    def to_bytes(self) -> bytes:
        """``tag || len(n) || n || len(h_s) || h_s`` (lengths 4 bytes, integers big-endian)."""
        n_raw = self.n.to_bytes(self.key_bytes, "big")
        hs_raw = self.h_s.to_bytes(self.ciphertext_bytes, "big")
        return (
            _PUBLIC_TAG
            + len(n_raw).to_bytes(4, "big")
            + n_raw
            + len(hs_raw).to_bytes(4, "big")
            + hs_raw
        )

    @classmethod
    def from_bytes(cls, raw: bytes, *, allow_insecure_test_keys: bool = False) -> PublicKey:
        """Parse :meth:`to_bytes`, checking the structure and the 2048-bit floor.

        Raises
        ------
        PaillierError
            On malformed bytes or an invalid key.
        InsecureKeyError
            For a key shorter than :data:`DEFAULT_KEY_BITS` without
            ``allow_insecure_test_keys=True``.
        """
        raw = bytes(raw)
        if not raw.startswith(_PUBLIC_TAG):
            raise PaillierError("not a serialised Paillier public key (bad tag)")
        offset = len(_PUBLIC_TAG)
        try:
            n, offset = _read_int(raw, offset)
            h_s, offset = _read_int(raw, offset)
        except IndexError as exc:
            raise PaillierError("truncated Paillier public key") from exc
        if offset != len(raw):
            raise PaillierError("trailing bytes after a Paillier public key")
        key = cls(n, h_s)
        check_key_bits(key.key_bits, allow_insecure_test_keys)
        return key

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return self.n == other.n and self.h_s == other.h_s

    def __hash__(self) -> int:
        return hash((self.n, self.h_s))

    def __repr__(self) -> str:
        return f"PublicKey(bits={self.key_bits}, fingerprint={self.fingerprint})"

    def __reduce__(self) -> tuple[type[PublicKey], tuple[int, int]]:
        return (PublicKey, (self.n, self.h_s))


class PrivateKey:
    """The factorisation of a :class:`PublicKey`'s modulus, with CRT decryption.

    It cannot be pickled (``__reduce__`` raises ``TypeError``, so ``copy`` refuses too) and its
    ``repr`` shows only the public fingerprint: key material must not end up in models, logs or
    registries. :meth:`to_secret_bytes` / :meth:`from_secret_bytes` exist only so that the key
    holder can keep the key in its own node-local state between protocol messages.

    Parameters
    ----------
    public_key : PublicKey
    p, q : int
        Distinct primes with ``p * q == public_key.n``.
    """

    __slots__ = ("_hp", "_hq", "_p", "_p2", "_p_inv", "_q", "_q2", "public_key")

    def __init__(self, public_key: PublicKey, p: int, q: int) -> None:
        p, q = operator.index(p), operator.index(q)
        if p == q or p * q != public_key.n or min(p, q) < 3:
            raise KeyMismatchError("p and q are not the two distinct factors of this key's n")
        if q < p:
            p, q = q, p
        self.public_key = public_key
        g = public_key._n + 1
        self._p, self._q = gmpy2.mpz(p), gmpy2.mpz(q)
        self._p2, self._q2 = self._p * self._p, self._q * self._q
        self._p_inv = gmpy2.invert(self._p, self._q)
        # h_p = L_p(g^(p-1) mod p²)^-1 mod p, as in Paillier's §7 and phe's h_function.
        self._hp = gmpy2.invert((gmpy2.powmod(g, self._p - 1, self._p2) - 1) // self._p, self._p)
        self._hq = gmpy2.invert((gmpy2.powmod(g, self._q - 1, self._q2) - 1) // self._q, self._q)

    def decrypt_int(self, c: int) -> int:
        """The plaintext in ``[0, n)`` of ciphertext ``c`` (CRT, two half-size exponentiations).

        A ciphertext made under another key decrypts to an unrelated value without error; detect
        that with a redundant encoding (:mod:`secure_agg.packing`) or fingerprints.
        """
        c = self.public_key._check_ciphertext(c)
        return int(self._decrypt(gmpy2.mpz(c)))

    def _decrypt(self, c: Any) -> Any:
        p, q, p2, q2 = self._p, self._q, self._p2, self._q2
        mp = (gmpy2.powmod(c % p2, p - 1, p2) - 1) // p * self._hp % p
        mq = (gmpy2.powmod(c % q2, q - 1, q2) - 1) // q * self._hq % q
        return mp + (mq - mp) * self._p_inv % q * p

    def to_secret_bytes(self) -> bytes:
        """The primes, for the key holder's own node-local state only. Never log or send them."""
        width = (int(self._q).bit_length() + 7) // 8
        return (
            _SECRET_TAG
            + width.to_bytes(4, "big")
            + int(self._p).to_bytes(width, "big")
            + width.to_bytes(4, "big")
            + int(self._q).to_bytes(width, "big")
        )

    @classmethod
    def from_secret_bytes(cls, public_key: PublicKey, raw: bytes) -> PrivateKey:
        """Restore a key kept by :meth:`to_secret_bytes` in the key holder's own state.

        Raises
        ------
        PaillierError
            On malformed bytes (the message never quotes them).
        KeyMismatchError
            If the primes do not factor ``public_key.n``.
        """
        raw = bytes(raw)
        if not raw.startswith(_SECRET_TAG):
            raise PaillierError("not a serialised Paillier private key (bad tag)")
        try:
            p, offset = _read_int(raw, len(_SECRET_TAG))
            q, offset = _read_int(raw, offset)
        except IndexError as exc:
            raise PaillierError("truncated Paillier private key") from exc
        if offset != len(raw):
            raise PaillierError("trailing bytes after a Paillier private key")
        return cls(public_key, p, q)

    def __repr__(self) -> str:
        return f"PrivateKey(<secret>, fingerprint={self.public_key.fingerprint})"

    def __reduce__(self) -> Any:
        raise TypeError("a Paillier PrivateKey must not be pickled; keep to_secret_bytes() local")


def _read_int(raw: bytes, offset: int) -> tuple[int, int]:
    size = int.from_bytes(raw[offset : offset + 4], "big")
    end = offset + 4 + size
    if len(raw) < offset + 4 or end > len(raw):
        raise IndexError("truncated")
    return int.from_bytes(raw[offset + 4 : end], "big"), end


def check_key_bits(key_bits: int, allow_insecure_test_keys: bool) -> None:
    """Refuse a key below :data:`DEFAULT_KEY_BITS` unless ``allow_insecure_test_keys`` is set.

    Raises
    ------
    InsecureKeyError
        Naming the key's length and the floor.
    """
    if key_bits < DEFAULT_KEY_BITS and not allow_insecure_test_keys:
        raise InsecureKeyError(
            f"a {key_bits}-bit Paillier key is below the {DEFAULT_KEY_BITS}-bit floor "
            f"(112-bit security); use {DEFAULT_KEY_BITS}+ bits, or pass "
            "allow_insecure_test_keys=True in tests"
        )
