"""Errors of the governance layer: one class per meaning, every message names the value and the fix.

All of them are :class:`lab.errors.InputError` subclasses, so the ``lab`` CLI reports them as one
line and exit code 2: a refused budget, a missing authorization or a damaged audit log is a
reason not to run, not a crash.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lab.errors import InputError

if TYPE_CHECKING:
    from lab.governance.ledger import BudgetCheck


class GovernanceError(InputError):
    """Base class of every governance error."""


# --- audit log ---------------------------------------------------------------------------------


class StoreBusyError(GovernanceError):
    """A governance database stayed locked by another process; nothing was changed, retry."""


class AuditError(GovernanceError):
    """Base class of audit-log errors."""


class AuditPayloadError(AuditError):
    """An audit entry was refused: unknown type, non-JSON value, or data that must not be logged."""


class AuditIntegrityError(AuditError):
    """The log's last entry and its head anchor disagree, so nothing more may be appended."""


class AuditKeyError(AuditIntegrityError):
    """The audit log's signing key or witness is missing, unreadable, or in the wrong place."""


class AuditAnchorError(AuditError):
    """An external anchor (``lab audit anchor`` file, MLflow tag, peer head) is unusable."""


# --- budget ledger -----------------------------------------------------------------------------


class LedgerError(GovernanceError):
    """Base class of privacy-budget ledger errors."""


class FeatureSetRefError(GovernanceError):
    """A feature-set reference is not of the form ``name@version``."""


class NoCapError(LedgerError):
    """No budget cap is set for a (feature set, bank) pair, so no job may use it."""


class NonPrivateJobError(LedgerError):
    """A job would release exact statistics of a budgeted feature set (unbounded spend)."""


class BudgetExceededError(LedgerError):
    """A job's planned spend does not fit in what is left of the cap.

    Attributes
    ----------
    check : BudgetCheck
        The numbers: cap, spent (including open reservations), planned, would-be total.
    """

    def __init__(self, message: str, check: BudgetCheck) -> None:
        super().__init__(message)
        self.check = check


class DeltaExceedsCapError(LedgerError):
    """A job asks for a larger δ than the cap allows."""


class AccountingError(LedgerError):
    """The accountant could not compose the events (e.g. events protecting different units)."""


class UnknownJobError(LedgerError):
    """``commit`` or ``release`` named a job the ledger has never reserved for."""


class JobStateError(LedgerError):
    """A job id is reused with other parameters, or closed in a way its state does not allow."""


# --- catalog -----------------------------------------------------------------------------------


class CatalogError(GovernanceError):
    """Base class of feature-set catalog errors."""


class SpecError(CatalogError):
    """A feature-set spec file is unreadable or invalid; the message names the file and key."""


class SpecViolationError(CatalogError):
    """Data does not satisfy its spec; the message names the column and the rule.

    Attributes
    ----------
    violations : tuple of tuple of (str, str)
        ``(column, rule)`` pairs, in the order found.
    """

    def __init__(self, message: str, violations: tuple[tuple[str, str], ...]) -> None:
        super().__init__(message)
        self.violations = violations


class FeatureSetExistsError(CatalogError):
    """``name@version`` is already published with other content; publish a new version."""


class FeatureSetNotFoundError(CatalogError):
    """No published feature set has that name or version."""


class ColumnNotPublishedError(CatalogError):
    """A job asked for columns the published version does not contain."""


class PurposeNotAllowedError(CatalogError):
    """A job's purpose is not among the allowed purposes of some requested column."""


class DataDigestMismatchError(CatalogError):
    """The data file's content changed since it was published."""


# --- authorizations ----------------------------------------------------------------------------


class AuthorizationError(GovernanceError):
    """Base class of authorization-registry errors."""


class AuthorizationImportError(AuthorizationError):
    """An authorization CSV is invalid; the message lists line, column, value and the fix."""


class AuthorizationNotFoundError(AuthorizationError):
    """No authorization exists for the (enterprise, bank, purpose) given."""


class VocabularyError(GovernanceError):
    """A group, purpose or sensitivity is not in the lab's vocabulary."""


# --- node policy -------------------------------------------------------------------------------


class NodePolicyError(GovernanceError):
    """Base class of errors of a node's own policy and of the jobs it refuses."""


class PolicyFileError(NodePolicyError):
    """A node's policy file is unreadable, or a setting is invalid; names the file and key."""


class NotServedError(NodePolicyError):
    """A node refuses to serve a job: its data is not published, or the job asks for another set."""


class NoAuthorizedRowsError(NodePolicyError):
    """No row of a governed file has a valid authorization for the job's bank and purpose."""
