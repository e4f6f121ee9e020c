"""The CLI's rich consoles: the one place that decides how wide ``lab``'s output is.

On a terminal, output fits the terminal, as rich does by default. Anywhere else (a pipe, a
file, a CI log) there is no width to fit, and rich's fallback of 80 columns truncates table
cells (``feat…``, ``rese…``) and breaks long lines; there the consoles are
:data:`UNBOUNDED_WIDTH` columns wide, so a table is as wide as its content and a line is never
cut. An explicit ``COLUMNS`` still wins (rich reads it).
"""

from __future__ import annotations

from rich.console import Console, ConsoleDimensions

#: Width of output that is not a terminal: wider than any table or line the lab prints.
UNBOUNDED_WIDTH = 1000


class AdaptiveConsole(Console):
    """A console as wide as the terminal, or :data:`UNBOUNDED_WIDTH` when not writing to one."""

    @property
    def size(self) -> ConsoleDimensions:
        """The terminal's size; when not a terminal (and no ``COLUMNS``), unbounded width."""
        size = Console.size.fget(self)  # type: ignore[attr-defined]
        if self.is_terminal or self._environ.get("COLUMNS", "").isdigit():
            return size  # type: ignore[no-any-return]
        return ConsoleDimensions(UNBOUNDED_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


def console(*, stderr: bool = False) -> Console:
    """A console on standard output (or standard error) that adapts to non-terminal output."""
    return AdaptiveConsole(stderr=stderr)
