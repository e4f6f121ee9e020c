"""A bank's side of secure aggregation in a horizontal round (:mod:`secure_agg.secagg`).

Stages ``setup``, ``share_keys`` and ``unmask`` arrive as lab envelopes (protocol ``secagg``);
the masked-vector stage rides on the round's Flower ``train`` message
(:func:`masked_update`). Between messages the client's state, key material included, stays in
the node's own store (:meth:`secure_agg.secagg.SecAggClient.export_state`) and is dropped when
the round ends.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from models.protocol import Envelope, PartyContext, PayloadValue, ProtocolError
from secure_agg.secagg import (
    SecAggClient,
    SecAggConfig,
    SecAggError,
    decode_message,
    encode_message,
)

PROTOCOL = "secagg"
_STATE = "secagg.client"
_KIND = "kind"


def to_payload(message: Any) -> dict[str, PayloadValue]:
    """A SecAgg message as an envelope payload (bytes, ints, arrays; no pickle)."""
    return dict(encode_message(message))


#: Payload keys the coordinator adds beside a SecAgg message (not part of the message).
ROUTING_KEYS = ("client_id", "weight", "server_round")


def from_payload(envelope: Envelope) -> Any:
    """The SecAgg message carried by an envelope."""
    record = {k: v for k, v in envelope.payload.items() if k not in ROUTING_KEYS}
    try:
        return decode_message(record)
    except SecAggError as exc:
        raise ProtocolError(f"secagg/{envelope.stage} from '{envelope.sender}': {exc}") from exc


def _load(ctx: PartyContext) -> SecAggClient:
    state = ctx.store.get_json(_STATE)
    if state is None:
        raise ProtocolError(f"bank '{ctx.name}' has no secure-aggregation round under way")
    return SecAggClient.restore(state)


def _save(ctx: PartyContext, client: SecAggClient) -> None:
    ctx.store.put_json(_STATE, client.export_state())


class SecAggParty:
    """Bank side of the ``secagg`` envelopes (setup, share_keys, unmask)."""

    name = PROTOCOL

    def handle(self, envelope: Envelope, ctx: PartyContext) -> list[Envelope]:
        """Run one stage; SecAgg's own state machine checks the order."""
        try:
            if envelope.stage == "setup":
                raw = envelope.payload.get("config")
                if not isinstance(raw, bytes):
                    raise ProtocolError("secagg/setup carries no configuration")
                config = SecAggConfig.from_bytes(raw)
                check_config(config, ctx)
                client = SecAggClient(envelope.integer("client_id"), config)
                keys = client.setup(from_payload(envelope))
                _save(ctx, client)
                return [envelope.reply("setup", to_payload(keys))]
            client = _load(ctx)
            if envelope.stage == "share_keys":
                shares = client.share_keys(from_payload(envelope))
                _save(ctx, client)
                return [envelope.reply("share_keys", to_payload(shares))]
            if envelope.stage == "unmask":
                unmask = client.unmask(from_payload(envelope))
                ctx.store.delete(_STATE)  # the round is over for this client: drop its keys
                return [envelope.reply("unmask", to_payload(unmask))]
        except SecAggError as exc:
            raise ProtocolError(f"secagg/{envelope.stage}: {exc}") from exc
        raise ProtocolError(f"unknown secagg stage '{envelope.stage}'")


def check_config(config: SecAggConfig, ctx: PartyContext) -> None:
    """Refuse a round weaker than the job the bank agreed to.

    The coordinator chooses the round's id, clients and vector length; the threshold,
    neighbour graph and fixed-point encoding must be what the job spec (which every bank
    checked when it joined) says, so a coordinator cannot lower the threshold on its own.
    """
    from federated.party import PartyRuntime

    if not isinstance(ctx, PartyRuntime):
        return
    job = ctx.job()
    agreed = dict(job.secure_aggregation)
    if not agreed.get("enabled"):
        raise ProtocolError(f"job '{job.name}' did not agree to secure aggregation")
    n_banks = len(job.by_role("bank"))
    expected = {
        "threshold": survivors_required(
            n_banks, agreed.get("min_survivors"), agreed.get("neighbours")
        ),
        "neighbours": agreed.get("neighbours"),
        "clipping_range": float(agreed.get("clipping_range", 8.0)),
        "quantization_bits": int(agreed.get("quantization_bits", 24)),
    }
    got = {
        "threshold": config.threshold,
        "neighbours": config.neighbours,
        "clipping_range": config.clipping_range,
        "quantization_bits": config.quantization_bits,
    }
    required = int(expected["threshold"] or 0)
    if config.threshold < required:
        raise ProtocolError(
            f"secure-aggregation threshold {config.threshold} is below the job's "
            f"{required}; refusing the round"
        )
    for key in ("neighbours", "clipping_range", "quantization_bits"):
        if got[key] != expected[key]:
            raise ProtocolError(
                f"secure-aggregation {key}={got[key]} differs from the job's {expected[key]}"
            )
    if len(config.client_ids) > n_banks:
        raise ProtocolError(
            f"the round has {len(config.client_ids)} clients but the job has {n_banks} banks"
        )


def survivors_required(
    n_banks: int, min_survivors: int | None, neighbours: int | None = None
) -> int:
    """The SecAgg threshold ``t``: banks of each neighbourhood that must survive a round.

    Default: two thirds of the neighbourhood (all banks unless SecAgg+ ``neighbours`` is set),
    rounded up, at least 2; ``t - 1`` banks colluding with the coordinator learn nothing.
    """
    if min_survivors is not None:
        return int(min_survivors)
    size = n_banks if neighbours is None or neighbours >= n_banks - 1 else neighbours + 1
    return max(2, -(-2 * size // 3))


def masked_update(
    ctx: PartyContext, request: Envelope, vector: npt.NDArray[np.float64]
) -> Envelope:
    """Mask this round's update with the client's pads; the coordinator sees only this."""
    client = _load(ctx)
    try:
        reply = client.collect_masked_vectors(from_payload(request), vector)
    except SecAggError as exc:
        raise ProtocolError(f"secagg/masked: {exc}") from exc
    _save(ctx, client)
    return Envelope(PROTOCOL, "masked", ctx.name, request.sender, to_payload(reply))
