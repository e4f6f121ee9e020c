"""Errors of the Okamoto–Uchiyama primitives: one class per meaning, all ``ValueError``s."""

from __future__ import annotations


class OUError(ValueError):
    """Malformed input to an OU primitive: out-of-range values, bad key bytes, bad shapes."""


class InsecureKeyError(OUError):
    """A key below ``DEFAULT_KEY_BITS`` without an explicit ``allow_insecure_test_keys=True``."""


class KeyMismatchError(OUError):
    """Data tagged with (or belonging to) another key than the one at hand."""


class PlaintextOverflowError(OUError):
    """A decryption outside the plaintext space: an overflowing sum, the wrong key or tampering.

    OU reduces plaintexts modulo the secret prime ``p``, so a sum that outgrows the plaintext
    space wraps silently; a decryption at or above the bound can only come from such an
    overflow, from another key or from a tampered ciphertext, and is refused.
    """
