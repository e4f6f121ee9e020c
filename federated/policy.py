"""A node's data-governance policy, applied by the node itself to every job it takes part in.

The policy is the party's own rule for what it serves, read from its own governance home: the
published version of a feature set, only enterprises with a valid authorization for the job's
bank and purpose, the key sizes, batch sizes and DP noise it accepts, and the privacy budget it
charges to its own ledger. A job spec or a peer's message may ask for more protection, never
less. The runtime loads the policy by name from the node's binding (``module:attribute``), so
this package does not depend on any particular implementation; the lab's is
:class:`lab.governance.node.LabNodePolicy`.

Lifecycle at a node (:class:`federated.party.PartyRuntime`)::

    hello  -> open_job(binding, job)             limits, governing set, budget reserved
           (or resume_job(binding, job, record)  a checkpointed job: re-checked, budget kept)
           -> admit(binding, job, grant, table)  the rows and columns the job may use
    screen -> recent_window(binding, job, ...)    a newer published version, same checks
    ...    -> record(binding, job, event, ...)    alignments and alerts, in the node's audit log
    end    -> close_job(binding, job, grant, ...) the ledger charged from the node's own count
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from features.io import PartyTable
from federated.spec import JobSpec, PartyBinding, SpecError
from models.guard import NodeLimits, ReleaseGrant
from models.privacy import epsilon

Outcome = Literal["finished", "failed"]


@dataclass(frozen=True)
class Admission:
    """What a policy let through: the table to use and aggregate counts for the audit log."""

    table: PartyTable
    n_rows: int
    n_admitted: int
    detail: dict[str, object]


@dataclass(frozen=True)
class JobGrant:
    """What a node decided for one job when it joined (kept in the node's job state).

    Attributes
    ----------
    governed : bool
        The node serves a published feature set for this job (else its file as it is).
    limits : NodeLimits
        The node's limits for the job's protocols.
    feature_set : str or None
        ``name@version`` served.
    authorization : bool
        Rows are filtered by enterprise authorizations before alignment.
    groups : tuple of str
        Feature groups of the served columns (what an authorization must cover).
    column_groups : dict
        Column -> its published feature group (what the node may release to explain scores).
    needs_personal_consent : bool
        A served column is personal data.
    reservation : str or None
        The job's reservation in the node's privacy-budget ledger.
    releases : tuple of ReleaseGrant
        DP mechanisms the node will apply, with their noise and release counts.
    detail : dict
        Aggregates for the audit log and the coordinator (no ids).
    """

    governed: bool
    limits: NodeLimits
    feature_set: str | None = None
    authorization: bool = False
    groups: tuple[str, ...] = ()
    needs_personal_consent: bool = False
    reservation: str | None = None
    releases: tuple[ReleaseGrant, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)
    column_groups: dict[str, str] = field(default_factory=dict)

    def release_grant(self, mechanism: str) -> ReleaseGrant | None:
        """The grant of ``mechanism``, if the job has one."""
        return next((g for g in self.releases if g.mechanism == mechanism), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "governed": self.governed,
            "limits": self.limits.to_dict(),
            "feature_set": self.feature_set,
            "authorization": self.authorization,
            "groups": list(self.groups),
            "needs_personal_consent": self.needs_personal_consent,
            "reservation": self.reservation,
            "releases": [g.to_dict() for g in self.releases],
            "detail": dict(self.detail),
            "column_groups": dict(self.column_groups),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> JobGrant:
        """Inverse of :meth:`to_dict`."""
        return cls(
            governed=bool(raw["governed"]),
            limits=NodeLimits.from_dict(raw["limits"]),
            feature_set=raw.get("feature_set"),
            authorization=bool(raw.get("authorization", False)),
            groups=tuple(raw.get("groups", ())),
            needs_personal_consent=bool(raw.get("needs_personal_consent", False)),
            reservation=raw.get("reservation"),
            releases=tuple(ReleaseGrant.from_dict(g) for g in raw.get("releases", ())),
            detail=dict(raw.get("detail", {})),
            column_groups={str(k): str(v) for k, v in raw.get("column_groups", {}).items()},
        )


@dataclass(frozen=True)
class JobUse:
    """What a node observed of its own part in a job, when the job ends."""

    touched: bool
    releases: dict[str, int]
    outcome: Outcome
    #: The Flower run the node served the job in, when it knows it (its journal names it).
    run: int | None = None


def privacy_report(grant: JobGrant, use: JobUse) -> dict[str, Any]:
    """What a node released in a job: its own counts, their privacy events and their ε."""
    spent = [e for g in grant.releases for e in g.events(int(use.releases.get(g.mechanism, 0)))]
    report: dict[str, Any] = {
        "governed": grant.governed,
        "feature_set": grant.feature_set,
        "reservation": grant.reservation,
        "outcome": use.outcome,
        "touched": use.touched,
        "releases": dict(use.releases),
        "events": [e.to_dict() for e in spent],
        "epsilon": None,
        "delta": None,
    }
    if grant.releases:
        delta = grant.releases[0].delta
        spent_epsilon = epsilon(spent, delta, "rdp") if spent else 0.0
        report.update(delta=delta, accountant="rdp", epsilon=spent_epsilon)
    return report


class NodePolicy(Protocol):
    """Decides, at the node, what a job may do with the node's data."""

    def limits(self, binding: PartyBinding) -> NodeLimits:
        """The node's limits, before any job."""

    def open_job(self, binding: PartyBinding, job: JobSpec) -> JobGrant:
        """Check ``job`` against the node's policy before any data is read; reserve budget.

        Raises a :class:`~models.guard.PolicyRefusalError` naming the setting when the job asks for
        something the node does not serve.
        """

    def resume_job(
        self, binding: PartyBinding, job: JobSpec, record: Mapping[str, Any]
    ) -> JobGrant:
        """Check a resumed ``job`` against the node's policy as it is now; keep its budget.

        ``record`` is the node's own checkpoint record of the job (its releases so far). The
        reservation of the interrupted run is kept while it is open; if it was closed, what is
        left of the plan is checked against the cap and reserved again.
        """

    def refuse(self, binding: PartyBinding, job: JobSpec, reason: str) -> None:
        """Audit a refusal the runtime decided (e.g. a resume of another spec or data)."""

    def admit(
        self, binding: PartyBinding, job: JobSpec, grant: JobGrant, table: PartyTable
    ) -> Admission:
        """Return the admitted part of ``table`` for ``job``, or raise with the reason."""

    def recent_window(
        self, binding: PartyBinding, job: JobSpec, grant: JobGrant, ref: str | None
    ) -> Admission:
        """The node's recent window for screening: the published version ``ref`` it serves.

        Only the columns and enterprises the node serves the job (same checks as for the
        training window); raise with the reason when it does not serve ``ref``.
        """

    def reference_window(
        self, binding: PartyBinding, job: JobSpec, grant: JobGrant, ref: str
    ) -> Admission:
        """The node's reference window for monitoring: the earlier published version ``ref``.

        Same checks as :meth:`recent_window`, for a version not later than the job's.
        """

    def record(
        self, binding: PartyBinding, job: JobSpec, event: str, payload: Mapping[str, Any]
    ) -> None:
        """Write what happened (an alignment, an alert) to the node's own audit log."""

    def progress(self, binding: PartyBinding, job: JobSpec, grant: JobGrant, use: JobUse) -> None:
        """Keep the job's use of the data durably, as it happens (first touch, each release).

        If the node dies before ``end``, its owner settles the open reservation from this.
        """

    def close_job(
        self, binding: PartyBinding, job: JobSpec, grant: JobGrant, use: JobUse
    ) -> dict[str, Any]:
        """Charge the node's ledger from its own count of releases; return what was charged."""

    def audit_head(self, binding: PartyBinding) -> dict[str, str] | None:
        """The head of the node's audit log and its signing key (``None`` if it has none)."""

    def record_peer_heads(
        self, binding: PartyBinding, job: JobSpec, heads: Mapping[str, Mapping[str, Any]]
    ) -> None:
        """Record the other parties' audit heads at the job's start and end in the node's log.

        ``heads`` maps each peer to ``{"start": {"head", "key"}, "end": {...}}``.
        """


def load_policy(name: str) -> NodePolicy:
    """Instantiate the policy class named ``module:attribute``."""
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise SpecError(f"governance policy {name!r} must look like 'package.module:Class'")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"cannot load governance policy {name!r}: {exc}") from exc
    policy: NodePolicy = factory()
    return policy


#: File beside an unpublished data file naming each column's group (the synthetic generator's).
COLUMNS_FILE = "columns.json"


def local_column_groups(binding: PartyBinding) -> dict[str, str]:
    """Column groups of a node's unpublished file, from ``columns.json`` beside it, if any.

    Entries naming another party (``party`` other than the node's role or name) are skipped;
    an unreadable file gives no groups (the node then releases none it does not know).
    """
    import json

    path = binding.data.parent / COLUMNS_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    columns = raw.get("columns", raw) if isinstance(raw, dict) else {}
    if not isinstance(columns, dict):
        return {}
    return {
        str(name): str(info["group"])
        for name, info in columns.items()
        if isinstance(info, dict)
        and "group" in info
        and info.get("party", binding.role) in (binding.role, binding.name)
    }
