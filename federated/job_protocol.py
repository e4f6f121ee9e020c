"""The ``job`` protocol: joining a job, splitting for evaluation, and the bank-only baseline.

Stages (party side)
-------------------
``hello``
    Every node receives the job spec, checks it acts for a party of the job with the right
    role, validates its own table, and answers with its size, column kinds and data digest.
    With ``resume`` the node continues a job it checkpointed (:mod:`models.checkpoint`): it
    refuses unless its own record is of this very spec and data file and the job did not
    finish; a platform keeps its budget reservation and its count of releases.
``split``
    The label holder splits its rows (aligned rows, once alignment has run) into train and
    test with :func:`models.evaluation.evaluation_split` and keeps the mask.
``baseline``
    The label holder trains LightGBM on its own columns on the train rows and evaluates on the
    test rows: what the bank can do alone.
``end``
    Every node closes its part in the job (finished or failed): a platform charges its own
    privacy-budget ledger from its own count of releases and answers with what it charged
    (mechanism, noise, releases, ε); after it the node refuses further messages of the job.
    A node that never hears ``end`` keeps its reservation open: the planned spend stays
    counted until its operator closes it.
``peers``
    Every node records, in its own audit log, the other parties' audit heads at the job's start
    (from their ``hello``) and end (from their ``end``): an editor of one home cannot rewrite
    its log without disagreeing with the peers' (``lab audit verify --peer-log``). The heads
    are relayed by the coordinator.

What each party learns
----------------------
- The coordinator: every party's row count, feature names and kinds, data digest; train and
  test sizes; evaluation reports (aggregates: curve points and per-decile counts).
- The bank: nothing about other parties beyond the job spec.
- The platform: nothing from this protocol (it receives only ``hello`` and ``end``).
- From ``end``, the coordinator: each node's privacy charge (DP parameters and ε), no data.
"""

from __future__ import annotations

import os

import numpy as np
import numpy.typing as npt

from features.io import PartyTable
from federated.party import PartyRuntime
from federated.spec import JobSpec, SpecError
from models.alignment import ALIGNED_ROWS_KEY
from models.baselines import fit_and_evaluate
from models.evaluation import TEST_MASK_KEY, evaluation_split
from models.protocol import Envelope, PartyContext, ProtocolError, StageMachine, dumps
from secure_agg import precompute

PROTOCOL = "job"

_MACHINE = StageMachine(
    PROTOCOL,
    {
        "hello": {StageMachine.START},
        "split": {"hello"},
        "baseline": {"split"},
        "end": {StageMachine.START, "hello", "split", "baseline", "end"},
        "peers": {"end"},
    },
)

_TEST_MASK = TEST_MASK_KEY


class JobParty:
    """Party side of the ``job`` protocol."""

    name = PROTOCOL

    def handle(self, envelope: Envelope, ctx: PartyContext) -> list[Envelope]:
        """Run one stage."""
        if not isinstance(ctx, PartyRuntime):
            raise ProtocolError("the job protocol needs a full party runtime")
        if envelope.stage == "hello":
            spec = JobSpec.from_json(envelope.text("job"))
            if not any(p.name == ctx.name for p in spec.parties):
                # A node of another party (e.g. of another job on a shared SuperLink): decline.
                return [envelope.reply("hello", {"joined": False, "party": ctx.name})]
        _MACHINE.advance(ctx.store, envelope)
        if envelope.stage == "hello":
            return [self._hello(envelope, ctx, spec)]
        if envelope.stage == "split":
            return [self._split(envelope, ctx)]
        if envelope.stage == "end":
            return [self._end(envelope, ctx)]
        if envelope.stage == "peers":
            ctx.record_peer_heads(envelope.json("heads"))
            return [envelope.reply("peers", {"party": ctx.name})]
        return [self._baseline(envelope, ctx)]

    def _hello(self, envelope: Envelope, ctx: PartyRuntime, spec: JobSpec) -> Envelope:
        resume = envelope.payload.get("resume", False)
        if not isinstance(resume, bool):
            raise ProtocolError("job/hello: 'resume' must be true or false")
        ctx.join(spec, resume=resume)
        table = ctx.table()
        ctx.start_checkpoints()
        admission = ctx.admission() or {}
        grant = ctx.grant()
        return envelope.reply(
            "hello",
            {
                "joined": True,
                "party": ctx.name,
                "role": ctx.role,
                "n_rows": int(admission.get("n_rows", table.n_rows)),
                "n_admitted": table.n_rows,
                "n_features": len(table.feature_names),
                "digest": table.digest,
                "feature_kinds": dumps(dict(table.feature_kinds)),
                "governance": dumps(
                    {
                        "governed": grant.governed,
                        "feature_set": grant.feature_set,
                        "authorization": grant.authorization,
                    }
                ),
                "audit": dumps(ctx.audit_head()),
            },
        )

    def _end(self, envelope: Envelope, ctx: PartyRuntime) -> Envelope:
        outcome = envelope.text("outcome")
        if outcome not in ("finished", "failed"):
            raise ProtocolError(f"job/end: outcome must be 'finished' or 'failed', not {outcome!r}")
        report = ctx.close("finished" if outcome == "finished" else "failed")
        # Whatever the protocol did or did not clean up: no precomputed encryption randomness
        # outlives the job in this process.
        precompute.forget_pools()
        return envelope.reply(
            "end", {"party": ctx.name, "report": dumps(report), "audit": dumps(ctx.audit_head())}
        )

    def _split(self, envelope: Envelope, ctx: PartyRuntime) -> Envelope:
        spec = ctx.job()
        table, label = _labelled(ctx, spec)
        rows = _rows_in_job(ctx)
        ev = spec.evaluation
        test_mask = evaluation_split(
            table.ids[rows],
            label[rows],
            test_size=ev.test_size,
            random_state=ev.random_state,
            stratify=ev.stratify,
        )
        ctx.store.put_array(_TEST_MASK, test_mask)
        return envelope.reply(
            "split", {"n_train": int((~test_mask).sum()), "n_test": int(test_mask.sum())}
        )

    def _baseline(self, envelope: Envelope, ctx: PartyRuntime) -> Envelope:
        spec = ctx.job()
        table, label = _labelled(ctx, spec)
        rows = _rows_in_job(ctx)
        test_mask = ctx.store.get_array(_TEST_MASK).astype(bool)
        report = fit_and_evaluate(
            table.features.iloc[rows].reset_index(drop=True),
            label[rows],
            test_mask,
            spec.baseline,
            seed=spec.evaluation.random_state,
            n_jobs=_threads(),
        )
        return envelope.reply("baseline", {"report": dumps(report.to_dict())})


def _labelled(ctx: PartyRuntime, spec: JobSpec) -> tuple[PartyTable, npt.NDArray[np.int8]]:
    table = ctx.table()
    if spec.party(ctx.name).label_column is None or table.label is None:
        raise SpecError(f"party '{ctx.name}' holds no labels; only the bank can split or evaluate")
    return table, table.label


def _rows_in_job(ctx: PartyRuntime) -> npt.NDArray[np.intp]:
    """Rows of this party's table that take part (aligned rows once alignment has run)."""
    try:
        return ctx.store.get_array(ALIGNED_ROWS_KEY).astype(np.intp)
    except KeyError:
        return np.arange(ctx.table().n_rows)


def _threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
