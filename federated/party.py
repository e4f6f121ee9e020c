"""The code acting for one party: its binding, its state store, its data, and dispatch.

Every transport hands incoming envelopes to :meth:`PartyRuntime.dispatch`, which routes them to
the protocol they belong to and turns a failure into an ``error`` envelope naming the party, so
a bad file at one party surfaces at the coordinator as one clear line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import traceback
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from features.columnar import load_columnar, store_subset
from features.errors import DataError
from features.ids import IdScheme
from features.io import PartyTable, read_party_table, resolve_data_file
from features.text_format import TextFormat
from federated.policy import (
    JobGrant,
    JobUse,
    NodePolicy,
    Outcome,
    load_policy,
    local_column_groups,
    privacy_report,
)
from federated.privacy_plan import dp_grants
from federated.spec import JobSpec, PartyBinding, PartySpec, SpecError
from models.checkpoint import MAX_RESUMES, CheckpointError, PartyCheckpoints, digest_json
from models.evaluation import EvaluationError
from models.guard import NodeLimits, PolicyRefusalError, ReleaseGrant, count_release
from models.protocol import (
    ANY_PARTY,
    COORDINATOR,
    Envelope,
    PartyProtocol,
    PartyStore,
    ProtocolError,
)
from secure_agg import compute

logger = logging.getLogger(__name__)

#: Protocol and stage of the envelope a party sends when a step fails.
ERROR_PROTOCOL = "job"
ERROR_STAGE = "error"

#: Failures a party reports by class name; anything else is reported as ``InternalError``.
EXPECTED_ERRORS: tuple[type[Exception], ...] = (
    DataError,
    ProtocolError,
    EvaluationError,
    SpecError,
    compute.ComputeBackendError,
)

_JOB_KEY = "job.spec"
_DIGEST_KEY = "job.digest"
_ADMITTED_KEY = "job.admitted"
_ADMISSION_KEY = "job.admission"
_GRANT_KEY = "node.grant"
_RELEASES_KEY = "node.releases"
_TOUCHED_KEY = "node.touched"
_CLOSED_KEY = "node.closed"
_RESUME_KEY = "job.resume"
_DROPPED_KEY = "job.dropped_features"

#: Stages that carry no data of the party's: joining (validation and governance checks stay at
#: the node), closing and recording peers' audit heads. Any other message uses the data.
_NO_DATA_STAGES = frozenset({("job", "hello"), ("job", "end"), ("job", "peers")})


class DictStore:
    """A :class:`~models.protocol.PartyStore` in a dictionary (in-process transport)."""

    def __init__(self) -> None:
        self._arrays: dict[str, npt.NDArray[Any]] = {}
        self._docs: dict[str, str] = {}

    def put_array(self, key: str, value: npt.NDArray[Any]) -> None:
        """Store an array (a copy, so later changes by the caller do not leak in)."""
        self._arrays[key] = np.array(value, copy=True)

    def get_array(self, key: str) -> npt.NDArray[Any]:
        """Return a stored array (a copy, as a Flower node's store returns)."""
        return self._arrays[key].copy()

    def put_json(self, key: str, value: Any) -> None:
        """Store a JSON document (serialised, exactly as a Flower node's store does)."""
        self._docs[key] = json.dumps(value)

    def get_json(self, key: str, default: Any = None) -> Any:
        """Return a stored document (a fresh copy) or ``default``."""
        raw = self._docs.get(key)
        return default if raw is None else json.loads(raw)

    def delete(self, key: str) -> None:
        """Forget a key."""
        self._arrays.pop(key, None)
        self._docs.pop(key, None)


#: Folder of a party's store holding its validated tables column by column
#: (:mod:`features.columnar`).
COLUMNS_FOLDER = "columns"


@lru_cache(maxsize=4)
def _cached_table(
    path: Path,
    mtime_ns: int,
    size: int,
    store: Path | None,
    id_column: str,
    label_column: str | None,
    features: tuple[str, ...] | None,
    categorical: tuple[str, ...],
    id_scheme: IdScheme,
    text_format: TextFormat,
    weight_column: str | None = None,
) -> PartyTable:
    # mtime and size are part of the key so an edited file is read again (and then caught by
    # the digest check in PartyRuntime.table).
    del mtime_ns, size
    options: dict[str, Any] = {
        "id_column": id_column,
        "label_column": label_column,
        "features": features,
        "categorical": categorical,
        "id_scheme": id_scheme,
        "text_format": text_format,
        "weight_column": weight_column,
    }
    return read_kept_table(path, store, **options)


def read_kept_table(path: Path, store: Path | None, **options: Any) -> PartyTable:
    """The validated table of ``path``, kept column by column in the party's ``store``.

    A party with a store (its own folder) keeps the table there once, memory-mapped
    (:mod:`features.columnar`), so no process of it holds rows x features in memory and the
    next process opens it without reading the file's cells again; without one, the table is
    read into memory. ``options``: those of :func:`features.io.read_party_table`.

    Raises
    ------
    DataError
        As :func:`features.io.read_party_table`; nothing is kept then.
    """
    if store is not None:
        return load_columnar(path, store / COLUMNS_FOLDER, **options)
    return read_party_table(path, **options)


def load_table(binding: PartyBinding, spec: PartySpec, id_scheme: IdScheme) -> PartyTable:
    """Read (or reuse) the validated table of the party ``binding`` acts for.

    Kept column by column in the party's store when it has one (:func:`read_kept_table`).
    """
    path = resolve_data_file(binding.data)
    stat = path.stat()
    return _cached_table(
        path,
        stat.st_mtime_ns,
        stat.st_size,
        binding.store,
        spec.id_column,
        spec.label_column,
        spec.features,
        spec.categorical,
        id_scheme,
        spec.text_format,
        spec.weight_column,
    )


#: The admitted rows of the last few tables this process read (a process may act for several
#: parties): each entry keeps its table, so that the table's identity names it.
_ADMITTED_ROWS: OrderedDict[tuple[int, bytes], tuple[PartyTable, PartyTable]] = OrderedDict()
_ADMITTED_ROWS_SIZE = 4


def _admitted_rows(table: PartyTable, mask: npt.NDArray[np.bool_]) -> PartyTable:
    """``table.subset(mask)``, made once per table and mask in this process.

    A party reads its table several times per message; a subset copies every row x feature of
    it (8 bytes each), so a governed platform would copy its whole table on every message.
    Every row admitted: the table itself. A table kept in the party's store has its subset
    written there too, column by column (:func:`features.columnar.store_subset`).
    """
    if mask.all():
        return table
    key = (id(table), hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).digest())
    entry = _ADMITTED_ROWS.get(key)
    if entry is not None and entry[0] is table:
        _ADMITTED_ROWS.move_to_end(key)
        return entry[1]
    subset = store_subset(table, mask)
    _ADMITTED_ROWS[key] = (table, subset)
    while len(_ADMITTED_ROWS) > _ADMITTED_ROWS_SIZE:
        _ADMITTED_ROWS.popitem(last=False)
    return subset


class PartyRuntime:
    """Acts for one party: implements :class:`~models.protocol.PartyContext`.

    Parameters
    ----------
    binding : PartyBinding
        The party's name, role and data location (local to this node).
    store : PartyStore
        Where the party's state persists between messages.
    protocols : Mapping[str, PartyProtocol]
        Party-side handlers by protocol name.
    disclose_errors : bool
        Send full error messages to the coordinator. Off by default: a data error may quote ids
        or values, so only its redacted form leaves the party and the full message goes to the
        party's own log. The embedded runtime (one operator, one machine) turns it on.
    limits : NodeLimits, optional
        The node's limits when its binding names no governance policy (in-process runtimes);
        default the secure defaults of :class:`~models.guard.NodeLimits`. A node with a policy
        takes its limits from the policy in its own governance home.
    run_id : int, optional
        The Flower run this node serves the job in; its policy journals it with the job's use
        of the data, so the node can settle the job itself once that run has ended.
    """

    def __init__(
        self,
        binding: PartyBinding,
        store: PartyStore,
        protocols: Mapping[str, PartyProtocol],
        *,
        disclose_errors: bool = False,
        limits: NodeLimits | None = None,
        run_id: int | None = None,
    ) -> None:
        self.binding = binding
        self._run_id = run_id
        self._store = store
        self._protocols = protocols
        self._disclose = disclose_errors
        self._limits = limits
        self._policy: NodePolicy | None = None

    @property
    def name(self) -> str:
        """The party's name."""
        return self.binding.name

    @property
    def role(self) -> str:
        """The party's role."""
        return self.binding.role

    @property
    def disclose_errors(self) -> bool:
        """Whether full error messages may go to the coordinator (see the class docstring)."""
        return self._disclose

    @property
    def store(self) -> PartyStore:
        """The party's persistent state."""
        return self._store

    def job(self) -> JobSpec:
        """The job this party is taking part in (set by the ``hello`` stage)."""
        raw = self._store.get_json(_JOB_KEY)
        if raw is None:
            raise ProtocolError(f"party '{self.name}' received a job message before 'hello'")
        return JobSpec.from_json(raw)

    @property
    def guard(self) -> NodeGuardView:
        """The node's own policy as protocol steps see it (see :mod:`models.guard`)."""
        return NodeGuardView(self)

    def node_policy(self) -> NodePolicy | None:
        """The governance policy this node's binding names (loaded once), if any."""
        if self._policy is None and self.binding.policy is not None:
            self._policy = load_policy(self.binding.policy)
        return self._policy

    def grant(self) -> JobGrant:
        """What this node decided for the current job when it joined."""
        raw = self._store.get_json(_GRANT_KEY)
        if raw is None:
            raise ProtocolError(f"party '{self.name}' has not joined a job")
        return JobGrant.from_dict(raw)

    def join(self, spec: JobSpec, *, resume: bool = False) -> PartySpec:
        """Accept a job: check this node acts for one of its parties, and remember the spec.

        The node's own policy decides, before any data is read, whether and how it serves the
        job (:meth:`federated.policy.NodePolicy.open_job`): a refusal raises here. With
        ``resume`` the node continues a job it checkpointed (:meth:`_resume`): its own record
        must be of this very job spec and data file, and the job not finished.
        """
        try:
            mine = spec.party(self.name)
        except SpecError as exc:
            raise SpecError(
                f"this node acts for party '{self.name}', which job '{spec.name}' does not name"
            ) from exc
        if mine.role != self.role:
            raise SpecError(
                f"party '{self.name}' is a {self.role} on this node but a {mine.role} in job "
                f"'{spec.name}'; fix the node's role or the experiment config"
            )
        self._check_compute(spec)
        if resume:
            record = self._resume_record(spec, mine)
            grant = self._resume(spec, mine, record)
            self._store.put_json(_RESUME_KEY, record)
            # The releases this node made before the interruption stay counted: its own record
            # of what left it, never a peer's word (models.secureboost.checkpoint).
            self._store.put_json(_RELEASES_KEY, dict(record.get("releases", {})))
        else:
            grant = self._open(spec, mine)
        self._store.put_json(_JOB_KEY, spec.to_json())
        self._store.put_json(_GRANT_KEY, grant.to_dict())
        if grant.reservation is not None and self._run_id is not None:
            self._progress()  # the node's journal names the run this job is served in
        return mine

    def _node_limits(self) -> NodeLimits:
        """The node's limits before any job: its policy's, or those it was built with."""
        policy = self.node_policy()
        if policy is not None:
            return policy.limits(self.binding)
        return self._limits or NodeLimits()

    def compute_settings(self) -> compute.ComputeSettings:
        """Where this party's batches run: its node's own choice, fixed when it joined the job.

        Before a job, the node's current policy decides. Never the job spec or a peer.
        """
        raw = self._store.get_json(_GRANT_KEY)
        if raw is not None:
            return JobGrant.from_dict(raw).limits.compute
        if self.binding.policy is None:
            return (self._limits or NodeLimits()).compute
        return compute.LOCAL  # hello: join() checks the policy's backend before the job

    def _check_compute(self, spec: JobSpec) -> None:
        """Refuse a job, before anything is read or reserved, if the node's backend is down.

        The refusal is audited (``job_refused``) in the node's own log, as a policy refusal is.

        Raises
        ------
        ComputeBackendError
            Naming the cluster's address and the fix (no gateway process is left running).
        """
        settings = self._node_limits().compute
        try:
            compute.check(settings)
        except compute.ComputeBackendError as exc:
            message = f"party '{self.name}' cannot run the job on its compute backend: {exc}"
            policy = self.node_policy()
            if policy is not None:
                policy.refuse(self.binding, spec, message)
            raise compute.ComputeBackendError(message) from exc

    def checkpoints(self) -> PartyCheckpoints | None:
        """This party's checkpoints of the current job, in its own store (``None``: no store).

        Only vertical training jobs checkpoint (:mod:`models.checkpoint`).
        """
        spec = self.job()
        if self.binding.store is None or spec.kind != "vertical" or spec.task != "train":
            return None
        return _checkpoints_of(self.binding, spec)

    def resuming(self) -> dict[str, Any] | None:
        """The checkpoint record this node resumed the current job from (``None``: a new job)."""
        record: dict[str, Any] | None = self._store.get_json(_RESUME_KEY)
        return record

    def start_checkpoints(self) -> None:
        """Open this party's checkpoint record of a new job (after its table was read).

        A resumed job keeps the record it resumed from.
        """
        folder = self.checkpoints()
        if folder is None or self.resuming() is not None:
            return
        folder.discard()  # a job that starts anew under an id starts with no checkpoint
        folder.write_record(
            spec_digest=digest_json(json.loads(self.job().to_json())),
            data_digest=self._store.get_json(_DIGEST_KEY),
            status="running",
            resumes=0,
            releases={},
        )

    def _resume_record(self, spec: JobSpec, mine: PartySpec) -> dict[str, Any]:
        """This node's own record of ``spec``'s job, checked before anything is reserved.

        Raises
        ------
        CheckpointError
            No record (never checkpointed here), a finished job, too many resumes.
        CheckpointMismatchError
            The job spec or this party's data file differs from the checkpoint's (audited).
        """
        if self.binding.store is None or spec.kind != "vertical" or spec.task != "train":
            raise CheckpointError(
                f"party '{self.name}': only vertical training jobs on a node with a store "
                "can be resumed"
            )
        folder = _checkpoints_of(self.binding, spec)
        record = folder.record()
        if record is None:
            raise CheckpointError(
                f"party '{self.name}' holds no checkpoint of job {spec.job_id}; it cannot be "
                "resumed here: start a new job (lab train EXPERIMENT)"
            )
        if record.get("status") == "finished":
            raise CheckpointError(
                f"job {spec.job_id} finished at party '{self.name}'; there is nothing to resume"
            )
        why = None
        if record.get("spec_digest") != digest_json(json.loads(spec.to_json())):
            why = "its job spec differs from the checkpoint's (config, parties or settings)"
        else:
            table = load_table(self.binding, mine, spec.alignment.id_scheme)
            if record.get("data_digest") != table.digest:
                why = (
                    f"its data file changed since the checkpoint ({record.get('data_digest')} "
                    f"-> {table.digest})"
                )
        if why is None and int(record.get("resumes", 0)) >= MAX_RESUMES:
            why = f"it was resumed {record.get('resumes')} times already (at most {MAX_RESUMES})"
        if why is not None:
            message = (
                f"party '{self.name}' refuses to resume job {spec.job_id}: {why}; start a new "
                "job instead"
            )
            policy = self.node_policy()
            if policy is not None:
                policy.refuse(self.binding, spec, message)
            raise CheckpointMismatchError(message)
        return folder.write_record(resumes=int(record.get("resumes", 0)) + 1)

    def _resume(self, spec: JobSpec, mine: PartySpec, record: dict[str, Any]) -> JobGrant:
        policy = self.node_policy()
        if policy is not None:
            return policy.resume_job(self.binding, spec, record)
        return self._open(spec, mine)

    def _open(self, spec: JobSpec, mine: PartySpec) -> JobGrant:
        policy = self.node_policy()
        if policy is not None:
            return policy.open_job(self.binding, spec)
        if spec.governance.require_authorization or mine.feature_set:
            raise SpecError(
                f"job '{spec.name}' is governed (feature set or authorizations) but the node "
                f"of party '{self.name}' has no governance policy; set 'policy' in its node "
                "config"
            )
        return JobGrant(
            governed=False,
            limits=self._limits or NodeLimits(),
            releases=dp_grants(spec, self.role),
            detail={"governed": False, "note": "no governance policy on this node"},
            column_groups=local_column_groups(self.binding),
        )

    def close(self, outcome: Outcome) -> dict[str, Any]:
        """End this node's part in the job: charge its ledger from its own release count.

        Idempotent; after it, the node refuses every further protocol message of the job.
        """
        done: dict[str, Any] | None = self._store.get_json(_CLOSED_KEY)
        if done is not None:
            return done
        raw = self._store.get_json(_GRANT_KEY)
        if raw is None:
            return {}
        grant = JobGrant.from_dict(raw)
        use = self._use(outcome)
        policy = self.node_policy()
        if policy is not None:
            report = policy.close_job(self.binding, self.job(), grant, use)
        else:
            report = privacy_report(grant, use)
        self._store.put_json(_CLOSED_KEY, report)
        folder = self.checkpoints()
        if folder is not None:
            if outcome == "finished":
                folder.finish()
            elif not folder.has_boundaries():
                folder.discard()  # failed before its first boundary: nothing to resume from
        return report

    def record_release(self, mechanism: str) -> int:
        """Count one DP release of this job under ``mechanism`` (see :class:`NodeGuardView`)."""
        counts: dict[str, int] = dict(self._store.get_json(_RELEASES_KEY, {}))
        counts[mechanism] = count_release(
            self.grant().release_grant(mechanism), counts.get(mechanism, 0)
        )
        self._store.put_json(_RELEASES_KEY, counts)
        self._progress()
        return counts[mechanism]

    def _use(self, outcome: Outcome) -> JobUse:
        return JobUse(
            touched=bool(self._store.get_json(_TOUCHED_KEY, False)),
            releases=dict(self._store.get_json(_RELEASES_KEY, {})),
            outcome=outcome,
            run=self._run_id,
        )

    def touch(self) -> None:
        """Mark that the job started using this party's data (its first message after hello)."""
        if self._store.get_json(_TOUCHED_KEY, False):
            return
        self._store.put_json(_TOUCHED_KEY, True)
        if self._store.get_json(_GRANT_KEY) is not None:
            self._progress()

    def _progress(self) -> None:
        policy = self.node_policy()
        if policy is not None:
            policy.progress(self.binding, self.job(), self.grant(), self._use("failed"))

    def audit_head(self) -> dict[str, str] | None:
        """The head of this node's audit log (``None`` without a policy or a log)."""
        policy = self.node_policy()
        return None if policy is None else policy.audit_head(self.binding)

    def record_peer_heads(self, heads: Mapping[str, Mapping[str, Any]]) -> None:
        """Record the other parties' audit heads in this node's log."""
        policy = self.node_policy()
        if policy is not None and self._store.get_json(_JOB_KEY) is not None:
            policy.record_peer_heads(self.binding, self.job(), heads)

    def notify(self, event: str, payload: Mapping[str, Any]) -> None:
        """Hand an event of this job to the node's policy (its own audit log)."""
        policy = self.node_policy()
        admission = self.admission() or {}
        full = {
            **payload,
            "n_rows": admission.get("n_rows"),
            "n_admitted": admission.get("n_admitted"),
        }
        if policy is None:
            logger.info("party %s: %s %s", self.name, event, full)
            return
        policy.record(self.binding, self.job(), event, full)

    def table(self) -> PartyTable:
        """This party's validated table; fails if the file changed since the job started."""
        job = self.job()
        table = load_table(self.binding, job.party(self.name), job.alignment.id_scheme)
        pinned = self._store.get_json(_DIGEST_KEY)
        if pinned is None:
            self._store.put_json(_DIGEST_KEY, table.digest)
        elif pinned != table.digest:
            raise DataError(
                f"{table.path}: the file changed while the job was running ({pinned} -> "
                f"{table.digest}); restart the job on stable data"
            )
        return self._without_dropped(self._admitted(job, table))

    def drop_features(self, names: list[str]) -> None:
        """Leave ``names`` out of this party's table for the rest of the job (screening).

        Only ever fewer columns: a name the table does not hold is refused.
        """
        table = self.table()
        unknown = [n for n in names if n not in table.feature_names]
        if unknown:
            raise ProtocolError(f"party '{self.name}' holds no features {unknown} to drop")
        self._store.put_json(_DROPPED_KEY, sorted(set(self.dropped_features()) | set(names)))

    def dropped_features(self) -> list[str]:
        """Columns screening left out of this job (none by default)."""
        return list(self._store.get_json(_DROPPED_KEY, []))

    def _without_dropped(self, table: PartyTable) -> PartyTable:
        dropped = set(self.dropped_features())
        if not dropped:
            return table
        kept = [c for c in table.feature_names if c not in dropped]
        return replace(
            table,
            features=table.features.loc[:, kept],
            feature_kinds={c: k for c, k in table.feature_kinds.items() if c not in dropped},
        )

    def recent_table(self) -> tuple[PartyTable, dict[str, Any]]:
        """This party's recent window for screening, as its own node serves it, and counts.

        A platform serving a published feature set serves the newer version the job names,
        through its own policy (published columns, authorised enterprises, unchanged file);
        any other party reads the recent file its own node keeps (``recent`` in its binding),
        with the training table's columns.

        Raises
        ------
        SpecError
            If the job names no recent window for this party, or one its node cannot serve.
        """
        job = self.job()
        if self.name not in job.screening.recent:
            raise SpecError(f"job '{job.name}' names no recent window for party '{self.name}'")
        ref = job.screening.recent[self.name]
        reference = self.table()
        grant = self.grant()
        policy = self.node_policy()
        if policy is not None and grant.governed and self.role == "platform":
            admission = policy.recent_window(self.binding, job, grant, ref)
            recent = admission.table
            counts = {"n_rows": admission.n_rows, "n_admitted": admission.n_admitted}
            return self._columns_of(reference, recent), {**counts, **admission.detail}
        if ref is not None:
            raise SpecError(
                f"party '{self.name}' serves no published feature set in job '{job.name}', so "
                f"its recent window cannot be the version {ref}; keep the recent file at its "
                "node instead (screening.recent names the file)"
            )
        if self.binding.recent is None:
            raise SpecError(
                f"the node of party '{self.name}' keeps no recent window; set 'recent' in its "
                f"node config (screening.recent.{self.name} in an embedded job)"
            )
        return self._node_window(self.binding.recent, reference, "recent")

    def reference_table(self) -> tuple[PartyTable, dict[str, Any]]:
        """This party's reference window for monitoring (the model's training window), and counts.

        A platform serving a published feature set serves the version the monitored model was
        trained on (``monitoring.reference``), through its own node policy (published columns,
        unchanged file, enterprises authorised for the job's bank and purpose); any other party
        reads the reference file its own node keeps (``reference`` in its binding), with this
        job's columns.

        Raises
        ------
        SpecError
            If the job is no monitoring job or this party's node keeps no reference window.
        """
        job = self.job()
        if job.monitoring is None:
            raise SpecError(f"job '{job.name}' is not a monitoring job")
        current = self.table()
        grant = self.grant()
        policy = self.node_policy()
        if policy is not None and grant.governed and self.role == "platform":
            ref = job.monitoring.reference.get(self.name)
            if ref is None:
                raise SpecError(
                    f"job '{job.name}' names no reference version for party '{self.name}'"
                )
            admission = policy.reference_window(self.binding, job, grant, ref)
            counts = {"n_rows": admission.n_rows, "n_admitted": admission.n_admitted}
            return self._columns_of(current, admission.table), {**counts, **admission.detail}
        if self.binding.reference is None:
            raise SpecError(
                f"the node of party '{self.name}' keeps no reference window; set 'reference' "
                "in its node config (the training file of the monitored model)"
            )
        return self._node_window(self.binding.reference, current, "reference")

    def _node_window(
        self, path: Path, like: PartyTable, what: str
    ) -> tuple[PartyTable, dict[str, Any]]:
        """Another window from a file this node keeps, with ``like``'s columns, and counts."""
        job = self.job()
        party = job.party(self.name)
        try:
            table = read_party_table(
                path,
                id_column=party.id_column,
                label_column=None,
                features=tuple(like.feature_names),
                categorical=party.categorical,
                id_scheme=job.alignment.id_scheme,
                text_format=party.text_format,
            )
        except DataError as exc:
            raise DataError(
                f"party '{self.name}' {what} window: {exc}", redacted=exc.redacted
            ) from exc
        counts = {"n_rows": table.n_rows, "n_admitted": table.n_rows}
        return self._columns_of(like, table), {**counts, "source": "node file"}

    def _columns_of(self, reference: PartyTable, recent: PartyTable) -> PartyTable:
        """``recent`` with the reference's columns, in its order and of its kinds."""
        missing = [c for c in reference.feature_names if c not in recent.feature_names]
        if missing:
            raise DataError(
                f"party '{self.name}': the recent window has no columns {missing} of the "
                "training window",
                redacted=f"party '{self.name}': the recent window lacks training columns",
            )
        changed = [
            c
            for c in reference.feature_names
            if recent.feature_kinds.get(c) != reference.feature_kinds.get(c)
        ]
        if changed:
            raise DataError(
                f"party '{self.name}': columns {changed} are read as another kind in the recent "
                "window than in the training window; list them under 'categorical' or fix them",
                redacted=f"party '{self.name}': the recent window's column kinds differ",
            )
        names = reference.feature_names
        return replace(
            recent,
            features=recent.features.loc[:, names],
            feature_kinds={c: reference.feature_kinds[c] for c in names},
        )

    def admission(self) -> dict[str, Any] | None:
        """Counts of what this node's governance policy admitted for the job, if it ran."""
        info: dict[str, Any] | None = self._store.get_json(_ADMISSION_KEY)
        return info

    def _admitted(self, job: JobSpec, table: PartyTable) -> PartyTable:
        """Apply the node's governance policy once per job; reuse its row mask afterwards."""
        grant = self.grant()
        policy = self.node_policy()
        if policy is None or not grant.governed:
            if self._store.get_json(_ADMISSION_KEY) is None:
                self._store.put_json(
                    _ADMISSION_KEY,
                    {"n_rows": table.n_rows, "n_admitted": table.n_rows, **grant.detail},
                )
            return table
        try:
            mask = self._store.get_array(_ADMITTED_KEY).astype(bool)
        except KeyError:
            admission = policy.admit(self.binding, job, grant, table)
            mask = np.isin(table.ids, admission.table.ids)
            self._store.put_array(_ADMITTED_KEY, mask)
            self._store.put_json(
                _ADMISSION_KEY,
                {
                    "n_rows": admission.n_rows,
                    "n_admitted": admission.n_admitted,
                    **admission.detail,
                },
            )
        if mask.shape != table.ids.shape:
            raise DataError(f"{table.path}: admitted-row mask no longer fits the table")
        return _admitted_rows(table, mask)

    def model_dir(self) -> Path:
        """This party's folder for model parts (from its node config or the lab)."""
        if self.binding.store is None:
            raise SpecError(
                f"node of party '{self.name}' has no model store; set 'store' in its node config"
            )
        return self.binding.store / "models"

    def dispatch(self, envelope: Envelope) -> list[Envelope]:
        """Run the protocol step for ``envelope``; report failures as an error envelope."""
        try:
            if envelope.recipient == ANY_PARTY:
                envelope = replace(envelope, recipient=self.name)
            if envelope.recipient != self.name:
                raise ProtocolError(
                    f"envelope for '{envelope.recipient}' delivered to party '{self.name}'"
                )
            handler = self._protocols.get(envelope.protocol)
            if handler is None:
                raise ProtocolError(
                    f"party '{self.name}' does not speak protocol '{envelope.protocol}'"
                )
            if envelope.protocol != ERROR_PROTOCOL:
                if self._store.get_json(_CLOSED_KEY) is not None:
                    raise ProtocolError(
                        f"party '{self.name}' closed its part in this job; it takes no more "
                        f"'{envelope.protocol}/{envelope.stage}' messages"
                    )
                if (envelope.protocol, envelope.stage) not in _NO_DATA_STAGES:
                    self.touch()
            with compute.using(self.compute_settings()):
                return handler.handle(envelope, self)
        except EXPECTED_ERRORS as exc:
            logger.warning("party %s: %s: %s", self.name, type(exc).__name__, exc)
            shared = exc.redacted if isinstance(exc, DataError) and not self._disclose else str(exc)
            return [self._error(envelope, type(exc).__name__, shared)]
        except Exception as exc:  # every failure must reach the coordinator as a message
            logger.error("party %s failed:\n%s", self.name, traceback.format_exc())
            detail = f"{type(exc).__name__}: {exc}" if self._disclose else type(exc).__name__
            return [
                self._error(
                    envelope, "InternalError", f"{detail} (details in party '{self.name}' log)"
                )
            ]

    def _error(self, envelope: Envelope, kind: str, message: str) -> Envelope:
        return Envelope(
            ERROR_PROTOCOL,
            ERROR_STAGE,
            self.name,
            COORDINATOR,
            {
                "error_type": kind,
                "message": message,
                "while": f"{envelope.protocol}/{envelope.stage}",
            },
        )


class CheckpointMismatchError(PolicyRefusalError):
    """A node refuses to resume a job whose spec or data differs from its own checkpoint."""


#: Job ids a node names a checkpoint folder after (a peer's id never walks out of the store).
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _checkpoints_of(binding: PartyBinding, spec: JobSpec) -> PartyCheckpoints:
    if binding.store is None:
        raise SpecError(f"node of party '{binding.name}' has no store for checkpoints")
    if not _JOB_ID.fullmatch(spec.job_id):
        raise SpecError(f"job id {spec.job_id!r} is not 1-64 letters, digits, '_' or '-'")
    folder = binding.store / "checkpoints" / spec.job_id
    return PartyCheckpoints(folder, spec.job_id, binding.name, binding.role)


class NodeGuardView:
    """A :class:`~models.guard.NodeGuard` over a party runtime's job state."""

    def __init__(self, runtime: PartyRuntime) -> None:
        self._runtime = runtime

    @property
    def limits(self) -> NodeLimits:
        """The limits the node fixed for the current job when it joined."""
        return self._runtime.grant().limits

    def job_crypto(self) -> Mapping[str, Any]:
        """The ``crypto`` section of the job the node joined (and its policy approved)."""
        return dict(self._runtime.job().crypto)

    def grant(self, mechanism: str) -> ReleaseGrant | None:
        """The job's DP grant of ``mechanism``."""
        return self._runtime.grant().release_grant(mechanism)

    def record_release(self, mechanism: str) -> int:
        """Count one release (refused beyond the grant)."""
        return self._runtime.record_release(mechanism)

    def notify(self, event: str, payload: Mapping[str, Any]) -> None:
        """Record an event in the node's audit log."""
        self._runtime.notify(event, payload)

    def column_groups(self) -> Mapping[str, str]:
        """The published group of each served column (from the node's own catalog or file)."""
        return dict(self._runtime.grant().column_groups)


ProtocolRegistry = Callable[[], Mapping[str, PartyProtocol]]
