"""Feature-set catalog: immutable, versioned publications the platform serves from.

``publish`` validates the data against its spec (:mod:`lab.governance.validation`), computes a
row-free quality report (:mod:`lab.governance.quality`) and stores
``$LAB_HOME/catalog/<name>/<version>.json`` with the spec, the spec's digest and the data file's
content digest. An entry is never overwritten: publishing the same ``name@version`` with the
same content returns the existing entry; with different content it is refused.

``check_served`` is what the platform's node calls before it serves a job: it refuses columns
outside the published version, columns whose allowed purposes exclude the job's purpose, and a
data file whose content changed since publication. Its result names the feature groups and
whether personal data is involved, which is what
:meth:`lab.governance.authorizations.AuthorizationRegistry.filter_rows` needs.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from features.errors import DataError
from features.io import file_digest, resolve_data_file
from lab.governance._common import (
    atomic_create,
    canonical_json,
    default_actor,
    file_lock,
    iso,
    sha256_hex,
    utc_now,
)
from lab.governance.audit import AuditLog
from lab.governance.errors import (
    CatalogError,
    ColumnNotPublishedError,
    DataDigestMismatchError,
    FeatureSetExistsError,
    FeatureSetNotFoundError,
    PurposeNotAllowedError,
)
from lab.governance.quality import quality_report
from lab.governance.spec import FeatureSetSpec, load_spec, spec_from_dict
from lab.governance.validation import read_and_validate
from lab.governance.vocabulary import check_name, check_purpose, format_ref, parse_ref
from lab.home import lab_home
from lab.paths import inside

logger = logging.getLogger(__name__)

#: Layout version of an entry file.
ENTRY_FORMAT = 1


@dataclass(frozen=True)
class CatalogEntry:
    """One published feature-set version.

    Attributes
    ----------
    spec : FeatureSetSpec
        The spec as published.
    spec_digest, data_digest : str
        ``sha256:<hex>`` of the canonical spec and of the data file's bytes.
    data_path : str
        Where the platform keeps the data (meaningful in the platform's domain only).
    rows : int
        Enterprises in the table.
    quality : dict
        The row-free quality report.
    published_at, published_by : str
        UTC time and actor.
    """

    spec: FeatureSetSpec
    spec_digest: str
    data_digest: str
    data_path: str
    rows: int
    quality: dict[str, Any]
    published_at: str
    published_by: str

    @property
    def name(self) -> str:
        """Feature-set name."""
        return self.spec.name

    @property
    def version(self) -> str:
        """Feature-set version."""
        return self.spec.version

    @property
    def ref(self) -> str:
        """``name@version``."""
        return self.spec.ref

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the entry file's content)."""
        return {
            "format": ENTRY_FORMAT,
            "ref": self.ref,
            "spec": self.spec.to_dict(),
            "spec_digest": self.spec_digest,
            "data_digest": self.data_digest,
            "data_path": self.data_path,
            "rows": self.rows,
            "quality": self.quality,
            "published_at": self.published_at,
            "published_by": self.published_by,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "catalog entry") -> CatalogEntry:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        CatalogError
            If the entry is malformed or its spec digest does not match its spec.
        """
        try:
            entry = cls(
                spec=spec_from_dict(data["spec"], source=source),
                spec_digest=data["spec_digest"],
                data_digest=data["data_digest"],
                data_path=data["data_path"],
                rows=int(data["rows"]),
                quality=data["quality"],
                published_at=data["published_at"],
                published_by=data["published_by"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CatalogError(f"{source}: malformed catalog entry ({exc})") from exc
        if entry.spec.digest() != entry.spec_digest:
            raise CatalogError(
                f"{source}: the spec no longer matches its digest {entry.spec_digest}; the "
                "entry was edited after publication. Run `lab audit verify` and restore it"
            )
        return entry


@dataclass(frozen=True)
class ServedSet:
    """What :meth:`Catalog.check_served` approved.

    Attributes
    ----------
    entry : CatalogEntry
        The published version.
    columns : tuple of str
        The columns the job may read.
    groups : frozenset of str
        Their feature groups (what each enterprise's authorization must cover).
    needs_personal_consent : bool
        Whether any of them is personal data.
    """

    entry: CatalogEntry
    columns: tuple[str, ...]
    groups: frozenset[str]
    needs_personal_consent: bool


class Catalog:
    """The feature-set catalog of one lab home (or of an explicit folder).

    Parameters
    ----------
    root : Path, optional
        Default ``$LAB_HOME/catalog``.
    audit : AuditLog, optional
        Where publications are audited; default the lab home's log.
    """

    def __init__(self, root: Path | None = None, *, audit: AuditLog | None = None) -> None:
        self.root = root if root is not None else lab_home() / "catalog"
        self.audit = audit if audit is not None else AuditLog()

    def __repr__(self) -> str:
        return f"Catalog({str(self.root)!r})"

    def entry_path(self, name: str, version: str) -> Path:
        """Where the entry of ``name@version`` is stored."""
        folder = inside(self.root, check_name(name, "feature-set name"), what="feature set")
        return inside(folder, f"{check_name(version, 'feature-set version')}.json", what="version")

    def publish(
        self, spec_path: Path, data_path: Path, *, actor: str | None = None
    ) -> CatalogEntry:
        """Validate data against its spec and publish it as ``name@version``.

        Parameters
        ----------
        spec_path : Path
            The spec (YAML).
        data_path : Path
            The table (CSV, CSV.gz or parquet, or a folder holding one).
        actor : str, optional
            Who publishes; default ``$LAB_ACTOR`` or the OS user.

        Returns
        -------
        CatalogEntry
            The new entry, or the existing one if this exact content was published before.

        Raises
        ------
        SpecError
            If the spec is invalid.
        SpecViolationError
            If the data breaks the spec (naming the column and the rule).
        FeatureSetExistsError
            If ``name@version`` was published with other content.
        """
        spec = load_spec(spec_path)
        table, valid = read_and_validate(spec, data_path)
        entry = CatalogEntry(
            spec=spec,
            spec_digest=spec.digest(),
            data_digest=table.digest,
            data_path=str(table.path.resolve()),
            rows=table.n_rows,
            quality=quality_report(spec, valid),
            published_at=iso(utc_now()),
            published_by=actor or default_actor(),
        )
        path = self.entry_path(spec.name, spec.version)
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(self.root / ".lock"):
            existing = self._read(path) if path.exists() else None
            if existing is not None:
                return self._same_content(existing, entry)
            blob = (json.dumps(entry.to_dict(), indent=2, ensure_ascii=False) + "\n").encode()
            if not atomic_create(path, blob):  # pragma: no cover - we hold the catalog lock
                raise FeatureSetExistsError(f"{spec.ref} appeared while publishing; retry")
            try:
                self.audit.record(
                    "feature_set_published", _audit_payload(entry), entry.published_by
                )
            except BaseException:
                path.unlink(missing_ok=True)  # not audited, not published
                raise
            os.chmod(path, 0o444)
        logger.info("published %s (%d rows, %s)", spec.ref, entry.rows, entry.data_digest)
        return entry

    def list_sets(self) -> list[CatalogEntry]:
        """Every published version, by name then version order."""
        if not self.root.exists():
            return []
        entries = [
            self._read(path)
            for folder in sorted(p for p in self.root.iterdir() if p.is_dir())
            for path in folder.glob("*.json")
        ]
        return sorted(entries, key=lambda e: (e.name, version_key(e.version)))

    def show(self, name: str, version: str | None = None) -> CatalogEntry:
        """Return a published version (the latest when ``version`` is ``None``).

        ``name`` may also be ``name@version``.

        Raises
        ------
        FeatureSetNotFoundError
            Listing what is published.
        """
        if "@" in name:
            name, parsed = parse_ref(name)
            version = version or parsed
        check_name(name, "feature-set name")
        versions = [e for e in self.list_sets() if e.name == name]
        if not versions:
            known = sorted({e.name for e in self.list_sets()})
            raise FeatureSetNotFoundError(
                f"no feature set named {name!r} is published (published: "
                f"{', '.join(known) or 'none'}); publish it with `lab features publish SPEC "
                "--data FILE`"
            )
        if version is None:
            return versions[-1]
        for entry in versions:
            if entry.version == version:
                return entry
        raise FeatureSetNotFoundError(
            f"{format_ref(name, version)} is not published; versions of {name}: "
            f"{', '.join(e.version for e in versions)}"
        )

    def check_served(
        self,
        ref: str,
        data_path: Path,
        columns: Sequence[str] | None = None,
        *,
        purpose: str | None = None,
    ) -> ServedSet:
        """Approve serving ``columns`` of ``ref`` from ``data_path``, or refuse.

        Parameters
        ----------
        ref : str
            ``name@version`` the job names.
        data_path : Path
            The file the platform is about to read.
        columns : sequence of str, optional
            Columns the job asks for; default every published column.
        purpose : str, optional
            The job's purpose; each column must allow it.

        Returns
        -------
        ServedSet

        Raises
        ------
        FeatureSetNotFoundError
            If ``ref`` is not published.
        ColumnNotPublishedError
            If a column is not part of the published version.
        PurposeNotAllowedError
            If a column does not allow ``purpose``.
        DataDigestMismatchError
            If the file's content differs from what was published.
        """
        name, version = parse_ref(ref)
        entry = self.show(name, version)
        published = list(entry.spec.columns)
        wanted = list(published if columns is None else columns)
        unknown = [c for c in wanted if c not in entry.spec.columns]
        if unknown:
            raise ColumnNotPublishedError(
                f"{entry.ref} does not publish columns {unknown}; it publishes {published}. "
                "Drop them from the job or publish a new version that includes them"
            )
        if purpose is not None:
            check_purpose(purpose)
            barred = [c for c in wanted if purpose not in entry.spec.columns[c].purposes]
            if barred:
                raise PurposeNotAllowedError(
                    f"{entry.ref}: columns {barred} are not published for purpose {purpose!r}; "
                    "drop them or ask the platform to publish a version that allows it"
                )
        try:
            digest = file_digest(resolve_data_file(data_path))
        except DataError as exc:
            raise CatalogError(f"{entry.ref}: {exc}") from exc
        if digest != entry.data_digest:
            raise DataDigestMismatchError(
                f"{data_path}: content {digest} differs from {entry.ref} as published "
                f"({entry.data_digest}); serve the published file or publish a new version"
            )
        return ServedSet(
            entry=entry,
            columns=tuple(wanted),
            groups=entry.spec.groups_of(wanted),
            needs_personal_consent=entry.spec.needs_personal_consent(wanted),
        )

    def _read(self, path: Path) -> CatalogEntry:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CatalogError(f"{path}: unreadable catalog entry ({exc})") from exc
        return CatalogEntry.from_dict(data, source=str(path))

    @staticmethod
    def _same_content(existing: CatalogEntry, new: CatalogEntry) -> CatalogEntry:
        if (existing.spec_digest, existing.data_digest) == (new.spec_digest, new.data_digest):
            return existing
        changed = [
            what
            for what, old, now in (
                ("spec", existing.spec_digest, new.spec_digest),
                ("data", existing.data_digest, new.data_digest),
            )
            if old != now
        ]
        raise FeatureSetExistsError(
            f"{existing.ref} is already published (by {existing.published_by} at "
            f"{existing.published_at}) and its {' and '.join(changed)} differ; published "
            "versions are immutable: bump the version in the spec"
        )


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key ordering versions naturally (``2`` < ``10``, ``1.2`` < ``1.10``)."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"[._-]", version)
    )


def _audit_payload(entry: CatalogEntry) -> dict[str, Any]:
    spec = entry.spec
    sensitivities: dict[str, int] = {}
    for col in spec.columns.values():
        sensitivities[col.sensitivity] = sensitivities.get(col.sensitivity, 0) + 1
    return {
        "feature_set": entry.ref,
        "owner": spec.owner,
        "spec_digest": entry.spec_digest,
        "data_digest": entry.data_digest,
        "entry_digest": "sha256:" + sha256_hex(canonical_json(entry.to_dict())),
        "n_rows": entry.rows,
        "n_columns": len(spec.columns),
        "groups": sorted(spec.groups_of(spec.columns)),
        "sensitivities": sensitivities,
    }
