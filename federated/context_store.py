"""A party's protocol state kept in its Flower ``Context`` between messages."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

_ARRAYS = "lab.arrays"
_DOCS = "lab.json"


class ContextStore:
    """A :class:`~models.protocol.PartyStore` backed by a node's ``Context.state``.

    The state stays on the node (SuperNode) that acts for the party; Flower never sends it to
    the coordinator.
    """

    def __init__(self, state: RecordDict) -> None:
        self._state = state
        if _ARRAYS not in state.array_records:
            state[_ARRAYS] = ArrayRecord()
        if _DOCS not in state.config_records:
            state[_DOCS] = ConfigRecord()

    @property
    def _arrays(self) -> ArrayRecord:
        return self._state.array_records[_ARRAYS]

    @property
    def _docs(self) -> ConfigRecord:
        return self._state.config_records[_DOCS]

    def put_array(self, key: str, value: npt.NDArray[Any]) -> None:
        """Store an array."""
        self._arrays[key] = Array(np.ascontiguousarray(value))

    def get_array(self, key: str) -> npt.NDArray[Any]:
        """Return a stored array; ``KeyError`` if absent."""
        array: npt.NDArray[Any] = self._arrays[key].numpy()
        return array

    def put_json(self, key: str, value: Any) -> None:
        """Store a JSON document."""
        self._docs[key] = json.dumps(value)

    def get_json(self, key: str, default: Any = None) -> Any:
        """Return a stored document or ``default``."""
        raw = self._docs.get(key)
        return default if raw is None else json.loads(str(raw))

    def delete(self, key: str) -> None:
        """Forget a key."""
        self._arrays.pop(key, None)
        self._docs.pop(key, None)
