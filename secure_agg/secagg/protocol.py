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

from secure_agg.secagg.client import SEED_BYTES, SecAggClient
from secure_agg.secagg.server import Floats, SecAggServer, Words

__all__ = ["SEED_BYTES", "Floats", "SecAggClient", "SecAggServer", "Words"]

# The state machines keep the name they had before the module was split (client.py, server.py):
# pickles and class reprs say ``secure_agg.secagg.protocol.SecAggServer``, as before.
for _machine in (SecAggClient, SecAggServer):
    _machine.__module__ = __name__
del _machine
