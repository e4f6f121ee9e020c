"""The ``screening`` protocol: stability of every column, and IV-based selection, before training.

Runs after the job's split and before its models (``federated.driver``), when the job's
``screening`` section asks for it (:class:`federated.spec.ScreeningSpec`).

Stages
------
``csi`` (coordinator -> every party with a recent window)
    The party bins each of its columns on its training window (its aligned rows; bins fixed
    there, :func:`features.stability.fit_bins`), counts its recent window in the same bins
    (:meth:`federated.party.PartyRuntime.recent_table`: a platform serving a published set
    reads a later published version through its own node policy, any other party the recent
    file its node keeps) and answers ``csi`` to the coordinator with the indices
    (:func:`features.stability.psi`). What it shares is its own node's decision: a bank shares
    each column's index and bin counts; a platform shares what its policy's
    ``stability.csi_detail`` says: per feature group only (default) or per column.
``iv`` (coordinator -> bank)
    The bank draws its own Paillier key pair and sends each platform ``iv_init``: its public
    key, the training mask and its encrypted training labels.
``iv_init`` (bank -> platform)
    The platform bins its columns on the training rows (its own bins, ``screening.bins`` of
    the job it joined), sums the encrypted labels per bin, re-randomises the sums with its own
    randomness (:func:`secure_agg.paillier.rerandomize_own`) and answers ``iv_counts`` with,
    per column, its name, kind and number of bins, the rows per bin and the encrypted bad
    counts. It refuses when the job releases its data under DP (``model.dp_epsilon``): these
    counts carry no noise.
``iv_counts`` (platform -> bank)
    The bank decrypts the bad counts (checked against the bin sizes), computes each column's
    WOE and IV with :class:`features.woe.WoeTable` (the code of hetero LR's encrypted WOE/IV),
    and sends each platform ``iv_select``, the names of its columns whose IV is below
    ``screening.min_iv``; it reports every IV to the coordinator (``iv``).
``iv_select`` (bank -> platform)
    The platform leaves those columns out of the rest of the job
    (:meth:`~federated.party.PartyRuntime.drop_features`) and tells the coordinator how many.

What each party learns
----------------------
- Bank: from ``iv_counts``, per platform column and anonymous ordered bin, the number of
  training rows and of bad rows (as in hetero LR's WOE/IV), so each platform column's IV. Never
  a platform value, bin edge or category, and nothing of any party's stability.
- Platform: the training mask and ciphertexts it cannot read; which of its columns the bank
  dropped.
- Coordinator: each party's stability report (indices and, where that party shares them, bin
  counts), every column's IV, how many columns each platform dropped. No edge, value or id.

Bins are never refitted on the recent window; an index is only comparable to another of the
same bins. Each party's recent window is its own population (a bank's recent book, a platform's
later version as it serves it to this bank): rows are not aligned again.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt

from features import stability
from features.binning import fit_bins, transform
from features.errors import DataError
from features.woe import WoeTable, count_bins
from federated.party import PartyRuntime
from federated.spec import JobSpec
from federated.transport import Transport, run_protocol
from models.alignment import job_rows
from models.evaluation import TEST_MASK_KEY
from models.guard import PolicyRefusalError
from models.protocol import (
    COORDINATOR,
    Envelope,
    PartyContext,
    ProtocolError,
    StageMachine,
    dumps,
)
from models.vertical import KeyPair, bank_key_pair, peer_public_key
from secure_agg import paillier
from secure_agg.paillier import DEFAULT_KEY_BITS

PROTOCOL = "screening"

_MACHINE = StageMachine(
    PROTOCOL,
    {
        "csi": {StageMachine.START},
        "iv": {StageMachine.START, "csi"},
        "iv_counts": {"iv", "iv_counts"},
        "iv_init": {StageMachine.START, "csi"},
        "iv_select": {"iv_init"},
    },
)
_BANK_STAGES = frozenset({"csi", "iv", "iv_counts"})
_PLATFORM_STAGES = frozenset({"csi", "iv_init", "iv_select"})

_KEY = "screening.key"
_STATE = "screening.state"


class ScreeningParty:
    """Party side of the ``screening`` protocol."""

    name = PROTOCOL

    def handle(self, envelope: Envelope, ctx: PartyContext) -> list[Envelope]:
        """Run one stage (checked against the stage machine and the party's role)."""
        if not isinstance(ctx, PartyRuntime):
            raise ProtocolError("the screening protocol needs a full party runtime")
        allowed = _BANK_STAGES if ctx.role == "bank" else _PLATFORM_STAGES
        if envelope.stage not in allowed:
            raise ProtocolError(f"a {ctx.role} takes no 'screening/{envelope.stage}' message")
        _MACHINE.advance(ctx.store, envelope)
        if envelope.stage == "csi":
            return [_csi(envelope, ctx)]
        if envelope.stage == "iv":
            return _iv(ctx)
        if envelope.stage == "iv_init":
            return [_iv_init(envelope, ctx)]
        if envelope.stage == "iv_counts":
            return _iv_counts(envelope, ctx)
        return [_iv_select(envelope, ctx)]


# ------------------------------------------------------------------------------------- csi


def _csi(envelope: Envelope, ctx: PartyRuntime) -> Envelope:
    job = ctx.job()
    table = ctx.table()
    rows = job_rows(ctx)
    reference = table.features.iloc[rows].reset_index(drop=True)
    recent, info = ctx.recent_table()
    if ctx.role != "bank":
        ctx.guard.limits.check_bins(job.screening.bins, "screening.bins")
    specs = stability.fit_bins(reference, table.feature_kinds, job.screening.bins)
    counts = stability.bin_counts(specs, reference, recent.features)
    detail = "feature" if ctx.role == "bank" else ctx.guard.limits.csi_detail
    groups = {str(k): str(v) for k, v in dict(info.get("groups", {})).items()}
    report: dict[str, Any] = {
        "party": ctx.name,
        "role": ctx.role,
        "detail": detail,
        "reference": job.party(ctx.name).feature_set or "training file",
        "recent": info.get("feature_set") or "recent file kept by the node",
        "n_reference": int(rows.size),
        "n_recent": int(recent.n_rows),
        "groups": stability.group_summary(counts, groups),
    }
    if detail == "feature":
        report["features"] = [{**c.to_dict(), "group": groups.get(c.name)} for c in counts]
    return envelope.reply("csi", {"report": dumps(report)})


# -------------------------------------------------------------------------------------- iv


def _iv(ctx: PartyRuntime) -> list[Envelope]:
    """The bank encrypts its training labels under a key of its own for every platform."""
    job = ctx.job()
    _min_iv(job)
    rows = job_rows(ctx)
    try:
        test = ctx.store.get_array(TEST_MASK_KEY).astype(bool)
    except KeyError as exc:
        raise ProtocolError("the bank has no evaluation split: run job/split first") from exc
    train = ~test
    table = ctx.table()
    if table.label is None:
        raise DataError(f"{table.path}: the bank's table has no labels")
    y = table.label[rows][train].astype(np.int64)
    keys = bank_key_pair(ctx, int(job.crypto.get("key_bits", DEFAULT_KEY_BITS)))
    keys.save(ctx.store, prefix=_KEY)
    public = keys.public
    enc = paillier.encrypt_many_private(keys.private, [int(v) for v in y])
    platforms = [p.name for p in job.by_role("platform")]
    ctx.store.put_json(_STATE, {"pending": platforms, "counts": {}})
    payload = {
        "public_key": public.to_bytes(),
        "key": public.fingerprint,
        "train_mask": train,
        "enc_y": paillier.ciphertexts_to_array(public, enc),
    }
    return [Envelope(PROTOCOL, "iv_init", ctx.name, p, dict(payload)) for p in platforms]


def _iv_init(envelope: Envelope, ctx: PartyRuntime) -> Envelope:
    """The platform sums the bank's encrypted labels per bin of each of its own columns."""
    job = ctx.job()
    _min_iv(job)
    bank = job.label_holder().name
    if envelope.sender != bank:
        raise ProtocolError(f"screening/iv_init from '{envelope.sender}', not the bank '{bank}'")
    if ctx.grant().releases:
        raise PolicyRefusalError(
            f"party '{ctx.name}' releases its data in job '{job.name}' only with DP noise "
            "(model.dp_epsilon); IV screening would show the bank exact per-bin label counts of "
            "its columns: drop screening.min_iv from the job, or train without DP on data this "
            "platform serves exactly"
        )
    limits = ctx.guard.limits
    limits.check_bins(job.screening.bins, "screening.bins")
    key = peer_public_key(envelope.payload["public_key"], limits, "the bank's Paillier key")  # type: ignore[arg-type]
    rows = job_rows(ctx)
    train = envelope.array("train_mask").astype(bool)
    if train.size != rows.size:
        raise ProtocolError(
            f"train mask covers {train.size} rows but {ctx.name} aligned {rows.size}"
        )
    enc_y = paillier.ciphertexts_from_array(
        key, envelope.array("enc_y"), fingerprint=envelope.text("key")
    )
    if len(enc_y) != int(train.sum()):
        raise ProtocolError(f"{len(enc_y)} encrypted labels for {int(train.sum())} training rows")
    table = ctx.table()
    frame = table.features.iloc[rows[train]].reset_index(drop=True)
    specs = tuple(fit_bins(frame[c], table.feature_kinds[c], job.screening.bins) for c in frame)
    fine = transform(frame, specs).bins
    n_groups = max(s.n_bins + 1 for s in specs)
    sums = paillier.sum_groups_many(key, enc_y, fine, n_groups)
    enc_bad = [c for s, col in zip(specs, sums, strict=True) for c in col[: s.n_bins + 1]]
    # Back to the key holder: re-randomised with this node's own randomness (see hetero LR).
    enc_bad = paillier.rerandomize_own(key, enc_bad)
    totals = np.concatenate(
        [np.bincount(fine[:, j], minlength=s.n_bins + 1) for j, s in enumerate(specs)]
    ).astype(np.int64)
    features = [{"name": s.name, "kind": s.kind, "n_fine": s.n_bins + 1} for s in specs]
    return envelope.reply(
        "iv_counts",
        {
            "features": dumps(features),
            "totals": totals,
            "enc_bad": paillier.ciphertexts_to_array(key, enc_bad),
        },
    )


def _iv_counts(envelope: Envelope, ctx: PartyRuntime) -> list[Envelope]:
    """The bank decrypts a platform's bad counts; once all are in, it selects and reports."""
    state = ctx.store.get_json(_STATE)
    if envelope.sender not in state["pending"]:
        raise ProtocolError(f"screening/iv_counts from '{envelope.sender}' is not expected")
    keys = KeyPair.load(
        ctx.store, prefix=_KEY, allow_insecure_test_keys=ctx.guard.limits.allow_insecure_test_keys
    )
    features = json.loads(envelope.text("features"))
    totals = envelope.array("totals").astype(np.int64)
    sizes = [int(f["n_fine"]) for f in features]
    if totals.size != sum(sizes):
        raise ProtocolError(f"'{envelope.sender}' sent {totals.size} counts for {sum(sizes)} bins")
    enc = paillier.ciphertexts_from_array(
        keys.public, envelope.array("enc_bad"), fingerprint=keys.public.fingerprint
    )
    bad = np.asarray(paillier.decrypt_many(keys.private, enc), dtype=object)
    if len(bad) != totals.size or any(b < 0 or b > t for b, t in zip(bad, totals, strict=True)):
        raise ProtocolError(f"platform '{envelope.sender}' sent bad counts no label vector gives")
    ivs: dict[str, float] = {}
    start = 0
    for f, size in zip(features, sizes, strict=True):
        stop = start + size
        ivs[str(f["name"])] = information_value(
            str(f["name"]), envelope.sender, str(f["kind"]), totals[start:stop], bad[start:stop]
        )
        start = stop
    state["counts"][envelope.sender] = ivs
    state["pending"] = [p for p in state["pending"] if p != envelope.sender]
    ctx.store.put_json(_STATE, state)
    if state["pending"]:
        return []
    job = ctx.job()
    threshold = _min_iv(job)
    selected = {
        p: sorted(n for n, v in ivs.items() if v < threshold) for p, ivs in state["counts"].items()
    }
    for platform, drop in selected.items():
        if len(drop) == len(state["counts"][platform]):
            raise DataError(
                f"every column of platform '{platform}' has an IV below screening.min_iv="
                f"{threshold:g} (largest {max(state['counts'][platform].values()):.4f}); lower "
                "screening.min_iv or leave the platform out of the job"
            )
    own = _own_ivs(ctx, job)
    KeyPair.forget(ctx.store, prefix=_KEY)
    report = {
        "min_iv": threshold,
        "bins": job.screening.bins,
        "iv": {ctx.name: own, **state["counts"]},
        "dropped": selected,
    }
    out = [
        Envelope(PROTOCOL, "iv_select", ctx.name, p, {"drop": dumps(drop)})
        for p, drop in selected.items()
    ]
    out.append(Envelope(PROTOCOL, "iv", ctx.name, COORDINATOR, {"report": dumps(report)}))
    return out


def _iv_select(envelope: Envelope, ctx: PartyRuntime) -> Envelope:
    bank = ctx.job().label_holder().name
    if envelope.sender != bank:
        raise ProtocolError(f"screening/iv_select from '{envelope.sender}', not the bank '{bank}'")
    drop = [str(n) for n in envelope.json("drop")]
    ctx.drop_features(drop)
    return Envelope(
        PROTOCOL, "iv_selected", ctx.name, COORDINATOR, {"party": ctx.name, "n_dropped": len(drop)}
    )


def information_value(
    name: str, party: str, kind: str, total: npt.ArrayLike, bad: npt.ArrayLike
) -> float:
    """A column's IV from its fine-bin counts (hetero LR's WOE table, default merging)."""
    if kind not in ("numeric", "categorical"):
        raise ProtocolError(f"column '{name}' has unknown kind {kind!r}")
    table = WoeTable.fit(
        name,
        party,
        "numeric" if kind == "numeric" else "categorical",
        np.asarray(total, dtype=np.int64),
        np.asarray([int(b) for b in np.asarray(bad).ravel()], dtype=np.int64),
    )
    return float(table.iv)


def _own_ivs(ctx: PartyRuntime, job: JobSpec) -> dict[str, float]:
    """The bank's IV of its own columns on the training rows (for the report)."""
    rows = job_rows(ctx)
    train = ~ctx.store.get_array(TEST_MASK_KEY).astype(bool)
    table = ctx.table()
    if table.label is None:
        raise DataError(f"{table.path}: the bank's table has no labels")
    y = table.label[rows][train].astype(np.int64)
    frame = table.features.iloc[rows[train]].reset_index(drop=True)
    out = {}
    for c in frame.columns:
        spec = fit_bins(frame[c], table.feature_kinds[c], job.screening.bins)
        total, bad = count_bins(spec.transform(frame[c]), y, spec.n_bins + 1)
        out[str(c)] = information_value(str(c), ctx.name, spec.kind, total, bad)
    return out


def _min_iv(job: JobSpec) -> float:
    if job.screening.min_iv is None:
        raise ProtocolError(f"job '{job.name}' does not screen by IV (screening.min_iv unset)")
    return float(job.screening.min_iv)


# ----------------------------------------------------------------------------- coordinator


def run_screening(spec: JobSpec, transport: Transport) -> dict[str, Any]:
    """Run the job's screening and return what the coordinator learned (aggregates only).

    Returns
    -------
    dict
        ``csi``: each party's stability report; ``iv``: every column's IV, the threshold and
        each platform's dropped columns (or ``None`` without ``screening.min_iv``);
        ``thresholds``: :data:`features.stability.PSI_THRESHOLDS`.
    """
    out: dict[str, Any] = {
        "bins": spec.screening.bins,
        "thresholds": {label: bound for bound, label in stability.PSI_THRESHOLDS},
        "csi": {},
        "iv": None,
    }
    if spec.screening.recent:
        requests = [Envelope(PROTOCOL, "csi", COORDINATOR, name) for name in spec.screening.recent]
        for env in run_protocol(transport, requests):
            out["csi"][env.sender] = env.json("report")
    if spec.screening.min_iv is not None:
        bank = spec.label_holder().name
        replies = run_protocol(transport, [Envelope(PROTOCOL, "iv", COORDINATOR, bank)])
        iv = next(env.json("report") for env in replies if env.stage == "iv")
        iv["n_dropped"] = {
            env.sender: env.integer("n_dropped") for env in replies if env.stage == "iv_selected"
        }
        out["iv"] = iv
    return out
