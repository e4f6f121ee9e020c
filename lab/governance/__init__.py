"""Governance: published feature sets, enterprise authorizations, privacy budgets, audit log.

What a platform and its banks must be able to show an auditor: which data was published and in
what shape (:class:`Catalog`), which enterprises allowed which bank to use which of their data
(:class:`AuthorizationRegistry`), how much privacy budget each bank has spent on each feature
set (:class:`BudgetLedger`, composing events with Opacus), and an append-only, hash-chained
record of all of it (:class:`AuditLog`).

Everything lives under ``$LAB_HOME``: ``catalog/``, ``governance.db`` (ledger and
authorizations), ``audit/log.jsonl`` (+ ``log.head``). The CLI sub-apps are in
:mod:`lab.governance.cli`.

Names are imported lazily on first use (PEP 562), so ``lab --help`` does not pay for
pandas and pandera; type checkers see ordinary imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lab.governance import events
    from lab.governance.audit import (
        EVENT_TYPES,
        AuditEntry,
        AuditLog,
        EventType,
        ExternalHead,
        Head,
        PeerHead,
        Problem,
        Tamper,
        VerifyReport,
    )
    from lab.governance.authorizations import (
        Authorization,
        AuthorizationRegistry,
        ImportSummary,
    )
    from lab.governance.catalog import (
        Catalog,
        CatalogEntry,
        ServedSet,
    )
    from lab.governance.errors import (
        AccountingError,
        AuditAnchorError,
        AuditError,
        AuditIntegrityError,
        AuditKeyError,
        AuditPayloadError,
        AuthorizationError,
        AuthorizationImportError,
        AuthorizationNotFoundError,
        BudgetExceededError,
        CatalogError,
        ColumnNotPublishedError,
        DataDigestMismatchError,
        DeltaExceedsCapError,
        FeatureSetExistsError,
        FeatureSetNotFoundError,
        FeatureSetRefError,
        GovernanceError,
        JobStateError,
        LedgerError,
        NoCapError,
        PurposeNotAllowedError,
        SpecError,
        SpecViolationError,
        StoreBusyError,
        UnknownJobError,
        VocabularyError,
    )
    from lab.governance.ledger import (
        DEFAULT_WINDOW_DAYS,
        BudgetCheck,
        BudgetLedger,
        BudgetStatus,
        Cap,
        JobRecord,
        compose,
    )
    from lab.governance.quality import (
        SMALL_CELL,
        quality_report,
    )
    from lab.governance.reconcile import ReconcileReport, reconcile
    from lab.governance.spec import (
        ColumnSpec,
        FeatureSetSpec,
        ValueRange,
        load_spec,
        spec_from_synth_columns,
        write_spec,
    )
    from lab.governance.validation import (
        build_schema,
        read_and_validate,
    )
    from lab.governance.vocabulary import (
        GROUPS,
        PURPOSES,
        SENSITIVITIES,
        format_ref,
        parse_ref,
    )

_EXPORTS: dict[str, str] = {
    "events": "lab.governance.events",
    "EVENT_TYPES": "lab.governance.audit",
    "AuditEntry": "lab.governance.audit",
    "AuditLog": "lab.governance.audit",
    "EventType": "lab.governance.audit",
    "Head": "lab.governance.audit",
    "ExternalHead": "lab.governance.audit",
    "PeerHead": "lab.governance.audit",
    "AuditKeyError": "lab.governance.errors",
    "AuditAnchorError": "lab.governance.errors",
    "StoreBusyError": "lab.governance.errors",
    "ReconcileReport": "lab.governance.reconcile",
    "reconcile": "lab.governance.reconcile",
    "Problem": "lab.governance.audit",
    "Tamper": "lab.governance.audit",
    "VerifyReport": "lab.governance.audit",
    "Authorization": "lab.governance.authorizations",
    "AuthorizationRegistry": "lab.governance.authorizations",
    "ImportSummary": "lab.governance.authorizations",
    "Catalog": "lab.governance.catalog",
    "CatalogEntry": "lab.governance.catalog",
    "ServedSet": "lab.governance.catalog",
    "AccountingError": "lab.governance.errors",
    "AuditError": "lab.governance.errors",
    "AuditIntegrityError": "lab.governance.errors",
    "AuditPayloadError": "lab.governance.errors",
    "AuthorizationError": "lab.governance.errors",
    "AuthorizationImportError": "lab.governance.errors",
    "AuthorizationNotFoundError": "lab.governance.errors",
    "BudgetExceededError": "lab.governance.errors",
    "CatalogError": "lab.governance.errors",
    "ColumnNotPublishedError": "lab.governance.errors",
    "DataDigestMismatchError": "lab.governance.errors",
    "DeltaExceedsCapError": "lab.governance.errors",
    "FeatureSetExistsError": "lab.governance.errors",
    "FeatureSetNotFoundError": "lab.governance.errors",
    "FeatureSetRefError": "lab.governance.errors",
    "GovernanceError": "lab.governance.errors",
    "JobStateError": "lab.governance.errors",
    "LedgerError": "lab.governance.errors",
    "NoCapError": "lab.governance.errors",
    "PurposeNotAllowedError": "lab.governance.errors",
    "SpecError": "lab.governance.errors",
    "SpecViolationError": "lab.governance.errors",
    "UnknownJobError": "lab.governance.errors",
    "VocabularyError": "lab.governance.errors",
    "DEFAULT_WINDOW_DAYS": "lab.governance.ledger",
    "BudgetCheck": "lab.governance.ledger",
    "BudgetLedger": "lab.governance.ledger",
    "BudgetStatus": "lab.governance.ledger",
    "Cap": "lab.governance.ledger",
    "JobRecord": "lab.governance.ledger",
    "compose": "lab.governance.ledger",
    "SMALL_CELL": "lab.governance.quality",
    "quality_report": "lab.governance.quality",
    "ColumnSpec": "lab.governance.spec",
    "FeatureSetSpec": "lab.governance.spec",
    "ValueRange": "lab.governance.spec",
    "load_spec": "lab.governance.spec",
    "spec_from_synth_columns": "lab.governance.spec",
    "write_spec": "lab.governance.spec",
    "build_schema": "lab.governance.validation",
    "read_and_validate": "lab.governance.validation",
    "GROUPS": "lab.governance.vocabulary",
    "PURPOSES": "lab.governance.vocabulary",
    "SENSITIVITIES": "lab.governance.vocabulary",
    "format_ref": "lab.governance.vocabulary",
    "parse_ref": "lab.governance.vocabulary",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lab.governance' has no attribute {name!r}")
    value = (
        importlib.import_module(module)
        if name == "events"
        else getattr(importlib.import_module(module), name)
    )
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "DEFAULT_WINDOW_DAYS",
    "EVENT_TYPES",
    "GROUPS",
    "PURPOSES",
    "SENSITIVITIES",
    "SMALL_CELL",
    "AccountingError",
    "AuditAnchorError",
    "AuditEntry",
    "AuditError",
    "AuditIntegrityError",
    "AuditKeyError",
    "AuditLog",
    "AuditPayloadError",
    "Authorization",
    "AuthorizationError",
    "AuthorizationImportError",
    "AuthorizationNotFoundError",
    "AuthorizationRegistry",
    "BudgetCheck",
    "BudgetExceededError",
    "BudgetLedger",
    "BudgetStatus",
    "Cap",
    "Catalog",
    "CatalogEntry",
    "CatalogError",
    "ColumnNotPublishedError",
    "ColumnSpec",
    "DataDigestMismatchError",
    "DeltaExceedsCapError",
    "EventType",
    "ExternalHead",
    "FeatureSetExistsError",
    "FeatureSetNotFoundError",
    "FeatureSetRefError",
    "FeatureSetSpec",
    "GovernanceError",
    "Head",
    "ImportSummary",
    "JobRecord",
    "JobStateError",
    "LedgerError",
    "NoCapError",
    "PeerHead",
    "Problem",
    "PurposeNotAllowedError",
    "ReconcileReport",
    "ServedSet",
    "SpecError",
    "SpecViolationError",
    "StoreBusyError",
    "Tamper",
    "UnknownJobError",
    "ValueRange",
    "VerifyReport",
    "VocabularyError",
    "build_schema",
    "compose",
    "events",
    "format_ref",
    "load_spec",
    "parse_ref",
    "quality_report",
    "read_and_validate",
    "reconcile",
    "spec_from_synth_columns",
    "write_spec",
]
