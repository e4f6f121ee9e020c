"""The ``monitoring`` protocol: a registered joint model on a new window of the bank's book.

Runs after a monitoring job's alignment (``task: monitor``, :mod:`federated.driver`): the bank's
book (current loans, their vintages and matured outcomes) was aligned with the *new* published
version of each platform's feature set, served for the purpose ``post_loan_monitoring`` (each
platform's node admitted only enterprises it holds an authorization for, before alignment).

Stages
------
``monitor`` (coordinator -> every platform)
    The platform loads its own part of the monitored model from its own store (the job names
    the part's id and content hash; another hash, or a part bound to another bank, is refused),
    and reads its reference window, the version the model was trained on, through its own node
    policy (:meth:`federated.party.PartyRuntime.reference_table`). It computes, for every
    aligned enterprise, its part's split decisions on the new window and, where it held the
    enterprise then, on the reference window, exactly what its scoring endpoint would answer
    (one bit per split). It sends them to the bank (``decisions``) and sends the coordinator its
    characteristic stability (``csi``): bins fixed on the aligned enterprises' reference values,
    counts of their current values, shared per feature group (or per column if its policy's
    ``stability.csi_detail`` says ``feature``). No edge or value leaves it.
``decisions`` (platform -> bank)
    When every platform answered, the bank scores its book in both windows with its own part,
    and computes at home: the score PSI (reference: its training population, the rows of the
    training file its node keeps, as scored in the reference window), each of its columns' CSI
    (bins on that training file), AUC/KS/bad rate by matured vintage and by score band, and the
    early-warning list (:func:`models.monitoring.early_warnings`) against its previous run (kept
    in its store) or, on a first run, the reference window. It writes the list and this run's
    scores into its own store, sends each platform ``outcome`` and the coordinator ``report``.
``outcome`` (bank -> platform)
    The number of enterprises scored and warned and the score PSI; the platform audits them
    (``monitoring_served``) and acknowledges (``served``).

What each party learns
----------------------
- Bank: per aligned enterprise and platform split, one left/right bit in each window (as from
  the scoring endpoint), and whether the platform held the enterprise in the reference window.
  Never a platform value, edge or column name.
- Platform: the aligned enterprises (as in any job revealing the intersection), the counts and
  the score PSI in ``outcome``. Never a score, an outcome, a threshold or the warning list.
- Coordinator: the platforms' group stability, the bank's aggregates (indices, vintage and band
  tables, alert values, counts). No id, value, score or edge.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd

from features import stability
from features.errors import DataError
from features.ids import normalise
from features.io import resolve_data_file
from features.safe_csv import write_csv
from federated.party import PartyRuntime
from federated.spec import JobSpec, MonitoringSpec
from federated.transport import Transport, run_protocol
from models import monitoring
from models.alignment import job_rows
from models.explanations import AttributionRefusedError, ExplanationUnavailableError
from models.guard import PolicyRefusalError
from models.protocol import (
    COORDINATOR,
    Envelope,
    PartyContext,
    ProtocolError,
    StageMachine,
    dumps,
)
from models.secureboost.parts import BankPart, PlatformPart, model_file
from models.vertical.parts import bound_bank

PROTOCOL = "monitoring"

#: Folder of the bank's store holding each monitored model's last scores and warning lists.
STORE_FOLDER = "monitoring"
#: Files the bank keeps per monitored model (its own data).
SCORES_FILE = "last_scores.csv"
WARNINGS_FILE = "early_warnings.csv"

_MACHINE = StageMachine(
    PROTOCOL,
    {
        "monitor": {StageMachine.START},
        "decisions": {StageMachine.START, "decisions"},
        "outcome": {"monitor"},
    },
)
_BANK_STAGES = frozenset({"decisions"})
_PLATFORM_STAGES = frozenset({"monitor", "outcome"})
_RECEIVED = "monitoring.received"


class MonitoringParty:
    """Party side of the ``monitoring`` protocol."""

    name = PROTOCOL

    def handle(self, envelope: Envelope, ctx: PartyContext) -> list[Envelope]:
        """Run one stage (checked against the stage machine and the party's role)."""
        if not isinstance(ctx, PartyRuntime):
            raise ProtocolError("the monitoring protocol needs a full party runtime")
        allowed = _BANK_STAGES if ctx.role == "bank" else _PLATFORM_STAGES
        if envelope.stage not in allowed:
            raise ProtocolError(f"a {ctx.role} takes no 'monitoring/{envelope.stage}' message")
        _MACHINE.advance(ctx.store, envelope)
        if envelope.stage == "monitor":
            return _monitor(envelope, ctx)
        if envelope.stage == "decisions":
            return _decisions(envelope, ctx)
        return [_outcome(envelope, ctx)]


def _spec(ctx: PartyRuntime) -> tuple[JobSpec, MonitoringSpec]:
    job = ctx.job()
    if job.task != "monitor" or job.monitoring is None:
        raise ProtocolError(f"job '{job.name}' is not a monitoring job")
    return job, job.monitoring


def _own_part(ctx: PartyRuntime, mon: MonitoringSpec) -> tuple[dict[str, Any], str]:
    """This party's part of the monitored model from its own store, checked, and its hash."""
    ref = mon.parts.get(ctx.name)
    if ref is None:
        raise PolicyRefusalError(f"the job names no part of party '{ctx.name}'")
    try:
        path = model_file(ctx.model_dir(), str(ref["model_id"]))
    except ValueError as exc:
        raise PolicyRefusalError(f"party '{ctx.name}': {exc}") from exc
    if not path.is_file():
        raise PolicyRefusalError(
            f"party '{ctx.name}' holds no part {ref['model_id']!r} of the monitored model"
        )
    raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return raw, str(ref.get("content_hash", ""))


_Part = TypeVar("_Part")


def _parsed(
    read: Callable[[dict[str, Any]], _Part], raw: dict[str, Any], ctx: PartyRuntime
) -> _Part:
    """A SecureBoost part from its saved form, or a refusal naming what it is instead."""
    try:
        return read(raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise PolicyRefusalError(
            f"party '{ctx.name}': monitoring serves SecureBoost parts; part "
            f"{raw.get('model_id')!r} is another kind ({type(exc).__name__}: {exc})"
        ) from exc


# ------------------------------------------------------------------------------- platform


def _monitor(envelope: Envelope, ctx: PartyRuntime) -> list[Envelope]:
    job, mon = _spec(ctx)
    ctx.guard.limits.check_bins(mon.bins, "monitoring.bins")
    raw, pinned = _own_part(ctx, mon)
    part = _parsed(PlatformPart.from_dict, raw, ctx)
    bank = job.label_holder().name
    if part.content_hash != pinned:
        raise PolicyRefusalError(
            f"party '{ctx.name}' holds model {part.model_id!r} as {part.content_hash}, not "
            f"{pinned}; monitor the version registered from the same job"
        )
    served_to = bound_bank(ctx.model_dir(), part.model_id, part.bank)
    if served_to != bank:
        raise PolicyRefusalError(
            f"party '{ctx.name}' serves model {part.model_id!r} to "
            f"{'no bank' if served_to is None else 'another bank'}, not '{bank}'; a part "
            "trained before parts named their bank is bound with 'lab platform bind'"
        )
    table = ctx.table()
    rows = job_rows(ctx)
    current = table.features.iloc[rows].reset_index(drop=True)
    reference_table, info = ctx.reference_table()
    position = {str(eid): i for i, eid in enumerate(reference_table.ids.tolist())}
    aligned_ids = [str(eid) for eid in table.ids[rows].tolist()]
    held = np.fromiter((eid in position for eid in aligned_ids), dtype=bool, count=len(rows))
    at = np.fromiter((position[eid] for eid in aligned_ids if eid in position), dtype=np.int64)
    reference = reference_table.features.iloc[at].reset_index(drop=True)
    if not len(reference):
        raise PolicyRefusalError(
            f"party '{ctx.name}' held none of the aligned enterprises in the reference window"
        )
    split_ids = sorted(part.splits)
    now_bits = part.decisions(current, split_ids)
    then_bits = part.decisions(reference, split_ids)
    specs = stability.fit_bins(reference, table.feature_kinds, mon.bins)
    counts = stability.bin_counts(specs, reference, current)
    detail = ctx.guard.limits.csi_detail
    groups = {str(k): str(v) for k, v in dict(info.get("groups", {})).items()}
    report: dict[str, Any] = {
        "party": ctx.name,
        "role": ctx.role,
        "detail": detail,
        "reference": info.get("feature_set") or "reference file kept by the node",
        "recent": job.party(ctx.name).feature_set or "data file",
        "n_reference": int(held.sum()),
        "n_recent": len(rows),
        "groups": stability.group_summary(counts, groups),
    }
    if detail == "feature":
        report["features"] = [{**c.to_dict(), "group": groups.get(c.name)} for c in counts]
    to_bank = Envelope(
        PROTOCOL,
        "decisions",
        ctx.name,
        bank,
        {
            "split_ids": dumps(split_ids),
            "now": np.packbits(now_bits, axis=1),
            "then": np.packbits(then_bits, axis=1),
            "held": held.astype(np.uint8),
        },
    )
    return [to_bank, envelope.reply("csi", {"report": dumps(report)})]


def _outcome(envelope: Envelope, ctx: PartyRuntime) -> Envelope:
    _spec(ctx)
    summary = envelope.json("summary")
    n_warnings = int(summary["n_warnings"])
    ctx.notify(
        "monitoring_served",
        {
            "n_scored": int(summary["n_scored"]),
            "n_warnings": n_warnings,
            "score_psi": float(summary["score_psi"]),
        },
    )
    return Envelope(PROTOCOL, "served", ctx.name, COORDINATOR, {"n_warnings": n_warnings})


# ----------------------------------------------------------------------------------- bank


def _decisions(envelope: Envelope, ctx: PartyRuntime) -> list[Envelope]:
    job, mon = _spec(ctx)
    platforms = [p.name for p in job.by_role("platform")]
    if envelope.sender not in platforms:
        raise ProtocolError(f"'{envelope.sender}' is no platform of job '{job.name}'")
    received: dict[str, Any] = ctx.store.get_json(_RECEIVED, {})
    if envelope.sender in received:
        raise ProtocolError(f"platform '{envelope.sender}' answered twice")
    n = len(job_rows(ctx))
    split_ids = [str(s) for s in envelope.json("split_ids")]
    held = envelope.array("held").astype(bool)
    if held.shape != (n,):
        raise ProtocolError(f"platform '{envelope.sender}' answered for {held.size} rows, not {n}")
    for key in ("now", "then"):
        bits = np.unpackbits(envelope.array(key), axis=1, count=len(split_ids)).astype(bool)
        expected = (n if key == "now" else int(held.sum()), len(split_ids))
        if bits.shape != expected:
            raise ProtocolError(f"platform '{envelope.sender}' sent {key} bits of {bits.shape}")
        ctx.store.put_array(f"monitoring.{envelope.sender}.{key}", bits)
    ctx.store.put_array(f"monitoring.{envelope.sender}.held", held)
    received[envelope.sender] = split_ids
    ctx.store.put_json(_RECEIVED, received)
    if set(received) != set(platforms):
        return []
    result = _bank_monitoring(ctx, job, mon, received)
    summary = {
        "n_scored": result["n_scored"],
        "n_warnings": result["early_warning"]["n_warnings"],
        "score_psi": result["score_stability"]["index"],
    }
    out = [
        Envelope(PROTOCOL, "outcome", ctx.name, p, {"summary": dumps(summary)}) for p in platforms
    ]
    out.append(Envelope(PROTOCOL, "report", ctx.name, COORDINATOR, {"report": dumps(result)}))
    return out


def _decisions_of(
    ctx: PartyRuntime, received: dict[str, list[str]], rows: npt.NDArray[np.bool_] | None
) -> tuple[dict[str, tuple[list[str], npt.NDArray[np.bool_]]], ...]:
    """Per platform (split ids, bits) now and in the reference window (rows held by all)."""
    now: dict[str, tuple[list[str], npt.NDArray[np.bool_]]] = {}
    then: dict[str, tuple[list[str], npt.NDArray[np.bool_]]] = {}
    for party, ids in received.items():
        now[party] = (ids, ctx.store.get_array(f"monitoring.{party}.now"))
        held = ctx.store.get_array(f"monitoring.{party}.held").astype(bool)
        full = np.zeros((held.size, len(ids)), dtype=bool)
        full[held] = ctx.store.get_array(f"monitoring.{party}.then")
        then[party] = (ids, full if rows is None else full[rows])
    return now, then


def _book_columns(
    ctx: PartyRuntime, job: JobSpec, mon: MonitoringSpec, ids: list[str]
) -> pd.DataFrame:
    """The book's vintage and outcome of the aligned enterprises (read at the bank only)."""
    party = job.party(ctx.name)
    path = resolve_data_file(ctx.binding.data)
    wanted = [party.id_column, mon.vintage_column, mon.outcome_column]
    if mon.segment_column is not None:
        wanted.append(mon.segment_column)
    fmt = party.text_format
    try:
        if path.suffix.lower() == ".parquet":
            raw = pd.read_parquet(path, columns=wanted)
        else:
            raw = pd.read_csv(
                path,
                sep=fmt.delimiter,
                encoding=fmt.encoding,
                usecols=wanted,
                dtype={c: str for c in wanted if c != mon.outcome_column},
                na_values=list(fmt.na_values),
            )
    except ValueError as exc:
        raise DataError(
            f"{path}: the book needs columns {wanted} ({exc}); set monitoring.vintage_column "
            "and monitoring.outcome_column to the book's columns",
            redacted=f"party '{ctx.name}': the book lacks its vintage or outcome column",
        ) from exc
    keys = normalise(raw[party.id_column].astype("string").str.strip(), job.alignment.id_scheme)
    raw.index = pd.Index(keys.astype(str).tolist())
    raw = raw[~raw.index.duplicated()]
    picked = raw.reindex(ids)
    outcome = pd.to_numeric(picked[mon.outcome_column], errors="coerce")
    bad = outcome.notna() & ~outcome.isin([0, 1])
    if bad.any():
        raise DataError(
            f"{path}: '{mon.outcome_column}' holds {outcome[bad].iloc[0]!r}; outcomes are 0, 1 "
            "or empty (not yet matured)",
            redacted=f"party '{ctx.name}': the book's outcome column is not 0/1",
        )
    return pd.DataFrame(
        {
            "vintage": picked[mon.vintage_column].astype(str).to_numpy(),
            "outcome": outcome.to_numpy(dtype=np.float64),
            "segment": (
                picked[mon.segment_column].astype(str).to_numpy()
                if mon.segment_column is not None
                else np.full(len(ids), "all", dtype=object)
            ),
        }
    )


def _bank_monitoring(
    ctx: PartyRuntime, job: JobSpec, mon: MonitoringSpec, received: dict[str, list[str]]
) -> dict[str, Any]:
    raw, pinned = _own_part(ctx, mon)
    part = _parsed(BankPart.from_dict, raw, ctx)
    if part.content_hash != pinned:
        raise PolicyRefusalError(
            f"party '{ctx.name}' holds model {part.model_id!r} as {part.content_hash}, not {pinned}"
        )
    table = ctx.table()
    rows = job_rows(ctx)
    ids = [str(i) for i in table.ids[rows].tolist()]
    book = table.features.iloc[rows].reset_index(drop=True)
    reference_table, _ = ctx.reference_table()
    now, then = _decisions_of(ctx, received, None)
    held = np.ones(len(rows), dtype=bool)
    for party in received:
        held &= ctx.store.get_array(f"monitoring.{party}.held").astype(bool)
    p_now = part.predict_proba(book, now)
    p_then = np.full(len(rows), np.nan)
    p_then[held] = part.predict_proba(
        book.iloc[np.flatnonzero(held)].reset_index(drop=True),
        {k: (v[0], v[1][held]) for k, v in then.items()},
    )
    trained_on = set(str(i) for i in reference_table.ids.tolist())
    in_training = np.fromiter((i in trained_on for i in ids), dtype=bool, count=len(ids))
    population = held & in_training
    if not population.any():
        raise PolicyRefusalError(
            f"party '{ctx.name}': no aligned enterprise is in the training file and held by every "
            "platform in the reference window; the score PSI has no reference"
        )
    score = stability.score_stability(p_then[population], p_now, mon.bins)
    specs = stability.fit_bins(reference_table.features, table.feature_kinds, mon.bins)
    bank_csi = stability.bin_counts(specs, reference_table.features, book)
    outcomes = _book_columns(ctx, job, mon, ids)
    store = _store(ctx, mon)
    last = _last_run(store, ids)
    previous, previous_source = _previous(last, p_then)
    labels, c_prev, c_now, reasons_note = _contributions(part, book, now, then, held, last)
    warnings = monitoring.early_warnings(
        ids,
        previous,
        p_now,
        mon.warning_threshold,
        labels=labels,
        previous_contributions=c_prev,
        current_contributions=c_now,
        reasons=mon.reasons if labels else 0,
    )
    _write_store(store, ids, p_now, labels, c_now, warnings)
    return {
        "n_scored": len(rows),
        "n_reference_population": int(population.sum()),
        "score_stability": score.to_dict(),
        "bank_csi": [c.to_dict() for c in bank_csi],
        "vintages": monitoring.vintage_table(
            outcomes["vintage"].to_numpy(), outcomes["outcome"], p_now
        ),
        "matured": monitoring.matured_performance(outcomes["outcome"], p_now),
        "out_of_time": monitoring.matured_performance(
            outcomes["outcome"].to_numpy()[~in_training], p_now[~in_training]
        ),
        "segments": (
            {}
            if mon.segment_column is None
            else monitoring.segment_stability(
                # the same enterprises then and now: a segment's signals turning, not its mix
                outcomes["segment"].to_numpy()[held],
                p_then[held],
                p_now[held],
                mon.bins,
            )
        ),
        "bands": monitoring.band_table(p_then[population], p_now, outcomes["outcome"], mon.bins),
        "mean_probability": float(p_now.mean()),
        "early_warning": {
            "threshold": mon.warning_threshold,
            "compared_with": previous_source,
            "n_warnings": len(warnings),
            "n_above_threshold": int((p_now >= mon.warning_threshold).sum()),
            "reasons": reasons_note,
            "file": str(store / WARNINGS_FILE),
        },
    }


def _store(ctx: PartyRuntime, mon: MonitoringSpec) -> Path:
    """The bank's folder for this monitored model (in its own store)."""
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in mon.model) or "model"
    folder = ctx.model_dir().parent / STORE_FOLDER / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _last_run(store: Path, ids: list[str]) -> pd.DataFrame | None:
    """The previous run's scores and contributions, on ``ids`` (``None`` on a first run)."""
    path = store / SCORES_FILE
    if not path.is_file():
        return None
    last = pd.read_csv(path, dtype={"enterprise_id": str}).set_index("enterprise_id")
    return last.reindex(ids)


def _previous(
    last: pd.DataFrame | None, reference: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], str]:
    """Each enterprise's probability at the previous run (else the reference window's)."""
    if last is None:
        return reference, "reference window"
    return last["probability"].to_numpy(dtype=np.float64), "previous run"


def _contributions(
    part: BankPart,
    book: pd.DataFrame,
    now: dict[str, tuple[list[str], npt.NDArray[np.bool_]]],
    then: dict[str, tuple[list[str], npt.NDArray[np.bool_]]],
    held: npt.NDArray[np.bool_],
    last: pd.DataFrame | None,
) -> tuple[list[str], npt.NDArray[np.float64] | None, npt.NDArray[np.float64] | None, str]:
    """Labels and contributions now and before (previous run, else reference), or why none."""
    from models.secureboost.explain import saabas

    try:
        current = saabas(part, book, now)
    except (AttributionRefusedError, ExplanationUnavailableError) as exc:
        return [], None, None, f"withheld: {exc}"
    labels = list(current.labels)
    if last is not None:
        before = last.reindex(columns=[f"c:{label}" for label in labels])
        return labels, before.to_numpy(dtype=np.float64), current.values, "by label"
    previous = np.full(current.values.shape, np.nan)
    past = saabas(part, book, then)
    previous[held] = past.values[held]
    return labels, previous, current.values, "by label"


def _write_store(
    store: Path,
    ids: list[str],
    probability: npt.NDArray[np.float64],
    labels: list[str],
    contributions: npt.NDArray[np.float64] | None,
    warnings: pd.DataFrame,
) -> None:
    """This run's scores (the next run's "previous") and its early-warning list, at the bank."""
    scores = pd.DataFrame({"enterprise_id": ids, "probability": probability})
    if contributions is not None:
        for j, label in enumerate(labels):
            scores[f"c:{label}"] = contributions[:, j]
    for frame, name in ((scores, SCORES_FILE), (warnings, WARNINGS_FILE)):
        tmp = store / f".{name}.tmp"
        write_csv(frame, tmp)
        tmp.chmod(0o600)
        tmp.replace(store / name)


# ---------------------------------------------------------------------------- coordinator


def run_monitoring(spec: JobSpec, transport: Transport) -> dict[str, Any]:
    """Run the monitoring exchange and return what the coordinator learned (aggregates only).

    Returns
    -------
    dict
        ``bank``: the bank's report (indices, vintage and band tables, counts; no id);
        ``csi``: each platform's stability report; ``served``: per platform, the warning count
        it audited.
    """
    platforms = [p.name for p in spec.by_role("platform")]
    requests = [Envelope(PROTOCOL, "monitor", COORDINATOR, name) for name in platforms]
    out: dict[str, Any] = {"csi": {}, "bank": None, "served": {}}
    for env in run_protocol(transport, requests):
        if env.stage == "csi":
            out["csi"][env.sender] = env.json("report")
        elif env.stage == "report":
            out["bank"] = env.json("report")
        elif env.stage == "served":
            out["served"][env.sender] = env.integer("n_warnings")
    if out["bank"] is None:
        raise ProtocolError("the bank sent no monitoring report")
    return out
