"""YAML loading that refuses a key given twice in one mapping, naming both lines.

PyYAML's ``safe_load`` keeps the last of two equal keys without a word, so a config that sets
``n_estimators`` twice silently uses the second value. :func:`load` reads like ``safe_load``
(same types, merge keys ``<<`` allowed: a merged key may be overridden) and raises
:class:`DuplicateKeyError` instead.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(ConstructorError):
    """A mapping gives the same key twice.

    Attributes
    ----------
    key : Any
        The key.
    line, column : int
        1-based position of the second occurrence.
    first_line : int
        1-based line of the first occurrence.
    """

    def __init__(self, key: Any, first: yaml.Mark, second: yaml.Mark) -> None:
        self.key = key
        self.line, self.column = second.line + 1, second.column + 1
        self.first_line = first.line + 1
        super().__init__(None, None, self.describe(), second)

    def describe(self) -> str:
        """``line L, column C: key 'k' is given twice (first at line F); keep one of them``."""
        return (
            f"line {self.line}, column {self.column}: key {self.key!r} is given twice (first at "
            f"line {self.first_line}); keep one of them"
        )


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys (see the module docstring)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Build a mapping after checking no key appears twice (merged keys excepted)."""
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it itself
                continue
            if first is not None:
                raise DuplicateKeyError(key, first, key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:
    """Parse YAML text like ``yaml.safe_load``, refusing duplicate keys.

    Raises
    ------
    DuplicateKeyError
        If a mapping gives a key twice.
    yaml.YAMLError
        If the text is not valid YAML.
    """
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
