"""What the vertical protocols share (SecureBoost, hetero LR): one bank, one or more platforms.

:mod:`~models.vertical.party` the role dispatch behind stage machines, the bank's wait for every
platform and the phase clock; :mod:`~models.vertical.setup` each party's rows, labels, own bins
and the bank's key; :mod:`~models.vertical.keys` key pairs kept in a party's own store and peer
keys checked against the node's policy; :mod:`~models.vertical.coordinator` the coordinator's
``setup`` and ``done``; :mod:`~models.vertical.parts` model part files and content hashes.
"""

from models.vertical.coordinator import bank_done, setup_envelope
from models.vertical.keys import (
    JobKeyMismatchError,
    KeyPair,
    check_key_matches_job,
    peer_public_key,
    peer_scheme_key,
)
from models.vertical.parts import (
    MODEL_ID_PATTERN,
    ModelIdError,
    canonical_hash,
    model_file,
    write_part,
)
from models.vertical.party import (
    PartyClock,
    StagedRole,
    VerticalParty,
    check_platform_reply,
    record_answer,
)
from models.vertical.setup import (
    BankRows,
    aligned_columns,
    aligned_features,
    bank_key_pair,
    bank_rows,
    fit_own_bins,
    labels,
    platform_rows,
    platform_validation_rows,
)

__all__ = [
    "MODEL_ID_PATTERN",
    "BankRows",
    "JobKeyMismatchError",
    "KeyPair",
    "ModelIdError",
    "PartyClock",
    "StagedRole",
    "VerticalParty",
    "aligned_columns",
    "aligned_features",
    "bank_done",
    "bank_key_pair",
    "bank_rows",
    "canonical_hash",
    "check_key_matches_job",
    "check_platform_reply",
    "fit_own_bins",
    "labels",
    "model_file",
    "peer_public_key",
    "peer_scheme_key",
    "platform_rows",
    "platform_validation_rows",
    "record_answer",
    "setup_envelope",
    "write_part",
]
