"""Errors of the secure-aggregation protocol, one class per meaning.

Every error is a :class:`SecAggError`, so a runtime can stop a round on any of them with one
``except``; the subclasses say what went wrong and, in their message, which value and how to fix
it. None of them ever carries key material, shares or vectors in its message.
"""

from __future__ import annotations


class SecAggError(Exception):
    """Base class of every secure-aggregation error."""


class SecAggConfigError(SecAggError, ValueError):
    """A :class:`~secure_agg.secagg.config.SecAggConfig` value is invalid or unsafe."""


class InputError(SecAggError, ValueError):
    """A party's own input (its vector) cannot be encoded, e.g. the wrong length or a NaN."""


class StageError(SecAggError):
    """A message arrived that the current stage does not accept.

    Raised for a message of the wrong stage, a repeated message, a message of another round, a
    message from a client that is not a participant (or no longer one, because it dropped), or a
    message addressed to another client. The receiving state machine is left unchanged.
    """


class MessageError(SecAggError):
    """A message of the right stage whose content breaks the protocol's rules.

    For example arrays of the wrong shape or dtype, ids outside the sender's neighbourhood, a
    setup that differs from the client's own configuration, or an unmask request that asks for
    both secrets of one client (which would unmask that client's vector).
    """


class TooManyDropoutsError(SecAggError):
    """Fewer than ``threshold`` live clients remain in some neighbourhood: the round is aborted.

    No sum, partial or not, is released. Retry the round with the clients that are still online,
    or lower the threshold (at the cost of tolerating fewer colluders).
    """


class NotEnoughSharesError(SecAggError):
    """Fewer Shamir shares than the threshold were given; reconstruction is refused."""


class BadShareError(SecAggError):
    """A share is malformed or inconsistent with the others, or reconstructs the wrong key."""


class AuthenticationError(BadShareError):
    """An encrypted share failed authentication (tampered, replayed or misaddressed)."""
