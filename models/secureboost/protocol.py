"""The ``secureboost`` protocol: vertical gradient boosting over Paillier-encrypted gradients.

The bank (active party: labels, its own features) and one or more platforms (passive parties:
features) grow the trees of :mod:`models.secureboost.core` together. Rows are the aligned rows of
the job (after PSI) in the agreed order; the bank's test rows never take part in training.

Stages
------
``setup`` (coordinator -> bank)
    The bank bins its columns (on its training rows), generates a Paillier key pair (2048 bits
    by default) and sends each platform ``init``: the public key and the training-row mask.
``init`` (bank -> platform)
    The platform bins its columns on the training rows and answers ``ready`` with, per feature,
    its name, kind and number of bins (never edges or categories).
``tree`` (bank -> platform)
    Per tree: the encrypted, packed (g, h, 1) of every training row. The platform sums them
    per (node, feature, bin) under encryption, packs several sums per ciphertext and answers
    ``hist``. With ``gradient_chunks`` above 1 the rows come in pieces, each with its first
    row; the platform answers only the last piece.
``stream`` (bank -> bank, relayed by the coordinator)
    While it streams a tree's gradients: encrypt and send the next piece. Relayed in the same
    hop as the previous piece, so the bank encrypts while the platforms sum
    (:mod:`~models.secureboost.stream`).
``level`` (bank -> platform)
    Per level: the splits the bank chose on this platform's features (as anonymous
    ``(feature index, bins going left, missing side)``, referenced by a split id), the node of
    every training row the bank already knows, and which nodes to compute next. The platform
    applies its splits, answers with their left/right directions and, in the same message,
    the next level's histograms (``hist``), or only directions at the last level (``dirs``).
    Only the smaller child of each split is computed: the bank derives its sibling by
    subtracting it from the parent (histogram subtraction, in the clear, at the bank).
``predict`` (bank -> platform)
    After the last tree: the platform saves its part in its own store and answers
    ``decisions``: left/right of each of its splits for the bank's test rows.
``done`` (bank -> coordinator)
    Evaluation report, per-tree metrics, timings, operation counts, model references.

One exchange per tree level, not per node (a streamed tree's first exchange is one hop per
piece, plus the answer). With several platforms, a level whose splits
belong to a platform other than the receiver needs one more exchange (``assign``).

What each party learns
----------------------
================  ==============================================================================
bank              per-(node, bin) sums of g and h and the row count of every platform feature
                  (so: the instance partition each platform split induces, and per-bin
                  gradient statistics of anonymous bins); the platform's feature names, kinds
                  and bin counts; left/right decisions of platform splits for its test rows.
                  Never a platform value, edge or category. With ``dp_epsilon`` the bin sums
                  carry calibrated Gaussian noise.
platform          the training-row mask, which training rows share a node at every level
                  (the instance space, as in every SecureBoost), ciphertexts it cannot read, the
                  splits chosen on its own features. Never a label, gradient or leaf weight.
coordinator       ciphertexts, bit vectors of directions and node ids, sizes, timings.
================  ==============================================================================

Streaming the gradients in pieces changes none of this: the same ciphertexts cross in pieces,
the same sums are released once, and the ``stream`` message carries a tree and a piece index.

These are the known leakages of SecureBoost (Cheng et al. 2021, "SecureBoost: a lossless
federated learning framework"): the label holder sees per-bin statistics and partitions.
Mitigations: ``bank_only_trees`` (the first trees split on bank features only, where the
partition would reveal most about labels) and ``dp_epsilon`` (noise on the platform's
histograms, accounted as Gaussian-mechanism privacy events).

This module holds the stage machines, the party and the coordinator's side. The roles' steps
are in :mod:`~models.secureboost.bank` (with :mod:`~models.secureboost.bank_trees`) and
:mod:`~models.secureboost.platform`, the settings in :mod:`~models.secureboost.params`, the DP
release plan in :mod:`~models.secureboost.privacy`; what both roles keep between messages in
:mod:`~models.secureboost.state`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.protocol import Envelope, StageMachine
from models.secureboost.bank import BankRole
from models.secureboost.params import SecureBoostParams
from models.secureboost.platform import PlatformRole
from models.secureboost.privacy import (
    DP_MECHANISM,
    noise_multiplier,
    planned_privacy_events,
    release_grants,
    releases_per_platform,
)
from models.secureboost.state import PENDING, PROTOCOL, YOURS
from models.vertical import VerticalParty, bank_done, setup_envelope

_BANK = StageMachine(
    PROTOCOL,
    {
        "setup": {StageMachine.START},
        "ready": {"setup", "ready"},
        # The bank's own message while it streams a tree's gradients (models.secureboost.stream).
        "stream": {"ready", "hist", "dirs", "stream"},
        "hist": {"ready", "hist", "dirs", "stream"},
        "dirs": {"hist", "dirs"},
        "decisions": {"ready", "hist", "dirs", "decisions"},
    },
)
_PLATFORM = StageMachine(
    PROTOCOL,
    {
        "init": {StageMachine.START},
        # A tree whose root cannot split ends after its ``tree`` (or an ``assign``) exchange.
        "tree": {"init", "tree", "level", "assign"},
        "level": {"tree", "level", "assign"},
        "assign": {"level"},
        "predict": {"init", "tree", "level", "assign"},
    },
)


class SecureBoostParty(VerticalParty):
    """Party side of the protocol; dispatches on the party's role."""

    name = PROTOCOL

    def __init__(self) -> None:
        super().__init__(_BANK, BankRole(), _PLATFORM, PlatformRole())


# ------------------------------------------------------------------------------- coordinator


def start_envelope(
    bank: str, platforms: list[str], order: list[str], params: SecureBoostParams, job_id: str
) -> Envelope:
    """The coordinator's only message: ``setup`` to the bank."""
    return setup_envelope(PROTOCOL, "sb", bank, platforms, order, params, job_id)


@dataclass(frozen=True)
class SecureBoostOutcome:
    """What the coordinator receives when training ends (aggregates and references).

    ``importance`` has one entry per ``party`` and ``feature`` that split somewhere: ``splits``
    (how many), ``gain`` (the exact gain of those splits, computed by the bank from its gradients
    and the partition, XGBoost's ``total_gain``), ``cover`` (their hessian sum) and
    ``search_gain`` (the gain the split search saw; for a platform's features under DP it was
    computed from noisy histograms and is inflated by the noise). ``validation`` (``None``
    without validation rows): rows held out, metric, trees trained and kept, the best tree and
    its score (:func:`models.secureboost.bank_validation.summary`).
    """

    report: dict[str, Any]
    per_tree: list[dict[str, Any]]
    bank_part: dict[str, Any]
    platform_parts: dict[str, dict[str, str]]
    clock: dict[str, Any]
    importance: list[dict[str, Any]]
    validation: dict[str, Any] | None = None
    #: ``train_report`` and ``score_stability`` (train -> test), see :mod:`models.split_reports`.
    splits: dict[str, Any] = field(default_factory=dict)


def conclude(replies: Sequence[Envelope]) -> SecureBoostOutcome:
    """Read the bank's ``done`` report."""
    env = bank_done(PROTOCOL, replies)
    return SecureBoostOutcome(
        report=env.json("report"),
        per_tree=env.json("per_tree"),
        bank_part=env.json("bank_part"),
        platform_parts=env.json("platform_parts"),
        clock=env.json("clock"),
        importance=env.json("importance"),
        validation=env.json("validation") if "validation" in env.payload else None,
        splits=env.json("splits") if "splits" in env.payload else {},
    )


def describe_stage_counts(per_tree: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Summary of per-tree seconds (for reports)."""
    seconds = [float(t["seconds"]) for t in per_tree]
    return {
        "trees": float(len(seconds)),
        "mean_seconds_per_tree": float(np.mean(seconds)) if seconds else 0.0,
        "max_seconds_per_tree": float(np.max(seconds)) if seconds else 0.0,
    }


__all__ = [
    "DP_MECHANISM",
    "PENDING",
    "PROTOCOL",
    "YOURS",
    "SecureBoostOutcome",
    "SecureBoostParams",
    "SecureBoostParty",
    "conclude",
    "describe_stage_counts",
    "noise_multiplier",
    "planned_privacy_events",
    "release_grants",
    "releases_per_platform",
    "start_envelope",
]
