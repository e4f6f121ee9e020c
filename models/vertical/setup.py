"""What every party of a vertical protocol sets up from its own data before training.

The bank reads its aligned rows, the evaluation split the job protocol made (``job/split``) and
its labels, and generates its key pair under its own node's limits; a platform takes the
training-row mask the bank sent and checks it against its own aligned rows. Each party fits
bins on its own training rows only; the bin edges never leave it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.binning import BinSpec, fit_bins
from features.errors import DataError
from features.io import PartyTable
from models.alignment import job_rows
from models.evaluation import TEST_MASK_KEY
from models.protocol import Envelope, PartyContext, ProtocolError
from models.vertical.keys import KeyPair
from secure_agg.schemes import DEFAULT_SCHEME


@dataclass(frozen=True)
class BankRows:
    """The bank's aligned rows, which of them train, and their labels.

    Attributes
    ----------
    rows : numpy.ndarray
        The bank's table rows in the job's aligned order.
    train : numpy.ndarray
        Boolean mask over ``rows``: the training rows (the rest are held out for evaluation).
    y : numpy.ndarray
        ``int64`` labels of the training rows.
    """

    rows: npt.NDArray[np.intp]
    train: npt.NDArray[np.bool_]
    y: npt.NDArray[np.int64]


def labels(table: PartyTable) -> npt.NDArray[np.int8]:
    """The labels of a label holder's table.

    Raises
    ------
    DataError
        If the table has no label column (it is not the bank's).
    """
    if table.label is None:
        raise DataError(f"{table.path}: the bank's table has no labels")
    return table.label


def bank_rows(ctx: PartyContext) -> BankRows:
    """The bank's aligned rows, training mask (the complement of the job's test mask), labels.

    Raises
    ------
    ProtocolError
        If the job has not aligned or not split yet.
    DataError
        If the bank's table has no labels.
    """
    rows = job_rows(ctx)
    try:
        test = ctx.store.get_array(TEST_MASK_KEY).astype(bool)
    except KeyError as exc:
        raise ProtocolError("the bank has no evaluation split: run job/split first") from exc
    train = ~test
    y = labels(ctx.table())[rows][train].astype(np.int64)
    return BankRows(rows=rows, train=train, y=y)


def platform_rows(
    env: Envelope, ctx: PartyContext
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """A platform's aligned rows and the bank's training mask over them (from ``env``).

    Raises
    ------
    ProtocolError
        If the mask does not cover exactly this platform's aligned rows.
    """
    rows = job_rows(ctx)
    train = env.array("train_mask").astype(bool)
    if train.size != rows.size:
        raise ProtocolError(
            f"train mask covers {train.size} rows but {ctx.name} aligned {rows.size}"
        )
    return rows, train


def aligned_features(
    ctx: PartyContext, rows: npt.NDArray[np.intp], mask: npt.NDArray[np.bool_]
) -> pd.DataFrame:
    """This party's feature columns of the aligned rows ``mask`` selects, indexed from 0."""
    return ctx.table().features.iloc[rows[mask]].reset_index(drop=True)


def fit_own_bins(ctx: PartyContext, frame: pd.DataFrame, max_bin: int) -> tuple[BinSpec, ...]:
    """Fit bins on ``frame``, this party's training rows (the edges stay with the party)."""
    kinds = ctx.table().feature_kinds
    return tuple(fit_bins(frame[c], kinds[c], max_bin) for c in frame.columns)


def bank_key_pair(ctx: PartyContext, requested_bits: int, scheme: str = DEFAULT_SCHEME) -> KeyPair:
    """The bank's own key pair: the size and scheme the job asks for, within the node's policy.

    Raises
    ------
    PolicyRefusalError
        If the size is below the node's ``crypto.min_key_bits``, a test key it refuses, or a
        scheme outside its ``crypto.allowed_schemes``.
    """
    limits = ctx.guard.limits
    limits.check_key(limits.key_bits_for(requested_bits), f"the bank's own {scheme} key")
    return KeyPair.for_node(limits, requested_bits, scheme)
