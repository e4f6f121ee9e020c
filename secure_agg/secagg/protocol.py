r"""SecAgg and SecAgg+ as two explicit state machines: :class:`SecAggClient`, :class:`SecAggServer`.

The protocol is the semi-honest variant of Bonawitz et al., "Practical Secure Aggregation for
Privacy-Preserving Machine Learning" (CCS 2017), with the sparse neighbour graph of Bell et al.,
"Secure Single-Server Aggregation with (Poly)Logarithmic Overhead" (CCS 2020), staged as
Flower's SecAgg+ (``setup``, ``share_keys``, ``collect_masked_vectors``, ``unmask``) but with
masks from a cryptographic PRG (:mod:`secure_agg.secagg.prg`). Nothing here touches a network:
each method consumes the previous stage's message and returns the next, so Flower (or an
in-process loop, :func:`secure_agg.secagg.simulate.run_round`) moves them.

Stages (``N(u)``: the neighbourhood of ``u``, itself included; ``t``: the threshold)
------------------------------------------------------------------------------------
``setup``
    The server sends the configuration and a neighbour graph (a random ring from the OS CSPRNG
    for SecAgg+). Each client checks it against its own configuration, makes two X25519 key
    pairs -- ``(c_u, C_u)`` to encrypt shares, ``(s_u, S_u)`` to agree pairwise masks -- and
    returns the public halves. Those who answer are ``U1``.
``share_keys``
    The server sends each client the public keys of ``N(u) ∩ U1``. The client draws a 32-byte
    self-mask seed ``b_u``, Shamir-shares ``b_u`` and ``s_u`` (t-out-of-``|N(u) ∩ U1|``), keeps
    its own shares and encrypts each neighbour's pair of shares with AES-256-GCM under
    ``HKDF(X25519(c_u, C_v))``, the associated data binding round, sender and recipient
    (:mod:`secure_agg.secagg.channel`). Those who answer are ``U2``.
``collect_masked_vectors``
    The server relays to each client the ciphertexts addressed to it by ``N(u) ∩ U2``. The client
    decrypts and checks them, encodes its vector ``x_u`` in ``Z_{2^m}``
    (:mod:`secure_agg.secagg.fixedpoint`) and returns

        y_u = x_u + PRG(b_u) + sum_{v in N(u) ∩ U2, v != u} sign(u, v) PRG(s_uv)   (mod 2^m)

    with ``sign = +1`` if ``u < v`` else ``-1`` and ``s_uv = X25519(s_u, S_v)``; then it forgets
    ``b_u`` and its private keys. Those who answer are ``U3`` (the *survivors*).
``unmask``
    The server tells each survivor which of its neighbours survived and which dropped after
    sharing keys (``U2 \ U3``). The survivor returns its shares of ``b_v`` for survivors and of
    ``s_v`` for the dropped -- never both for one client, and only if at least ``t`` of its
    neighbourhood survived. The server reconstructs each secret from ``t`` or more shares,
    subtracts ``PRG(b_v)`` for every survivor and the dangling ``sign(v, u) PRG(s_uv)`` for every
    dropped ``u`` and surviving neighbour ``v``, and decodes the sum of the survivors' vectors.

Clients that drop before ``share_keys`` completes take no part in any mask; clients that drop
after sharing keys but before sending their vector contribute nothing, and their pairwise masks
on others are removed through their reconstructed mask key; survivors that drop during
``unmask`` still count (their seed is reconstructed from the others' shares). If at any stage a
neighbourhood has fewer than ``t`` live clients, the round aborts with
:class:`~secure_agg.secagg.errors.TooManyDropoutsError` and no sum, partial or whole, is produced.

What each party learns (honest-but-curious; fewer than ``t`` colluding clients per neighbourhood)
--------------------------------------------------------------------------------------------------
The server (coordinator)
    - the public keys and the ciphertexts it relays (which it cannot decrypt);
    - each survivor's masked vector ``y_u``: uniformly random in ``Z_{2^m}^d`` given anything
      fewer than ``t`` parties of a neighbourhood know, because ``PRG(b_u)`` is a one-time pad
      that only ``t`` shares of ``b_u`` can remove;
    - the sum of the survivors' (clipped, quantized) vectors -- and therefore nothing about an
      individual vector beyond what that sum implies;
    - who dropped, and at which stage;
    - the survivors' seeds ``b_u`` and the dropped clients' mask keys ``s_u``, which are fresh
      per round and reveal nothing further. It never obtains both ``b_u`` and ``s_u`` of one
      client (each client refuses such a request), so no individual ``y_u`` is ever unmasked.
    With SecAgg+ it refuses to unmask if dropouts split the survivors into disconnected groups
    (that would reveal each group's sum); see :mod:`secure_agg.secagg.graph` for the trade-off.
Each client
    - the configuration, the neighbour graph and its neighbours' public keys;
    - one Shamir share of each neighbour's ``b_v`` and ``s_v`` (fewer than ``t`` reveal nothing);
    - which of its neighbours survived or dropped (from the unmask request);
    - nothing about any other client's vector (it never sees one) -- and not the sum, unless
      the server publishes it (for federated averaging it does: the new model).

Failure handling
----------------
Checks come first: a message of the wrong stage, round, sender or recipient raises
:class:`~secure_agg.secagg.errors.StageError`, a malformed one
:class:`~secure_agg.secagg.errors.MessageError`; both leave the state machine unchanged (the
runtime may drop the offending client and call again). Too many dropouts, an encrypted share
that fails authentication and an inconsistent share *abort* the machine: its secrets are wiped,
its stage becomes ``aborted`` and it accepts nothing more.

Security notes
--------------
Every secret comes from ``secrets`` (:mod:`secure_agg.secagg._entropy`) and is fresh per round.
A client holds key material and cannot be pickled; ``repr`` and log lines never show it.

This is the semi-honest protocol, matching the lab's threat model. What it does *not* defend
against, and Bonawitz et al.'s malicious variant does (signed keys and a signed consistency round
over ``U3``): a server that deviates could tell one client that ``u`` survived and another that
``u`` dropped, and so collect ``t`` shares of both ``b_u`` and ``s_u``; each client only refuses
such a request when it comes in one message. Public keys are not signed: Flower's SuperNode
authentication and TLS are what bind a node id to its messages here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, NoReturn, TypeVar

import numpy as np
import numpy.typing as npt

from secure_agg.secagg import _entropy, channel, fixedpoint, graph, prg, shamir
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
_ClientT = TypeVar(
    "_ClientT",
    PublicKeysMessage,
    EncryptedSharesMessage,
    MaskedVectorMessage,
    UnmaskSharesMessage,
)
Floats = npt.NDArray[np.float64]
Words = npt.NDArray[np.uint64]


def _id_list(values: npt.NDArray[np.int64], what: str) -> list[int]:
    ids = [int(v) for v in values]
    if len(set(ids)) != len(ids):
        raise MessageError(f"{what} repeats a client id")
    return ids


def _stack(rows: list[bytes], width: int) -> npt.NDArray[np.uint8]:
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), width).copy()


def _ids(values: Iterable[int]) -> npt.NDArray[np.int64]:
    return np.array(sorted(values), dtype=np.int64)


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
        ids = _id_list(msg.client_ids, "the share_keys request")
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
            ciphertexts=_stack(rows, channel.CIPHERTEXT_BYTES),
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
        senders = _id_list(msg.sender_ids, "the collect_masked_vectors request")
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
        survivors = _id_list(msg.survivor_ids, "the unmask request's survivors")
        dropped = _id_list(msg.dropped_ids, "the unmask request's dropped clients")
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
            seed_shares=_stack(
                [self._seed_shares[c].to_bytes() for c in survivors], shamir.SHARE_BYTES
            ),
            mask_key_owner_ids=np.array(dropped, dtype=np.int64),
            mask_key_shares=_stack(
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
                encryption_keys=_stack([keys[m][0] for m in members], channel.KEY_BYTES),
                mask_keys=_stack([keys[m][1] for m in members], channel.KEY_BYTES),
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
            recipients = _id_list(reply.recipient_ids, f"client {cid}'s encrypted shares")
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
                ciphertexts=_stack([row for _, row in relay[cid]], channel.CIPHERTEXT_BYTES),
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
            seed_owners = _id_list(reply.seed_owner_ids, f"client {cid}'s seed shares")
            key_owners = _id_list(reply.mask_key_owner_ids, f"client {cid}'s mask-key shares")
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
