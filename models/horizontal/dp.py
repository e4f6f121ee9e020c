"""Record-level differentially private local training (DP-SGD) with Opacus.

Mechanism, accounting and policy are kept apart. Opacus's ``DPOptimizer`` clips each record's
gradient to L2 norm ``max_grad_norm`` and adds Gaussian noise of standard deviation
``noise_multiplier * max_grad_norm`` to the sum of a Poisson-sampled batch (Abadi et al. 2016,
"Deep learning with differential privacy"); Opacus's accountant hears about every step; this
module turns the steps into :class:`~models.privacy.PrivacyEvent` values, and the governance
ledger decides whether they fit the budget. No privacy arithmetic is written here:
:func:`plan_noise` asks Opacus (``get_noise_multiplier``) and :func:`models.privacy.epsilon`
composes events with Opacus's RDP or PRV accountant.

Unit of privacy
---------------
The guarantee protects **one loan record (one row) of one bank's table**: the released model
updates are (ε, δ)-indistinguishable whether or not any single row was in that bank's data
(add/remove-one adjacency, which Opacus's accountants assume). It does *not* protect an
enterprise that borrows from several banks (each bank's rows are accounted apart, so an
enterprise with rows at k banks gets up to k times the ε by basic composition), nor the fact
that a bank took part or its data as a whole: that is client-level DP (McMahan et al. 2018),
a different mechanism (clipping and noising whole updates at the aggregator).

What the aggregator learns
--------------------------
The model parameters after each round, which are a DP function of each bank's rows. It also
learns ``n_examples`` (used to weight FedAvg and to plan the sampling rate): dataset sizes are
treated as public, as in standard DP-SGD accounting. ``LocalResult.train_loss`` is computed on
the bank's rows without noise and is *not* covered; a bank should not send it under DP.

Planning over the whole job
---------------------------
:func:`plan_noise` runs before the first round and picks the noise multiplier that makes *all*
rounds x local epochs meet the target (ε, δ). One epoch is ``ceil(n / batch_size)`` steps at
Poisson sampling rate ``q = 1 / ceil(n / batch_size)`` (= ``batch_size / n`` when the batch
size divides n; otherwise the nearest rate giving whole steps per epoch, which is the rate
Opacus's own ``make_private`` records). The plan travels inside :class:`DPState`, which the
bank's node keeps between rounds; each round restores the accountant history from it before
training, so ε is cumulative, and a round that would go past the planned steps is refused.

Randomness
----------
Poisson sampling and noise come from a private ``torch.Generator`` (Mersenne Twister) seeded
with 64 bits from :mod:`secrets`. That seed is unpredictable, but the generator is not a
cryptographically secure PRNG, and torch's Gaussian sampler is not hardened against the
floating-point attacks of Mironov (2012); such attacks are outside this lab's threat model.
Opacus's ``secure_mode`` would close both gaps but needs the ``torchcsprng`` package, whose last
release (0.2.1, 2021) ships wheels only for CPython 3.6-3.9 and torch 1.8 and no source
distribution, so it cannot be installed with torch 2.13 on Python 3.11: ``secure_rng=True``
raises :class:`SecureRNGUnavailableError` here. ``DPConfig.insecure_seed`` makes sampling and
noise reproducible for tests; anyone who knows that seed can regenerate the noise, so it voids
the guarantee.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import secrets
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from models.horizontal.errors import (
    DPConfigError,
    DPPlanMismatchError,
    PrivacyBudgetExhaustedError,
    PrivacyBudgetTooSmallError,
    SecureRNGUnavailableError,
)
from models.privacy import ACCOUNTANTS, Accountant, PrivacyEvent, epsilon

logger = logging.getLogger(__name__)

#: Label of the events this module emits.
MECHANISM = "dp-sgd"

#: Relative precision of the noise search: the planned ε lies in
#: ``[target * (1 - PLAN_RELATIVE_TOLERANCE), target]``.
PLAN_RELATIVE_TOLERANCE = 1e-3

History = tuple[tuple[float, float, int], ...]

# Opacus warns on every PrivacyEngine() without secure_mode; the module docstring says it once.
_SECURE_RNG_WARNING = "Secure RNG turned off"
# RDP: "Optimal order is the largest alpha" means a looser, still valid, bound.
_ALPHA_WARNING = "Optimal order is the largest alpha"


@dataclass(frozen=True)
class DPConfig:
    """Record-level DP-SGD settings for one bank's share of a horizontal job.

    Attributes
    ----------
    target_epsilon : float
        ε of the whole job (all rounds), > 0.
    target_delta : float
        δ in (0, 1); take it well below ``1 / n_examples`` (e.g. 1e-5 for 8,000 rows).
    max_grad_norm : float
        Per-record gradient clipping bound C (the L2 sensitivity of one step), > 0.
    accountant : {"rdp", "prv"}
        Opacus accountant for planning and reporting. PRV (Gopi et al. 2021) is tighter; RDP
        (Mironov 2017) is faster.
    secure_rng : bool
        Ask for Opacus's secure mode (torchcsprng). Not available in this environment, see the
        module docstring; ``True`` raises :class:`SecureRNGUnavailableError` when used.
    insecure_seed : int, optional
        Seed for sampling and noise, for reproducible tests only. **Voids the guarantee**: who
        knows the seed can regenerate and subtract the noise. ``None`` (default) seeds from
        :mod:`secrets`.

    Raises
    ------
    DPConfigError
        If a value is out of range or both ``secure_rng`` and ``insecure_seed`` are set.
    """

    target_epsilon: float
    target_delta: float
    max_grad_norm: float = 1.0
    accountant: Accountant = "rdp"
    secure_rng: bool = False
    insecure_seed: int | None = None

    def __post_init__(self) -> None:
        if not _is_number(self.target_epsilon) or not (
            self.target_epsilon > 0 and math.isfinite(self.target_epsilon)
        ):
            raise DPConfigError(
                f"target_epsilon must be a finite number > 0, got {self.target_epsilon!r}; "
                "for no DP pass dp=None"
            )
        if not _is_number(self.target_delta) or not 0 < self.target_delta < 1:
            raise DPConfigError(
                f"target_delta must be in (0, 1), got {self.target_delta!r}; use e.g. 1e-5"
            )
        if not _is_number(self.max_grad_norm) or not (
            self.max_grad_norm > 0 and math.isfinite(self.max_grad_norm)
        ):
            raise DPConfigError(f"max_grad_norm must be > 0, got {self.max_grad_norm!r}")
        if self.accountant not in ACCOUNTANTS:
            raise DPConfigError(f"unknown accountant {self.accountant!r}; use one of {ACCOUNTANTS}")
        if not isinstance(self.secure_rng, bool):
            raise DPConfigError(f"secure_rng must be true or false, got {self.secure_rng!r}")
        if self.insecure_seed is not None and (
            isinstance(self.insecure_seed, bool) or not isinstance(self.insecure_seed, int)
        ):
            raise DPConfigError(f"insecure_seed must be an int or None, got {self.insecure_seed!r}")
        if self.secure_rng and self.insecure_seed is not None:
            raise DPConfigError("secure_rng=True cannot be combined with an insecure_seed")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DPConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


@dataclass(frozen=True)
class DPPlan:
    """The noise and sampling that make a whole job meet its (ε, δ), fixed before round 1.

    Attributes
    ----------
    noise_multiplier : float
        σ: noise standard deviation over the clipping bound.
    sample_rate : float
        Poisson sampling probability per step, ``1 / steps_per_epoch``.
    steps_per_round : int
        DP-SGD steps one round takes (``epochs_per_round * steps_per_epoch``).
    total_steps : int
        Steps of the whole job (``rounds * steps_per_round``).
    planned_epsilon : float
        ε of all ``total_steps`` steps at ``target_delta`` under ``accountant`` (at most
        ``target_epsilon``).
    n_examples, batch_size, epochs_per_round, rounds : int
        What the plan was made for; every round checks them.
    target_epsilon, target_delta : float
        The budget the plan meets.
    accountant : {"rdp", "prv"}
        The accountant that planned it.
    """

    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    total_steps: int
    planned_epsilon: float
    n_examples: int
    batch_size: int
    epochs_per_round: int
    rounds: int
    target_epsilon: float
    target_delta: float
    accountant: Accountant

    @property
    def steps_per_epoch(self) -> int:
        """Batches in one local epoch."""
        return self.steps_per_round // self.epochs_per_round

    def events(self) -> list[PrivacyEvent]:
        """The whole job as privacy events (what the budget ledger should reserve)."""
        return [
            PrivacyEvent(
                self.noise_multiplier, self.sample_rate, self.total_steps, "record", MECHANISM
            )
        ]

    def round_event(self) -> PrivacyEvent:
        """One round's privacy event."""
        return PrivacyEvent(
            self.noise_multiplier, self.sample_rate, self.steps_per_round, "record", MECHANISM
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DPPlan:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


@dataclass(frozen=True)
class DPState:
    """A bank's DP accounting between rounds: the plan and Opacus's accountant history.

    The bank's Flower node keeps this in its own state (``to_dict`` is JSON-serialisable; JSON
    round-trips floats exactly, which Opacus's history merging relies on). It never leaves the
    bank.

    Attributes
    ----------
    plan : DPPlan
        The job's plan (from :func:`plan_noise`).
    history : tuple of (float, float, int)
        Opacus accountant history: ``(noise_multiplier, sample_rate, steps)`` entries.
    """

    plan: DPPlan
    history: History = field(default=())

    def __post_init__(self) -> None:
        for entry in self.history:
            if len(entry) != 3:
                raise DPConfigError(
                    f"accountant history entries are (noise_multiplier, sample_rate, steps), "
                    f"got {entry!r}"
                )

    @classmethod
    def start(cls, plan: DPPlan) -> DPState:
        """State before the first round."""
        return cls(plan=plan)

    @property
    def steps_taken(self) -> int:
        """DP-SGD steps accounted so far."""
        return sum(int(steps) for _, _, steps in self.history)

    @property
    def steps_remaining(self) -> int:
        """Steps the plan still allows."""
        return self.plan.total_steps - self.steps_taken

    def events(self) -> list[PrivacyEvent]:
        """The history as privacy events (unit: one record)."""
        return [
            PrivacyEvent(float(sigma), float(rate), int(steps), "record", MECHANISM)
            for sigma, rate, steps in self.history
        ]

    def epsilon(self, delta: float, accountant: Accountant = "rdp") -> float:
        """Cumulative ε so far at ``delta``, composed by Opacus (via models.privacy)."""
        return epsilon(self.events(), delta, accountant)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "plan": self.plan.to_dict(),
            "history": [[float(s), float(q), int(n)] for s, q, n in self.history],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DPState:
        """Inverse of :meth:`to_dict`."""
        history = tuple((float(s), float(q), int(n)) for s, q, n in data.get("history", []))
        return cls(plan=DPPlan.from_dict(dict(data["plan"])), history=history)


def secure_rng_available() -> bool:
    """Whether ``torchcsprng`` (needed by Opacus's secure mode) can be imported."""
    return importlib.util.find_spec("torchcsprng") is not None


def check_secure_rng(dp: DPConfig) -> None:
    """Refuse ``secure_rng=True`` where torchcsprng is missing.

    Raises
    ------
    SecureRNGUnavailableError
        If ``dp.secure_rng`` and ``torchcsprng`` cannot be imported.
    """
    if dp.secure_rng and not secure_rng_available():
        raise SecureRNGUnavailableError(
            "secure_rng=True needs the torchcsprng package for Opacus's secure_mode, and it "
            "cannot be installed here: its last release (0.2.1) has wheels only for CPython "
            "3.6-3.9 / torch 1.8 and no source distribution. Use secure_rng=False (noise from "
            "a secrets-seeded torch generator, not a CSPRNG; see models.horizontal.dp)"
        )


def plan_noise(
    dp: DPConfig,
    *,
    n_examples: int,
    batch_size: int,
    epochs_per_round: int,
    rounds: int,
) -> DPPlan:
    """Pick the noise multiplier that makes the whole job meet ``dp``'s (ε, δ).

    Parameters
    ----------
    dp : DPConfig
        Target budget and accountant.
    n_examples : int
        Rows the bank trains on each round.
    batch_size : int
        Expected Poisson batch size (``LocalTrainingConfig.batch_size``).
    epochs_per_round : int
        Local epochs per round (``LocalTrainingConfig.epochs``).
    rounds : int
        Federated rounds the bank will take part in.

    Returns
    -------
    DPPlan
        ``planned_epsilon <= dp.target_epsilon``, within :data:`PLAN_RELATIVE_TOLERANCE`.

    Raises
    ------
    DPConfigError
        If a count is not a positive integer.
    PrivacyBudgetTooSmallError
        If no noise multiplier up to Opacus's maximum (1e6) meets the target.
    SecureRNGUnavailableError
        If ``dp.secure_rng`` cannot be honoured here.
    """
    from opacus.accountants.utils import get_noise_multiplier

    check_secure_rng(dp)
    for name, value in (
        ("n_examples", n_examples),
        ("batch_size", batch_size),
        ("epochs_per_round", epochs_per_round),
        ("rounds", rounds),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DPConfigError(f"{name} must be a positive integer, got {value!r}")
    steps_per_epoch = math.ceil(n_examples / batch_size)
    sample_rate = 1.0 / steps_per_epoch
    steps_per_round = epochs_per_round * steps_per_epoch
    total_steps = rounds * steps_per_round
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_ALPHA_WARNING)
            sigma = float(
                get_noise_multiplier(
                    target_epsilon=dp.target_epsilon,
                    target_delta=dp.target_delta,
                    sample_rate=sample_rate,
                    steps=total_steps,
                    accountant=dp.accountant,
                    epsilon_tolerance=PLAN_RELATIVE_TOLERANCE * dp.target_epsilon,
                )
            )
    except ValueError as exc:
        raise PrivacyBudgetTooSmallError(
            f"no noise multiplier meets ε={dp.target_epsilon}, δ={dp.target_delta} over "
            f"{total_steps} steps at sampling rate {sample_rate:.4g} ({exc}); raise the budget, "
            "or take fewer rounds, fewer local epochs or smaller batches"
        ) from exc
    event = PrivacyEvent(sigma, sample_rate, total_steps, "record", MECHANISM)
    planned = epsilon([event], dp.target_delta, dp.accountant)
    if planned > dp.target_epsilon:  # Opacus's search returns an upper σ; never expected.
        raise PrivacyBudgetTooSmallError(
            f"Opacus planned σ={sigma} but it gives ε={planned} > {dp.target_epsilon}"
        )
    logger.info(
        "DP plan: σ=%.4f, q=%.5f, %d steps (%d rounds x %d), ε=%.4f at δ=%g (%s)",
        sigma,
        sample_rate,
        total_steps,
        rounds,
        steps_per_round,
        planned,
        dp.target_delta,
        dp.accountant,
    )
    return DPPlan(
        noise_multiplier=sigma,
        sample_rate=sample_rate,
        steps_per_round=steps_per_round,
        total_steps=total_steps,
        planned_epsilon=planned,
        n_examples=n_examples,
        batch_size=batch_size,
        epochs_per_round=epochs_per_round,
        rounds=rounds,
        target_epsilon=dp.target_epsilon,
        target_delta=dp.target_delta,
        accountant=dp.accountant,
    )


def check_round(
    dp: DPConfig, state: DPState, *, n_examples: int, batch_size: int, epochs: int
) -> None:
    """Refuse a round the plan does not cover.

    Raises
    ------
    DPPlanMismatchError
        If the data size, batch size, epochs or budget differ from the plan's.
    PrivacyBudgetExhaustedError
        If the round would take the job past the planned number of steps.
    """
    plan = state.plan
    mismatches = [
        f"{name} is {actual!r} but the plan was made for {planned!r}"
        for name, actual, planned in (
            ("n_examples", n_examples, plan.n_examples),
            ("batch_size", batch_size, plan.batch_size),
            ("epochs", epochs, plan.epochs_per_round),
            ("target_epsilon", dp.target_epsilon, plan.target_epsilon),
            ("target_delta", dp.target_delta, plan.target_delta),
            ("accountant", dp.accountant, plan.accountant),
        )
        if actual != planned
    ]
    if mismatches:
        raise DPPlanMismatchError(
            "; ".join(mismatches) + "; make a new plan (plan_noise) before the job starts"
        )
    foreign = [
        h for h in state.history if (h[0], h[1]) != (plan.noise_multiplier, plan.sample_rate)
    ]
    if foreign:
        raise DPPlanMismatchError(
            f"the accountant history holds steps {foreign} not made under this plan "
            f"(σ={plan.noise_multiplier}, q={plan.sample_rate}); keep one DPState per job"
        )
    if state.steps_taken + plan.steps_per_round > plan.total_steps:
        raise PrivacyBudgetExhaustedError(
            f"{state.steps_taken} of {plan.total_steps} planned steps are spent and a round "
            f"takes {plan.steps_per_round}: another round would exceed ε="
            f"{plan.target_epsilon}; stop training or plan a new job with more budget"
        )


class _Rows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Tensor rows fetched a batch at a time (``__getitems__``), so empty batches are empty."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        self.features = features
        self.labels = labels

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.as_tensor(indices, dtype=torch.long)
        return self.features[rows], self.labels[rows]


def _identity(batch: Any) -> Any:
    """Collate function for :class:`_Rows`: its ``__getitems__`` already returns tensors."""
    return batch


def _generator(dp: DPConfig) -> torch.Generator:
    seed = dp.insecure_seed if dp.insecure_seed is not None else secrets.randbits(64)
    if dp.insecure_seed is not None:
        logger.warning("DP sampling and noise use insecure_seed: the DP guarantee does not hold")
    return torch.Generator().manual_seed(seed)


@dataclass
class PrivateRound:
    """Opacus objects for one round (live only inside :func:`private_round`)."""

    module: nn.Module
    optimizer: Any  # opacus.optimizers.DPOptimizer (Opacus is untyped)
    loader: DataLoader[tuple[torch.Tensor, torch.Tensor]]
    engine: Any  # opacus.PrivacyEngine


@contextmanager
def private_round(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    features: torch.Tensor,
    labels: torch.Tensor,
    dp: DPConfig,
    state: DPState,
) -> Iterator[PrivateRound]:
    """Make one round private with Opacus; restore the accountant history first.

    Inside the block, train with ``round.module`` / ``round.optimizer`` over ``round.loader``
    (Poisson batches; one iteration of the loader is one epoch). On exit Opacus's hooks are
    removed from ``model``, so the same model can be used and wrapped again next round.
    """
    from opacus import PrivacyEngine
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler

    check_secure_rng(dp)
    plan = state.plan
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_SECURE_RNG_WARNING)
        engine = PrivacyEngine(accountant=dp.accountant, secure_mode=dp.secure_rng)
    engine.accountant.history = [tuple(entry) for entry in state.history]
    generator = engine.secure_rng if dp.secure_rng else _generator(dp)
    sampler = UniformWithReplacementSampler(
        num_samples=int(features.shape[0]),
        sample_rate=plan.sample_rate,
        generator=generator,
        steps=plan.steps_per_epoch,
    )
    loader: DataLoader[tuple[torch.Tensor, torch.Tensor]] = DataLoader(
        _Rows(features, labels), batch_sampler=sampler, collate_fn=_identity
    )
    # poisson_sampling=False: the loader above already samples Poisson batches with our
    # generator (Opacus would otherwise draw them from torch's global RNG). Opacus records the
    # rate 1 / len(loader) = plan.sample_rate.
    module, dp_optimizer, dp_loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=plan.noise_multiplier,
        max_grad_norm=dp.max_grad_norm,
        poisson_sampling=False,
        noise_generator=None if dp.secure_rng else generator,
    )
    try:
        yield PrivateRound(module=module, optimizer=dp_optimizer, loader=dp_loader, engine=engine)
    finally:
        module.cleanup()


def round_outcome(
    state: DPState, engine_history: Sequence[tuple[float, float, int]]
) -> tuple[DPState, list[PrivacyEvent]]:
    """The state after a round and the events the round spent, from Opacus's history.

    Raises
    ------
    DPPlanMismatchError
        If Opacus recorded steps at another noise or rate than planned (never expected).
    """
    plan = state.plan
    history = tuple((float(s), float(q), int(n)) for s, q, n in engine_history)
    new = DPState(plan=plan, history=history)
    foreign = [h for h in history if (h[0], h[1]) != (plan.noise_multiplier, plan.sample_rate)]
    if foreign:
        raise DPPlanMismatchError(
            f"Opacus accounted steps {foreign} outside the plan (σ={plan.noise_multiplier}, "
            f"q={plan.sample_rate}); the round's update must not be released"
        )
    steps = new.steps_taken - state.steps_taken
    events = (
        [PrivacyEvent(plan.noise_multiplier, plan.sample_rate, steps, "record", MECHANISM)]
        if steps > 0
        else []
    )
    return new, events


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)
