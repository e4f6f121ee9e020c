"""The scikit-learn parameter protocol shared by the vertical estimators.

An estimator's ``__init__`` only stores its keyword arguments, whose names are the fields of
the model's Params dataclass and whose defaults are that dataclass's field defaults (one source
of truth); :meth:`KeywordParams.get_params` and :meth:`KeywordParams.set_params` read and write
them; ``fit`` builds the Params from them, which is where they are validated.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self


class KeywordParams:
    """``get_params``/``set_params`` over the names in ``_PARAMS`` (scikit-learn protocol)."""

    _PARAMS: ClassVar[tuple[str, ...]]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor arguments (scikit-learn protocol)."""
        del deep
        return {name: getattr(self, name) for name in self._PARAMS}

    def set_params(self, **params: Any) -> Self:
        """Set constructor arguments (scikit-learn protocol).

        Raises
        ------
        ValueError
            Naming every unknown parameter and the valid ones; nothing is set then.
        """
        unknown = sorted(set(params) - set(self._PARAMS))
        if unknown:
            raise ValueError(f"unknown parameters {unknown}; valid: {', '.join(self._PARAMS)}")
        for name, value in params.items():
            setattr(self, name, value)
        return self
