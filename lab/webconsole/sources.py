"""What each page shows, read from one party's home through the lab's own stores.

Nothing here writes: the catalog is read from its entry files, the ledger and the
authorization registry only when ``governance.db`` exists (opening them never creates it),
the audit log through :class:`~lab.webconsole.audit_index.AuditIndex`, MLflow through its
client. Values that cost more than a file read (ε composed by the accountant, the
authorization counts, the burn-down plot, the MLflow runs) are cached until their files change
(:class:`~lab.webconsole.stamps.StampedCache`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from lab import tracking
from lab.governance.audit import AuditLog
from lab.governance.authorizations import AuthorizationRegistry
from lab.governance.catalog import Catalog, CatalogEntry
from lab.governance.ledger import BudgetLedger
from lab.governance.report import burn_down, charge_text
from lab.governance.vocabulary import parse_ref
from lab.webconsole.audit_index import AuditIndex
from lab.webconsole.config import ConsoleConfig
from lab.webconsole.plots import burn_down_svg
from lab.webconsole.runs import JobRun, runs_by_job
from lab.webconsole.stamps import StampedCache, sqlite_files
from lab.webconsole.verification import ChainState, ChainVerifier
from secure_agg.schemes import DEFAULT_SCHEME


@dataclass(frozen=True)
class Page:
    """One page of a long list."""

    rows: list[Any]
    number: int
    pages: int
    total: int


def paginate(rows: list[Any], number: int, size: int) -> Page:
    """Rows of page ``number`` (1-based, clamped to the pages there are)."""
    pages = max(1, math.ceil(len(rows) / size))
    number = min(max(1, number), pages)
    return Page(rows[(number - 1) * size : number * size], number, pages, len(rows))


class Sources:
    """The data of every page of one console (one home)."""

    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        self.log = AuditLog(config.audit_log)
        self.index = AuditIndex(self.log.path)
        self.verifier = ChainVerifier(self.log.path)
        self.cache = StampedCache()

    # -- stores ---------------------------------------------------------------------------------

    def _governed(self) -> bool:
        return self.config.governance_db.is_file()

    def _ledger(self) -> BudgetLedger:
        return BudgetLedger(self.config.governance_db, audit=self.log)

    def _catalog(self) -> Catalog:
        return Catalog(self.config.home / "catalog", audit=self.log)

    def runs(self) -> dict[str, JobRun]:
        """MLflow runs by job id (cached while the store is unchanged)."""
        uri = tracking.default_tracking_uri()
        paths = sqlite_files(self.config.tracking_db) if uri.startswith("sqlite:///") else ()
        runs: dict[str, JobRun] = self.cache.get("runs", paths, lambda: runs_by_job(uri))
        return runs

    # -- feature sets ---------------------------------------------------------------------------

    def feature_sets(self) -> list[dict[str, Any]]:
        """Every published version with its usage counts."""
        usage = self._usage_by_version()
        rows = []
        for entry in self._catalog().list_sets():
            jobs = usage.get(entry.ref, [])
            rows.append(
                {
                    "ref": entry.ref,
                    "name": entry.name,
                    "version": entry.version,
                    "owner": entry.spec.owner,
                    "rows": entry.rows,
                    "columns": len(entry.spec.columns),
                    "published_at": entry.published_at,
                    "jobs": len(jobs),
                    "banks": sorted({b for j in jobs for b in j.get("banks") or []}),
                }
            )
        return rows

    def feature_set(self, ref: str) -> tuple[CatalogEntry, list[dict[str, Any]]]:
        """One version and the jobs that used it (newest first), each with its lift."""
        name, version = parse_ref(ref)
        entry = self._catalog().show(name, version)
        runs = self.runs()
        jobs = []
        for job in reversed(self._usage_by_version().get(entry.ref, [])):
            jobs.append(self._job_row(job, runs))
        return entry, jobs

    def _usage_by_version(self) -> dict[str, list[dict[str, Any]]]:
        self.index.refresh()
        out: dict[str, list[dict[str, Any]]] = {}
        for job in self.index.jobs.jobs():
            for ref in job.get("feature_sets") or []:
                out.setdefault(ref, []).append(job)
        return out

    # -- authorizations -------------------------------------------------------------------------

    def authorizations(self, day: date) -> list[dict[str, Any]]:
        """Counts per bank and purpose on ``day`` (``lab authorizations summary``): no ids."""
        if not self._governed():
            return []

        def compute() -> list[dict[str, Any]]:
            with AuthorizationRegistry(self.config.governance_db, audit=self.log) as registry:
                return registry.summary(day)

        rows: list[dict[str, Any]] = self.cache.get(
            "authorizations", sqlite_files(self.config.governance_db), compute, extra=day
        )
        return rows

    # -- budgets --------------------------------------------------------------------------------

    def budgets(self) -> dict[str, Any]:
        """Caps, spends, the burn-down (SVG) and every job's events, per (feature set, bank)."""
        if not self._governed():
            return {"rows": [], "svg": None, "jobs": {}}
        return dict(
            self.cache.get("budgets", sqlite_files(self.config.governance_db), self._budgets)
        )

    def _budgets(self) -> dict[str, Any]:
        rows: list[dict[str, Any]] = []
        series: list[tuple[str, float, list[tuple[datetime, float]]]] = []
        jobs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        with self._ledger() as ledger:
            for status in ledger.status():
                points = burn_down(ledger, status)
                label = f"{status.feature_set} x {status.bank}"
                series.append((label, status.cap_epsilon, [(p.at, p.epsilon) for p in points]))
                rows.append(status.to_dict())
                spends = []
                for job in ledger.jobs(status.feature_set, status.bank):
                    planned, spent = ledger.epsilon_of(job)
                    spends.append(
                        {
                            "job_id": job.job_id,
                            "state": job.state,
                            "outcome": job.outcome,
                            "dp": job.dp,
                            "planned_epsilon": planned,
                            "spent_epsilon": spent,
                            "reserved_at": job.reserved_at,
                            "closed_at": job.closed_at,
                            "events": [
                                {
                                    "mechanism": e.mechanism,
                                    "noise_multiplier": e.noise_multiplier,
                                    "sample_rate": e.sample_rate,
                                    "steps": e.steps,
                                    "unit": e.unit,
                                }
                                for e in (job.actual_events or job.planned_events)
                            ],
                        }
                    )
                jobs[(status.feature_set, status.bank)] = spends[::-1]
        svg = burn_down_svg(series) if series else None
        return {"rows": rows, "svg": svg, "jobs": jobs}

    # -- jobs -----------------------------------------------------------------------------------

    def jobs(self, status: str | None = None) -> tuple[list[dict[str, Any]], Counter[str]]:
        """Every job the audit log knows, newest first (optionally one status), and counts."""
        self.index.refresh()
        runs = self.runs()
        every = self.index.jobs.jobs()
        counts = Counter(str(j.get("status")) for j in every)
        chosen = [j for j in reversed(every) if status is None or j.get("status") == status]
        return [self._job_row(j, runs) for j in chosen], counts

    def job(self, job_id: str) -> dict[str, Any] | None:
        """One job, or ``None``."""
        self.index.refresh()
        for job in self.index.jobs.jobs():
            if job["job_id"] == job_id:
                return self._job_row(job, self.runs())
        return None

    def _job_row(self, job: dict[str, Any], runs: dict[str, JobRun]) -> dict[str, Any]:
        privacy = job.get("privacy") or {}
        run = runs.get(str(job["job_id"]))
        metrics = run.metrics if run else {}
        joint, alone, pooled = (
            metrics.get("test_auc"),
            metrics.get("bank_only_auc"),
            metrics.get("pooled_auc"),
        )
        bits = privacy.get("key_bits")
        return {
            **job,
            "privacy": privacy,
            "dp": (
                f"ε={privacy.get('dp_epsilon')}, δ={privacy.get('dp_delta')}"
                if privacy.get("dp_epsilon")
                else ("none (exact statistics shared)" if privacy else "-")
            ),
            "scheme": f"{privacy.get('scheme', DEFAULT_SCHEME)} {bits}" if bits else "-",
            "charge": charge_text(job),
            "joint_auc": joint,
            "bank_only_auc": alone,
            "pooled_auc": pooled,
            "lift": joint - alone if joint is not None and alone is not None else None,
            "run": run,
            "run_link": run.link(self.config.mlflow_url) if run else None,
        }

    # -- audit ----------------------------------------------------------------------------------

    def chain(self, *, deep: bool) -> ChainState:
        """The chain's state: checked now (``deep``) or as last checked."""
        return self.verifier.check() if deep else self.verifier.state

    def audit(self) -> dict[str, Any]:
        """Head, key, counts per event type, peer heads and the heads in MLflow runs."""
        self.index.refresh()
        peers: dict[str, Any] = {}
        for entry in self.index.peer_heads:
            peers[str(entry.payload.get("party"))] = entry
        runs = self.runs()
        anchored = [(r.audit_head, job) for job, r in runs.items() if r.audit_head]
        mlflow_heads = []
        for head, job_id in anchored:
            seq_text, _, digest = head.partition(":")
            known = self.index.hash_of(int(seq_text)) if seq_text.isdigit() else None
            found = None if known is None else known == digest
            mlflow_heads.append({"job_id": job_id, "head": head, "in_log": found})
        return {
            "path": str(self.log.path),
            "head": self.log.head(),
            "key": self.log.key_fingerprint(),
            "entries": self.index.n_entries,
            "bytes": self.index.indexed_bytes,
            "counts": sorted(self.index.counts.items()),
            "peer_heads": sorted(peers.items()),
            "mlflow_heads": mlflow_heads[-20:][::-1],
            "mlflow_heads_total": len(mlflow_heads),
            "index_error": self.index.error,
        }

    def alerts(self) -> list[Any]:
        """Alerts (``lab audit alerts``), newest first."""
        self.index.refresh()
        return self.index.alerts[::-1]

    def entries_page(self, number: int) -> Page:
        """A page of the log's entries, newest first."""
        self.index.refresh()
        total, size = self.index.n_entries, self.config.page_size
        pages = max(1, math.ceil(total / size))
        number = min(max(1, number), pages)
        stop = total - (number - 1) * size
        rows = self.index.entries(max(0, stop - size), stop)[::-1]
        return Page(rows, number, pages, total)
