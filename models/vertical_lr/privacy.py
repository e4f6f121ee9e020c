"""What a platform's node refuses in hetero LR so the bank's sums never pin down single rows.

Hetero LR adds no noise: a platform's node refuses it on a published feature set unless its
own policy serves exact statistics of unbudgeted sets (``dp.require: false``). What protects
the platform's rows is the size of what the bank learns from: per mini-batch the bank's
gradient holds weighted sums of the platform's partial logits ``u_P`` over the batch's rows
(its cross terms), and over one row such a sum is that row's partial logit. The platform's
node therefore refuses a batch schedule below its ``hetero_lr.min_batch_size``
(:func:`check_schedule`, at ``bins``) and an ``update`` asking it to decrypt more sums than its
``hetero_lr.rows_per_cross_term`` allows for the batch (:func:`check_cross_terms`). The node
checks the job spec's batch size at ``hello`` too (``lab/governance/node.py``); a bank's
message cannot lower either limit.
"""

from __future__ import annotations

from typing import Any

from models.guard import NodeLimits, PolicyRefusalError
from models.protocol import PartyContext, ProtocolError


def check_schedule(ctx: PartyContext, settings: dict[str, Any]) -> None:
    """Refuse a batch schedule over fewer rows than this platform's policy allows.

    Per batch the bank learns weighted sums of the platform's partial logits ``u_P`` over the
    batch's rows (its cross terms); over one row such a sum is that row's partial logit.

    Raises
    ------
    ProtocolError
        If the schedule's number of training rows is not the training mask's.
    PolicyRefusalError
        If a batch would hold fewer than ``hetero_lr.min_batch_size`` rows.
    """
    train = ctx.store.get_array("hlr.train").astype(bool)
    n_train = int(settings["n_train"])
    if n_train != int(train.sum()):
        raise ProtocolError(
            f"hetero_lr/bins declares {n_train} training rows but its mask marked {train.sum()}"
        )
    batch = int(settings["batch_size"])
    smallest = n_train if batch <= 0 else min(batch, n_train)
    limits = ctx.guard.limits
    if smallest < limits.min_batch_size:
        raise PolicyRefusalError(
            f"the bank's mini-batches hold {smallest} rows, below this platform's policy "
            f"hetero_lr.min_batch_size={limits.min_batch_size}: per batch the bank learns sums "
            "of the platform's partial logits over the batch; use larger batches"
        )


def check_cross_terms(limits: NodeLimits, n_sums: int, n_rows: int) -> None:
    """Refuse to decrypt ``n_sums`` weighted sums of a batch of ``n_rows`` rows if too few.

    Raises
    ------
    PolicyRefusalError
        If the batch holds fewer than ``hetero_lr.rows_per_cross_term`` rows per sum.
    """
    if n_sums * limits.rows_per_cross_term > n_rows:
        raise PolicyRefusalError(
            f"the bank asks this platform to decrypt {n_sums} weighted sums of a batch of "
            f"{n_rows} rows; its policy hetero_lr.rows_per_cross_term="
            f"{limits.rows_per_cross_term} needs {n_sums * limits.rows_per_cross_term}+ "
            "rows per batch so the sums never pin down single rows"
        )
