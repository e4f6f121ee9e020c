"""Names that become file or folder names under ``$LAB_HOME``, checked before they do.

Experiment names (MLflow artifact folders), feature-set names and versions (catalog entries),
party names (model stores) and model ids (parts) come from config files, specs and other
parties' messages. Each is checked against :data:`NAME_PATTERN` where it is read, and
:func:`inside` checks the path built from it still lies in the folder it belongs to, so no name
can write outside ``$LAB_HOME`` (``../../x``, ``/etc/x``, ``a/../../b``).
"""

from __future__ import annotations

import re
from pathlib import Path

from lab.errors import InputError

#: A name usable as one path component: letters, digits, space, ``.``, ``_``, ``-``; it starts
#: with a letter or digit (so never ``.``, ``..`` or a hidden file) and has no separator.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,127}$")

#: What :data:`NAME_PATTERN` allows, for messages.
NAME_RULE = "1-128 letters, digits, spaces, '.', '_' or '-', starting with a letter or digit"


class UnsafeNameError(InputError):
    """A name would not be a single, plain path component."""


def check_component(value: str, what: str) -> str:
    """Return ``value`` if it can be used as one file or folder name.

    Raises
    ------
    UnsafeNameError
        Naming the value, what it is and the rule.
    """
    if not NAME_PATTERN.fullmatch(value) or ".." in value:
        raise UnsafeNameError(
            f"{what} {value!r} cannot be used as a folder name: use {NAME_RULE} (no '/', no '..')"
        )
    return value


def inside(root: Path, *parts: str, what: str = "name") -> Path:
    """``root / parts...``, refusing a result that is not inside ``root`` once resolved.

    Raises
    ------
    UnsafeNameError
        If the joined path escapes ``root`` (through ``..``, an absolute part or a symlink).
    """
    base = root.resolve()
    path = base.joinpath(*parts).resolve()
    if path != base and not path.is_relative_to(base):
        raise UnsafeNameError(
            f"{what} {'/'.join(parts)!r} would write to {path}, outside {base}; use {NAME_RULE}"
        )
    return path
