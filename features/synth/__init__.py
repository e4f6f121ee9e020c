"""Synthetic SME credit data: a platform's enterprise features and banks' loans.

The platform (a government credit platform) knows many enterprises and their
registration, tax, social-insurance, utilities, customs, judicial, quality
and key-personnel features; each bank knows its borrowers' loans, account
relationship, credit-bureau data and the 12-month default label. The tables
share only the unified social credit code ``enterprise_id``.
:func:`generate_timeline` adds time: monthly platform snapshots with drift (seasons, a regional
shock, a stricter tax grading) and loan vintages whose outcomes mature with a lag.

Examples
--------
>>> from features.synth import SMEConfig, generate
>>> ds = generate(SMEConfig(n_enterprises=2000, n_banks=2, seed=7))
>>> sorted(ds.banks)
['bank_1', 'bank_2']
"""

from features.synth.config import SMEConfig
from features.synth.evaluate import SignalReport, measure_signal
from features.synth.generator import SMEDataset, generate
from features.synth.profiles import BANK_PROFILES, BankProfile
from features.synth.schema import (
    BANK_COLUMNS,
    COLUMNS,
    ID_COLUMN,
    LABEL_COLUMN,
    PLATFORM_COLUMNS,
    ColumnInfo,
)
from features.synth.timeline import DriftConfig, SMETimeline, generate_timeline
from features.synth.uscc import build_uscc, generate_uscc, is_valid_uscc
from features.synth.writer import build_manifest, load, write

__all__ = [
    "BANK_COLUMNS",
    "BANK_PROFILES",
    "COLUMNS",
    "ID_COLUMN",
    "LABEL_COLUMN",
    "PLATFORM_COLUMNS",
    "BankProfile",
    "ColumnInfo",
    "DriftConfig",
    "SMEConfig",
    "SMEDataset",
    "SMETimeline",
    "SignalReport",
    "build_manifest",
    "build_uscc",
    "generate",
    "generate_timeline",
    "generate_uscc",
    "is_valid_uscc",
    "load",
    "measure_signal",
    "write",
]
