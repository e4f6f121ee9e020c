"""The scikit-learn classifier contract shared by the vertical estimators.

A vertical estimator sees the bank's columns ``X`` (with the labels) and each platform's
columns ``X_platforms`` (a mapping from platform name to its frame), rows aligned. This module
turns those inputs into the frames the in-process runtime reads, encodes the labels, checks at
prediction time that the columns are those of the fit, and derives ``predict``, ``score``,
``feature_importances_`` and the repr (from :class:`sklearn.base.BaseEstimator`, which shows
the parameters that differ from their defaults) for both models.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Mapping
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.sparse import issparse
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.metrics import accuracy_score
from sklearn.utils import check_array, column_or_1d
from sklearn.utils.multiclass import check_classification_targets, type_of_target

from federated.estimators.params import KeywordParams

#: The bank's name in the in-process runtime, and so in ``feature_names_in_``.
BANK = "bank"

#: What a fitted model predicts as class 1: a default probability above this.
THRESHOLD = 0.5

Frames = Mapping[str, pd.DataFrame]


def as_frame(x: Any, what: str) -> pd.DataFrame:
    """A 2-D table as a DataFrame; arrays get columns ``x0, x1, ...``.

    NaN is a missing value (both models bin it on its own). A DataFrame keeps its column
    types (text columns are categorical) and its column names, as text; an array must be
    numeric and is checked by :func:`~sklearn.utils.check_array`.

    Raises
    ------
    TypeError
        If ``x`` is sparse.
    ValueError
        If ``x`` is not two-dimensional, has no row or no column, is complex or holds infinity.
    """
    if issparse(x):
        raise TypeError(f"{what} is sparse: sparse input is not supported; pass a dense array")
    if isinstance(x, pd.DataFrame):
        if x.shape[1] == 0 or x.shape[0] == 0:
            raise ValueError(
                f"{what} has 0 feature(s) or sample(s) (shape={x.shape}) while a minimum of 1 "
                "is required"
            )
        names = [str(c) for c in x.columns]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"{what} has duplicate column names {twice}; rename them")
        return x.set_axis(names, axis=1).reset_index(drop=True)
    values = check_array(x, dtype="numeric", ensure_all_finite="allow-nan", input_name=what)
    return pd.DataFrame(values, columns=[f"x{j}" for j in range(values.shape[1])])


def platform_frames(x_platforms: Any) -> dict[str, pd.DataFrame]:
    """Each platform's table as a DataFrame, in the order given.

    Raises
    ------
    ValueError
        If there is no platform, or a platform is named like the bank.
    """
    if not isinstance(x_platforms, Mapping) or not x_platforms:
        raise ValueError(
            "a vertical model needs at least one platform: pass X_platforms={'platform': frame}"
        )
    if BANK in x_platforms:
        raise ValueError(f"X_platforms may not hold a platform named {BANK!r} (the bank's name)")
    return {str(name): as_frame(x, f"X_platforms[{name!r}]") for name, x in x_platforms.items()}


def _what(party: str) -> str:
    """How an error message names a party's input."""
    return "X_bank" if party == BANK else f"X_platforms[{party!r}]"


# scikit-learn ships no type information: its classes are ``Any`` to mypy.
class VerticalClassifier(
    KeywordParams,
    ClassifierMixin,  # type: ignore[misc]
    BaseEstimator,  # type: ignore[misc]
    metaclass=ABCMeta,
):
    """Binary classifier over the bank's and the platforms' columns of aligned rows.

    Subclasses store their keyword arguments in ``__init__`` (see
    :class:`~federated.estimators.params.KeywordParams`) and implement :meth:`_fit_frames`,
    :meth:`_default_probability` and :meth:`_raw_importance`.

    Labels may be any two values; the larger (in sorted order) is class 1, the *bad* outcome
    whose probability is column 1 of ``predict_proba`` (with 0/1 labels, 1 is default).
    After ``fit``: ``classes_``, ``n_features_in_`` (bank and platform columns together),
    ``feature_names_in_`` (``party:column``, the bank's columns first, then each platform's in
    the order of ``X_platforms``), ``feature_importances_`` (same order).
    """

    def _encode_labels(self, y: Any, n_rows: int) -> npt.NDArray[np.int8]:
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None"
            )
        labels = column_or_1d(y, warn=True)
        if len(labels) != n_rows:
            raise ValueError(
                f"y must have one label per row of X_bank ({n_rows}), got {len(labels)}"
            )
        check_classification_targets(labels)  # "Unknown label type: continuous ..."
        kind = type_of_target(labels)
        if kind != "binary":
            raise ValueError(
                f"Only binary classification is supported. The type of the target is {kind}."
            )
        classes, encoded = np.unique(labels, return_inverse=True)
        if classes.size != 2:
            raise ValueError(
                f"y holds one class ({classes[0]!r}); the model needs two (good and bad)"
            )
        self.classes_ = classes
        return encoded.astype(np.int8)

    def _fit_inputs(
        self, x: Any, y: Any, x_platforms: Any
    ) -> tuple[pd.DataFrame, npt.NDArray[np.int8], dict[str, pd.DataFrame]]:
        """Validated fit inputs: bank frame, 0/1 labels, platform frames (nothing is run)."""
        bank, platforms = as_frame(x, "X_bank"), platform_frames(x_platforms)
        labels = self._encode_labels(y, len(bank))
        for name, frame in platforms.items():
            if len(frame) != len(bank):
                raise ValueError(
                    f"X_platforms[{name!r}] has {len(frame)} rows, X_bank {len(bank)}; "
                    "rows must be aligned"
                )
        self._columns = {BANK: list(map(str, bank.columns))} | {
            name: list(map(str, frame.columns)) for name, frame in platforms.items()
        }
        self.feature_names_in_ = np.array(
            [f"{party}:{column}" for party, columns in self._columns.items() for column in columns],
            dtype=object,
        )
        self.n_features_in_ = len(self.feature_names_in_)
        return bank, labels, platforms

    def fit(
        self,
        X: Any,  # noqa: N803 - scikit-learn naming
        y: Any,
        X_platforms: Any,  # noqa: N803
        *,
        test_mask: npt.ArrayLike | None = None,
        sample_weight: npt.ArrayLike | None = None,
    ) -> Self:
        """Train on aligned rows: the bank's columns ``X`` and labels ``y``, each platform's.

        Runs the real protocol (every stage, real Paillier encryption) between in-process
        party runtimes, each reading only its own table. ``test_mask`` rows are held out of
        training (the bank evaluates on them). ``sample_weight`` (one nonnegative weight per
        row) is the bank's weight column; with ``class_weight`` the two multiply
        (:mod:`models.sample_weights`). Inputs are validated before any key is made.
        """
        bank, labels, platforms = self._fit_inputs(X, y, X_platforms)
        mask = None
        if test_mask is not None:
            mask = np.asarray(test_mask, dtype=bool)
            if mask.shape != (len(bank),):
                raise ValueError(f"test_mask must hold one bool per row ({len(bank)})")
        weight = None
        if sample_weight is not None:
            weight = np.asarray(sample_weight, dtype=np.float64)
            if weight.shape != (len(bank),) or not np.isfinite(weight).all() or (weight < 0).any():
                raise ValueError(
                    f"sample_weight must hold one finite weight >= 0 per row ({len(bank)})"
                )
        self._fit_frames(bank, labels, platforms, mask, weight)
        return self

    def _predict_inputs(self, x: Any, x_platforms: Any) -> tuple[pd.DataFrame, Frames]:
        """The bank's and platforms' frames, checked against the columns of the fit.

        A DataFrame is matched by column name (extra columns are ignored, order does not
        matter); an array by position, so it must have exactly the fitted number of columns.
        """
        if not hasattr(self, "classes_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")
        if not isinstance(x_platforms, Mapping) or set(x_platforms) != set(self._columns) - {BANK}:
            names = sorted(x_platforms) if isinstance(x_platforms, Mapping) else x_platforms
            raise ValueError(
                f"X_platforms names {names}; the model was fitted with "
                f"{sorted(p for p in self._columns if p != BANK)}"
            )
        given = {BANK: x} | dict(x_platforms)
        frames = {party: as_frame(given[party], _what(party)) for party in self._columns}
        wrong = [
            f"{_what(party)} has {frames[party].shape[1]}, expected {len(columns)}"
            for party, columns in self._columns.items()
            if not isinstance(given[party], pd.DataFrame) and frames[party].shape[1] != len(columns)
        ]
        if wrong:
            total = sum(frame.shape[1] for frame in frames.values())
            raise ValueError(
                f"X has {total} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input: {'; '.join(wrong)}"
            )
        out = {}
        for party, columns in self._columns.items():
            frame = frames[party]
            if isinstance(given[party], pd.DataFrame):
                missing = [c for c in columns if c not in frame.columns]
                if missing:
                    raise ValueError(f"{_what(party)} lacks the fitted columns {missing}")
                out[party] = frame[columns]
            else:
                out[party] = frame.set_axis(columns, axis=1)
        bank = out.pop(BANK)
        for party, frame in out.items():
            if len(frame) != len(bank):
                raise ValueError(f"{_what(party)} has {len(frame)} rows, X_bank {len(bank)}")
        return bank, out

    def predict_proba(self, X: Any, X_platforms: Any) -> npt.NDArray[np.float64]:  # noqa: N803
        """Class probabilities, shape (rows, 2), columns in ``classes_`` order.

        Column 1 is the probability of the bad outcome (default). ``X_platforms`` must name the
        platforms of the fit, each with its fitted columns; each platform's part answers only
        for its own columns (in production through its scoring endpoint).
        """
        return self._proba(X, X_platforms)

    def _proba(self, x: Any, x_platforms: Any) -> npt.NDArray[np.float64]:
        bank, platforms = self._predict_inputs(x, x_platforms)
        p = self._default_probability(bank, platforms)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any, X_platforms: Any) -> npt.NDArray[Any]:  # noqa: N803
        """The class of every row: ``classes_[1]`` where its probability exceeds 0.5."""
        return self._predict(X, X_platforms)

    def _predict(self, x: Any, x_platforms: Any) -> npt.NDArray[Any]:
        p = self._proba(x, x_platforms)[:, 1]
        classes: npt.NDArray[Any] = self.classes_
        predicted: npt.NDArray[Any] = np.where(p > THRESHOLD, classes[1], classes[0])
        return predicted

    def score(
        self,
        X: Any,  # noqa: N803
        y: Any,
        X_platforms: Any,  # noqa: N803
        sample_weight: Any = None,
    ) -> float:
        """Accuracy of :meth:`predict` (scikit-learn's classifier score), optionally weighted.

        Accuracy at a 0.5 threshold says little about a credit model on imbalanced data; the
        lab's jobs report ranking quality, ``roc_auc_score(y, predict_proba(...)[:, 1])``.
        ``X_platforms`` comes before ``sample_weight``, as in ``fit``.
        """
        predicted = self._predict(X, X_platforms)
        return float(accuracy_score(y, predicted, sample_weight=sample_weight))

    @property
    def feature_importances_(self) -> npt.NDArray[np.float64]:
        """Importance of every feature in ``feature_names_in_`` order, summing to 1.

        All zeros when the model uses no feature (e.g. trees without a split). What each number
        measures, and who may see it, is in the subclass's docstring.
        """
        if not hasattr(self, "classes_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")
        raw = self._raw_importance()
        values = np.array([raw.get(str(key), 0.0) for key in self.feature_names_in_], dtype=float)
        total = values.sum()
        return values / total if total > 0 else values

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False  # one bad/good outcome
        tags.input_tags.allow_nan = True  # missing values have their own bin in both models
        tags.input_tags.string = False
        tags.non_deterministic = True  # Paillier keys and DP noise are drawn fresh
        return tags

    @abstractmethod
    def _fit_frames(
        self,
        bank: pd.DataFrame,
        labels: npt.NDArray[np.int8],
        platforms: Frames,
        test_mask: npt.NDArray[np.bool_] | None,
        sample_weight: npt.NDArray[np.float64] | None = None,
    ) -> None:
        """Run the protocol on validated inputs and set the model's learned attributes."""

    @abstractmethod
    def _default_probability(
        self, bank: pd.DataFrame, platforms: Frames
    ) -> npt.NDArray[np.float64]:
        """Probability of class 1 per row (inputs already checked)."""

    @abstractmethod
    def _raw_importance(self) -> dict[str, float]:
        """Non-negative importance per ``party:column`` (missing keys count as 0)."""
