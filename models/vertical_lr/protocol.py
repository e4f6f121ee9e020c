"""The ``hetero_lr`` protocol: encrypted WOE/IV binning, then vertical logistic regression.

Between the bank (labels, its own columns, a Paillier key pair) and one or more platforms
(columns, each with its own Paillier key pair); no trusted third party: the coordinator only
relays ciphertexts and masked sums. Rows are the job's aligned training rows (after PSI) in the
agreed order; the bank's test rows never take part in training.

Stages
------
``setup`` (coordinator -> bank)
    The bank bins its columns (quantile fine bins on its training rows), computes its own WOE
    tables, generates its key pair and sends each platform ``init``: the public key, the
    training-row mask and its training labels encrypted (one ciphertext per row).
``init`` (bank -> platform)
    The platform fits fine bins on its training rows, sums the encrypted labels per
    (column, fine bin) and answers ``counts``: per column its name, kind and number of bins, the
    row count of every bin, the encrypted bad count of every bin, its own public key and its
    share of the batch schedule's seed (the bank committed to its own part in ``init``;
    :mod:`models.vertical_lr.batch_seed`).
``bins`` (bank -> platform)
    The bank decrypts the bad counts, merges fine bins (monotone optimal binning, from counts
    alone), computes WOE and IV and sends each platform the fine -> coarse mapping and the WOE
    of its coarse bins, with the descent settings and the seed's reveal (the bank's nonce and
    every share), from which the platform derives the seed itself.
``batch`` (bank -> platform)
    Per mini-batch: the bank's residual part ``r = 0.25 u_B + 0.5 - y`` of the batch rows,
    encrypted under the bank's key. With several platforms each sends the others its
    ``0.25 u_P`` encrypted under the bank's key (``peer``).
``partial`` (platform -> bank)
    The platform adds its ``0.25 u_P`` to get ``[[d]]``, sums it per coarse bin, weights the
    sums by its WOE values (its gradient ``Σ d·x``), masks and re-randomises them; it also sends
    ``0.25 u_P`` encrypted under its *own* key.
``update`` (bank -> platform)
    The bank decrypts the masked gradient (learning only gradient + mask) and returns it; it sums
    the platform-key ciphertexts of ``u_P`` per bank coarse bin, weights them by its own WOE
    (the cross term of its gradient), masks and re-randomises them.
``cross_sums`` (platform -> bank)
    The platform unmasks its gradient and takes its step; it decrypts the bank's masked cross
    terms (learning only term + mask) and returns them, refusing a batch with fewer than
    ``rows_per_cross_term`` rows per term (its own policy). At the last batch of an epoch it adds
    one bit: whether its own weights settled (relative change below ``tol``). The bank unmasks
    and takes its step; it stops when it and every platform settled.
``finish`` / ``final``
    After the last epoch the platform saves its part (bins and mapping) and releases its
    coefficients and the coarse bins of the bank's test rows; the bank evaluates, builds the
    scorecard and reports ``done`` to the coordinator.

What each party learns
----------------------
================  ==============================================================================
bank              per column of every platform: the number of fine bins, the row count and the
                  bad count of every (anonymous, ordered) fine bin, hence WOE and IV; per batch
                  its own gradient (which includes ``Σ_{i∈bin} u_P,i`` per own coarse bin,
                  over batches of at least the platform's ``min_batch_size`` rows); one bit
                  per platform and epoch (its weights settled); the platforms' coefficients
                  and, for its test rows, their coarse bins at the end. Never a platform
                  value, bin edge, per-row partial logit or norm of a platform's weights.
platform          ciphertexts it cannot read; the coarse mapping and WOE of its own bins (a
                  per-bin label statistic: the bank's bad-rate ratio per coarse bin), its own
                  gradient and coefficients. Never a label, a residual or a bank value.
coordinator       ciphertexts, masked sums it cannot unmask, sizes, timings; the bank's
                  evaluation report, per-epoch history and model references (``done``).
================  ==============================================================================

The WOE the platform receives is what any WOE-encoded model needs where the values are; with
one-hot bins instead its own coefficients would carry the same per-bin information.

This module holds the stage machines, the party and the coordinator's side. The roles' steps
are in :mod:`~models.vertical_lr.bank` (with :mod:`~models.vertical_lr.bank_woe` and
:mod:`~models.vertical_lr.bank_descent`) and :mod:`~models.vertical_lr.platform`, the arithmetic
both run in :mod:`~models.vertical_lr.arithmetic`, the settings in
:mod:`~models.vertical_lr.params`, the platform's batch checks in
:mod:`~models.vertical_lr.privacy`; what both roles keep between messages in
:mod:`~models.vertical_lr.state`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from models.protocol import Envelope, StageMachine
from models.vertical import VerticalParty, bank_done, setup_envelope
from models.vertical_lr.bank import BankRole
from models.vertical_lr.params import HeteroLRParams
from models.vertical_lr.platform import PlatformRole
from models.vertical_lr.state import PROTOCOL

_BANK = StageMachine(
    PROTOCOL,
    {
        "setup": {StageMachine.START},
        "counts": {"setup", "counts"},
        "ready": {"counts", "ready"},
        "partial": {"ready", "partial", "cross_sums"},
        "cross_sums": {"partial", "cross_sums"},
        "final": {"cross_sums", "final"},
    },
)
_PLATFORM = StageMachine(
    PROTOCOL,
    {
        "init": {StageMachine.START},
        "bins": {"init"},
        "batch": {"bins", "update", "peer"},
        "peer": {"bins", "batch", "update", "peer"},
        "update": {"batch", "peer"},
        "finish": {"update"},
    },
)


class HeteroLRParty(VerticalParty):
    """Party side of the protocol; dispatches on the party's role."""

    name = PROTOCOL

    def __init__(self) -> None:
        super().__init__(_BANK, BankRole(), _PLATFORM, PlatformRole())


# ------------------------------------------------------------------------------- coordinator


def start_envelope(
    bank: str, platforms: list[str], order: list[str], params: HeteroLRParams, job_id: str
) -> Envelope:
    """The coordinator's only message: ``setup`` to the bank."""
    return setup_envelope(PROTOCOL, "hlr", bank, platforms, order, params, job_id)


@dataclass(frozen=True)
class HeteroLROutcome:
    """What the coordinator receives when training ends (aggregates and references).

    ``validation`` (``None`` without validation rows): rows held out, metric, epochs trained and
    kept, the best epoch and its score (:func:`models.vertical_lr.validation.summary`).
    """

    report: dict[str, Any] | None
    history: list[dict[str, Any]]
    converged: bool
    seed: int
    bank_part: dict[str, Any]
    platform_parts: dict[str, dict[str, str]]
    clock: dict[str, Any]
    validation: dict[str, Any] | None = None


def conclude(replies: Sequence[Envelope]) -> HeteroLROutcome:
    """Read the bank's ``done`` report."""
    env = bank_done(PROTOCOL, replies)
    return HeteroLROutcome(
        report=env.json("report"),
        history=env.json("history"),
        converged=bool(env.payload.get("converged")),
        seed=int(env.text("seed")),
        bank_part=env.json("bank_part"),
        platform_parts=env.json("platform_parts"),
        clock=env.json("clock"),
        validation=env.json("validation") if "validation" in env.payload else None,
    )


__all__ = [
    "PROTOCOL",
    "HeteroLROutcome",
    "HeteroLRParams",
    "HeteroLRParty",
    "conclude",
    "start_envelope",
]
