"""The client's side of SecAgg/SecAgg+: :class:`SecAggClient`, one state machine per round.

Each stage method checks the server's message, advances the client's state and returns its
reply; :mod:`secure_agg.secagg.protocol` describes the stages and what each party learns.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn, TypeVar

import numpy as np
import numpy.typing as npt

from secure_agg.secagg import _entropy, _wire, channel, fixedpoint, graph, prg, shamir
from secure_agg.secagg.channel import KeyPair
from secure_agg.secagg.config import SecAggConfig
from secure_agg.secagg.errors import (
    BadShareError,
    InputError,
    MessageError,
    SecAggConfigError,
    StageError,
    TooManyDropoutsError,
)
from secure_agg.secagg.messages import (
    ClientMessage,
    EncryptedSharesMessage,
    MaskedVectorMessage,
    MaskedVectorRequest,
    PublicKeysMessage,
    ServerMessage,
    SetupMessage,
    ShareKeysRequest,
    Stage,
    UnmaskRequest,
    UnmaskSharesMessage,
)
from secure_agg.secagg.shamir import Share

logger = logging.getLogger(__name__)

#: Bytes of a self-mask seed ``b_u``.
SEED_BYTES = shamir.SECRET_BYTES

_ServerT = TypeVar("_ServerT", SetupMessage, ShareKeysRequest, MaskedVectorRequest, UnmaskRequest)


class SecAggClient:
    """One client's side of a round: holds its keys, seed and the shares it receives.

    Parameters
    ----------
    client_id : int
        This client's id; must be one of ``config.client_ids``.
    config : SecAggConfig
        The configuration this client agreed to; a setup message that differs is refused.

    Notes
    -----
    Call :meth:`setup`, :meth:`share_keys`, :meth:`collect_masked_vectors` and :meth:`unmask`
    in that order, each with the server's message for that stage (or :meth:`handle` with any).
    The object holds key material: it cannot be pickled and its ``repr`` shows none.
    """

    def __init__(self, client_id: int, config: SecAggConfig) -> None:
        if not isinstance(config, SecAggConfig):
            raise SecAggConfigError(f"config must be a SecAggConfig, got {type(config).__name__}")
        if client_id not in config.client_ids:
            raise SecAggConfigError(
                f"client {client_id} is not among the round's {config.n_clients} client_ids"
            )
        self.client_id = int(client_id)
        self.config = config
        self._x = config.evaluation_point(self.client_id)
        self._stage = Stage.SETUP
        self._neighbourhood: frozenset[int] = frozenset()
        self._encryption: KeyPair | None = None
        self._mask: KeyPair | None = None
        self._seed: bytes | None = None
        self._public_keys: dict[int, tuple[bytes, bytes]] = {}
        self._seed_shares: dict[int, Share] = {}
        self._mask_key_shares: dict[int, Share] = {}
        self._masked_with: frozenset[int] = frozenset()

    @property
    def stage(self) -> str:
        """The stage whose server message this client accepts next (or ``done``/``aborted``)."""
        return self._stage

    @property
    def neighbourhood(self) -> frozenset[int]:
        """This client's neighbourhood in the setup's graph (itself included)."""
        return self._neighbourhood

    # -------------------------------------------------------------- stages

    def setup(self, message: SetupMessage) -> PublicKeysMessage:
        """Check the server's configuration and graph; make this round's two key pairs.

        Raises
        ------
        StageError
            Out of order, other round.
        MessageError
            If the configuration differs from this client's or the ring is not a permutation of
            the round's clients.
        """
        msg = self._accept(message, SetupMessage, Stage.SETUP)
        if msg.config != self.config.to_bytes():
            raise MessageError(_config_difference(self.config, msg.config))
        ring = tuple(int(c) for c in msg.ring)
        if sorted(ring) != list(self.config.client_ids):
            raise MessageError("the setup's ring is not a permutation of the round's client ids")
        self._neighbourhood = graph.neighbourhoods(ring, self.config.neighbours)[self.client_id]
        self._encryption = KeyPair.generate()
        self._mask = KeyPair.generate()
        self._stage = Stage.SHARE_KEYS
        logger.debug(
            "round %d client %d: setup, %d neighbours",
            self.config.round_id,
            self.client_id,
            len(self._neighbourhood) - 1,
        )
        return PublicKeysMessage(
            round_id=self.config.round_id,
            sender=self.client_id,
            encryption_key=self._encryption.public_bytes,
            mask_key=self._mask.public_bytes,
        )

    def share_keys(self, message: ShareKeysRequest) -> EncryptedSharesMessage:
        """Draw ``b_u``; Shamir-share it and the mask key; encrypt each neighbour's shares.

        Raises
        ------
        StageError, MessageError
            As for every stage; also if the relayed keys are not this client's neighbours', its
            own keys were relayed wrongly, or two keys repeat.
        TooManyDropoutsError
            If fewer than ``threshold`` of its neighbourhood advertised keys (aborts).
        """
        msg = self._accept(message, ShareKeysRequest, Stage.SHARE_KEYS)
        encryption, mask = self._key_pairs()
        ids = _wire.id_list(msg.client_ids, "the share_keys request")
        outside = set(ids) - self._neighbourhood
        if outside:
            raise MessageError(
                f"the share_keys request lists clients {sorted(outside)[:5]} outside "
                f"client {self.client_id}'s neighbourhood"
            )
        keys = {
            cid: (msg.encryption_keys[i].tobytes(), msg.mask_keys[i].tobytes())
            for i, cid in enumerate(ids)
        }
        if keys.get(self.client_id) != (encryption.public_bytes, mask.public_bytes):
            raise MessageError(
                f"the share_keys request does not carry client {self.client_id}'s own public keys"
            )
        flat = [key for pair in keys.values() for key in pair]
        if len(set(flat)) != len(flat):
            raise MessageError("the share_keys request repeats a public key")
        threshold = self.config.threshold
        if len(ids) < threshold:
            self._too_few(len(ids), "advertised keys")
        seed = _entropy.random_bytes(SEED_BYTES)
        xs = [self.config.evaluation_point(cid) for cid in ids]
        seed_shares = shamir.split(seed, threshold, xs)
        key_shares = shamir.split(mask.secret_bytes(), threshold, xs)
        recipients: list[int] = []
        rows: list[bytes] = []
        own: tuple[Share, Share] | None = None
        for cid, seed_share, key_share in zip(ids, seed_shares, key_shares, strict=True):
            if cid == self.client_id:
                own = (seed_share, key_share)
                continue
            rows.append(
                channel.encrypt(
                    encryption.agree(keys[cid][0]),
                    seed_share.to_bytes() + key_share.to_bytes(),
                    round_id=self.config.round_id,
                    sender=self.client_id,
                    recipient=cid,
                )
            )
            recipients.append(cid)
        if own is None:  # unreachable: own keys were checked above
            raise MessageError("own share missing")
        self._public_keys = keys
        self._seed = seed
        self._seed_shares = {self.client_id: own[0]}
        self._mask_key_shares = {self.client_id: own[1]}
        self._stage = Stage.COLLECT_MASKED_VECTORS
        return EncryptedSharesMessage(
            round_id=self.config.round_id,
            sender=self.client_id,
            recipient_ids=np.array(recipients, dtype=np.int64),
            ciphertexts=_wire.stack(rows, channel.CIPHERTEXT_BYTES),
        )

    def collect_masked_vectors(
        self, message: MaskedVectorRequest, vector: npt.ArrayLike
    ) -> MaskedVectorMessage:
        """Store the neighbours' shares and return ``y_u``, this client's masked vector.

        Parameters
        ----------
        message : MaskedVectorRequest
            The encrypted shares addressed to this client.
        vector : array_like of float, shape (vector_length,)
            This client's update; clipped to ``[-R, R]`` and quantized.

        Raises
        ------
        StageError, MessageError
            As for every stage; also if a sender is not a neighbour that advertised keys.
        InputError
            If the vector has the wrong length or holds a NaN.
        TooManyDropoutsError
            If fewer than ``threshold - 1`` neighbours shared keys (aborts).
        AuthenticationError, BadShareError
            If a ciphertext fails authentication or holds a share for another point (aborts).
        """
        msg = self._accept(message, MaskedVectorRequest, Stage.COLLECT_MASKED_VECTORS)
        encryption, mask = self._key_pairs()
        config = self.config
        values = np.asarray(vector)
        if values.shape != (config.vector_length,):
            raise InputError(
                f"client {self.client_id}'s vector has shape {values.shape}, "
                f"the round expects ({config.vector_length},)"
            )
        encoded = fixedpoint.encode(
            values,
            clipping_range=config.clipping_range,
            quantization_bits=config.quantization_bits,
            modulus_bits=config.modulus_bits,
            stochastic=config.stochastic_rounding,
        )
        senders = _wire.id_list(msg.sender_ids, "the collect_masked_vectors request")
        unknown = [s for s in senders if s not in self._public_keys or s == self.client_id]
        if unknown:
            raise MessageError(
                f"ciphertexts from clients {unknown[:5]} that are not neighbours of client "
                f"{self.client_id} with advertised keys"
            )
        if len(senders) + 1 < config.threshold:
            self._too_few(len(senders) + 1, "shared keys")
        received: dict[int, tuple[Share, Share]] = {}
        for i, sender in enumerate(senders):
            try:
                plaintext = channel.decrypt(
                    encryption.agree(self._public_keys[sender][0]),
                    msg.ciphertexts[i].tobytes(),
                    round_id=config.round_id,
                    sender=sender,
                    recipient=self.client_id,
                )
                seed_share = Share.from_bytes(plaintext[: shamir.SHARE_BYTES])
                key_share = Share.from_bytes(plaintext[shamir.SHARE_BYTES :])
                if seed_share.x != self._x or key_share.x != self._x:
                    raise BadShareError(f"client {sender} sent shares for another evaluation point")
            except BadShareError as exc:
                self._abort(exc)
                raise
            received[sender] = (seed_share, key_share)
        if self._seed is None:
            raise StageError("no self-mask seed: share_keys did not run")
        masked = encoded + prg.self_mask(
            self._seed,
            round_id=config.round_id,
            owner=self.client_id,
            length=config.vector_length,
            modulus_bits=config.modulus_bits,
        )
        for sender in senders:
            pairwise = prg.pairwise_mask(
                mask.agree(self._public_keys[sender][1]),
                round_id=config.round_id,
                pair=(self.client_id, sender),
                length=config.vector_length,
                modulus_bits=config.modulus_bits,
            )
            if self.client_id < sender:
                masked += pairwise
            else:
                masked -= pairwise
        masked = fixedpoint.reduce(masked, config.modulus_bits)
        for sender, (seed_share, key_share) in received.items():
            self._seed_shares[sender] = seed_share
            self._mask_key_shares[sender] = key_share
        self._masked_with = frozenset(senders)
        # b_u and the private keys are no longer needed: forget them (shares stay).
        self._seed = None
        self._encryption = None
        self._mask = None
        self._stage = Stage.UNMASK
        return MaskedVectorMessage(
            round_id=config.round_id,
            sender=self.client_id,
            masked_vector=masked.astype(config.word_dtype),
        )

    def unmask(self, message: UnmaskRequest) -> UnmaskSharesMessage:
        """Return shares of survivors' seeds and of dropped neighbours' mask keys.

        Raises
        ------
        StageError, MessageError
            As for every stage; also if the request asks for both secrets of one client, omits
            this client from the survivors, or does not classify exactly the neighbours this
            client masked with.
        TooManyDropoutsError
            If fewer than ``threshold`` of its neighbourhood survived (aborts).
        """
        msg = self._accept(message, UnmaskRequest, Stage.UNMASK)
        survivors = _wire.id_list(msg.survivor_ids, "the unmask request's survivors")
        dropped = _wire.id_list(msg.dropped_ids, "the unmask request's dropped clients")
        both = set(survivors) & set(dropped)
        if both:
            raise MessageError(
                f"the unmask request asks for both secrets of clients {sorted(both)[:5]}, "
                "which would unmask their vectors; refused"
            )
        if self.client_id not in survivors:
            raise MessageError(f"client {self.client_id} is not listed among the survivors")
        expected = self._masked_with | {self.client_id}
        if set(survivors) | set(dropped) != expected:
            raise MessageError(
                f"the unmask request must classify exactly the {len(expected)} clients that "
                f"client {self.client_id} exchanged shares with"
            )
        if len(survivors) < self.config.threshold:
            self._too_few(len(survivors), "survived")
        reply = UnmaskSharesMessage(
            round_id=self.config.round_id,
            sender=self.client_id,
            seed_owner_ids=np.array(survivors, dtype=np.int64),
            seed_shares=_wire.stack(
                [self._seed_shares[c].to_bytes() for c in survivors], shamir.SHARE_BYTES
            ),
            mask_key_owner_ids=np.array(dropped, dtype=np.int64),
            mask_key_shares=_wire.stack(
                [self._mask_key_shares[c].to_bytes() for c in dropped], shamir.SHARE_BYTES
            ),
        )
        self._wipe()
        self._stage = Stage.DONE
        return reply

    def handle(self, message: ServerMessage, vector: npt.ArrayLike | None = None) -> ClientMessage:
        """Run the stage ``message`` belongs to (``vector`` is needed for the masking stage).

        Raises
        ------
        StageError
            For an unknown message, or as the stage method raises.
        InputError
            If a masked-vector request comes without a vector.
        """
        if isinstance(message, SetupMessage):
            return self.setup(message)
        if isinstance(message, ShareKeysRequest):
            return self.share_keys(message)
        if isinstance(message, MaskedVectorRequest):
            if vector is None:
                raise InputError("the collect_masked_vectors stage needs this client's vector")
            return self.collect_masked_vectors(message, vector)
        if isinstance(message, UnmaskRequest):
            return self.unmask(message)
        raise StageError(f"a client does not accept {type(message).__name__}")

    # -------------------------------------------------------------- helpers

    def _accept(self, message: object, cls: type[_ServerT], stage: str) -> _ServerT:
        """Check stage, kind, round and recipient before anything else runs."""
        who = f"client {self.client_id}"
        if self._stage == Stage.ABORTED:
            raise StageError(f"{who} aborted round {self.config.round_id}; start a new round")
        if self._stage != stage:
            raise StageError(
                f"{who} is at stage {self._stage!r}; a {stage!r} message now is out of order "
                "(repeated or early)"
            )
        if not isinstance(message, cls):
            raise StageError(
                f"{who} expects a {cls.__name__} at stage {stage!r}, got {type(message).__name__}"
            )
        if message.round_id != self.config.round_id:
            raise StageError(
                f"{who} is in round {self.config.round_id}; got a message of round "
                f"{message.round_id}"
            )
        if not isinstance(message, SetupMessage) and message.recipient != self.client_id:
            raise StageError(f"a message for client {message.recipient} was delivered to {who}")
        return message

    def _key_pairs(self) -> tuple[KeyPair, KeyPair]:
        if self._encryption is None or self._mask is None:
            raise StageError(f"client {self.client_id} holds no keys at stage {self._stage!r}")
        return self._encryption, self._mask

    def _too_few(self, live: int, what: str) -> NoReturn:
        error = TooManyDropoutsError(
            f"only {live} clients of client {self.client_id}'s neighbourhood {what}, fewer than "
            f"the threshold {self.config.threshold}; client {self.client_id} aborts the round"
        )
        self._abort(error)
        raise error

    def _abort(self, reason: Exception) -> None:
        logger.warning(
            "round %d client %d: aborted (%s)",
            self.config.round_id,
            self.client_id,
            type(reason).__name__,
        )
        self._wipe()
        self._stage = Stage.ABORTED

    def _wipe(self) -> None:
        self._encryption = None
        self._mask = None
        self._seed = None
        self._seed_shares = {}
        self._mask_key_shares = {}

    def __repr__(self) -> str:
        return (
            f"SecAggClient(client_id={self.client_id}, round_id={self.config.round_id}, "
            f"stage={self._stage!r})"
        )

    def __reduce__(self) -> Any:
        raise TypeError("a SecAggClient holds key material and must not be pickled")

    # -------------------------------------------------------------- node-local state

    def export_state(self) -> dict[str, Any]:
        """This client's whole state as plain JSON values, key material included.

        A round spans four messages and a Flower node may run each in a fresh process, so the
        client keeps its state in the node's own store between them. This is the only way key
        material leaves the object: store it where only this client's node can read it, never
        send or log it, and drop it when the round ends.
        """

        def shares(table: dict[int, Share]) -> dict[str, list[str]]:
            return {str(k): [str(v.x), str(v.y)] for k, v in table.items()}

        return {
            "client_id": self.client_id,
            "config": self.config.to_bytes().hex(),
            "stage": self._stage,
            "neighbourhood": sorted(self._neighbourhood),
            "encryption": self._encryption.secret_bytes().hex() if self._encryption else None,
            "mask": self._mask.secret_bytes().hex() if self._mask else None,
            "seed": self._seed.hex() if self._seed is not None else None,
            "public_keys": {str(k): [a.hex(), b.hex()] for k, (a, b) in self._public_keys.items()},
            "seed_shares": shares(self._seed_shares),
            "mask_key_shares": shares(self._mask_key_shares),
            "masked_with": sorted(self._masked_with),
        }

    @classmethod
    def restore(cls, state: dict[str, Any]) -> SecAggClient:
        """Rebuild a client from :meth:`export_state` (on the same node, next message).

        Raises
        ------
        MessageError
            If the state is malformed.
        """
        try:
            config = SecAggConfig.from_bytes(bytes.fromhex(state["config"]))
            client = cls(int(state["client_id"]), config)
            client._stage = str(state["stage"])
            client._neighbourhood = frozenset(int(c) for c in state["neighbourhood"])
            if state["encryption"]:
                client._encryption = KeyPair.from_secret_bytes(bytes.fromhex(state["encryption"]))
            if state["mask"]:
                client._mask = KeyPair.from_secret_bytes(bytes.fromhex(state["mask"]))
            client._seed = bytes.fromhex(state["seed"]) if state["seed"] else None
            client._public_keys = {
                int(k): (bytes.fromhex(a), bytes.fromhex(b))
                for k, (a, b) in state["public_keys"].items()
            }
            client._seed_shares = {
                int(k): Share(int(x), int(y)) for k, (x, y) in state["seed_shares"].items()
            }
            client._mask_key_shares = {
                int(k): Share(int(x), int(y)) for k, (x, y) in state["mask_key_shares"].items()
            }
            client._masked_with = frozenset(int(c) for c in state["masked_with"])
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageError(f"malformed SecAgg client state: {exc}") from exc
        return client


def _config_difference(own: SecAggConfig, received: bytes) -> str:
    """Name the fields in which a received configuration differs from a client's own."""
    try:
        theirs = SecAggConfig.from_bytes(received)
    except MessageError as exc:
        return f"the setup's configuration is invalid: {exc}"
    names = [
        name for name in own.__dataclass_fields__ if getattr(own, name) != getattr(theirs, name)
    ]
    return (
        f"the setup's configuration differs from this client's in {names}; a client only runs "
        "the round it agreed to"
    )
