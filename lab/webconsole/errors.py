"""The console's errors (each an :class:`lab.errors.InputError`: one ``error:`` line, exit 2)."""

from __future__ import annotations

from lab.errors import InputError


class ConsoleSetupError(InputError):
    """The console cannot start as asked (no home, no users, a port in use ...)."""
