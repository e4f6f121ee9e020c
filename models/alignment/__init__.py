"""Aligning enterprises across parties: private set intersection (protocol + plaintext core)."""

from models.alignment.core import aligned_rows, alignment_digest, plaintext_intersection
from models.alignment.protocol import (
    ALIGNED_ROWS_KEY,
    PROTOCOL,
    REVEAL_MODES,
    AlignmentOutcome,
    AlignmentSettings,
    PSIParty,
    Reveal,
    conclude,
    job_rows,
    start_envelopes,
)

__all__ = [
    "ALIGNED_ROWS_KEY",
    "PROTOCOL",
    "REVEAL_MODES",
    "AlignmentOutcome",
    "AlignmentSettings",
    "PSIParty",
    "Reveal",
    "aligned_rows",
    "alignment_digest",
    "conclude",
    "job_rows",
    "plaintext_intersection",
    "start_envelopes",
]
