"""Enterprise authorizations: which bank may use which feature groups of an enterprise, for what.

The policy texts let a platform provide an enterprise's trade-secret or personal information to a
bank only with the enterprise's authorization (and, for personal information, the individual's
consent). The platform keeps the authorizations it has collected in this registry and, before
alignment, drops every enterprise without a valid one (:meth:`AuthorizationRegistry.filter_rows`),
so no unauthorized row reaches a job.

An authorization is valid for ``(bank, purpose, date, groups, personal)`` when it names that bank
and purpose, is ``active``, ``valid_from <= date <= valid_to``, covers *every* feature group the
job reads (one authorization must cover them all), and, if any column read is personal data,
carries the personal-data consent flag.

CSV import
----------
Columns (header required, UTF-8)::

    enterprise_id,bank,purpose,valid_from,valid_to,groups,personal_consent[,reference]

Dates are ``YYYY-MM-DD`` (``valid_to`` inclusive); ``groups`` is ``;``-separated (e.g.
``tax;registration;customs``); ``personal_consent`` is ``true``/``false`` (also ``yes``/``no``,
``1``/``0``); ``reference`` optionally names the signed authorization document. An import is all
or nothing: any invalid cell refuses the whole file with line, column and value. Identical
authorizations are stored once, and re-importing a file never revives a revoked authorization:
a renewed authorization is a new row (new validity window).

Enterprise ids are stripped of surrounding whitespace, like every id in the lab; the audit log
records counts, banks and purposes only.
"""

from __future__ import annotations

import csv
import json
import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from features.ids import IdScheme, normalise
from features.io import file_digest
from lab.governance._common import (
    default_actor,
    iso,
    read_transaction,
    write_transaction,
)
from lab.governance.errors import (
    AuthorizationImportError,
    AuthorizationNotFoundError,
    VocabularyError,
)
from lab.governance.store import GovernanceStore
from lab.governance.vocabulary import GROUPS, check_groups, check_name, check_purpose

logger = logging.getLogger(__name__)

Status = Literal["active", "revoked"]

REQUIRED_COLUMNS: tuple[str, ...] = (
    "enterprise_id",
    "bank",
    "purpose",
    "valid_from",
    "valid_to",
    "groups",
    "personal_consent",
)
OPTIONAL_COLUMNS: tuple[str, ...] = ("reference",)

_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0"})
_MAX_ERRORS_SHOWN = 10

_SCHEMA = """
CREATE TABLE IF NOT EXISTS authorizations (
    auth_id INTEGER PRIMARY KEY AUTOINCREMENT,
    enterprise_id TEXT NOT NULL,
    bank TEXT NOT NULL,
    purpose TEXT NOT NULL,
    valid_from TEXT NOT NULL,
    valid_to TEXT NOT NULL,
    groups TEXT NOT NULL,
    personal_consent INTEGER NOT NULL CHECK (personal_consent IN (0, 1)),
    reference TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    imported_at TEXT NOT NULL,
    imported_by TEXT NOT NULL,
    source_digest TEXT NOT NULL,
    revoked_at TEXT,
    revoked_by TEXT,
    UNIQUE (enterprise_id, bank, purpose, valid_from, valid_to, groups, personal_consent)
);
CREATE INDEX IF NOT EXISTS authorizations_lookup ON authorizations (bank, purpose, status)
"""


@dataclass(frozen=True)
class Authorization:
    """One enterprise's authorization of one bank for one purpose.

    Attributes
    ----------
    auth_id : int
        Registry row number (what the audit log names instead of the enterprise).
    enterprise_id, bank, purpose : str
        Who authorizes whom, for what.
    valid_from, valid_to : date
        Validity, both days included.
    groups : frozenset of str
        Feature groups covered.
    personal_consent : bool
        Whether personal data (e.g. key personnel) may be used.
    reference : str
        The signed document's reference, if given.
    status : {"active", "revoked"}
        Revoked authorizations are kept for the record and never valid.
    imported_at, revoked_at : str or None
        UTC timestamps.
    """

    auth_id: int
    enterprise_id: str
    bank: str
    purpose: str
    valid_from: date
    valid_to: date
    groups: frozenset[str]
    personal_consent: bool
    reference: str
    status: Status
    imported_at: str
    revoked_at: str | None

    def valid_for(
        self, bank: str, purpose: str, at: date, groups: frozenset[str], needs_personal: bool
    ) -> bool:
        """Whether this authorization allows the use described (see the module docstring)."""
        return (
            self.status == "active"
            and self.bank == bank
            and self.purpose == purpose
            and self.valid_from <= at <= self.valid_to
            and groups <= self.groups
            and (self.personal_consent or not needs_personal)
        )


@dataclass(frozen=True)
class ImportSummary:
    """What :meth:`AuthorizationRegistry.import_csv` did (counts only)."""

    path: str
    digest: str
    rows: int
    inserted: int
    duplicates: int
    banks: tuple[str, ...]
    purposes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (also the audit payload)."""
        return {
            "file": Path(self.path).name,
            "file_digest": self.digest,
            "n_rows": self.rows,
            "n_inserted": self.inserted,
            "n_duplicates": self.duplicates,
            "banks": list(self.banks),
            "purposes": list(self.purposes),
        }


class AuthorizationRegistry(GovernanceStore):
    """The authorization registry of one lab home (or of an explicit database file).

    Parameters
    ----------
    path : Path, optional
        sqlite database; default ``$LAB_HOME/governance.db`` (shared with the budget ledger).
    audit : AuditLog, optional
        Where imports and revocations are audited; default the lab home's log.
    clock : callable, optional
        Returns the current aware UTC datetime (import and revocation times).
    """

    SCHEMA = _SCHEMA

    # -- writing ------------------------------------------------------------------------------

    def import_csv(self, path: Path, *, actor: str | None = None) -> ImportSummary:
        """Import authorizations from a CSV file, all or nothing.

        Returns
        -------
        ImportSummary

        Raises
        ------
        AuthorizationImportError
            Listing every invalid cell (line, column, value, what is allowed).
        """
        records = _parse_csv(path)
        digest = file_digest(path)
        who = actor or default_actor()
        now = iso(self._clock())
        inserted = 0
        with write_transaction(self.conn) as conn:
            for rec in records:
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO authorizations (enterprise_id, bank, purpose, "
                    "valid_from, valid_to, groups, personal_consent, reference, status, "
                    "imported_at, imported_by, source_digest) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?)",
                    (*rec, now, who, digest),
                )
                inserted += cursor.rowcount
            summary = ImportSummary(
                path=str(path),
                digest=digest,
                rows=len(records),
                inserted=inserted,
                duplicates=len(records) - inserted,
                banks=tuple(sorted({r[1] for r in records})),
                purposes=tuple(sorted({r[2] for r in records})),
            )
            self.audit.record("authorizations_imported", summary.to_dict(), who)
        logger.info("imported %d authorizations from %s", inserted, path)
        return summary

    def revoke(
        self, enterprise_id: str, bank: str, purpose: str, *, actor: str | None = None
    ) -> int:
        """Revoke every active authorization of an enterprise for a bank and purpose.

        Returns
        -------
        int
            How many were revoked (0 if all were already revoked: revoking is idempotent).

        Raises
        ------
        AuthorizationNotFoundError
            If the registry never held such an authorization.
        """
        eid = enterprise_id.strip()
        check_purpose(purpose)
        who = actor or default_actor()
        with write_transaction(self.conn) as conn:
            rows = conn.execute(
                "SELECT auth_id, status FROM authorizations WHERE enterprise_id = ? AND bank = ? "
                "AND purpose = ?",
                (eid, bank, purpose),
            ).fetchall()
            if not rows:
                raise AuthorizationNotFoundError(
                    f"no authorization of enterprise {eid!r} for bank {bank!r} and purpose "
                    f"{purpose!r}; check the id, bank and purpose"
                )
            active = [int(r["auth_id"]) for r in rows if r["status"] == "active"]
            if not active:
                return 0
            conn.executemany(
                "UPDATE authorizations SET status = 'revoked', revoked_at = ?, revoked_by = ? "
                "WHERE auth_id = ?",
                [(iso(self._clock()), who, a) for a in active],
            )
            self.audit.record(
                "authorization_revoked",
                {"bank": bank, "purpose": purpose, "auth_rows": active, "n_revoked": len(active)},
                who,
            )
        return len(active)

    # -- queries --------------------------------------------------------------------------------

    def authorized(
        self,
        bank: str,
        purpose: str,
        at: date,
        groups: Iterable[str],
        needs_personal: bool,
    ) -> set[str]:
        """Return the ids of enterprises with a valid authorization for this use.

        Parameters
        ----------
        bank, purpose : str
            Who uses the data, for what.
        at : date
            The day of use.
        groups : iterable of str
            Every feature group the job reads; one authorization must cover them all.
        needs_personal : bool
            Whether any column read is personal data (then consent is required).

        Returns
        -------
        set of str
            Stripped enterprise ids.
        """
        wanted = check_groups(groups)
        check_purpose(purpose)
        return {
            a.enterprise_id
            for a in self._candidates(bank, purpose)
            if a.valid_for(bank, purpose, at, wanted, needs_personal)
        }

    def filter_rows(
        self,
        ids: npt.NDArray[Any],
        bank: str,
        purpose: str,
        at: date,
        groups: Iterable[str],
        needs_personal: bool,
        *,
        id_scheme: IdScheme = "text",
    ) -> npt.NDArray[np.bool_]:
        """Return a mask of the rows whose enterprise may be used (see :meth:`authorized`).

        The platform calls this before alignment and keeps only ``ids[mask]``: rows of
        enterprises without a valid authorization never reach the job.

        Parameters
        ----------
        ids : numpy.ndarray
            The table's ids, in row order.
        bank, purpose, at, groups, needs_personal
            As in :meth:`authorized`.
        id_scheme : {"text", "casefold", "uscc"}
            The job's id scheme; ids on both sides are normalised with it.

        Returns
        -------
        numpy.ndarray of bool
            ``True`` for rows that may be used.
        """
        allowed = self.authorized(bank, purpose, at, groups, needs_personal)
        if len(ids) == 0:
            return np.zeros(0, dtype=bool)
        allowed_norm = normalise(pd.Series(sorted(allowed), dtype="string"), id_scheme)
        table = normalise(pd.Series(np.asarray(ids), dtype="string").str.strip(), id_scheme)
        mask: npt.NDArray[np.bool_] = table.isin(set(allowed_norm.dropna())).to_numpy(dtype=bool)
        return mask

    def records(
        self,
        *,
        bank: str | None = None,
        purpose: str | None = None,
        enterprise_id: str | None = None,
    ) -> list[Authorization]:
        """Every authorization matching the filters (revoked ones included), oldest first."""
        clauses, params = [], []
        for column, value in (
            ("bank", bank),
            ("purpose", purpose),
            ("enterprise_id", None if enterprise_id is None else enterprise_id.strip()),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        sql = "SELECT * FROM authorizations"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        with read_transaction(self.conn) as conn:
            return [_from_row(r) for r in conn.execute(sql + " ORDER BY auth_id", params)]

    def count(self) -> int:
        """How many authorizations were ever imported (active, expired or revoked)."""
        with read_transaction(self.conn) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM authorizations").fetchone()[0])

    def records_of(
        self, bank: str, purpose: str, enterprise_ids: Iterable[str]
    ) -> dict[str, list[Authorization]]:
        """Authorizations of ``bank`` for ``purpose`` of each given enterprise, in one snapshot.

        The scoring endpoint's per-call lookup: one query per 500 ids instead of one per id.
        Ids are matched as given (after stripping); absent ids map to an empty list.
        """
        wanted = list(dict.fromkeys(i.strip() for i in enterprise_ids))
        found: dict[str, list[Authorization]] = {i: [] for i in wanted}
        with read_transaction(self.conn) as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                # Only "?" placeholders are formatted in; every value is a bound parameter.
                marks = ", ".join("?" for _ in chunk)
                sql = "SELECT * FROM authorizations WHERE bank = ? AND purpose = ? AND "
                sql += f"enterprise_id IN ({marks}) ORDER BY auth_id"
                rows = conn.execute(sql, [bank, purpose, *chunk])
                for row in rows:
                    record = _from_row(row)
                    found[record.enterprise_id].append(record)
        return found

    def summary(self, at: date | None = None) -> list[dict[str, Any]]:
        """Counts per (bank, purpose): active, valid on ``at`` (today by default), revoked.

        No ids: this is what ``lab authorizations summary`` shows.
        """
        day = at or self._clock().date()
        counts: dict[tuple[str, str], dict[str, Any]] = {}
        for a in self.records():
            row = counts.setdefault(
                (a.bank, a.purpose),
                {"bank": a.bank, "purpose": a.purpose, "active": 0, "valid": 0, "revoked": 0},
            )
            if a.status == "revoked":
                row["revoked"] += 1
                continue
            row["active"] += 1
            row["valid"] += int(a.valid_from <= day <= a.valid_to)
        return [counts[k] for k in sorted(counts)]

    def _candidates(self, bank: str, purpose: str) -> list[Authorization]:
        with read_transaction(self.conn) as conn:
            rows = conn.execute(
                "SELECT * FROM authorizations WHERE bank = ? AND purpose = ? AND status = 'active'",
                (bank, purpose),
            ).fetchall()
        return [_from_row(r) for r in rows]


def _from_row(row: sqlite3.Row) -> Authorization:
    return Authorization(
        auth_id=int(row["auth_id"]),
        enterprise_id=row["enterprise_id"],
        bank=row["bank"],
        purpose=row["purpose"],
        valid_from=date.fromisoformat(row["valid_from"]),
        valid_to=date.fromisoformat(row["valid_to"]),
        groups=frozenset(json.loads(row["groups"])),
        personal_consent=bool(row["personal_consent"]),
        reference=row["reference"],
        status=row["status"],
        imported_at=row["imported_at"],
        revoked_at=row["revoked_at"],
    )


_Record = tuple[str, str, str, str, str, str, int, str]


def _parse_csv(path: Path) -> list[_Record]:
    """Parse and validate every row; raise once with every problem found."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise AuthorizationImportError(f"{path}: cannot read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise AuthorizationImportError(f"{path}: not UTF-8 text; export the CSV as UTF-8") from exc
    if not rows:
        raise AuthorizationImportError(
            f"{path}: empty file; the header is {','.join(REQUIRED_COLUMNS)}"
        )
    header = [h.strip() for h in rows[0]]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    unknown = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if missing or unknown or duplicated:
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if unknown:
            parts.append(f"unknown columns {unknown}")
        if duplicated:
            parts.append(f"duplicate columns {duplicated}")
        raise AuthorizationImportError(
            f"{path}: line 1 (header): {'; '.join(parts)}; the columns are "
            f"{', '.join(REQUIRED_COLUMNS)} and optionally {', '.join(OPTIONAL_COLUMNS)}"
        )
    if len(rows) == 1:
        raise AuthorizationImportError(f"{path}: no authorizations below the header")
    errors: list[str] = []
    records: list[_Record] = []
    for line, raw in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in raw):
            continue  # blank line
        if len(raw) != len(header):
            errors.append(f"line {line}: {len(raw)} cells but the header has {len(header)}")
            continue
        cells = {h: c.strip() for h, c in zip(header, raw, strict=True)}
        record = _parse_row(cells, line, errors)
        if record is not None:
            records.append(record)
    if errors:
        shown = "; ".join(errors[:_MAX_ERRORS_SHOWN])
        more = (
            f" (and {len(errors) - _MAX_ERRORS_SHOWN} more)"
            if len(errors) > _MAX_ERRORS_SHOWN
            else ""
        )
        raise AuthorizationImportError(
            f"{path}: {len(errors)} invalid cell(s), nothing imported: {shown}{more}"
        )
    if not records:
        raise AuthorizationImportError(f"{path}: no authorizations below the header")
    return records


def _parse_row(cells: dict[str, str], line: int, errors: list[str]) -> _Record | None:
    def bad(column: str, why: str) -> None:
        errors.append(f"line {line}, column '{column}', value {cells.get(column, '')!r}: {why}")

    before = len(errors)
    eid = cells["enterprise_id"]
    if not eid:
        bad("enterprise_id", "empty; every authorization names its enterprise")
    bank = cells["bank"]
    try:
        check_name(bank, "bank name")
    except VocabularyError as exc:
        bad("bank", str(exc))
    purpose = cells["purpose"]
    try:
        check_purpose(purpose)
    except VocabularyError as exc:
        bad("purpose", str(exc))
    dates: dict[str, date] = {}
    for column in ("valid_from", "valid_to"):
        try:
            dates[column] = date.fromisoformat(cells[column])
        except ValueError:
            bad(column, "not a date; use YYYY-MM-DD")
    if len(dates) == 2 and dates["valid_from"] > dates["valid_to"]:
        bad("valid_to", f"before valid_from {dates['valid_from']}; swap or correct the dates")
    groups = [g.strip() for g in cells["groups"].split(";") if g.strip()]
    if not groups:
        bad("groups", f"empty; list ';'-separated groups from {', '.join(GROUPS)}")
    else:
        unknown = [g for g in groups if g not in GROUPS]
        if unknown:
            bad("groups", f"unknown group(s) {unknown}; use ';'-separated {', '.join(GROUPS)}")
    consent = cells["personal_consent"].lower()
    if consent not in _TRUE | _FALSE:
        bad("personal_consent", "use true or false")
    if len(errors) > before:
        return None
    return (
        eid,
        bank,
        purpose,
        dates["valid_from"].isoformat(),
        dates["valid_to"].isoformat(),
        json.dumps(sorted(set(groups))),
        int(consent in _TRUE),
        cells.get("reference", ""),
    )
