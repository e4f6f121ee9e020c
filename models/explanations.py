"""Per-enterprise explanations of a vertical model's score: contributions and reason codes.

A model type explains a score as an :class:`Attribution`: per row a base value (the score of an
"average" enterprise) and one signed contribution to the log-odds margin per *label*, with
``base + Σ contributions == margin`` exactly (up to float rounding). Labels are
``party:name``: the bank's own columns by name, a platform's contributions only by its published
**feature group** (``platform:tax``), never by column.

:func:`reason_codes` turns an attribution into adverse-action reason codes: per row the ``k``
labels that raised the predicted risk most (positive contributions, largest first), each with its
signed contribution. A credit decision cites at most four principal reasons
(:data:`DEFAULT_REASONS`, as US Regulation B's adverse-action notices do).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

#: Reason codes per scored enterprise unless the caller asks for another number.
DEFAULT_REASONS = 4

#: Group of a column whose party published none (e.g. FATE's files): said, not guessed.
UNGROUPED = "ungrouped"

#: Most reason codes a caller may ask for (a reason code is a principal reason, not a dump).
MAX_REASONS = 10


class AttributionRefusedError(ValueError):
    """A platform did not release what an attribution by feature group needs."""


class ExplanationUnavailableError(ValueError):
    """A model (part) was saved without what its explanation needs (e.g. node covers)."""


@dataclass(frozen=True)
class Attribution:
    """Contributions of each label to each row's log-odds margin.

    Attributes
    ----------
    base : ndarray of shape (rows,)
        The part of the margin no label accounts for (SecureBoost: the base score plus every
        tree's cover-weighted mean leaf value; hetero LR: the intercept).
    labels : tuple of str
        ``party:column`` (the bank's own columns) or ``party:group`` (a platform's groups).
    values : ndarray of shape (rows, labels)
        Signed contributions; positive raises the predicted default risk.
    """

    base: npt.NDArray[np.float64]
    labels: tuple[str, ...]
    values: npt.NDArray[np.float64]

    @property
    def margin(self) -> npt.NDArray[np.float64]:
        """``base + Σ contributions`` per row: the model's log-odds."""
        return np.asarray(self.base + self.values.sum(axis=1), dtype=np.float64)

    def frame(self) -> pd.DataFrame:
        """One column per label (contributions), plus ``base`` and ``margin``."""
        out = pd.DataFrame(self.values, columns=list(self.labels))
        out.insert(0, "base", self.base)
        out.insert(0, "margin", self.margin)
        return out


def check_reasons(k: object) -> int:
    """``k`` as a number of reason codes, or a ``ValueError`` naming the bounds."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 0 <= k <= MAX_REASONS:
        raise ValueError(f"reasons must be an integer in [0, {MAX_REASONS}], got {k!r}")
    return int(k)


def reason_columns(k: int) -> list[str]:
    """``reason_1, reason_1_value, ..., reason_k, reason_k_value``."""
    out: list[str] = []
    for i in range(1, k + 1):
        out += [f"reason_{i}", f"reason_{i}_value"]
    return out


def reason_codes(attribution: Attribution, k: int = DEFAULT_REASONS) -> pd.DataFrame:
    """The ``k`` labels that raised each row's risk most, with their signed contributions.

    Only positive contributions are reasons (what pushed the score towards default); ties are
    broken by label. A row with fewer than ``k`` positive contributions has empty labels and
    ``NaN`` values in the remaining columns.

    Returns
    -------
    DataFrame
        Columns :func:`reason_columns` ``(k)``, one row per row of ``attribution``.
    """
    k = check_reasons(k)
    n = attribution.values.shape[0]
    labels = np.asarray(attribution.labels, dtype=object)
    out: dict[str, list[object]] = {c: [] for c in reason_columns(k)}
    # Stable sort on (-value, label): sort by label first, then stably by -value.
    by_label = np.argsort(labels, kind="stable") if len(labels) else np.zeros(0, np.int64)
    for r in range(n):
        row = attribution.values[r, by_label]
        order = by_label[np.argsort(-row, kind="stable")]
        picked = [j for j in order if attribution.values[r, j] > 0][:k]
        for i in range(k):
            if i < len(picked):
                out[f"reason_{i + 1}"].append(str(labels[picked[i]]))
                out[f"reason_{i + 1}_value"].append(float(attribution.values[r, picked[i]]))
            else:
                out[f"reason_{i + 1}"].append("")
                out[f"reason_{i + 1}_value"].append(float("nan"))
    return pd.DataFrame(out, columns=reason_columns(k))


def explained_frame(
    probability: npt.NDArray[np.float64], attribution: Attribution, k: int
) -> pd.DataFrame:
    """What a scoring call answers with reasons: probability, margin, base and reason codes."""
    out = pd.DataFrame(
        {"probability": probability, "margin": attribution.margin, "base": attribution.base}
    )
    return pd.concat([out, reason_codes(attribution, k)], axis=1)
