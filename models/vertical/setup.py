"""What every party of a vertical protocol sets up from its own data before training.

The bank reads its aligned rows, the evaluation split the job protocol made (``job/split``) and
its labels, and generates its key pair under its own node's limits; a platform takes the
training-row mask the bank sent and checks it against its own aligned rows. Each party fits
bins on its own training rows only; the bin edges never leave it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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
    weight : numpy.ndarray or None
        The bank's weight column over the training rows (``None`` without one).
    """

    rows: npt.NDArray[np.intp]
    train: npt.NDArray[np.bool_]
    y: npt.NDArray[np.int64]
    weight: npt.NDArray[np.float64] | None = None

    def split(self, valid: npt.NDArray[np.bool_]) -> tuple[BankRows, npt.NDArray[np.bool_]]:
        """The rows that fit the model once ``valid`` (a mask over the training rows) is held out.

        Returns the fitting rows and the validation mask over the aligned rows.
        """
        positions = np.flatnonzero(self.train)
        fit = self.train.copy()
        fit[positions[valid]] = False
        held = np.zeros_like(self.train)
        held[positions[valid]] = True
        weight = None if self.weight is None else self.weight[~valid]
        return BankRows(self.rows, fit, self.y[~valid], weight), held


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
    table = ctx.table()
    y = labels(table)[rows][train].astype(np.int64)
    weight = None if table.weight is None else table.weight[rows][train]
    return BankRows(rows=rows, train=train, y=y, weight=weight)


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


def platform_validation_rows(
    env: Envelope, ctx: PartyContext, train: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    """The bank's validation mask over a platform's aligned rows, checked by its own node.

    No mask: no validation (all ``False``). Validation rows are rows the platform will route
    (SecureBoost) or score (hetero LR) after every iteration, as it scores a bank's test rows:
    its node's policy (:class:`models.guard.NodeLimits`, ``validation.serve`` and
    ``validation.max_share``) decides whether and how many, counted from the masks themselves,
    and the release is written to its own audit log.

    Raises
    ------
    ProtocolError
        If the mask has the wrong length or overlaps the training rows.
    PolicyRefusalError
        If the node's policy refuses validation rows, or this many.
    """
    if "valid_mask" not in env.payload:
        return np.zeros_like(train)
    valid = env.array("valid_mask").astype(bool)
    if valid.shape != train.shape:
        raise ProtocolError(f"validation mask covers {valid.size} rows, the job {train.size}")
    if (valid & train).any():
        raise ProtocolError("validation rows overlap the training rows")
    n_valid = int(valid.sum())
    if n_valid:
        ctx.guard.limits.check_validation(n_valid, int(train.sum()))
        ctx.guard.notify("validation_rows", {"n_validation": n_valid, "protocol": env.protocol})
    return valid


def aligned_features(
    ctx: PartyContext,
    rows: npt.NDArray[np.intp],
    mask: npt.NDArray[np.bool_],
    columns: Iterable[str] | None = None,
) -> pd.DataFrame:
    """This party's feature columns of the aligned rows ``mask`` selects, indexed from 0.

    ``columns``: only these (in table order); default every feature column. A step that reads
    a few columns names them, so no copy of the others is made.
    """
    features = ctx.table().features
    if columns is not None:
        wanted = set(columns)
        features = features.loc[:, [c for c in features.columns if c in wanted]]
    return features.iloc[rows[mask]].reset_index(drop=True)


def aligned_columns(
    ctx: PartyContext, rows: npt.NDArray[np.intp], mask: npt.NDArray[np.bool_]
) -> Iterator[pd.Series]:
    """:func:`aligned_features`, one column at a time: no copy of the whole selection is held."""
    features = ctx.table().features
    selected = rows[mask]
    for name in features.columns:
        yield features[name].iloc[selected].reset_index(drop=True)


def fit_own_bins(
    ctx: PartyContext, frame: pd.DataFrame | Iterable[pd.Series], max_bin: int
) -> tuple[BinSpec, ...]:
    """Fit bins on ``frame``, this party's training rows (the edges stay with the party).

    ``frame``: the rows as a frame, or their columns one at a time (:func:`aligned_columns`,
    which never holds a float copy of rows x features). A platform's bins shape what the bank
    learns of its rows (per-bin sums and counts), so a platform fits at most its own policy's
    ``binning.max_bins``, whatever the job asks.

    Raises
    ------
    PolicyRefusalError
        If this party is a platform and ``max_bin`` is above its ``binning.max_bins``.
    """
    if ctx.role != "bank":
        ctx.guard.limits.check_bins(max_bin, "model.max_bin")
    kinds = ctx.table().feature_kinds
    columns = (frame[c] for c in frame.columns) if isinstance(frame, pd.DataFrame) else frame
    return tuple(fit_bins(column, kinds[str(column.name)], max_bin) for column in columns)


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
