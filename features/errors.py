"""Errors raised while reading or validating a party's data."""

from __future__ import annotations


class DataError(ValueError):
    """A party's data file is missing, unreadable or violates what the job needs.

    The message always names the file (and, where it applies, the column, rows and values) and
    says how to fix it.

    Parameters
    ----------
    message : str
        The full message, for the party's own operator.
    redacted : str, optional
        The same message without any data value or id, for when the error must cross to
        another domain (the coordinator). ``None`` means the message holds no data values.
    """

    def __init__(self, message: str, *, redacted: str | None = None) -> None:
        super().__init__(message)
        self.redacted = redacted if redacted is not None else message
