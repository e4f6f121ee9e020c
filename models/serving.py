"""What a platform's saved model part answers when a bank scores with it.

The platform's scoring endpoint (:mod:`lab.serving.platform_scorer`) checks the caller, the
purpose, the model's owner and every enterprise's authorization the same way for every model
type; what the part computes from the authorized rows is the part's own business. A model type
says how its platform parts are served through its descriptor
(:attr:`models.model_type.ModelType.serving`, ``module:attribute`` of a loader, and
:attr:`~models.model_type.ModelType.part_kind`, the ``kind`` its saved parts carry);
:func:`load_part` picks the loader from a saved part's ``kind``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import pandas as pd

from models.model_type import load_attribute, model_types


class PartKindError(ValueError):
    """A saved part's ``kind`` is served by no registered model type."""


class SelectionError(ValueError):
    """A call asks a part for something it does not hold (e.g. a split it does not have)."""


@dataclass(frozen=True)
class Selection:
    """What a call asks of a part beyond its enterprises; ``None`` fields: everything.

    Attributes
    ----------
    split_ids : tuple of str, optional
        Split ids (SecureBoost parts).
    trees : tuple of int, optional
        Tree indices whose platform splits are wanted (SecureBoost parts).
    """

    split_ids: tuple[str, ...] | None = None
    trees: tuple[int, ...] | None = None

    @property
    def is_everything(self) -> bool:
        """Whether the call names no subset."""
        return self.split_ids is None and self.trees is None


class PartAnswer(Protocol):
    """What a part computed for the authorized enterprises of one call, in request order."""

    @property
    def n_items(self) -> int:
        """Values revealed per enterprise (audited and charged)."""
        ...

    def to_json(self) -> dict[str, Any]:
        """The type's fields of the response body (the endpoint adds ids, hash and purpose)."""
        ...


class ServedPart(Protocol):
    """A platform's half of a model, as the scoring endpoint serves it."""

    @property
    def model_id(self) -> str:
        """The part's id (its file name in the platform's model store)."""
        ...

    @property
    def bank(self) -> str | None:
        """The bank that trained it and may score with it (``None``: bound to no bank)."""
        ...

    @property
    def content_hash(self) -> str:
        """``sha256:<hex>`` the bank's registered model pins."""
        ...

    def columns(self) -> list[str]:
        """The platform columns the part reads (checked against the published feature set)."""
        ...

    def n_items(self, selection: Selection) -> int:
        """Values a call with ``selection`` would reveal per enterprise (charged).

        Never raises: :meth:`check` refuses a selection, after the caller's authorizations.
        """
        ...

    def check(self, selection: Selection) -> None:
        """Refuse a selection the part cannot answer.

        Raises
        ------
        SelectionError
            Naming what it does not hold and what to ask instead.
        """
        ...

    def answer(self, frame: pd.DataFrame, selection: Selection) -> PartAnswer:
        """Compute the answer for ``frame``'s rows (authorized enterprises, request order).

        Raises
        ------
        SelectionError
            If ``selection`` names what the part does not hold.
        """
        ...


PartLoader = Callable[[Mapping[str, Any]], ServedPart]


class _SavedPart(Protocol):
    """What every saved platform part has: its id, its bank and its content hash."""

    @property
    def model_id(self) -> str: ...

    @property
    def bank(self) -> str | None: ...

    @property
    def content_hash(self) -> str: ...


_Part = TypeVar("_Part", bound=_SavedPart)


@dataclass(frozen=True)
class PartView(Generic[_Part]):
    """A saved part seen by serving: its identity read from the part (types add the rest)."""

    part: _Part

    @property
    def model_id(self) -> str:
        """The part's id."""
        return self.part.model_id

    @property
    def bank(self) -> str | None:
        """The bank it serves."""
        return self.part.bank

    @property
    def content_hash(self) -> str:
        """The part's content hash."""
        return self.part.content_hash


def load_part(raw: Mapping[str, Any]) -> ServedPart:
    """The served part of a saved part's JSON, by the model type whose ``part_kind`` it has.

    Raises
    ------
    PartKindError
        If no registered model type serves parts of that ``kind``.
    """
    kind = raw.get("kind")
    for described in model_types("vertical"):
        if described.part_kind is not None and described.part_kind == kind:
            if described.serving is None:
                break
            loader: PartLoader = load_attribute(described.serving)
            return loader(raw)
    served = sorted(
        t.part_kind for t in model_types("vertical") if t.part_kind and t.serving is not None
    )
    raise PartKindError(f"model part of kind {kind!r} cannot be served; served kinds: {served}")
