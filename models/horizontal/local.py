"""One bank's local training round (FedAvg / FedProx client step) and bank-side evaluation.

This is the plaintext core the Flower client calls: it receives the global parameters, trains
on the bank's own encoded rows for ``epochs`` local epochs, optionally with record-level DP-SGD
(:mod:`models.horizontal.dp`) and a FedProx proximal term, and returns the new parameters, the
number of rows (the FedAvg weight; McMahan et al. 2017), and the privacy events the round
spent. Nothing here sends anything.

FedProx (Li et al. 2020, "Federated optimization in heterogeneous networks") adds
``mu / 2 * ||w - w_global||^2`` to the local objective, which keeps local models near the global
one when banks' portfolios differ. Under DP the proximal gradient ``mu * (w - w_global)`` is
added *after* Opacus clips and noises the data gradient: it depends only on the current
weights (already a DP output) and the public global weights, so it is post-processing and
costs no privacy, and it is not clipped away with the per-record gradients.

What each party learns: the aggregator gets ``arrays`` and ``n_examples`` (see
:mod:`models.horizontal.dp` for what DP covers). ``train_loss`` is the mean training loss on the
bank's rows, without noise: fine for the bank's own log, not covered by DP.
"""

from __future__ import annotations

import logging
import math
import secrets
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from models.evaluation import EvaluationReport, evaluate_scores
from models.horizontal.dp import (
    DPConfig,
    DPState,
    check_round,
    private_round,
    round_outcome,
)
from models.horizontal.errors import DPConfigError, TrainingConfigError, TrainingDataError
from models.horizontal.nets import arrays_to_parameters, parameters_to_arrays, unwrap
from models.privacy import PrivacyEvent

logger = logging.getLogger(__name__)

OptimizerKind = Literal["sgd", "adam"]
OPTIMIZERS: tuple[OptimizerKind, ...] = ("sgd", "adam")

#: Rows scored per forward pass in :func:`predict_proba`.
PREDICT_CHUNK = 65_536

#: Intra-op threads while training. The networks are tiny (23 x 32 x 16 x 1, batches of 64),
#: so torch's thread pool only adds synchronisation: on the 2-core reference machine one
#: thread ran 3 local epochs over 8,000 rows 1.5-4x faster without DP and 9-16x faster with
#: DP than two threads did under load. The previous setting is restored on return.
TRAINING_THREADS = 1

# Opacus hooks the first layer, whose input needs no gradient; torch notes it on every batch.
_HOOK_WARNING = "Full backward hook is firing when gradients are computed"


@dataclass(frozen=True)
class LocalTrainingConfig:
    """How a bank trains in one round. The job spec fixes it; every bank uses the same.

    The defaults were tuned on FATE's horizontal default_credit split (3 banks x 8,000 rows,
    ``benchmarks/horizontal_pooled.py``): pooled MLP(32, 16) test AUC about 0.77.

    Attributes
    ----------
    epochs : int
        Local epochs per round (>= 1).
    batch_size : int
        Mini-batch size; under DP, the expected Poisson batch size (>= 1).
    learning_rate : float
        Step size (> 0).
    optimizer : {"sgd", "adam"}
        Local optimizer, created afresh each round (no optimizer state crosses rounds).
    momentum : float
        SGD momentum in [0, 1) (ignored by Adam).
    proximal_mu : float
        FedProx coefficient mu >= 0; 0 is plain FedAvg local training.
    seed : int, optional
        Seeds the shuffling of non-DP training so a round is reproducible. ``None`` draws a
        seed from :mod:`secrets`. Under DP, sampling and noise never use this seed (see
        ``DPConfig.insecure_seed``).
    pos_weight : float, optional
        Weight of the bad class in the loss (``BCEWithLogitsLoss(pos_weight=...)``); ``None``
        is the unweighted loss.

    Raises
    ------
    TrainingConfigError
        If a value is out of range.
    """

    epochs: int = 1
    batch_size: int = 64
    learning_rate: float = 0.05
    optimizer: OptimizerKind = "sgd"
    momentum: float = 0.9
    proximal_mu: float = 0.0
    seed: int | None = None
    pos_weight: float | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TrainingConfigError(f"{name} must be a positive integer, got {value!r}")
        if not _positive_finite(self.learning_rate):
            raise TrainingConfigError(
                f"learning_rate must be a finite number > 0, got {self.learning_rate!r}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise TrainingConfigError(
                f"unknown optimizer {self.optimizer!r}; use one of {OPTIMIZERS}"
            )
        if not _number(self.momentum) or not 0.0 <= self.momentum < 1.0:
            raise TrainingConfigError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not _number(self.proximal_mu) or not (
            self.proximal_mu >= 0.0 and math.isfinite(self.proximal_mu)
        ):
            raise TrainingConfigError(
                f"proximal_mu must be a finite number >= 0, got {self.proximal_mu!r}"
            )
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise TrainingConfigError(f"seed must be an int or None, got {self.seed!r}")
        if self.pos_weight is not None and not _positive_finite(self.pos_weight):
            raise TrainingConfigError(
                f"pos_weight must be a finite number > 0 or None, got {self.pos_weight!r}"
            )


@dataclass(frozen=True)
class LocalResult:
    """What one local round produced.

    Attributes
    ----------
    arrays : list of numpy.ndarray
        New parameters, in :func:`~models.horizontal.nets.parameters_to_arrays` order.
    n_examples : int
        Rows trained on (the FedAvg weight).
    train_loss : float
        Mean training loss (binary cross-entropy, ``pos_weight``-weighted if set) over the rows
        the round visited, without the proximal term. Not covered by DP.
    dp_state : DPState or None
        Accounting after this round (``None`` without DP); keep it for the next round.
    events : list of PrivacyEvent
        What this round spent (empty without DP).
    """

    arrays: list[npt.NDArray[np.float32]]
    n_examples: int
    train_loss: float
    dp_state: DPState | None = None
    events: list[PrivacyEvent] = field(default_factory=list)


def train_local(
    model: nn.Module,
    X: npt.ArrayLike,  # noqa: N803 - scikit-learn naming
    y: npt.ArrayLike,
    config: LocalTrainingConfig,
    *,
    global_arrays: Sequence[npt.ArrayLike] | None = None,
    dp: DPConfig | None = None,
    dp_state: DPState | None = None,
) -> LocalResult:
    """Train ``model`` on one bank's rows for one round.

    Parameters
    ----------
    model : torch.nn.Module
        Maps ``(batch, n_inputs)`` float32 to ``(batch, 1)`` logits
        (:func:`~models.horizontal.nets.build_model`). Trained in place; after the call it is a
        plain module again (Opacus's hooks removed) and can be reused next round.
    X : array-like, shape (n, n_inputs)
        Encoded features (:meth:`FeatureEncoder.transform`), finite.
    y : array-like of {0, 1}, shape (n,)
        Labels (1 = bad).
    config : LocalTrainingConfig
        Local training settings.
    global_arrays : sequence of arrays, optional
        The global parameters received from the aggregator. They are loaded into ``model``
        before training and anchor the FedProx term. ``None`` trains from the model's current
        parameters (then ``proximal_mu`` must be 0).
    dp : DPConfig, optional
        Record-level DP-SGD settings; ``None`` trains without DP.
    dp_state : DPState, optional
        Required with ``dp``: ``DPState.start(plan_noise(...))`` before round 1, then the
        ``dp_state`` of the previous round's result.

    Returns
    -------
    LocalResult

    Raises
    ------
    TrainingDataError
        If X or y are malformed or X's width differs from the model's.
    TrainingConfigError
        If ``proximal_mu > 0`` without ``global_arrays``, or ``dp_state`` without ``dp``.
    DPConfigError
        If ``dp`` is given without ``dp_state``, or (subclasses) the round does not fit the
        plan, the budget is spent, or ``secure_rng`` cannot be honoured.
    ParameterMismatchError
        If ``global_arrays`` do not fit the model.
    """
    features, labels = _tensors(model, X, y)
    if dp is None and dp_state is not None:
        raise TrainingConfigError("dp_state was given without dp; pass the job's DPConfig too")
    if dp is not None and dp_state is None:
        raise DPConfigError(
            "dp needs dp_state: plan the job first, dp_state=DPState.start(plan_noise(dp, ...))"
        )
    if config.proximal_mu > 0 and global_arrays is None:
        raise TrainingConfigError(
            f"proximal_mu={config.proximal_mu} needs global_arrays (the FedProx anchor)"
        )
    n = int(features.shape[0])
    if dp is not None and dp_state is not None:
        check_round(dp, dp_state, n_examples=n, batch_size=config.batch_size, epochs=config.epochs)

    if global_arrays is not None:
        arrays_to_parameters(model, global_arrays)
    params = [p for p in unwrap(model).parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params] if config.proximal_mu > 0 else None
    optimizer = _optimizer(params, config)
    criterion = nn.BCEWithLogitsLoss(
        pos_weight=None
        if config.pos_weight is None
        else torch.tensor(config.pos_weight, dtype=torch.float32)
    )
    model.train()
    with _threads(TRAINING_THREADS):
        loss, new_state, events = _train(
            model, features, labels, config, optimizer, criterion, params, anchor, dp, dp_state
        )
    model.eval()
    return LocalResult(
        arrays=parameters_to_arrays(model),
        n_examples=n,
        train_loss=loss,
        dp_state=new_state,
        events=events,
    )


@contextmanager
def _threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _train(
    model: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    config: LocalTrainingConfig,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    params: list[nn.Parameter],
    anchor: list[torch.Tensor] | None,
    dp: DPConfig | None,
    dp_state: DPState | None,
) -> tuple[float, DPState | None, list[PrivacyEvent]]:
    if dp is None or dp_state is None:
        loss = _train_plain(model, features, labels, config, optimizer, criterion, params, anchor)
        return loss, None, []
    with private_round(model, optimizer, features, labels, dp, dp_state) as private:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_HOOK_WARNING)
            loss = _train_private(
                private.module,
                private.optimizer,
                private.loader,
                config,
                criterion,
                params,
                anchor,
            )
        history = list(private.engine.accountant.history)
    new_state, events = round_outcome(dp_state, history)
    return loss, new_state, events


def predict_proba(model: nn.Module, X: npt.ArrayLike) -> npt.NDArray[np.float64]:  # noqa: N803
    """Probability of bad for each row (sigmoid of the model's logit)."""
    features, _ = _tensors(model, X, None)
    model.eval()
    out = []
    with torch.no_grad(), _threads(TRAINING_THREADS):
        for start in range(0, int(features.shape[0]), PREDICT_CHUNK):
            logits = model(features[start : start + PREDICT_CHUNK]).reshape(-1)
            out.append(torch.sigmoid(logits).to(torch.float64).numpy())
    return np.concatenate(out) if out else np.empty(0, dtype=np.float64)


def evaluate_local(
    model: nn.Module,
    X: npt.ArrayLike,  # noqa: N803
    y: npt.ArrayLike,
) -> EvaluationReport:
    """Evaluate the model on the bank's labelled rows (runs where the labels are).

    The report holds aggregates only (AUC, KS, deciles, calibration) and may be sent to the
    coordinator; see :mod:`models.evaluation`.

    Raises
    ------
    TrainingDataError
        If X or y are malformed.
    models.evaluation.EvaluationError
        If the rows hold a single class or fewer rows than score groups.
    """
    _, labels = _tensors(model, X, y)
    return evaluate_scores(labels.numpy().astype(np.int64), predict_proba(model, X))


def _train_plain(
    model: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    config: LocalTrainingConfig,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    params: list[nn.Parameter],
    anchor: list[torch.Tensor] | None,
) -> float:
    seed = config.seed if config.seed is not None else secrets.randbits(63)
    generator = torch.Generator().manual_seed(seed)
    n = int(features.shape[0])
    total = 0.0
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, config.batch_size):
            rows = order[start : start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(features[rows]).reshape(-1), labels[rows])
            objective = loss
            if anchor is not None:
                objective = loss + _proximal_term(params, anchor, config.proximal_mu)
            objective.backward()
            optimizer.step()
            total += float(loss.detach()) * int(rows.shape[0])
    return total / (n * config.epochs)


def _train_private(
    module: nn.Module,
    optimizer: Any,  # opacus.optimizers.DPOptimizer (Opacus is untyped)
    loader: torch.utils.data.DataLoader[tuple[torch.Tensor, torch.Tensor]],
    config: LocalTrainingConfig,
    criterion: nn.Module,
    params: list[nn.Parameter],
    anchor: list[torch.Tensor] | None,
) -> float:
    total, rows = 0.0, 0
    for _ in range(config.epochs):
        for features, labels in loader:
            optimizer.zero_grad(set_to_none=True)
            size = int(features.shape[0])
            if size:
                loss = criterion(module(features).reshape(-1), labels)
                total += float(loss.detach()) * size
                rows += size
            else:
                # An empty Poisson batch is still a step: Opacus adds pure noise.
                loss = (module(features).reshape(-1) * 0.0).sum()
            loss.backward()
            if anchor is None:
                optimizer.step()
            elif optimizer.pre_step():  # clipped + noised data gradient is now in p.grad
                with torch.no_grad():
                    for p, p0 in zip(params, anchor, strict=True):
                        if p.grad is not None:
                            p.grad.add_(p - p0, alpha=config.proximal_mu)
                optimizer.original_optimizer.step()
    return total / rows if rows else float("nan")


def _proximal_term(
    params: list[nn.Parameter], anchor: list[torch.Tensor], mu: float
) -> torch.Tensor:
    squared = torch.zeros(())
    for p, p0 in zip(params, anchor, strict=True):
        squared = squared + ((p - p0) ** 2).sum()
    return 0.5 * mu * squared


def _optimizer(params: list[nn.Parameter], config: LocalTrainingConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.learning_rate)
    return torch.optim.SGD(params, lr=config.learning_rate, momentum=config.momentum)


def _tensors(
    model: nn.Module,
    X: npt.ArrayLike,  # noqa: N803
    y: npt.ArrayLike | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        features = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise TrainingDataError(f"X must be a numeric matrix ({exc})") from exc
    if features.ndim != 2 or features.shape[0] == 0:
        raise TrainingDataError(
            f"X must be a non-empty 2-D matrix (rows x encoded features), got shape "
            f"{features.shape}; encode the table with FeatureEncoder.transform"
        )
    if not np.isfinite(features).all():
        raise TrainingDataError("X holds NaN or infinite values; encode with FeatureEncoder")
    width = _input_width(model)
    if width is not None and features.shape[1] != width:
        raise TrainingDataError(
            f"X has {features.shape[1]} columns but the model takes {width}; build the model "
            "with n_inputs=encoder.n_outputs from the job's schema"
        )
    if y is None:
        return torch.from_numpy(features), torch.empty(0)
    labels = np.asarray(y).reshape(-1) if np.ndim(y) else np.asarray([y])
    if labels.shape[0] != features.shape[0]:
        raise TrainingDataError(f"X has {features.shape[0]} rows but y has {labels.shape[0]}")
    if not np.isin(labels, (0, 1)).all():
        raise TrainingDataError("y must hold 0 (good) or 1 (bad) only")
    return torch.from_numpy(features), torch.from_numpy(labels.astype(np.float32))


def _input_width(model: nn.Module) -> int | None:
    for layer in unwrap(model).modules():
        if isinstance(layer, nn.Linear):
            return int(layer.in_features)
    return None


def _number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def _positive_finite(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return value > 0 and math.isfinite(value)
