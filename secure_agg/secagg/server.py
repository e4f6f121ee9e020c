"""The coordinator's side of SecAgg/SecAgg+: :class:`SecAggServer`, one state machine per round.

Each stage method checks the clients' replies, advances the server's state and returns the next
messages by recipient; only the running sum of the masked vectors is kept.
:mod:`secure_agg.secagg.protocol` describes the stages and what each party learns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import NoReturn, TypeVar

import numpy as np
import numpy.typing as npt

from secure_agg.secagg import _wire, channel, fixedpoint, graph, prg, shamir
from secure_agg.secagg.channel import KeyPair
from secure_agg.secagg.config import SecAggConfig
from secure_agg.secagg.errors import (
    BadShareError,
    MessageError,
    SecAggConfigError,
    StageError,
    TooManyDropoutsError,
)
from secure_agg.secagg.messages import (
    EncryptedSharesMessage,
    MaskedVectorMessage,
    MaskedVectorRequest,
    PublicKeysMessage,
    SetupMessage,
    ShareKeysRequest,
    Stage,
    UnmaskRequest,
    UnmaskSharesMessage,
)
from secure_agg.secagg.shamir import Share

logger = logging.getLogger(__name__)

_ClientT = TypeVar(
    "_ClientT",
    PublicKeysMessage,
    EncryptedSharesMessage,
    MaskedVectorMessage,
    UnmaskSharesMessage,
)
Floats = npt.NDArray[np.float64]
Words = npt.NDArray[np.uint64]


def _ids(values: Iterable[int]) -> npt.NDArray[np.int64]:
    return np.array(sorted(values), dtype=np.int64)


class SecAggServer:
    """The coordinator's side of a round: relays, checks dropouts, unmasks only the sum.

    Parameters
    ----------
    config : SecAggConfig
        The round's configuration, sent to the clients in :meth:`setup`.

    Notes
    -----
    Call :meth:`setup`, then :meth:`share_keys`, :meth:`collect_masked_vectors`, :meth:`unmask`
    and :meth:`finish`, each with the replies received to the previous stage's messages (a client
    that did not reply has dropped); then :meth:`result`. Each stage method returns the next
    messages, keyed by recipient. Only the running sum of the masked vectors is kept.
    """

    def __init__(self, config: SecAggConfig) -> None:
        if not isinstance(config, SecAggConfig):
            raise SecAggConfigError(f"config must be a SecAggConfig, got {type(config).__name__}")
        self.config = config
        self._participants = frozenset(config.client_ids)
        self._points = {cid: i + 1 for i, cid in enumerate(config.client_ids)}
        self._stage = Stage.NEW
        self._graph: dict[int, frozenset[int]] = {}
        self._public_keys: dict[int, tuple[bytes, bytes]] = {}
        self._advertised: frozenset[int] = frozenset()
        self._shared: frozenset[int] = frozenset()
        self._survivors: frozenset[int] = frozenset()
        self._requested: dict[int, tuple[frozenset[int], frozenset[int]]] = {}
        self._masked_sum: Words | None = None
        self._result: Floats | None = None
        self._abort_reason = ""
        self._dropped: dict[str, frozenset[int]] = {}

    @property
    def stage(self) -> str:
        """The stage whose client replies this server is collecting (or new/done/aborted)."""
        return self._stage

    @property
    def neighbourhoods(self) -> dict[int, frozenset[int]]:
        """The neighbour graph chosen at setup (each neighbourhood includes its client)."""
        return dict(self._graph)

    @property
    def dropped(self) -> dict[str, frozenset[int]]:
        """Clients that did not reply, by the stage they failed to reply to."""
        return dict(self._dropped)

    @property
    def summed_clients(self) -> frozenset[int]:
        """The survivors: the clients whose vectors are in the sum (after ``unmask`` starts)."""
        return self._survivors

    # -------------------------------------------------------------- stages

    def setup(self) -> SetupMessage:
        """Choose the neighbour graph and return the setup message for every client."""
        if self._stage != Stage.NEW:
            raise StageError(f"setup runs once, on a new server; this one is at {self._stage!r}")
        config = self.config
        sparse = config.neighbours is not None and config.neighbours < config.n_clients - 1
        ring = graph.random_ring(config.client_ids) if sparse else config.client_ids
        self._graph = graph.neighbourhoods(ring, config.neighbours)
        self._stage = Stage.SETUP
        logger.info(
            "round %d: secure aggregation of %d clients, threshold %d, neighbourhoods of %d",
            config.round_id,
            config.n_clients,
            config.threshold,
            config.neighbourhood_size,
        )
        return SetupMessage(
            round_id=config.round_id,
            config=config.to_bytes(),
            ring=np.array(ring, dtype=np.int64),
        )

    def share_keys(self, replies: Iterable[PublicKeysMessage]) -> dict[int, ShareKeysRequest]:
        """Collect public keys; send each client its live neighbours' keys.

        Raises
        ------
        StageError
            Wrong stage, round or sender, or a repeated reply (state unchanged).
        MessageError
            If two clients advertise the same public key (state unchanged).
        TooManyDropoutsError
            If a neighbourhood has fewer than ``threshold`` clients with keys (aborts).
        """
        got = self._accept(replies, PublicKeysMessage, Stage.SETUP, self._participants)
        keys = {cid: (m.encryption_key, m.mask_key) for cid, m in got.items()}
        flat = [key for pair in keys.values() for key in pair]
        if len(set(flat)) != len(flat):
            raise MessageError("two advertised public keys are equal; the clients must regenerate")
        advertised = frozenset(got)
        self._check_live(Stage.SETUP, advertised, advertised)
        self._public_keys = keys
        self._advertised = advertised
        self._dropped[Stage.SETUP] = self._participants - advertised
        self._stage = Stage.SHARE_KEYS
        requests = {}
        for cid in sorted(advertised):
            members = sorted(self._graph[cid] & advertised)
            requests[cid] = ShareKeysRequest(
                round_id=self.config.round_id,
                recipient=cid,
                client_ids=np.array(members, dtype=np.int64),
                encryption_keys=_wire.stack([keys[m][0] for m in members], channel.KEY_BYTES),
                mask_keys=_wire.stack([keys[m][1] for m in members], channel.KEY_BYTES),
            )
        self._log_stage(Stage.SETUP, advertised)
        return requests

    def collect_masked_vectors(
        self, replies: Iterable[EncryptedSharesMessage]
    ) -> dict[int, MaskedVectorRequest]:
        """Collect encrypted shares; relay to each client those addressed to it.

        Raises
        ------
        StageError
            Wrong stage, round or sender, or a repeated reply (state unchanged).
        MessageError
            If a client did not encrypt for exactly its neighbours with keys (state unchanged).
        TooManyDropoutsError
            If a neighbourhood has fewer than ``threshold`` clients that shared keys (aborts).
        """
        got = self._accept(replies, EncryptedSharesMessage, Stage.SHARE_KEYS, self._advertised)
        for cid, reply in got.items():
            recipients = _wire.id_list(reply.recipient_ids, f"client {cid}'s encrypted shares")
            if set(recipients) != (self._graph[cid] & self._advertised) - {cid}:
                raise MessageError(
                    f"client {cid} must encrypt shares for exactly its neighbours with keys"
                )
        shared = frozenset(got)
        self._check_live(Stage.SHARE_KEYS, shared, shared)
        relay: dict[int, list[tuple[int, bytes]]] = {cid: [] for cid in shared}
        for cid in sorted(shared):
            reply = got[cid]
            for i, recipient in enumerate(int(r) for r in reply.recipient_ids):
                if recipient in shared:
                    relay[recipient].append((cid, reply.ciphertexts[i].tobytes()))
        self._shared = shared
        self._dropped[Stage.SHARE_KEYS] = self._advertised - shared
        self._stage = Stage.COLLECT_MASKED_VECTORS
        self._log_stage(Stage.SHARE_KEYS, shared)
        return {
            cid: MaskedVectorRequest(
                round_id=self.config.round_id,
                recipient=cid,
                sender_ids=np.array([sender for sender, _ in relay[cid]], dtype=np.int64),
                ciphertexts=_wire.stack([row for _, row in relay[cid]], channel.CIPHERTEXT_BYTES),
            )
            for cid in sorted(shared)
        }

    def unmask(self, replies: Iterable[MaskedVectorMessage]) -> dict[int, UnmaskRequest]:
        """Sum the masked vectors; ask each survivor for the shares that remove the masks.

        Raises
        ------
        StageError
            Wrong stage, round or sender, or a repeated reply (state unchanged).
        MessageError
            On a vector of the wrong length, dtype or range (state unchanged).
        TooManyDropoutsError
            If some client's neighbourhood has fewer than ``threshold`` survivors, or the
            survivors are split in the neighbour graph (aborts; nothing is unmasked).
        """
        got = self._accept(replies, MaskedVectorMessage, Stage.COLLECT_MASKED_VECTORS, self._shared)
        config = self.config
        for cid, reply in got.items():
            vector = reply.masked_vector
            if vector.shape != (config.vector_length,) or vector.dtype != config.word_dtype:
                raise MessageError(
                    f"client {cid}'s masked vector is {vector.dtype}{list(vector.shape)}, "
                    f"expected {np.dtype(config.word_dtype)}[{config.vector_length}]"
                )
            if config.modulus_bits < 64 and int(vector.max()) >> config.modulus_bits:
                raise MessageError(f"client {cid}'s masked vector exceeds 2^{config.modulus_bits}")
        survivors = frozenset(got)
        self._check_live(Stage.COLLECT_MASKED_VECTORS, self._shared, survivors)
        groups = graph.components(survivors, self._graph)
        if len(groups) > 1:
            self._fail(
                TooManyDropoutsError(
                    f"dropouts split the {len(survivors)} survivors into {len(groups)} groups of "
                    "the neighbour graph; unmasking would reveal each group's sum, so the round "
                    "is aborted (use more neighbours)"
                )
            )
        total = np.zeros(config.vector_length, dtype=np.uint64)
        for cid in sorted(survivors):
            total += got[cid].masked_vector.astype(np.uint64)
        dropped_after_sharing = self._shared - survivors
        self._requested = {
            cid: (self._graph[cid] & survivors, self._graph[cid] & dropped_after_sharing)
            for cid in survivors
        }
        self._masked_sum = total
        self._survivors = survivors
        self._dropped[Stage.COLLECT_MASKED_VECTORS] = dropped_after_sharing
        self._stage = Stage.UNMASK
        self._log_stage(Stage.COLLECT_MASKED_VECTORS, survivors)
        return {
            cid: UnmaskRequest(
                round_id=config.round_id,
                recipient=cid,
                survivor_ids=_ids(self._requested[cid][0]),
                dropped_ids=_ids(self._requested[cid][1]),
            )
            for cid in sorted(survivors)
        }

    def finish(self, replies: Iterable[UnmaskSharesMessage]) -> Floats:
        """Reconstruct the secrets, remove every mask, and decode the survivors' sum.

        Returns
        -------
        numpy.ndarray of float64, shape (vector_length,)
            The sum, also available from :meth:`result`.

        Raises
        ------
        StageError
            Wrong stage, round or sender, or a repeated reply (state unchanged).
        MessageError
            If a reply does not answer exactly what was asked (state unchanged).
        TooManyDropoutsError
            If fewer than ``threshold`` shares of some secret arrived (aborts).
        BadShareError
            If shares are inconsistent or a mask key does not match its public key (aborts).
        """
        got = self._accept(replies, UnmaskSharesMessage, Stage.UNMASK, self._survivors)
        for cid, reply in got.items():
            survivors, dropped = self._requested[cid]
            seed_owners = _wire.id_list(reply.seed_owner_ids, f"client {cid}'s seed shares")
            key_owners = _wire.id_list(reply.mask_key_owner_ids, f"client {cid}'s mask-key shares")
            if set(seed_owners) != survivors or set(key_owners) != dropped:
                raise MessageError(f"client {cid}'s unmask reply does not answer the request")
        responders = frozenset(got)
        self._check_live(Stage.UNMASK, self._shared, responders)
        seed_shares: dict[int, list[Share]] = {cid: [] for cid in self._survivors}
        key_shares: dict[int, list[Share]] = {cid: [] for cid in self._shared - self._survivors}
        try:
            for cid in sorted(responders):
                reply = got[cid]
                for owners, rows, into in (
                    (reply.seed_owner_ids, reply.seed_shares, seed_shares),
                    (reply.mask_key_owner_ids, reply.mask_key_shares, key_shares),
                ):
                    for owner, row in zip(owners, rows, strict=True):
                        share = Share.from_bytes(row.tobytes())
                        if share.x != self._points[cid]:
                            raise BadShareError(f"client {cid} returned a share of another client")
                        into[int(owner)].append(share)
            total = self._remove_masks(seed_shares, key_shares)
        except BadShareError as exc:
            self._fail(exc)
        config = self.config
        self._result = fixedpoint.decode_sum(
            total,
            clipping_range=config.clipping_range,
            quantization_bits=config.quantization_bits,
            modulus_bits=config.modulus_bits,
        )
        self._masked_sum = None
        self._dropped[Stage.UNMASK] = self._survivors - responders
        self._stage = Stage.DONE
        self._log_stage(Stage.UNMASK, responders)
        return self._result.copy()

    def result(self) -> Floats:
        """The decoded sum of the survivors' vectors (float64).

        Raises
        ------
        StageError
            If the round has not finished, or was aborted (the message says why).
        """
        if self._stage == Stage.ABORTED:
            raise StageError(f"round {self.config.round_id} was aborted: {self._abort_reason}")
        if self._result is None:
            raise StageError(f"no result yet: the server is at stage {self._stage!r}")
        return self._result.copy()

    # -------------------------------------------------------------- helpers

    def _remove_masks(
        self, seed_shares: dict[int, list[Share]], key_shares: dict[int, list[Share]]
    ) -> Words:
        config = self.config
        if self._masked_sum is None:
            raise StageError("no masked sum to unmask")
        total = self._masked_sum.copy()
        common = {
            "round_id": config.round_id,
            "length": config.vector_length,
            "modulus_bits": config.modulus_bits,
        }
        for owner in sorted(seed_shares):
            seed = shamir.combine(seed_shares[owner], config.threshold)
            total -= prg.self_mask(seed, owner=owner, **common)
        for owner in sorted(key_shares):
            pair = KeyPair.from_secret_bytes(shamir.combine(key_shares[owner], config.threshold))
            if pair.public_bytes != self._public_keys[owner][1]:
                raise BadShareError(
                    f"the reconstructed mask key of client {owner} does not match its public key"
                )
            for other in sorted(self._graph[owner] & self._survivors):
                mask = prg.pairwise_mask(
                    pair.agree(self._public_keys[other][1]), pair=(owner, other), **common
                )
                # ``other`` added sign(other, owner) * mask: +1 if other < owner.
                if other < owner:
                    total -= mask
                else:
                    total += mask
        return fixedpoint.reduce(total, config.modulus_bits)

    def _accept(
        self,
        replies: Iterable[object],
        cls: type[_ClientT],
        stage: str,
        expected: frozenset[int],
    ) -> dict[int, _ClientT]:
        """Check every reply (stage, kind, round, sender, repetition) before anything runs."""
        if self._stage == Stage.ABORTED:
            raise StageError(
                f"round {self.config.round_id} was aborted ({self._abort_reason}); "
                "start a new round"
            )
        if self._stage != stage:
            raise StageError(
                f"the server is at stage {self._stage!r}; {cls.__name__} replies belong to "
                f"stage {stage!r} (out of order or repeated)"
            )
        got: dict[int, _ClientT] = {}
        for reply in replies:
            if not isinstance(reply, cls):
                raise StageError(
                    f"stage {stage!r} expects {cls.__name__} replies, got {type(reply).__name__}"
                )
            if reply.round_id != self.config.round_id:
                raise StageError(f"reply of round {reply.round_id} in round {self.config.round_id}")
            if reply.sender not in self._participants:
                raise StageError(f"client {reply.sender} is not a participant of this round")
            if reply.sender not in expected:
                raise StageError(
                    f"client {reply.sender} was not asked in stage {stage!r} (it dropped earlier)"
                )
            if reply.sender in got:
                raise StageError(f"repeated {stage!r} reply from client {reply.sender}")
            got[reply.sender] = reply
        return got

    def _check_live(self, stage: str, owners: frozenset[int], holders: frozenset[int]) -> None:
        """Abort unless every owner's neighbourhood has ``threshold`` live share holders."""
        threshold = self.config.threshold
        for owner in sorted(owners):
            live = len(self._graph[owner] & holders)
            if live < threshold:
                gone = len(self._participants - holders)
                self._fail(
                    TooManyDropoutsError(
                        f"after stage {stage!r} only {live} clients of client {owner}'s "
                        f"neighbourhood are live, fewer than the threshold {threshold} "
                        f"({gone} of {self.config.n_clients} clients dropped; at most "
                        f"{self.config.max_dropouts} per neighbourhood are tolerated). The "
                        "round is aborted and nothing is unmasked"
                    )
                )
        if not holders:
            self._fail(TooManyDropoutsError(f"no client replied in stage {stage!r}"))

    def _fail(self, error: Exception) -> NoReturn:
        self._abort_reason = str(error)
        self._stage = Stage.ABORTED
        self._masked_sum = None
        self._result = None
        logger.warning("round %d: aborted: %s", self.config.round_id, type(error).__name__)
        raise error

    def _log_stage(self, stage: str, live: frozenset[int]) -> None:
        logger.debug(
            "round %d: stage %s done, %d clients live",
            self.config.round_id,
            stage,
            len(live),
        )
