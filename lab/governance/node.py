"""The lab's node policy: a party's node enforces its own governance, whatever the job says.

Loaded by a party's node (``policy = "lab.governance.node:LabNodePolicy"``) and applied by the
node itself (:mod:`federated.policy`), from the files of its own governance home: its policy
(:mod:`lab.governance.policy`), catalog, authorizations, budget ledger and audit log.

For a platform, before any data is read (:meth:`LabNodePolicy.open_job`):

- the published feature-set version that governs the node's data file is found by the file's
  content digest (or its published path, which then must not have changed), not taken from
  the job: a job that leaves its ``feature_set`` out, or names another, cannot unpublish it;
- a governed file is served only in its published columns, for a purpose they allow, and, when
  the policy says ``authorization: required`` (the default) or the job asks for it, only for
  enterprises with a valid authorization for the job's bank and purpose, filtered *before*
  alignment (:meth:`LabNodePolicy.admit`), so a bank can at most learn the membership it is
  entitled to;
- key sizes, reveal modes, batch sizes and DP budgets the policy does not allow are refused,
  naming the setting;
- a job that releases statistics of a budgeted set must use DP; the node computes the noise
  itself from the job's declared plan and reserves the plan's privacy events in its own ledger.
  Its protocol steps add that noise and count every release; :meth:`LabNodePolicy.close_job`
  charges the ledger from that count.

A file that is no published version is served as it is only while the home governs nothing (or
when the owner set ``unpublished: serve``), and a job asking for governance is then refused:
a node with nothing configured serves nothing governed and says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import federated.party
from features.io import PartyTable, file_digest, read_party_table, resolve_data_file
from federated.policy import Admission, JobGrant, JobUse, local_column_groups, privacy_report
from federated.privacy_plan import dp_grants, job_model, releases_statistics
from federated.spec import JobSpec, PartyBinding
from lab.governance import events
from lab.governance._common import atomic_replace, file_lock
from lab.governance.audit import AuditLog
from lab.governance.authorizations import AuthorizationRegistry
from lab.governance.catalog import Catalog, CatalogEntry, version_key
from lab.governance.errors import (
    DataDigestMismatchError,
    GovernanceError,
    JobStateError,
    NoAuthorizedRowsError,
    NonPrivateJobError,
    NotServedError,
)
from lab.governance.ledger import BudgetLedger
from lab.governance.policy import NodePolicyConfig, read_policy
from lab.governance.vocabulary import check_purpose, parse_ref
from lab.home import lab_home
from models.guard import NodeLimits, PolicyRefusalError, ReleaseGrant
from models.privacy import PrivacyEvent
from models.training_settings import IterativeSettings
from secure_agg.paillier import DEFAULT_KEY_BITS
from secure_agg.schemes import DEFAULT_SCHEME


def _home(binding: PartyBinding) -> Path:
    return binding.governance_home or lab_home()


def _audit(home: Path) -> AuditLog:
    return AuditLog(home / "audit" / "log.jsonl")


class LabNodePolicy:
    """A node's governance from its own home (see the module docstring)."""

    def limits(self, binding: PartyBinding) -> NodeLimits:
        """The node's limits from its policy file."""
        try:
            return read_policy(_home(binding)).limits()
        except GovernanceError as exc:
            raise PolicyRefusalError(str(exc)) from exc

    def open_job(self, binding: PartyBinding, job: JobSpec) -> JobGrant:
        """Decide whether and how this node serves ``job`` (before any data is read).

        Raises
        ------
        PolicyRefusalError
            Naming the setting or the governance rule, after auditing the refusal.
        """
        home = _home(binding)
        audit = _audit(home)
        try:
            grant = _open(binding, job, home, audit)
        except (GovernanceError, PolicyRefusalError) as exc:
            audit.record(
                "job_refused",
                {
                    "job_id": job.job_id,
                    "party": binding.name,
                    "bank": _bank(job),
                    "reason": f"{type(exc).__name__}: {exc}"[:1000],
                },
            )
            if isinstance(exc, PolicyRefusalError):
                raise
            raise PolicyRefusalError(f"party '{binding.name}' refuses the job: {exc}") from exc
        audit.record(
            "job_served",
            {
                "job_id": job.job_id,
                "party": binding.name,
                "role": binding.role,
                "bank": _bank(job),
                "purpose": job.governance.purpose,
                "task": job.task,
                "model": job.model_type,
                "governed": grant.governed,
                "feature_set": grant.feature_set,
                "authorization": grant.authorization,
                "reservation": grant.reservation,
                "n_rows": grant.detail.get("n_rows"),
                "n_authorized": grant.detail.get("n_authorized"),
                "dp": [g.to_dict() for g in grant.releases],
                "limits": grant.limits.to_dict(),
            },
        )
        return grant

    def resume_job(
        self, binding: PartyBinding, job: JobSpec, record: Mapping[str, Any]
    ) -> JobGrant:
        """Decide again, under the policy as it is now, whether this node serves a resumed job.

        Every check of :meth:`open_job` runs again (a policy or an authorization changed since
        the interruption applies to the rest of the job). The interrupted run's reservation is
        kept while it is open; the releases already made stay counted (``record``, the node's
        own checkpoint). If the reservation was closed (the run ended in order, ``job/end``),
        what is left of the plan is checked against the cap and reserved again, and only the
        releases made after the resume are charged to it.

        Raises
        ------
        PolicyRefusalError
            Naming the setting or rule, after auditing the refusal.
        """
        home = _home(binding)
        audit = _audit(home)
        try:
            grant = _resume(binding, job, home, audit, record)
        except (GovernanceError, PolicyRefusalError) as exc:
            self.refuse(binding, job, f"{type(exc).__name__}: {exc}")
            if isinstance(exc, PolicyRefusalError):
                raise
            raise PolicyRefusalError(f"party '{binding.name}' refuses the job: {exc}") from exc
        audit.record(
            "job_resumed",
            {
                "job_id": job.job_id,
                "party": binding.name,
                "role": binding.role,
                "bank": _bank(job),
                "resumes": int(record.get("resumes", 0)),
                "releases_before": dict(record.get("releases", {})),
                "reservation": grant.reservation,
                "feature_set": grant.feature_set,
            },
        )
        return grant

    def refuse(self, binding: PartyBinding, job: JobSpec, reason: str) -> None:
        """Audit ``job_refused`` for a refusal the node's runtime decided."""
        _audit(_home(binding)).record(
            "job_refused",
            {
                "job_id": job.job_id,
                "party": binding.name,
                "bank": _bank(job),
                "reason": reason[:1000],
            },
        )

    def admit(
        self, binding: PartyBinding, job: JobSpec, grant: JobGrant, table: PartyTable
    ) -> Admission:
        """The rows of ``table`` the job may use: only authorized enterprises when required."""
        n_rows = table.n_rows
        detail: dict[str, object] = {
            "purpose": job.governance.purpose,
            "feature_set": grant.feature_set,
            "groups": list(grant.groups),
        }
        if not grant.authorization:
            return Admission(table, n_rows, n_rows, detail)
        home = _home(binding)
        mask = admitted_mask(home, job, grant, table.ids)
        if not mask.any():
            raise no_authorized_rows(binding, job, grant, n_rows, home)
        detail.update(
            bank=job.label_holder().name, needs_personal_consent=grant.needs_personal_consent
        )
        return Admission(table.subset(mask), n_rows, int(mask.sum()), detail)

    def recent_window(
        self, binding: PartyBinding, job: JobSpec, grant: JobGrant, ref: str | None
    ) -> Admission:
        """The recent window a platform serves for screening: a newer published version.

        The same rules as for the training window, from this node's own home: the version must
        be a later one of the feature set the job is served from, its file unchanged since
        publication, the columns published for the job's purpose and, when the job's grant
        filters by authorization, only enterprises authorised for its bank and purpose.

        Raises
        ------
        PolicyRefusalError
            Naming the version and the fix, after auditing the refusal.
        """
        return _window(
            binding,
            job,
            grant,
            ref,
            earlier=False,
            audited=(
                "screening_window",
                {"feature_set": ref, "training_feature_set": grant.feature_set},
            ),
        )

    def reference_window(
        self, binding: PartyBinding, job: JobSpec, grant: JobGrant, ref: str
    ) -> Admission:
        """The reference window a platform serves for monitoring: the model's training version.

        The rules of :meth:`recent_window`, from this node's own home, for a version *not later*
        than the one the monitoring job is served from: its file unchanged since publication,
        the columns published for the job's purpose and, when the grant filters by
        authorization, only enterprises authorised today for the job's bank and purpose.

        Raises
        ------
        PolicyRefusalError
            Naming the version and the fix, after auditing the refusal.
        """
        return _window(
            binding,
            job,
            grant,
            ref,
            earlier=True,
            audited=(
                "monitoring_window",
                {"feature_set": grant.feature_set, "reference_feature_set": ref},
            ),
        )

    def record(
        self, binding: PartyBinding, job: JobSpec, event: str, payload: Mapping[str, Any]
    ) -> None:
        """Audit what the node's protocols reported: alignments and probing alerts."""
        audit = _audit(_home(binding))
        if event == "alignment":
            events.alignment(
                audit,
                job_id=job.job_id,
                n_platform=int(payload["n_rows"]),
                n_authorized=int(payload["n_admitted"]),
                n_bank=int(payload["n_bank"]),
                n_aligned=None if payload.get("n_aligned") is None else int(payload["n_aligned"]),
                reveal=str(payload["reveal"]),
            )
            return
        audit.record(
            event, {"job_id": job.job_id, "party": binding.name, "bank": _bank(job), **payload}
        )

    def progress(self, binding: PartyBinding, job: JobSpec, grant: JobGrant, use: JobUse) -> None:
        """Journal the job's use of a budgeted set durably, before it happens (see :func:`settle`).

        Raises
        ------
        PolicyRefusalError
            If the node settled the job's reservation already (its run ended, or the node
            restarted): nothing more is released for it, so nothing goes uncharged.
        """
        if grant.reservation is None:
            return
        home = _home(binding)
        with journal_lock(home):
            if not _journal_path(home, grant.reservation).is_file():
                raise PolicyRefusalError(
                    f"party '{binding.name}' settled its reservation {grant.reservation} of job "
                    f"{job.job_id} already (its run ended or the node restarted); it releases "
                    "nothing more for this job: run it again"
                )
            write_journal(home, grant, use)

    def audit_head(self, binding: PartyBinding) -> dict[str, str] | None:
        """The node's audit head and key fingerprint (sent to its peers through the job)."""
        return audit_anchor(_home(binding))

    def record_peer_heads(
        self, binding: PartyBinding, job: JobSpec, heads: Mapping[str, Mapping[str, Any]]
    ) -> None:
        """Record each peer's audit head at the job's start and end (``peer_head`` entries).

        A peer writing to this very log (one home for every party, as in the embedded runtime)
        is skipped: its head would anchor the log in itself.
        """
        audit = _audit(_home(binding))
        own = audit.key_fingerprint()
        for party, moments in sorted(heads.items()):
            if party == binding.name:
                continue
            for when in ("start", "end"):
                anchor = moments.get(when)
                if not anchor or (own is not None and anchor.get("key") == own):
                    continue
                audit.record_peer_head(
                    party, str(anchor["head"]), when, job_id=job.job_id, key=anchor.get("key")
                )

    def close_job(
        self, binding: PartyBinding, job: JobSpec, grant: JobGrant, use: JobUse
    ) -> dict[str, Any]:
        """Charge the node's ledger from its own release count; audit and report the charge."""
        home = _home(binding)
        audit = _audit(home)
        report = privacy_report(grant, use)
        if grant.reservation is not None:
            with journal_lock(home):
                journal = _journal_path(home, grant.reservation)
                if not journal.is_file() and _settled(home, audit, grant.reservation):
                    if use.outcome == "finished":
                        raise PolicyRefusalError(
                            f"party '{binding.name}' settled its reservation {grant.reservation} "
                            f"of job {job.job_id} as failed before the job ended (its run was "
                            "reported ended, or the node restarted); the job cannot finish: run "
                            "it again"
                        )
                    report["ledger"] = "settled"
                else:
                    report["ledger"] = _close_reservation(home, audit, grant, use)
                    journal.unlink(missing_ok=True)
        audit.record(
            "job_closed",
            {"job_id": job.job_id, "party": binding.name, "bank": _bank(job), **report},
        )
        return report


def audit_anchor(home: Path) -> dict[str, str] | None:
    """``{"head": "SEQ:HASH", "key": fingerprint}`` of the audit log of ``home``, if any."""
    log = _audit(home)
    head = log.head()
    if head is None:
        return None
    return {"head": str(head), "key": log.key_fingerprint() or ""}


def _close_reservation(home: Path, audit: AuditLog, grant: JobGrant, use: JobUse) -> str:
    """Commit what the node counted (it touched data) or release the reservation (it did not).

    A reservation made when a job resumed is charged only the releases made after the resume
    (``detail["released_before"]``: those were committed with the interrupted run's).
    """
    if grant.reservation is None:
        raise ValueError("no reservation to close")
    before = grant.detail.get(RELEASED_BEFORE, {})
    spent = [
        e
        for g in grant.releases
        for e in g.events(int(use.releases.get(g.mechanism, 0)) - int(before.get(g.mechanism, 0)))
    ]
    with BudgetLedger(home / "governance.db", audit=audit) as ledger:
        # A release counted is spent even if the node never marked the data as touched.
        if use.touched or spent:
            ledger.commit(grant.reservation, spent, outcome=use.outcome)
            return "committed"
        ledger.release(grant.reservation)
        return "released"


def _settled(home: Path, audit: AuditLog, reservation: str) -> bool:
    """Whether ``reservation`` is closed in the node's ledger (settled without ``job/end``)."""
    with BudgetLedger(home / "governance.db", audit=audit) as ledger:
        return ledger.job(reservation).state != "reserved"


#: Key of a resumed job's grant detail: releases committed with the interrupted run's reservation.
RELEASED_BEFORE = "released_before"

#: Folder of a governance home where nodes journal the use of open reservations.
JOURNAL_DIR = "node-jobs"
#: The lock file of that folder (see :func:`journal_lock`).
JOURNAL_LOCK = ".lock"


def _journal_path(home: Path, reservation: str) -> Path:
    return home / JOURNAL_DIR / (reservation.replace("/", "__") + ".json")


@contextmanager
def journal_lock(home: Path) -> Iterator[None]:
    """Serialise journal writes and settlements of ``home``'s node (across its processes).

    A release is journaled under this lock before it leaves the node, and a settlement reads
    the journal and closes the reservation under it: a release is either in what the
    settlement charges, or refused because the reservation was settled.
    """
    folder = home / JOURNAL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / JOURNAL_LOCK):
        yield


def write_journal(home: Path, grant: JobGrant, use: JobUse) -> None:
    """Keep the use of an open reservation durably (written atomically, fsync-ed).

    The journal names the Flower run the node served the job in (``run``), so the node can
    settle the reservation itself once that run has ended (:mod:`lab.deploy.run_watch`).
    """
    if grant.reservation is None:
        return
    path = _journal_path(home, grant.reservation)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "grant": grant.to_dict(),
        "touched": use.touched,
        "releases": dict(use.releases),
        "run": use.run,
    }
    atomic_replace(path, json.dumps(doc, sort_keys=True).encode("utf-8"))


@dataclass(frozen=True)
class OpenJournal:
    """One open reservation as the node journaled it (see :func:`open_journals`)."""

    reservation: str
    job_id: str
    run: int | None


def open_journals(home: Path) -> list[OpenJournal]:
    """The reservations ``home``'s node journaled and has not closed (reads JSON files only)."""
    out: list[OpenJournal] = []
    folder = home / JOURNAL_DIR
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            reservation = str(doc["grant"]["reservation"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being replaced right now, or not a journal: the next look sees it
        run = doc.get("run")
        job_id = reservation.split("/", 1)[0]
        out.append(OpenJournal(reservation, job_id, None if run is None else int(run)))
    return out


def settle(
    reservation: str,
    home: Path | None = None,
    *,
    actor: str | None = None,
    reason: str = "settled by the platform's operator",
    run: int | None = None,
) -> str:
    """Close an open reservation whose node ended without ``job/end`` (it crashed or was cut).

    With the node's journal, the releases it counted are committed as ``failed`` (or the
    reservation is released if the job neither touched data nor released anything); without
    one, the whole plan is committed as spent, because nothing proves less was used. The
    decision comes from the node's own ledger and journal only: whoever says the job ended
    (its operator, the node's run watch, a coordinator) cannot change what is charged, and a
    release the node journaled is never refunded. Audited as ``reservation_settled`` with
    ``reason``. With ``run``, only a reservation whose journal still names that run is settled
    (the watch of an ended run must not close a reservation a resumed run took over).

    Returns
    -------
    str
        ``committed`` or ``released``.

    Raises
    ------
    UnknownJobError, JobStateError
        If there is no such reservation, or it is closed already.
    """
    home = home or lab_home()
    audit = _audit(home)
    path = _journal_path(home, reservation)
    with journal_lock(home):
        with BudgetLedger(home / "governance.db", audit=audit) as ledger:
            record = ledger.job(reservation)
            if record.state != "reserved":
                raise JobStateError(
                    f"reservation {reservation} is {record.state} already; nothing to settle"
                )
        if path.is_file():
            doc = json.loads(path.read_text(encoding="utf-8"))
            if run is not None and doc.get("run") != run:
                raise JobStateError(
                    f"reservation {reservation} is journaled for run {doc.get('run')} now, not "
                    f"run {run}; nothing settled"
                )
            grant = JobGrant.from_dict(doc["grant"])
            use = JobUse(
                touched=bool(doc["touched"]),
                releases={str(k): int(v) for k, v in dict(doc["releases"]).items()},
                outcome="failed",
            )
            outcome = _close_reservation(home, audit, grant, use)
            journaled: dict[str, Any] = {"touched": use.touched, "releases": use.releases}
        else:
            with BudgetLedger(home / "governance.db", audit=audit) as ledger:
                ledger.commit(reservation, record.planned_events, outcome="failed", actor=actor)
            outcome, journaled = "committed", {"journal": None, "charged": "the whole plan"}
        audit.record(
            "reservation_settled",
            {
                "reservation": reservation,
                "job_id": reservation.split("/", 1)[0],
                "outcome": outcome,
                "reason": reason[:500],
                **journaled,
            },
            actor,
        )
        path.unlink(missing_ok=True)
    return outcome


def settle_job(
    job_id: str, home: Path | None = None, *, actor: str | None = None
) -> dict[str, str]:
    """Settle every reservation of ``job_id`` still open in ``home`` (see :func:`settle`).

    For a runtime whose nodes share the lab's home (the embedded one) once they have stopped:
    a node stopped by Ctrl-C before it heard ``job/end`` is charged what it journaled, not its
    whole plan. Returns each settled reservation's outcome (``committed`` or ``released``).
    """
    return settle_open(
        home, actor=actor, job_id=job_id, reason="the job's embedded nodes stopped before its end"
    )


def settle_open(
    home: Path | None = None,
    *,
    reason: str,
    actor: str | None = None,
    job_id: str | None = None,
) -> dict[str, str]:
    """Settle every reservation still open in ``home`` (of ``job_id`` only, if given).

    ``lab node start`` calls it before a platform's SuperNode starts: the job state of the
    node's previous process is gone, so no job it served can go on there. Returns each
    settled reservation's outcome.
    """
    home = home or lab_home()
    db = home / "governance.db"
    if not db.is_file():
        return {}
    with BudgetLedger(db, audit=_audit(home)) as ledger:
        still_open = [
            j.job_id
            for j in ledger.jobs()
            if j.state == "reserved" and (job_id is None or j.job_id.startswith(f"{job_id}/"))
        ]
    return {r: settle(r, home, actor=actor, reason=reason) for r in still_open}


def _bank(job: JobSpec) -> str | None:
    banks = job.by_role("bank")
    return banks[0].name if job.kind == "vertical" and banks else None


def _open(binding: PartyBinding, job: JobSpec, home: Path, audit: AuditLog) -> JobGrant:
    """Decide, check the budget, count the authorized rows; only then reserve (platforms).

    Every refusal comes before the reservation, so a refused job leaves the ledger as it was;
    the budget is checked before the data file is read to count the authorized rows.
    """
    grant = decide(binding, job, home, audit)
    if not grant.governed or binding.role != "platform" or grant.feature_set is None:
        return grant
    plan = budget_plan(home, job, grant.feature_set, grant.releases, read_policy(home))
    if plan is not None:
        with BudgetLedger(home / "governance.db", audit=audit) as ledger:
            ledger.precheck(*plan.arguments())
    grant = _count_authorized(binding, job, home, grant)
    if plan is None:
        return grant
    with BudgetLedger(home / "governance.db", audit=audit) as ledger:
        ledger.reserve(*plan.arguments())
    grant = replace(grant, reservation=plan.reservation)
    # Journaled at once: if the node stops before job/end, its operator (or the embedded lab)
    # settles from this what it used, nothing when it never got past hello.
    write_journal(home, grant, JobUse(touched=False, releases={}, outcome="failed"))
    return grant


def _resume(
    binding: PartyBinding,
    job: JobSpec,
    home: Path,
    audit: AuditLog,
    record: Mapping[str, Any],
) -> JobGrant:
    """:func:`_open` for a resumed job: keep the open reservation, or reserve what is left."""
    grant = decide(binding, job, home, audit)
    if not grant.governed or binding.role != "platform" or grant.feature_set is None:
        return grant
    feature_set = grant.feature_set
    grant = _count_authorized(binding, job, home, grant)
    plan = budget_plan(home, job, feature_set, grant.releases, read_policy(home))
    if plan is None:
        return grant
    used = {str(k): int(v) for k, v in dict(record.get("releases", {})).items()}
    use = JobUse(touched=True, releases=used, outcome="failed")
    # Under the journal lock: a reservation the node is settling right now is not kept.
    with journal_lock(home), BudgetLedger(home / "governance.db", audit=audit) as ledger:
        open_ = sorted(
            j.job_id
            for j in ledger.jobs()
            if j.state == "reserved"
            and (j.job_id == plan.reservation or j.job_id.startswith(f"{plan.reservation}/resume-"))
        )
        if open_:
            kept_id = open_[-1]
            grant = replace(grant, reservation=kept_id)
            journal = _journal_path(home, kept_id)
            if kept_id != plan.reservation and journal.is_file():
                doc = json.loads(journal.read_text(encoding="utf-8"))
                grant = replace(
                    grant, detail={**grant.detail, **_before(JobGrant.from_dict(doc["grant"]))}
                )
            write_journal(home, grant, use)
            return grant
        left = tuple(
            e for g in grant.releases for e in g.events(g.max_releases - used.get(g.mechanism, 0))
        )
        reservation = f"{plan.reservation}/resume-{int(record.get('resumes', 0))}"
        arguments = (plan.feature_set, plan.bank, reservation, left, plan.delta)
        ledger.precheck(*arguments)
        ledger.reserve(*arguments)
    grant = replace(grant, reservation=reservation, detail={**grant.detail, RELEASED_BEFORE: used})
    write_journal(home, grant, use)
    return grant


def _before(grant: JobGrant) -> dict[str, Any]:
    before = grant.detail.get(RELEASED_BEFORE)
    return {} if before is None else {RELEASED_BEFORE: before}


def _count_authorized(binding: PartyBinding, job: JobSpec, home: Path, grant: JobGrant) -> JobGrant:
    """``grant`` with the counts of rows and authorized rows (refused if none is authorized)."""
    if not grant.authorization:
        return grant
    party = job.party(binding.name)
    table = federated.party.load_table(binding, party, job.alignment.id_scheme)
    n_authorized = int(admitted_mask(home, job, grant, table.ids).sum())
    if n_authorized == 0:
        raise no_authorized_rows(binding, job, grant, table.n_rows, home)
    counts = {"n_rows": table.n_rows, "n_authorized": n_authorized}
    return replace(grant, detail={**grant.detail, **counts})


def _window(
    binding: PartyBinding,
    job: JobSpec,
    grant: JobGrant,
    ref: str | None,
    *,
    earlier: bool,
    audited: tuple[str, dict[str, Any]],
) -> Admission:
    """Serve another published version of the job's set as a window; audit it or the refusal."""
    home = _home(binding)
    audit = _audit(home)
    event, versions = audited
    what, stage = ("reference", "monitoring") if earlier else ("recent", "screening")
    try:
        admission = _recent_window(binding, job, grant, ref, home, audit, earlier=earlier)
    except GovernanceError as exc:
        audit.record(
            "job_refused",
            {
                "job_id": job.job_id,
                "party": binding.name,
                "bank": _bank(job),
                "reason": f"{stage}: {type(exc).__name__}: {exc}"[:1000],
            },
        )
        raise PolicyRefusalError(
            f"party '{binding.name}' refuses the {what} window: {exc}"
        ) from exc
    audit.record(
        event,
        {
            "job_id": job.job_id,
            "party": binding.name,
            "bank": _bank(job),
            **versions,
            "n_rows": admission.n_rows,
            "n_admitted": admission.n_admitted,
            "csi_detail": grant.limits.csi_detail,
        },
    )
    return admission


def _recent_window(
    binding: PartyBinding,
    job: JobSpec,
    grant: JobGrant,
    ref: str | None,
    home: Path,
    audit: AuditLog,
    *,
    earlier: bool = False,
) -> Admission:
    training = grant.feature_set
    if training is None:  # pragma: no cover - only governed platforms get here
        raise NotServedError("this node serves no published feature set in this job")
    name, version = parse_ref(training)
    catalog = Catalog(home / "catalog", audit=audit)
    later = [e.ref for e in catalog.list_sets() if e.name == name]
    where, word = (
        (f"the monitored model's reference for {binding.name}", "an earlier")
        if earlier
        else (f"screening.recent.{binding.name}", "a later")
    )
    fix = f"name {word} published version of {name} in {where} (published: {', '.join(later)})"
    if ref is None:
        raise NotServedError(f"this node serves {training}; {fix}")
    asked_name, asked_version = parse_ref(ref)
    if asked_name != name:
        raise NotServedError(f"{ref} is not a version of {name}, which this job is served; {fix}")
    asked, own = version_key(asked_version or ""), version_key(version or "")
    if earlier and asked > own:
        raise NotServedError(f"{ref} is later than the monitored window {training}; {fix}")
    if not earlier and asked <= own:
        raise NotServedError(f"{ref} is not later than the training window {training}; {fix}")
    entry = catalog.show(ref)
    party = job.party(binding.name)
    served = catalog.check_served(
        ref, Path(entry.data_path), party.features, purpose=job.governance.purpose
    )
    table = read_party_table(
        resolve_data_file(Path(entry.data_path)),
        id_column=party.id_column,
        label_column=None,
        features=served.columns,
        categorical=party.categorical,
        id_scheme=job.alignment.id_scheme,
        text_format=party.text_format,
    )
    n_rows = table.n_rows
    if grant.authorization:
        mask = admitted_mask(home, job, grant, table.ids)
        if not mask.any():
            raise no_authorized_rows(binding, job, replace(grant, feature_set=ref), n_rows, home)
        table = table.subset(mask)
    detail: dict[str, object] = {
        "feature_set": ref,
        "training_feature_set": training,
        "digest": entry.data_digest,
        "groups": {c: entry.spec.columns[c].group for c in served.columns},
    }
    return Admission(table, n_rows, table.n_rows, detail)


def admitted_mask(
    home: Path, job: JobSpec, grant: JobGrant, ids: npt.NDArray[Any]
) -> npt.NDArray[np.bool_]:
    """Which of the rows ``ids`` have a valid authorization for the job's bank and purpose today."""
    with AuthorizationRegistry(home / "governance.db", audit=_audit(home)) as registry:
        return registry.filter_rows(
            ids,
            job.label_holder().name,
            job.governance.purpose,
            datetime.now(UTC).date(),
            grant.groups,
            grant.needs_personal_consent,
            id_scheme=job.alignment.id_scheme,
        )


def no_authorized_rows(
    binding: PartyBinding, job: JobSpec, grant: JobGrant, n_rows: int, home: Path
) -> NoAuthorizedRowsError:
    """The refusal of a job no row of the node's file is authorized for, with the likely cause."""
    bank = job.label_holder().name
    purpose = job.governance.purpose
    with AuthorizationRegistry(home / "governance.db", audit=_audit(home)) as registry:
        summary = registry.summary()
    valid = sum(r["valid"] for r in summary if r["bank"] == bank and r["purpose"] == purpose)
    head = (
        f"party '{binding.name}': none of the {n_rows:,} rows of {grant.feature_set} has a valid "
        f"authorization for bank '{bank}' and purpose '{purpose}'"
    )
    if not valid:
        held = ", ".join(f"{r['bank']}/{r['purpose']}: {r['valid']}" for r in summary) or "none"
        why = (
            f"the registry holds no authorization valid today for that bank and purpose (valid "
            f"per bank/purpose: {held}); import the enterprises' authorizations (lab "
            "authorizations import FILE) or fix the bank's party name or governance.purpose"
        )
    else:
        consent = " with personal consent" if grant.needs_personal_consent else ""
        why = (
            f"{valid:,} authorization(s) are valid for them today, but none names an enterprise "
            f"of this file and covers every served group ({', '.join(grant.groups)}){consent}; "
            "check the authorizations' groups, and the id column and alignment.id_scheme"
        )
    return NoAuthorizedRowsError(f"{head}: {why}; nothing is served")


def decide(
    binding: PartyBinding, job: JobSpec, home: Path | None = None, audit: AuditLog | None = None
) -> JobGrant:
    """What this node's policy grants ``job``, without reserving budget or auditing anything.

    The pooled reference of a demo uses it to join the very rows the platform serves.
    """
    home = home or _home(binding)
    audit = audit or _audit(home)
    policy = read_policy(home)
    limits = policy.limits()
    party = job.party(binding.name)
    check_purpose(job.governance.purpose)
    _check_scheme(job, limits)
    releases = dp_grants(job, binding.role)
    _check_asks(binding, job, policy, limits, releases)
    if binding.role != "platform":
        served = None
        if party.feature_set:
            served = Catalog(home / "catalog", audit=audit).check_served(
                party.feature_set, binding.data, party.features, purpose=job.governance.purpose
            )
        return JobGrant(
            governed=served is not None,
            limits=limits,
            feature_set=party.feature_set,
            releases=releases,
            detail={"governed": served is not None},
        )
    catalog = Catalog(home / "catalog", audit=audit)
    if party.feature_set is not None:
        catalog.show(party.feature_set)  # a version that was never published is named as such
    entry = governing_entry(catalog, binding.data, party.feature_set)
    if entry is None:
        return _unpublished(binding, job, policy, limits, releases, home)
    if party.feature_set is not None and party.feature_set != entry.ref:
        raise NotServedError(
            f"the job asks for {party.feature_set}, but this node serves {entry.ref}; name "
            f"{entry.ref} in the job or leave feature_set out"
        )
    served = catalog.check_served(
        entry.ref, binding.data, party.features, purpose=job.governance.purpose
    )
    authorization = policy.authorization == "required" or job.governance.require_authorization
    return JobGrant(
        governed=True,
        limits=limits,
        feature_set=entry.ref,
        authorization=authorization,
        groups=tuple(sorted(served.groups)),
        needs_personal_consent=served.needs_personal_consent,
        releases=releases,
        detail={"governed": True, "feature_set": entry.ref, "authorization": authorization},
        column_groups={c: entry.spec.columns[c].group for c in served.columns},
    )


def governing_entry(catalog: Catalog, data: Path, asked: str | None = None) -> CatalogEntry | None:
    """The published version that governs the file ``data``, if any.

    Found by content digest (the job's ``asked`` version first when several match), else by
    the path it was published from, in which case the file changed since publication.

    Raises
    ------
    DataDigestMismatchError
        If ``data`` was published but its content changed since.
    """
    entries = catalog.list_sets()
    if not entries:
        return None
    path = resolve_data_file(data)
    digest = file_digest(path)
    matches = [e for e in entries if e.data_digest == digest]
    if matches:
        chosen = [e for e in matches if e.ref == asked] or matches
        return max(chosen, key=lambda e: (e.published_at, version_key(e.version)))
    resolved = str(path.resolve())
    published_here = [e for e in entries if e.data_path == resolved]
    if published_here:
        latest = max(published_here, key=lambda e: e.published_at)
        raise DataDigestMismatchError(
            f"{path.name}: content {digest} differs from {latest.ref} as published "
            f"({latest.data_digest}); serve the published file or publish a new version"
        )
    return None


def _unpublished(
    binding: PartyBinding,
    job: JobSpec,
    policy: NodePolicyConfig,
    limits: NodeLimits,
    releases: tuple[ReleaseGrant, ...],
    home: Path,
) -> JobGrant:
    party = job.party(binding.name)
    if party.feature_set is not None or job.governance.require_authorization:
        asked = party.feature_set or "authorization checks"
        raise NotServedError(
            f"this node serves no published feature set from its data file, so it serves "
            f"nothing governed (the job asks for {asked}); publish the file in this node's home "
            "(lab features publish SPEC --data FILE)"
        )
    mode = policy.unpublished
    if mode == "auto":
        n_sets, n_auth = _governs(home)
        mode = "refuse" if n_sets or n_auth else "serve"
        if mode == "refuse":
            raise NotServedError(
                f"this node governs its data ({n_sets} published feature-set versions, {n_auth} "
                "authorizations) and its data file is no published version; publish it (lab "
                "features publish), or serve unpublished files as they are on purpose (lab "
                "policy set unpublished=serve)"
            )
    elif mode == "refuse":
        raise NotServedError(
            "this node serves only published feature sets (policy unpublished=refuse) and its "
            "data file is no published version; publish it"
        )
    return JobGrant(
        governed=False,
        limits=limits,
        releases=releases,
        detail={"governed": False, "note": f"unpublished file served as it is ({mode})"},
        column_groups=local_column_groups(binding),
    )


def home_status(home: Path | None = None) -> dict[str, Any]:
    """What the node of ``home`` governs, and what it does with unpublished files."""
    home = home or lab_home()
    n_sets, n_auth = _governs(home)
    mode = read_policy(home).unpublished
    effective = ("refuse" if n_sets or n_auth else "serve") if mode == "auto" else mode
    if n_sets or n_auth:
        summary = (
            f"governs: {n_sets} published feature-set version(s), {n_auth} authorization(s); "
            f"files that are no published version: {effective}"
        )
    else:
        summary = (
            "governs nothing yet: it serves unpublished files as they are and refuses every "
            "governed job (publish a feature set and import authorizations to govern)"
        )
    return {
        "published_versions": n_sets,
        "authorizations": n_auth,
        "unpublished": effective,
        "summary": summary,
    }


def _governs(home: Path) -> tuple[int, int]:
    """How many published versions and imported authorizations the home holds."""
    n_sets = len(Catalog(home / "catalog", audit=_audit(home)).list_sets())
    db = home / "governance.db"
    if not db.is_file():
        return n_sets, 0
    with AuthorizationRegistry(db, audit=_audit(home)) as registry:
        return n_sets, registry.count()


def _check_scheme(job: JobSpec, limits: NodeLimits) -> None:
    """Refuse a homomorphic scheme this node's policy does not allow, before anything reads it."""
    if job.kind == "vertical":
        scheme = str(job.crypto.get("scheme", DEFAULT_SCHEME))
        limits.check_scheme(scheme, "the job's homomorphic scheme (crypto.scheme)")


def _check_asks(
    binding: PartyBinding,
    job: JobSpec,
    policy: NodePolicyConfig,
    limits: NodeLimits,
    releases: tuple[ReleaseGrant, ...],
) -> None:
    """Refuse, before any data is read, what the job asks for below this node's policy."""
    if job.kind != "vertical":
        return
    key_bits = int(job.crypto.get("key_bits", DEFAULT_KEY_BITS))
    limits.check_key(key_bits, "the job's keys (crypto.key_bits)")
    if binding.role != "platform":
        return
    limits.check_reveal(job.alignment.reveal)
    if job.screening.enabled:
        limits.check_bins(job.screening.bins, "screening.bins")
    if job.task == "monitor" and job.monitoring is not None:
        limits.check_bins(job.monitoring.bins, "monitoring.bins")
    if job.task == "train":
        described, settings = job_model(job)
        described.platform_checks(settings, limits)
        if isinstance(settings, IterativeSettings):
            fraction = settings.validation_plan().fraction
            limits.check_validation_share(fraction, f"model.validation_fraction={fraction:g}")
    cap = policy.dp.max_epsilon_per_job
    asked = job.model.get("dp_epsilon")
    if releases and cap is not None and asked is not None and float(asked) > cap:
        raise PolicyRefusalError(
            f"model.dp_epsilon={asked} is above this node's policy dp.max_epsilon_per_job={cap}; "
            "ask for less (more noise)"
        )


@dataclass(frozen=True)
class BudgetPlan:
    """What a job reserves in a platform's own ledger (see :func:`budget_plan`)."""

    feature_set: str
    bank: str
    reservation: str
    planned: tuple[PrivacyEvent, ...]
    delta: float | None

    def arguments(self) -> tuple[str, str, str, tuple[PrivacyEvent, ...], float | None]:
        """The positional arguments of :meth:`BudgetLedger.reserve` and ``precheck``."""
        return self.feature_set, self.bank, self.reservation, self.planned, self.delta


def budget_plan(
    home: Path,
    job: JobSpec,
    ref: str,
    releases: tuple[ReleaseGrant, ...],
    policy: NodePolicyConfig,
) -> BudgetPlan | None:
    """What the job must reserve on ``ref`` in this node's own ledger, if anything.

    A job releasing statistics of a set that has a cap for its bank (or of any published set,
    with ``dp.require``) must use DP and fit the cap; a job that releases nothing is recorded
    when there is a cap, so auditors see every job.

    Raises
    ------
    NonPrivateJobError
        If the job would release exact statistics of a budgeted set.
    """
    bank = job.label_holder().name
    planned = tuple(e for g in releases for e in g.events(g.max_releases))
    releasing = releases_statistics(job)
    with BudgetLedger(home / "governance.db", audit=_audit(home)) as ledger:
        capped = ledger.has_cap(ref, bank)
    if releasing and not planned and (capped or policy.dp.require):
        raise _non_private(job, ref)
    if not capped and not (policy.dp.require and (releasing or planned)):
        return None  # nothing budgeted to charge (the ledger refuses the rest: no cap)
    delta = releases[0].delta if planned else None
    return BudgetPlan(ref, bank, f"{job.job_id}/{ref}", planned, delta)


def _non_private(job: JobSpec, ref: str) -> NonPrivateJobError:
    described, settings = job_model(job)
    fix = (
        "Set model.dp_epsilon (and dp_delta) so the platform's releases are noised"
        if "dp_epsilon" in type(settings).model_fields
        else f"{described.name} has no differential-privacy mode; train a model type that has "
        "one on budgeted feature sets"
    )
    return NonPrivateJobError(
        f"job '{job.name}' would show the bank {described.privacy.without_dp} of budgeted "
        f"feature set {ref}: an unbounded privacy spend. {fix}"
    )
