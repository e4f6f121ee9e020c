"""Generate a platform table and bank tables joined only by the enterprise id."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from features.synth import _common as c
from features.synth.banks import select_borrowers, simulate_book
from features.synth.config import SMEConfig
from features.synth.firms import simulate_world
from features.synth.profiles import BANK_PROFILES, resolve
from features.synth.schema import (
    BANK_COLUMNS,
    COLUMNS,
    ID_COLUMN,
    LABEL_COLUMN,
    PLATFORM_COLUMNS,
    ColumnInfo,
)

__all__ = ["SMEConfig", "SMEDataset", "generate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class SMEDataset:
    """A generated platform table, bank tables and their column metadata.

    Attributes
    ----------
    config : SMEConfig
        The configuration that produced the data (regenerates it exactly).
    platform : pandas.DataFrame
        One row per enterprise the platform knows; ``enterprise_id`` first.
    banks : dict of str to pandas.DataFrame
        ``bank_1``, ``bank_2``, ...: one row per borrower (each enterprise at
        most once per bank); ``enterprise_id`` first, bank features, then the
        label ``default_12m`` in {0, 1}.
    columns : dict of str to ColumnInfo
        Metadata of every column except ``enterprise_id``.
    bank_profiles : dict of str to str
        Profile name of each bank.

    Notes
    -----
    Categorical columns are pandas ``category`` dtype with string levels in
    the order of ``ColumnInfo.categories``; missing values are ``NaN``.
    """

    config: SMEConfig
    platform: pd.DataFrame
    banks: dict[str, pd.DataFrame]
    columns: dict[str, ColumnInfo]
    bank_profiles: dict[str, str]

    def matched(self, bank: str) -> pd.DataFrame:
        """Return a bank's borrowers that the platform knows, joined with its row.

        Parameters
        ----------
        bank : str
            Bank name, e.g. ``"bank_1"``.

        Returns
        -------
        pandas.DataFrame
            Bank columns followed by platform columns, in the bank's row order.
            (Only for experiments: in production the rows never meet.)

        Raises
        ------
        KeyError
            If ``bank`` is unknown.
        """
        if bank not in self.banks:
            raise KeyError(f"unknown bank {bank!r}; have {sorted(self.banks)}")
        return self.banks[bank].merge(self.platform, on=ID_COLUMN, how="inner", sort=False)


def generate(config: SMEConfig | None = None) -> SMEDataset:
    """Generate the dataset described by ``config``.

    Fully deterministic: the only randomness is
    ``numpy.random.Generator(numpy.random.PCG64(config.seed))``.

    Parameters
    ----------
    config : SMEConfig, optional
        Defaults to ``SMEConfig()`` (20,000 platform firms, one city bank).

    Returns
    -------
    SMEDataset
        Platform table, bank tables and column metadata.

    Examples
    --------
    >>> ds = generate(SMEConfig(n_enterprises=2000, seed=1))
    >>> list(ds.banks)
    ['bank_1']
    """
    cfg = SMEConfig() if config is None else config
    start = time.perf_counter()
    rng = np.random.Generator(np.random.PCG64(cfg.seed))
    sizes = cfg.resolved_bank_sizes()
    names = cfg.resolved_profiles()
    unmatched = [round(s * cfg.unmatched_rate) for s in sizes]
    pool = math.ceil(1.25 * sum(unmatched)) + (1 if sum(unmatched) else 0)
    world = simulate_world(cfg.n_enterprises + pool, rng)
    on_platform = np.arange(cfg.n_enterprises, dtype=np.int64)
    off_platform = np.arange(cfg.n_enterprises, world.n, dtype=np.int64)
    platform = _frame(
        world.enterprise_id[on_platform], world.columns, on_platform, PLATFORM_COLUMNS
    )
    banks: dict[str, pd.DataFrame] = {}
    for i, (bank, prof_name) in enumerate(zip(cfg.bank_names, names, strict=True)):
        rate = None if cfg.default_rates is None else cfg.default_rates[i]
        profile = resolve(BANK_PROFILES[prof_name], cfg.heterogeneity, rate)
        known = select_borrowers(world, on_platform, sizes[i] - unmatched[i], profile, rng)
        unknown = select_borrowers(world, off_platform, unmatched[i], profile, rng)
        rows = rng.permutation(np.concatenate([known, unknown]))
        book = simulate_book(world, rows, profile, rng)
        banks[bank] = _frame(world.enterprise_id[rows], book.columns, None, BANK_COLUMNS)
        logger.debug("%s (%s): %d borrowers, offset %.3f", bank, prof_name, rows.size, book.offset)
    logger.info(
        "generated %d platform firms and %d bank(s) in %.2fs",
        cfg.n_enterprises,
        cfg.n_banks,
        time.perf_counter() - start,
    )
    return SMEDataset(
        config=cfg,
        platform=platform,
        banks=banks,
        columns=dict(COLUMNS),
        bank_profiles=dict(zip(cfg.bank_names, names, strict=True)),
    )


def _frame(
    ids: NDArray[np.str_],
    arrays: dict[str, c.FloatArray | c.IntArray],
    rows: c.IntArray | None,
    spec: tuple[ColumnInfo, ...],
) -> pd.DataFrame:
    """Assemble a table in ``spec`` order, categoricals as pandas categories."""
    data: dict[str, object] = {ID_COLUMN: pd.array(ids, dtype="str")}
    for info in spec:
        values = arrays[info.name] if rows is None else arrays[info.name][rows]
        if info.dtype == "categorical":
            data[info.name] = pd.Categorical.from_codes(
                np.asarray(values, dtype=np.int64), categories=pd.Index(list(info.categories or ()))
            )
        else:
            data[info.name] = values
    frame = pd.DataFrame(data)
    if LABEL_COLUMN in frame:
        frame[LABEL_COLUMN] = frame[LABEL_COLUMN].astype(np.int64)
    return frame
