"""Governance preflight: what each party's node would refuse, checked before a job starts.

In the embedded runtime every node's governance home is the lab's own and every data file is
on this machine, so the lab runs each node's own decision (:func:`lab.governance.node.decide`),
its budget check and its count of authorized rows before it starts the runtime, and a refused
job never reaches a node, reserves no budget and leaves no MLflow run: a published version that
does not exist, a purpose unknown to the vocabulary or not allowed by the spec, a file changed
since publication, a job the budget cannot fit, no authorized row. ``lab check`` prints the same
counts ("N of M platform rows authorized for bank B, purpose P").

The nodes check all of it again when they join (a deployment's lab reads no party file).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from features.io import PartyTable
from federated.spec import JobSpec, PartyBinding
from lab.config import Experiment
from lab.governance.audit import AuditLog
from lab.governance.errors import GovernanceError, NodePolicyError
from lab.governance.ledger import BudgetCheck, BudgetLedger
from lab.governance.node import admitted_mask, budget_plan, decide, no_authorized_rows
from lab.governance.policy import read_policy
from lab.home import lab_home
from models.guard import PolicyRefusalError


class PreflightRefusalError(NodePolicyError):
    """A party's node would refuse the job; found before the job started.

    Attributes
    ----------
    party : str
        The refusing party.
    reason : str
        The refusal's class name (``FeatureSetNotFoundError``, ``NoAuthorizedRowsError`` ...).
    """

    def __init__(self, message: str, party: str, reason: str) -> None:
        super().__init__(message)
        self.party = party
        self.reason = reason


@dataclass(frozen=True)
class ServedRows:
    """What one party's node would serve of its file for the job.

    Attributes
    ----------
    party : str
        The party.
    role : str
        ``bank`` or ``platform``.
    governed : bool
        The node serves a published feature-set version (else its file as it is).
    feature_set : str or None
        ``name@version`` served.
    authorization : bool
        Rows are filtered by enterprise authorizations.
    bank, purpose : str
        Whom and what for.
    n_rows, n_authorized : int
        Rows in the file, and rows that pass the authorization filter.
    budget : BudgetCheck or None
        The budget decision the node's ledger would make now, if the job spends budget.
    """

    party: str
    role: str
    governed: bool
    feature_set: str | None
    authorization: bool
    bank: str
    purpose: str
    n_rows: int
    n_authorized: int
    budget: BudgetCheck | None = None

    @property
    def n_dropped(self) -> int:
        """Rows the authorization filter drops."""
        return self.n_rows - self.n_authorized

    def describe(self) -> str:
        """One line for ``lab check``."""
        if not self.governed:
            return (
                f"{self.party}: unpublished file served as it is ({self.n_rows:,} rows, no "
                "authorization filter)"
            )
        if not self.authorization:
            return (
                f"{self.party}: {self.feature_set}: all {self.n_rows:,} rows served (its node's "
                "policy requires no authorization)"
            )
        return (
            f"{self.n_authorized:,} of {self.n_rows:,} {self.role} rows authorized for bank "
            f"{self.bank}, purpose {self.purpose} ({self.party}: {self.feature_set}; "
            f"{self.n_dropped:,} dropped)"
        )

    def describe_budget(self) -> str | None:
        """One line on the budget the job would reserve, if it spends any."""
        b = self.budget
        if b is None:
            return None
        return (
            f"{self.party}: budget of {b.bank} on {b.feature_set}: this job plans "
            f"ε={b.planned_epsilon:.3f}; spent and reserved ε={b.spent_epsilon:.3f} of "
            f"{b.cap_epsilon:g}; after it ε={b.would_be_epsilon:.3f} (δ={b.delta:g}, "
            f"{b.accountant}): {'fits' if b.fits else 'does not fit'}"
        )


def check_job(
    spec: JobSpec,
    bindings: Sequence[PartyBinding],
    tables: Mapping[str, PartyTable],
    *,
    refuse_budget: bool = True,
) -> list[ServedRows]:
    """Run every node's governance checks for ``spec`` on this machine; nothing is reserved.

    Parameters
    ----------
    spec : JobSpec
        The job.
    bindings : sequence of PartyBinding
        Each party's node (data file and governance home), as the embedded runtime binds them.
    tables : Mapping
        Each party's table, read and validated by the lab's own reader.
    refuse_budget : bool
        Refuse a job the budget cannot fit (audited ``budget_refused``, as the node's ledger
        does); with ``False`` the decision is only reported (``lab check`` writes nothing).

    Returns
    -------
    list of ServedRows
        One per party whose node has a governance policy.

    Raises
    ------
    PreflightRefusalError
        Naming the party and the rule; nothing was written but a budget refusal's audit entry.
    """
    served = []
    for binding in bindings:
        if binding.policy is None:
            continue
        home = binding.governance_home or lab_home()
        try:
            served.append(_check_party(spec, binding, tables[binding.name], home, refuse_budget))
        except (GovernanceError, PolicyRefusalError) as exc:
            text = str(exc)
            if not text.startswith(f"party '{binding.name}'"):
                text = f"party '{binding.name}' refuses the job: {text}"
            raise PreflightRefusalError(text, binding.name, type(exc).__name__) from exc
    return served


def _check_party(
    spec: JobSpec, binding: PartyBinding, table: PartyTable, home: Path, refuse_budget: bool
) -> ServedRows:
    audit = AuditLog(home / "audit" / "log.jsonl")
    grant = decide(binding, spec, home, audit)
    n_authorized = table.n_rows
    if grant.authorization:
        n_authorized = int(admitted_mask(home, spec, grant, table.ids).sum())
        if n_authorized == 0:
            raise no_authorized_rows(binding, spec, grant, table.n_rows, home)
    budget = None
    if grant.governed and binding.role == "platform" and grant.feature_set is not None:
        plan = budget_plan(home, spec, grant.feature_set, grant.releases, read_policy(home))
        if plan is not None:
            with BudgetLedger(home / "governance.db", audit=audit) as ledger:
                check = ledger.precheck if refuse_budget else ledger.check
                budget = check(*plan.arguments())
    return ServedRows(
        party=binding.name,
        role=binding.role,
        governed=grant.governed,
        feature_set=grant.feature_set,
        authorization=grant.authorization,
        bank=spec.label_holder().name if spec.kind == "vertical" else binding.name,
        purpose=spec.governance.purpose,
        n_rows=table.n_rows,
        n_authorized=n_authorized,
        budget=budget,
    )


def check_lines(experiment: Experiment, tables: Mapping[str, PartyTable]) -> list[str]:
    """What ``lab check`` prints of an experiment's governance (nothing is written).

    Raises
    ------
    PreflightRefusalError
        If a party's node would refuse the job (budget included).
    """
    # A size-only alignment study (reveal other than both) can only run as `lab align`.
    trains = experiment.config.kind == "horizontal" or experiment.config.alignment.reveal == "both"
    spec = experiment.job_spec(task="train" if trains else "align")
    served = check_job(spec, experiment.bindings(), tables, refuse_budget=False)
    lines = []
    for rows in served:
        if rows.role != "platform":
            continue
        lines.append(rows.describe())
        budget = rows.describe_budget()
        if budget is not None:
            lines.append(budget)
        if rows.budget is not None and not rows.budget.fits:
            raise PreflightRefusalError(
                f"party '{rows.party}' would refuse the job: {budget}; ask for a smaller "
                "dp_epsilon or a larger cap (lab budget set)",
                rows.party,
                "BudgetExceededError",
            )
    return lines
