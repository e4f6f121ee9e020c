"""A scikit-learn face for vertical SecureBoost, for notebooks and tests.

``fit`` runs the real protocol (every stage, real Paillier encryption) between in-process party
runtimes, each reading only its own table; rows must already be aligned (same order in every
frame). Jobs use the same protocol through Flower (``lab train``).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from models.alignment import ALIGNED_ROWS_KEY
from models.evaluation import TEST_MASK_KEY
from models.protocol import COORDINATOR, Envelope
from models.secureboost.parts import BankPart, PlatformPart
from models.secureboost.protocol import (
    SecureBoostOutcome,
    SecureBoostParams,
    conclude,
    start_envelope,
)

_PARAMS = tuple(SecureBoostParams.__dataclass_fields__)


class SecureBoostClassifier:
    """Vertical SecureBoost between one bank (labels) and one or more platforms.

    Parameters are those of :class:`~models.secureboost.protocol.SecureBoostParams`.
    After ``fit``: ``bank_part_``, ``platform_parts_`` (what each party keeps), ``outcome_``
    (timings, operation counts, importance), ``classes_``.
    """

    def __init__(
        self,
        n_estimators: int = 30,
        max_depth: int = 3,
        max_bin: int = 32,
        learning_rate: float = 0.3,
        reg_lambda: float = 1.0,
        min_child_weight: float = 1.0,
        min_child_samples: int = 20,
        min_split_gain: float = 0.0,
        bank_only_trees: int = 0,
        key_bits: int = 2048,
        insecure_test_keys: bool = False,
        dp_epsilon: float | None = None,
        dp_delta: float = 1e-5,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.max_bin = max_bin
        self.learning_rate = learning_rate
        self.reg_lambda = reg_lambda
        self.min_child_weight = min_child_weight
        self.min_child_samples = min_child_samples
        self.min_split_gain = min_split_gain
        self.bank_only_trees = bank_only_trees
        self.key_bits = key_bits
        self.insecure_test_keys = insecure_test_keys
        self.dp_epsilon = dp_epsilon
        self.dp_delta = dp_delta

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Constructor arguments (scikit-learn protocol)."""
        del deep
        return {name: getattr(self, name) for name in _PARAMS}

    def set_params(self, **params: Any) -> SecureBoostClassifier:
        """Set constructor arguments (scikit-learn protocol)."""
        for name, value in params.items():
            if name not in _PARAMS:
                raise ValueError(f"unknown parameter {name!r}; valid: {', '.join(_PARAMS)}")
            setattr(self, name, value)
        return self

    def fit(
        self,
        X_bank: pd.DataFrame,  # noqa: N803 - scikit-learn naming
        y: npt.ArrayLike,
        X_platforms: Mapping[str, pd.DataFrame],  # noqa: N803
    ) -> SecureBoostClassifier:
        """Train on aligned rows: the bank's columns and labels, each platform's columns."""
        from federated.party import DictStore, PartyRuntime
        from federated.protocols import party_protocols
        from federated.spec import JobSpec, PartyBinding, PartySpec
        from federated.transport import InProcessTransport, run_protocol

        labels = np.asarray(y)
        if labels.ndim != 1 or len(labels) != len(X_bank):
            raise ValueError(f"y must have one label per row of X_bank ({len(X_bank)})")
        if not set(np.unique(labels)) <= {0, 1}:
            raise ValueError("y must hold 0 (good) and 1 (bad)")
        for name, frame in X_platforms.items():
            if len(frame) != len(X_bank):
                raise ValueError(
                    f"X_platforms[{name!r}] has {len(frame)} rows, X_bank {len(X_bank)}"
                )
        params = SecureBoostParams(**self.get_params())
        ids = np.array([f"r{i}" for i in range(len(X_bank))])
        with tempfile.TemporaryDirectory(prefix="secureboost-fit-") as tmp:
            folder = Path(tmp)
            frames = {"bank": X_bank.assign(id=ids, y=labels)}
            frames.update({name: frame.assign(id=ids) for name, frame in X_platforms.items()})
            runtimes = {}
            specs = []
            for name, frame in frames.items():
                path = folder / f"{name}.parquet"
                frame.reset_index(drop=True).to_parquet(path)
                role = "bank" if name == "bank" else "platform"
                specs.append(PartySpec(name, role, "id", "y" if role == "bank" else None))  # type: ignore[arg-type]
                binding = PartyBinding(name, role, path, store=folder / "stores" / name)  # type: ignore[arg-type]
                runtimes[name] = PartyRuntime(
                    binding, DictStore(), party_protocols(), disclose_errors=True
                )
            spec = JobSpec(
                job_id="fit",
                name="secureboost-estimator",
                kind="vertical",
                parties=tuple(specs),
                model={"type": "secureboost", **self.get_params()},
                crypto={"key_bits": self.key_bits, "insecure_test_keys": self.insecure_test_keys},
            )
            transport = InProcessTransport(runtimes)
            transport.hello(Envelope("job", "hello", COORDINATOR, "*", {"job": spec.to_json()}))
            for runtime in runtimes.values():
                runtime.store.put_array(ALIGNED_ROWS_KEY, np.arange(len(X_bank)))
            runtimes["bank"].store.put_array(TEST_MASK_KEY, np.zeros(len(X_bank), dtype=bool))
            order = list(frames)
            start = start_envelope("bank", order[1:], order, params, spec.job_id)
            outcome: SecureBoostOutcome = conclude(run_protocol(transport, [start]))
            self.bank_part_ = BankPart.from_dict(
                json.loads(Path(outcome.bank_part["path"]).read_text(encoding="utf-8"))
            )
            self.platform_parts_ = {
                name: PlatformPart.from_dict(
                    json.loads(
                        (folder / "stores" / name / "models" / f"{ref['model_id']}.json").read_text(
                            encoding="utf-8"
                        )
                    )
                )
                for name, ref in outcome.platform_parts.items()
            }
            self.outcome_ = outcome
            self.traffic_ = transport.stats.to_dict()
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(
        self,
        X_bank: pd.DataFrame,  # noqa: N803
        X_platforms: Mapping[str, pd.DataFrame],  # noqa: N803
    ) -> npt.NDArray[np.float64]:
        """Class probabilities, shape (rows, 2); column 1 is the default probability."""
        decisions = {}
        for party, ids in self.bank_part_.platform_splits().items():
            part = self.platform_parts_[party]
            decisions[party] = (ids, part.decisions(X_platforms[party].reset_index(drop=True), ids))
        p = self.bank_part_.predict_proba(X_bank.reset_index(drop=True), decisions)
        return np.column_stack([1.0 - p, p])
