"""The lab's node governance policy: published feature sets and enterprise authorizations.

Loaded by a party's node (``policy = "lab.governance.node:LabNodePolicy"``) and applied to
the party's own table before any protocol reads it (:mod:`federated.policy`):

- a party that names a feature set (``name@version``) serves only the published version's
  columns, for a purpose every column allows, from a file whose content is what was published;
- with ``require_authorization``, a platform keeps only enterprises with a valid
  authorization for the job's bank and purpose covering the served feature groups (and
  personal-data consent when a served column is personal). Unauthorised rows never reach a
  protocol; only counts leave the node.
"""

from __future__ import annotations

from datetime import UTC, datetime

from features.io import PartyTable
from federated.policy import Admission
from federated.spec import JobSpec, PartyBinding, SpecError
from lab.governance.audit import AuditLog
from lab.governance.authorizations import AuthorizationRegistry
from lab.governance.catalog import Catalog
from lab.home import lab_home


class LabNodePolicy:
    """Feature-set and authorization checks against the node's own governance home."""

    def admit(self, binding: PartyBinding, job: JobSpec, table: PartyTable) -> Admission:
        """Return the admitted rows of ``table`` for ``job`` (see the module docstring)."""
        home = binding.governance_home or lab_home()
        audit = AuditLog(home / "audit" / "log.jsonl")
        party = job.party(binding.name)
        purpose = job.governance.purpose
        groups: tuple[str, ...] = ()
        needs_personal = False
        detail: dict[str, object] = {"purpose": purpose}
        if party.feature_set:
            served = Catalog(home / "catalog", audit=audit).check_served(
                party.feature_set, binding.data, table.feature_names, purpose=purpose
            )
            groups = tuple(sorted(served.groups))
            needs_personal = served.needs_personal_consent
            detail.update(feature_set=party.feature_set, groups=list(groups))
        n_rows = table.n_rows
        if not job.governance.require_authorization or binding.role != "platform":
            return Admission(table, n_rows, n_rows, detail)
        if not party.feature_set:
            raise SpecError(
                f"party '{binding.name}' must name a published feature set for authorizations "
                "to be checked (they cover feature groups)"
            )
        bank = job.label_holder().name
        with AuthorizationRegistry(home / "governance.db", audit=audit) as registry:
            mask = registry.filter_rows(
                table.ids,
                bank,
                purpose,
                datetime.now(UTC).date(),
                groups,
                needs_personal,
                id_scheme=job.alignment.id_scheme,
            )
        detail.update(bank=bank, needs_personal_consent=needs_personal)
        return Admission(table.subset(mask), n_rows, int(mask.sum()), detail)
