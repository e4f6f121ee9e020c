"""A scikit-learn face for hetero LR (encrypted WOE binning + vertical LR), for notebooks and tests.

``fit`` runs the real protocol (every stage, real Paillier encryption) between in-process party
runtimes (:mod:`federated.inprocess`), each reading only its own table; rows must already be
aligned (same order in every frame). Jobs use the same protocol through Flower (``lab train``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.woe import iv_table
from federated.estimators.base import Frames, VerticalClassifier
from federated.inprocess import inprocess_job
from models.early_stopping import Metric
from models.guard import single_operator
from models.sample_weights import ClassWeight
from models.vertical.keys import CRYPTO_FIELDS
from models.vertical_lr.parts import BankLRPart, PlatformLRPart
from models.vertical_lr.protocol import HeteroLROutcome, HeteroLRParams, conclude, start_envelope

#: The settings' defaults, the only place they are written (:mod:`models.vertical_lr.params`).
_DEFAULTS = HeteroLRParams()


class HeteroLRClassifier(VerticalClassifier):
    """WOE logistic regression between one bank (labels) and one or more platforms.

    Parameters are those of :class:`~models.vertical_lr.params.HeteroLRParams`, with its
    defaults; they are stored as given and validated by ``fit``. ``groups`` (scorecard reason
    groups by column) defaults to ``None``, the dataclass's default of no groups: a mutable
    default would be shared by every instance.
    After ``fit``: ``bank_part_`` (bins, WOE tables, coefficients, scorecard),
    ``platform_parts_`` (each platform's bins and mapping), ``outcome_`` (history, clocks),
    ``iv_`` (IV of every column, from the bank's part), ``traffic_``, and the classifier
    attributes of :class:`~federated.estimators.base.VerticalClassifier` (``classes_``,
    ``feature_names_in_``, ``feature_importances_``).

    ``feature_importances_`` is each feature's standardised coefficient, ``|coef| · sd(WOE)``
    over the training rows (from the WOE tables' bin counts), as a share of the total. These
    are the bank's numbers: the bank holds every feature's WOE table (computed from encrypted
    per-bin counts) and coefficient, including the platforms' features (by name, with the
    platform's bins but not its bin edges); a platform sees none of them.

    ``scheme`` is the homomorphic scheme; hetero LR runs with ``paillier`` only (``fit`` refuses
    another, see :data:`models.vertical_lr.params.HE_SCHEMES`).
    """

    _PARAMS = tuple(f.name for f in fields(HeteroLRParams))

    def __init__(
        self,
        learning_rate: float = _DEFAULTS.learning_rate,
        decay: float = _DEFAULTS.decay,
        l2: float = _DEFAULTS.l2,
        batch_size: int = _DEFAULTS.batch_size,
        max_epochs: int = _DEFAULTS.max_epochs,
        tol: float = _DEFAULTS.tol,
        max_bin: int = _DEFAULTS.max_bin,
        binning: Literal["monotone", "quantile"] = _DEFAULTS.binning,
        min_bin_share: float = _DEFAULTS.min_bin_share,
        max_woe_bins: int = _DEFAULTS.max_woe_bins,
        woe_alpha: float = _DEFAULTS.woe_alpha,
        base_points: float = _DEFAULTS.base_points,
        base_odds: float = _DEFAULTS.base_odds,
        pdo: float = _DEFAULTS.pdo,
        groups: Mapping[str, str] | None = None,
        key_bits: int = _DEFAULTS.key_bits,
        insecure_test_keys: bool = _DEFAULTS.insecure_test_keys,
        scheme: str = _DEFAULTS.scheme,
        validation_fraction: float | None = _DEFAULTS.validation_fraction,
        validation_seed: int = _DEFAULTS.validation_seed,
        early_stopping_rounds: int | None = _DEFAULTS.early_stopping_rounds,
        early_stopping_metric: Metric = _DEFAULTS.early_stopping_metric,
        class_weight: ClassWeight = _DEFAULTS.class_weight,
    ) -> None:
        self.learning_rate = learning_rate
        self.decay = decay
        self.l2 = l2
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.tol = tol
        self.max_bin = max_bin
        self.binning = binning
        self.min_bin_share = min_bin_share
        self.max_woe_bins = max_woe_bins
        self.woe_alpha = woe_alpha
        self.base_points = base_points
        self.base_odds = base_odds
        self.pdo = pdo
        self.groups = groups
        self.key_bits = key_bits
        self.insecure_test_keys = insecure_test_keys
        self.scheme = scheme
        self.validation_fraction = validation_fraction
        self.validation_seed = validation_seed
        self.early_stopping_rounds = early_stopping_rounds
        self.early_stopping_metric = early_stopping_metric
        self.class_weight = class_weight

    def _validated_params(self) -> HeteroLRParams:
        values: dict[str, Any] = self.get_params()
        if values["groups"] is None:
            del values["groups"]  # the dataclass's own default: no groups
        else:
            values["groups"] = dict(values["groups"])
        return HeteroLRParams(**values)

    def _fit_frames(
        self,
        bank: pd.DataFrame,
        labels: npt.NDArray[np.int8],
        platforms: Frames,
        test_mask: npt.NDArray[np.bool_] | None,
        sample_weight: npt.NDArray[np.float64] | None = None,
    ) -> None:
        params = self._validated_params()
        self._params = params  # the settings this fit ran with (tests replay the core on them)
        with inprocess_job(
            bank,
            labels,
            platforms,
            name="hetero-lr-estimator",
            model={"type": "hetero_lr"},
            crypto={name: getattr(params, name) for name in CRYPTO_FIELDS},
            limits=single_operator(params.insecure_test_keys),
            test_mask=test_mask,
            sample_weight=sample_weight,
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

    def _default_probability(
        self, bank: pd.DataFrame, platforms: Frames
    ) -> npt.NDArray[np.float64]:
        return self.bank_part_.predict_proba(bank, self.platform_bins(platforms))

    def _raw_importance(self) -> dict[str, float]:
        out = {}
        for table in self.bank_part_.tables:
            woe = np.asarray(table.woe, dtype=np.float64)
            rows = np.asarray(table.total, dtype=np.float64)
            if rows.sum() <= 0:
                continue
            mean = float(np.average(woe, weights=rows))
            spread = float(np.sqrt(np.average((woe - mean) ** 2, weights=rows)))
            key = self.bank_part_.table_key(table)
            out[key] = abs(self.bank_part_.coefficients[key]) * spread
        return out
