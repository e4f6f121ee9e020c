"""A scikit-learn face for hetero LR (encrypted WOE binning + vertical LR), for notebooks and tests.

``fit`` runs the real protocol (every stage, real Paillier encryption) between in-process party
runtimes, each reading only its own table; rows must already be aligned (same order in every
frame). Jobs use the same protocol through Flower (``lab train``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.woe import iv_table
from models.vertical_lr.parts import BankLRPart, PlatformLRPart
from models.vertical_lr.protocol import HeteroLROutcome, HeteroLRParams, conclude, start_envelope


class HeteroLRClassifier:
    """WOE logistic regression between one bank (labels) and one or more platforms.

    Parameters are those of :class:`~models.vertical_lr.protocol.HeteroLRParams`.
    After ``fit``: ``bank_part_`` (bins, WOE tables, coefficients, scorecard),
    ``platform_parts_`` (each platform's bins and mapping), ``outcome_`` (history, clocks),
    ``iv_`` (IV of every column, from the bank's part), ``traffic_``, ``classes_``.
    """

    def __init__(self, **params: Any) -> None:
        self._params = HeteroLRParams(**params)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor arguments (scikit-learn protocol)."""
        del deep
        return asdict(self._params)

    def set_params(self, **params: Any) -> HeteroLRClassifier:
        """Set constructor arguments (scikit-learn protocol)."""
        known = {f.name for f in fields(HeteroLRParams)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown parameters {unknown}; valid: {', '.join(sorted(known))}")
        self._params = HeteroLRParams(**{**asdict(self._params), **params})
        return self

    def fit(
        self,
        X_bank: pd.DataFrame,  # noqa: N803 - scikit-learn naming
        y: npt.ArrayLike,
        X_platforms: Mapping[str, pd.DataFrame],  # noqa: N803
        *,
        test_mask: npt.NDArray[np.bool_] | None = None,
    ) -> HeteroLRClassifier:
        """Train on aligned rows; ``test_mask`` rows are held out (evaluated in ``outcome_``)."""
        from federated.inprocess import inprocess_job
        from models.guard import single_operator

        params = self._params
        with inprocess_job(
            X_bank,
            y,
            X_platforms,
            name="hetero-lr-estimator",
            model={"type": "hetero_lr"},
            crypto={"key_bits": params.key_bits, "insecure_test_keys": params.insecure_test_keys},
            limits=single_operator(params.insecure_test_keys),
            test_mask=test_mask,
        ) as job:
            start = start_envelope("bank", job.platforms, job.order, params, "fit")
            outcome: HeteroLROutcome = conclude(job.run(start))
            self.bank_part_ = BankLRPart.from_dict(
                json.loads(Path(outcome.bank_part["path"]).read_text(encoding="utf-8"))
            )
            self.platform_parts_ = {
                name: PlatformLRPart.from_dict(raw)
                for name, raw in job.platform_parts(outcome.platform_parts).items()
            }
            self.outcome_ = outcome
            self.iv_ = iv_table(self.bank_part_.tables).to_dict(orient="records")
            job.close()
            self.traffic_ = job.transport.stats.to_dict()
        self.classes_ = np.array([0, 1])
        return self

    def platform_bins(
        self,
        X_platforms: Mapping[str, pd.DataFrame],  # noqa: N803
    ) -> dict[str, npt.NDArray[np.int16]]:
        """What each platform answers at scoring time: coarse bins per ``party:column``."""
        out = {}
        for party, part in self.platform_parts_.items():
            bins = part.coarse_bins(X_platforms[party].reset_index(drop=True))
            for j, name in enumerate(part.features):
                out[f"{party}:{name}"] = bins[:, j]
        return out

    def predict_proba(
        self,
        X_bank: pd.DataFrame,  # noqa: N803
        X_platforms: Mapping[str, pd.DataFrame],  # noqa: N803
    ) -> npt.NDArray[np.float64]:
        """Class probabilities, shape (rows, 2); column 1 is the default probability."""
        p = self.bank_part_.predict_proba(
            X_bank.reset_index(drop=True), self.platform_bins(X_platforms)
        )
        return np.column_stack([1.0 - p, p])
