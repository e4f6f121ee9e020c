"""Governance: published feature sets, enterprise authorizations, privacy budgets, audit log.

What a platform and its banks must be able to show an auditor: which data was published and in
what shape (:class:`Catalog`), which enterprises allowed which bank to use which of their data
(:class:`AuthorizationRegistry`), how much privacy budget each bank has spent on each feature
set (:class:`BudgetLedger`, composing events with Opacus), and an append-only, hash-chained
record of all of it (:class:`AuditLog`).

Everything lives under ``$LAB_HOME``: ``catalog/``, ``governance.db`` (ledger and
authorizations), ``audit/log.jsonl`` (+ ``log.head``). The CLI sub-apps are in
:mod:`lab.governance.cli`.

Import from the modules themselves (``lab.governance.catalog``, ``.authorizations``,
``.ledger``, ``.audit``, ``.policy``, ``.node`` ...); this package re-exports nothing, so
``lab --help`` imports none of them.
"""
