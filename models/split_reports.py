"""The joint model's scores by split, as the bank reports them: discrimination and stability.

The bank holds the joint model's scores of its own training rows (it boosts them tree by tree)
and of its test rows (it evaluates on them), never a platform value; from them it reports the
training rows' evaluation (:func:`models.evaluation.evaluate_scores`) and the score's
population stability from training to test rows (:func:`features.stability.score_stability`:
bins at the training scores' deciles). Both are aggregates, like the test report.
"""

from __future__ import annotations

from typing import Any

import numpy.typing as npt

from features.stability import score_stability
from models.evaluation import evaluate_scores


def split_summary(
    y_train: npt.ArrayLike, p_train: npt.ArrayLike, p_test: npt.ArrayLike | None
) -> dict[str, Any]:
    """``train_report`` and, with test scores, ``score_stability`` (train -> test)."""
    out: dict[str, Any] = {"train_report": evaluate_scores(y_train, p_train).to_dict()}
    if p_test is not None:
        out["score_stability"] = score_stability(p_train, p_test).to_dict()
    return out
