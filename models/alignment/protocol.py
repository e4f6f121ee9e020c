"""The ``psi`` protocol: align enterprises between the bank and the platforms, obliviously.

ECDH-PSI (see :mod:`secure_agg.psi`) with the coordinator relaying only blinded points. The bank
(the active party, one) and each platform (passive parties, one or more):

Stages
------
``start`` (coordinator -> every party)
    Each party hashes its own ids to the group, blinds them with a fresh secret scalar, shuffles
    them with a CSPRNG permutation and sends them to its peer(s) (``blinded``), with an ephemeral
    public key for the final consistency check.
``blinded`` (bank -> each platform, each platform -> bank)
    A platform blinds the bank's points again and returns them, truncated for comparison, in the
    bank's order (``double``). The bank blinds the platform's points again and keeps them,
    truncated the same way.
``double`` (each platform -> bank)
    Once every platform has answered, the bank compares: its ids whose doubly-blinded values
    occur among every platform's are the intersection. It checks the intersection is large
    enough, then, depending on ``reveal``, tells each platform which of its shuffled positions
    are aligned (``both``), only how many there are (``size``), or nothing (``bank``), in a
    ``result`` message. It reports ``done`` to the coordinator.
``result`` (bank -> each platform)
    A platform maps positions back to its rows (``both``) and reports ``done``.

Both parties order aligned ids canonically (:func:`models.alignment.core.aligned_rows`), so
their rows line up; each sends the coordinator an HMAC of the ordered ids under a key agreed
with its peer (X25519), and the coordinator checks they agree.

What each party learns
----------------------
=============  ===================================================================
bank           |platform set| of each platform; the intersection (its own ids
               that every platform also knows). Nothing about other platform ids.
platform       |bank set|; with ``reveal: both`` the intersection, with ``size`` its
               size, with ``bank`` nothing more.
coordinator    set sizes, the intersection size, blinded points it cannot link to
               ids (it lacks every scalar), HMACs it cannot test, traffic figures.
=============  ===================================================================

A platform's table here is what its node serves the job's bank (authorised enterprises of a
published set), so "the intersection" is with that set. The platform refuses reveal modes its
policy does not allow, refuses (before blinding any of the bank's points) a bank set larger than
``psi_max_bank_ratio`` times its served set, and reports probing alerts and the alignment's
sizes to its own audit log (:mod:`models.guard`).

Nobody receives a plaintext id or an unkeyed hash of an id. Doubly-blinded values are truncated
to the shortest length that keeps the chance of any false match below 2^-40. Vertical training
needs the platform to know its aligned rows, so jobs that train use ``reveal: both``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from features.errors import DataError
from features.io import PartyTable
from models.alignment.core import aligned_rows, alignment_digest
from models.guard import PolicyRefusalError
from models.protocol import (
    COORDINATOR,
    Envelope,
    PartyContext,
    PayloadValue,
    ProtocolError,
    StageMachine,
    dumps,
)
from secure_agg import psi

PROTOCOL = "psi"

Reveal = Literal["both", "bank", "size"]
REVEAL_MODES: tuple[Reveal, ...] = get_args(Reveal)

#: Store key holding the aligned rows of a party's table, in the agreed order. Every protocol
#: that follows alignment reads it.
ALIGNED_ROWS_KEY = "align.rows"


def job_rows(ctx: PartyContext) -> npt.NDArray[np.intp]:
    """This party's aligned rows, in the agreed order (what a training protocol works on).

    Raises
    ------
    ProtocolError
        If the job has not aligned yet.
    """
    try:
        return ctx.store.get_array(ALIGNED_ROWS_KEY).astype(np.intp)
    except KeyError as exc:
        raise ProtocolError(
            f"party '{ctx.name}' has no aligned rows: align before training"
        ) from exc


_BANK = StageMachine(
    PROTOCOL,
    {
        "start": {StageMachine.START},
        "blinded": {"start", "blinded"},
        "double": {"blinded", "double"},
    },
)
_PLATFORM = StageMachine(
    PROTOCOL,
    {"start": {StageMachine.START}, "blinded": {"start"}, "result": {"blinded"}},
)

_SETTINGS = "psi.settings"
_KEY = "psi.key"
_AGREE = "psi.agree"
_PERM = "psi.perm"


def _as_bytes(array: npt.NDArray[np.uint8]) -> bytes:
    return np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _as_array(raw: bytes) -> npt.NDArray[np.uint8]:
    return np.frombuffer(raw, dtype=np.uint8).copy()


def _domain(job_id: str) -> bytes:
    return psi.HASH_DOMAIN + b"/" + job_id.encode()


def _check_key(shared: bytes) -> bytes:
    return hashlib.sha256(b"lab/psi/alignment-check/v1" + shared).digest()


class PSIParty:
    """Party side of the ``psi`` protocol (the role decides which state machine applies)."""

    name = PROTOCOL

    def handle(self, envelope: Envelope, ctx: PartyContext) -> list[Envelope]:
        """Run one stage for this party."""
        machine = _BANK if ctx.role == "bank" else _PLATFORM
        machine.advance(ctx.store, envelope)
        if envelope.stage == "start":
            return self._start(envelope, ctx)
        if ctx.role == "bank":
            if envelope.stage == "blinded":
                return self._bank_blinded(envelope, ctx)
            return self._bank_double(envelope, ctx)
        if envelope.stage == "blinded":
            return self._platform_blinded(envelope, ctx)
        return self._platform_result(envelope, ctx)

    # -- both roles -------------------------------------------------------------------------

    def _start(self, envelope: Envelope, ctx: PartyContext) -> list[Envelope]:
        settings = envelope.json("settings")
        peers: list[str] = settings["peers"]
        if envelope.sender != COORDINATOR:
            raise ProtocolError(
                f"psi/start must come from the coordinator, not '{envelope.sender}'"
            )
        if settings["reveal"] not in REVEAL_MODES:
            raise ProtocolError(f"unknown reveal mode {settings['reveal']!r}")
        if ctx.role == "platform" and len(peers) != 1:
            raise ProtocolError("a platform aligns with exactly one bank")
        if ctx.role == "platform":
            ctx.guard.limits.check_reveal(str(settings["reveal"]))
        table = ctx.table()
        key = psi.BlindingKey.generate()
        agree = psi.BlindingKey.generate()
        perm = psi.permutation(table.n_rows)
        blinded = psi.hash_and_blind(
            psi.encode_ids(table.ids[perm].tolist()), key, _domain(settings["job_id"])
        )
        ctx.store.put_json(_SETTINGS, {**settings, "pending": peers, "n_own": table.n_rows})
        ctx.store.put_array(_KEY, _as_array(key.secret_bytes()))
        ctx.store.put_array(_AGREE, _as_array(agree.secret_bytes()))
        ctx.store.put_array(_PERM, perm.astype(np.int64))
        return [
            Envelope(
                PROTOCOL,
                "blinded",
                ctx.name,
                peer,
                {"points": blinded, "agree": agree.public_bytes()},
            )
            for peer in peers
        ]

    # -- platform ---------------------------------------------------------------------------

    def _platform_blinded(self, envelope: Envelope, ctx: PartyContext) -> list[Envelope]:
        settings = ctx.store.get_json(_SETTINGS)
        bank = settings["peers"][0]
        if envelope.sender != bank:
            raise ProtocolError(f"psi/blinded from '{envelope.sender}', expected bank '{bank}'")
        theirs = _points(envelope)
        _check_probe(ctx, len(theirs), int(settings["n_own"]), str(settings["reveal"]))
        ctx.store.put_json(_SETTINGS, {**settings, "n_bank": len(theirs)})
        key = psi.BlindingKey.from_secret_bytes(_as_bytes(ctx.store.get_array(_KEY)))
        width = psi.comparison_bytes(len(theirs), settings["n_own"])
        double = psi.truncate(psi.blind(theirs, key), width)
        ctx.store.put_array(f"psi.peer_agree.{bank}", _as_array(_agree_bytes(envelope)))
        ctx.store.delete(_KEY)  # the scalar is not needed again: forget it
        return [envelope.reply("double", {"values": double})]

    def _platform_result(self, envelope: Envelope, ctx: PartyContext) -> list[Envelope]:
        settings = ctx.store.get_json(_SETTINGS)
        reveal: Reveal = settings["reveal"]
        table = ctx.table()
        payload: dict[str, PayloadValue] = {"role": "platform", "n_own": table.n_rows}
        if reveal == "both":
            positions = envelope.array("positions").astype(np.int64)
            perm = ctx.store.get_array(_PERM)
            if positions.size and (positions.min() < 0 or positions.max() >= perm.size):
                raise ProtocolError("psi/result holds positions outside this party's set")
            if np.unique(positions).size != positions.size:
                raise ProtocolError("psi/result repeats a position")
            member = np.zeros(table.n_rows, dtype=bool)
            member[perm[positions]] = True
            rows = aligned_rows(table.ids, member)
            ctx.store.put_array(ALIGNED_ROWS_KEY, rows)
            payload["n_aligned"] = int(rows.size)
            payload["check"] = alignment_digest(
                _check_key(self._agree(ctx, settings["peers"][0])), table.ids[rows]
            )
        elif reveal == "size":
            payload["n_aligned"] = envelope.integer("n_aligned")
        n_aligned = payload.get("n_aligned")
        _check_hits(
            ctx, int(settings["n_bank"]), int(n_aligned) if isinstance(n_aligned, int) else None
        )
        ctx.guard.notify(
            "alignment",
            {"n_bank": int(settings["n_bank"]), "n_aligned": n_aligned, "reveal": reveal},
        )
        _cleanup(ctx)
        return [Envelope(PROTOCOL, "done", ctx.name, COORDINATOR, payload)]

    # -- bank -------------------------------------------------------------------------------

    def _bank_blinded(self, envelope: Envelope, ctx: PartyContext) -> list[Envelope]:
        settings = ctx.store.get_json(_SETTINGS)
        peer = envelope.sender
        if peer not in settings["peers"]:
            raise ProtocolError(f"psi/blinded from '{peer}', which is not a peer of this bank")
        theirs = _points(envelope)
        key = psi.BlindingKey.from_secret_bytes(_as_bytes(ctx.store.get_array(_KEY)))
        width = psi.comparison_bytes(settings["n_own"], len(theirs))
        ctx.store.put_array(f"psi.peer_double.{peer}", psi.truncate(psi.blind(theirs, key), width))
        ctx.store.put_array(f"psi.peer_agree.{peer}", _as_array(_agree_bytes(envelope)))
        return [Envelope(PROTOCOL, "blinded_ok", ctx.name, COORDINATOR, {"peer": peer})]

    def _bank_double(self, envelope: Envelope, ctx: PartyContext) -> list[Envelope]:
        settings = ctx.store.get_json(_SETTINGS)
        peer = envelope.sender
        pending: list[str] = settings["pending"]
        if peer not in pending:
            raise ProtocolError(f"psi/double from '{peer}', which is not awaited")
        values = envelope.array("values")
        if values.dtype != np.uint8 or values.ndim != 2 or len(values) != settings["n_own"]:
            raise ProtocolError(f"psi/double from '{peer}' has the wrong shape")
        ctx.store.put_array(f"psi.own_double.{peer}", values)
        pending = [p for p in pending if p != peer]
        ctx.store.put_json(_SETTINGS, {**settings, "pending": pending})
        if pending:
            return [Envelope(PROTOCOL, "double_ok", ctx.name, COORDINATOR, {"peer": peer})]
        return self._bank_intersect(ctx, settings)

    def _bank_intersect(self, ctx: PartyContext, settings: dict[str, Any]) -> list[Envelope]:
        table = ctx.table()
        peers = [str(p) for p in settings["peers"]]
        perm = ctx.store.get_array(_PERM)
        own_double = {p: ctx.store.get_array(f"psi.own_double.{p}") for p in peers}
        peer_double = {p: ctx.store.get_array(f"psi.peer_double.{p}") for p in peers}
        member_shuffled = np.ones(table.n_rows, dtype=bool)
        for p in peers:
            member_shuffled &= psi.match(own_double[p], peer_double[p])
        n_aligned = int(member_shuffled.sum())
        minimum = int(settings["min_intersection"])
        _check_size(table, n_aligned, minimum, peers)
        member = np.zeros(table.n_rows, dtype=bool)
        member[perm[member_shuffled]] = True
        rows = aligned_rows(table.ids, member)
        ctx.store.put_array(ALIGNED_ROWS_KEY, rows)
        reveal = settings["reveal"]
        out: list[Envelope] = []
        checks: dict[str, str] = {}
        for p in peers:
            payload: dict[str, PayloadValue] = {}
            if reveal == "both":
                aligned_values = own_double[p][member_shuffled]
                positions = np.flatnonzero(psi.match(peer_double[p], aligned_values))
                payload["positions"] = positions.astype(np.uint32)
                checks[p] = alignment_digest(_check_key(self._agree(ctx, p)), table.ids[rows])
            elif reveal == "size":
                payload["n_aligned"] = n_aligned
            out.append(Envelope(PROTOCOL, "result", ctx.name, p, payload))
        report: dict[str, PayloadValue] = {
            "role": "bank",
            "n_own": table.n_rows,
            "n_aligned": n_aligned,
            "peer_sizes": dumps({p: len(peer_double[p]) for p in peers}),
            "checks": dumps(checks),
        }
        out.append(Envelope(PROTOCOL, "done", ctx.name, COORDINATOR, report))
        _cleanup(ctx, peers)
        return out

    @staticmethod
    def _agree(ctx: PartyContext, peer: str) -> bytes:
        own = psi.BlindingKey.from_secret_bytes(_as_bytes(ctx.store.get_array(_AGREE)))
        return own.agree(_as_bytes(ctx.store.get_array(f"psi.peer_agree.{peer}")))


def _check_probe(ctx: PartyContext, n_bank: int, n_served: int, reveal: str) -> None:
    """Refuse (or flag) a bank set far larger than the set this platform serves the bank.

    Checked before the platform blinds anything of the bank's: a refused probe learns nothing.
    """
    limits = ctx.guard.limits
    ratio = n_bank / max(1, n_served)
    facts = {"n_bank": n_bank, "n_served": n_served, "ratio": round(ratio, 3), "reveal": reveal}
    if ratio > limits.psi_max_bank_ratio:
        ctx.guard.notify(
            "psi_probe_suspected",
            {**facts, "refused": True, "rule": f"psi.max_bank_ratio={limits.psi_max_bank_ratio}"},
        )
        raise PolicyRefusalError(
            f"the bank aligns {n_bank} ids against the {n_served} enterprises this platform "
            f"serves it (ratio {ratio:.1f}), above this node's policy psi.max_bank_ratio="
            f"{limits.psi_max_bank_ratio}: a candidate list that large probes the platform's "
            "membership; align the bank's own applicants only"
        )
    if ratio > limits.psi_alert_bank_ratio:
        ctx.guard.notify(
            "psi_probe_suspected",
            {
                **facts,
                "refused": False,
                "rule": f"psi.alert_bank_ratio={limits.psi_alert_bank_ratio}",
            },
        )


def _check_hits(ctx: PartyContext, n_bank: int, n_aligned: int | None) -> None:
    """Flag an alignment in which most of the bank's ids are not served (a membership probe)."""
    limits = ctx.guard.limits
    if n_aligned is None or n_bank == 0:
        return
    rate = n_aligned / n_bank
    if rate < limits.psi_alert_hit_rate:
        ctx.guard.notify(
            "psi_probe_suspected",
            {
                "n_bank": n_bank,
                "n_aligned": n_aligned,
                "hit_rate": round(rate, 4),
                "refused": False,
                "rule": f"psi.alert_min_hit_rate={limits.psi_alert_hit_rate}",
            },
        )


def _points(envelope: Envelope) -> psi.Points:
    points = envelope.array("points")
    if points.dtype != np.uint8 or points.ndim != 2 or points.shape[1] != psi.POINT_BYTES:
        raise ProtocolError(f"psi/blinded from '{envelope.sender}' is not an (n, 32) byte array")
    return points


def _agree_bytes(envelope: Envelope) -> bytes:
    raw = envelope.payload.get("agree")
    if not isinstance(raw, bytes) or len(raw) != psi.POINT_BYTES:
        raise ProtocolError(f"psi/blinded from '{envelope.sender}' lacks a 32-byte 'agree' key")
    return raw


def _check_size(table: PartyTable, n_aligned: int, minimum: int, peers: list[str]) -> None:
    who = ", ".join(peers)
    if n_aligned == 0:
        raise DataError(
            f"{table.path}: no enterprise is known to both this bank and {who}; check that "
            "every party uses the same id column and alignment.id_scheme"
        )
    if n_aligned < minimum:
        raise DataError(
            f"{table.path}: only {n_aligned} enterprises are known to both this bank and {who}, "
            f"below alignment.min_intersection={minimum}; a model on so few rows would be "
            "unreliable and would expose them"
        )


def _cleanup(ctx: PartyContext, peers: list[str] | None = None) -> None:
    for key in (_KEY, _AGREE, _PERM):
        ctx.store.delete(key)
    for peer in peers or []:
        for prefix in ("psi.own_double.", "psi.peer_double.", "psi.peer_agree."):
            ctx.store.delete(prefix + peer)


# -- coordinator ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlignmentSettings:
    """What the coordinator asks for: who learns the intersection, and its minimum size."""

    reveal: Reveal = "both"
    min_intersection: int = 100


@dataclass(frozen=True)
class AlignmentOutcome:
    """What the coordinator learned from an alignment: sizes, never ids."""

    reveal: Reveal
    n_bank: int
    n_platform: dict[str, int]
    n_aligned: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "reveal": self.reveal,
            "n_bank": self.n_bank,
            "n_platform": dict(self.n_platform),
            "n_aligned": self.n_aligned,
        }


def start_envelopes(
    job_id: str, bank: str, platforms: list[str], settings: AlignmentSettings
) -> list[Envelope]:
    """The coordinator's first hop: ``start`` to the bank and to every platform."""
    if settings.reveal not in REVEAL_MODES:
        raise ProtocolError(f"unknown reveal mode {settings.reveal!r}")
    common = {
        "job_id": job_id,
        "reveal": settings.reveal,
        "min_intersection": settings.min_intersection,
    }
    out = [
        Envelope(
            PROTOCOL,
            "start",
            COORDINATOR,
            bank,
            {"settings": dumps({**common, "peers": platforms})},
        )
    ]
    out += [
        Envelope(
            PROTOCOL, "start", COORDINATOR, p, {"settings": dumps({**common, "peers": [bank]})}
        )
        for p in platforms
    ]
    return out


def conclude(replies: list[Envelope], bank: str, settings: AlignmentSettings) -> AlignmentOutcome:
    """Check the parties' ``done`` reports agree and summarise them.

    Raises
    ------
    ProtocolError
        If a party did not report, or the parties' digests of the aligned ids differ.
    """
    done = {env.sender: env for env in replies if env.stage == "done"}
    if bank not in done:
        raise ProtocolError("the bank did not finish the alignment")
    report = done[bank]
    peer_sizes: dict[str, int] = report.json("peer_sizes")
    checks: dict[str, str] = report.json("checks")
    n_aligned = report.integer("n_aligned")
    for platform in peer_sizes:
        if platform not in done:
            raise ProtocolError(f"platform '{platform}' did not finish the alignment")
        theirs = done[platform]
        if settings.reveal in ("both", "size") and theirs.integer("n_aligned") != n_aligned:
            raise ProtocolError(f"bank and '{platform}' disagree on the intersection size")
        if settings.reveal == "both" and theirs.text("check") != checks.get(platform):
            raise ProtocolError(
                f"bank and '{platform}' hold different aligned ids or orders; rows would not "
                "line up"
            )
    return AlignmentOutcome(
        reveal=settings.reveal,
        n_bank=report.integer("n_own"),
        n_platform={p: int(n) for p, n in peer_sizes.items()},
        n_aligned=n_aligned,
    )
