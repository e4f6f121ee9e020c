"""Errors of the Paillier primitives: one class per meaning, all ``ValueError``s."""

from __future__ import annotations


class PaillierError(ValueError):
    """Malformed input to a Paillier primitive: out-of-range values, bad key bytes, bad shapes."""


class InsecureKeyError(PaillierError):
    """A key below ``DEFAULT_KEY_BITS`` without an explicit ``allow_insecure_test_keys=True``."""


class KeyMismatchError(PaillierError):
    """Data tagged with (or belonging to) another key than the one at hand."""
