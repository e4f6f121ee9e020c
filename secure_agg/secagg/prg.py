"""The mask generator: HKDF-SHA256 then the ChaCha20 keystream, read as uint64 words.

A mask for one round is ``ChaCha20(K, nonce=0)`` read as little-endian 64-bit words and reduced
modulo ``2^m`` (a bit mask: ``2^m`` divides ``2^64``, so the words stay uniform), where

    K = HKDF-SHA256(secret, salt=none, info = domain || round_id || context)   (RFC 5869)

``secret`` is either a client's 32-byte self-mask seed ``b`` (fresh from the OS CSPRNG) or the
X25519 agreement ``s_uv`` of a pair of clients; ``domain`` separates self masks from pairwise masks
and from every other use of the same secret; ``context`` names the owner (self mask) or the
unordered pair (pairwise mask). Every key is therefore used for exactly one keystream, so the
fixed all-zero nonce never repeats under a key.

Why this is safe where the legacy generator is not
--------------------------------------------------
Flower's SecAgg+ (``secaggplus_utils.pseudo_rand_gen``, flwrlabs/flower issue 7522) XOR-folds
the 32-byte agreed secret into a 32-bit integer and seeds ``numpy.random.RandomState`` (MT19937)
with it. Two independent failures follow: the server can try all 2^32 seeds against a masked
vector (minutes on a laptop) and so strip any mask; and MT19937 is linear, so 624 consecutive
outputs give away its whole state even with a full-size seed. Here:

- the key keeps the secret's full entropy: HKDF's extract step (HMAC-SHA256) turns the X25519
  output, which is not uniform bytes, into a uniform 256-bit key (Krawczyk, CRYPTO 2010);
- ChaCha20 (Bernstein 2008; RFC 8439) is a stream cipher whose keystream is believed
  indistinguishable from uniform bytes for anyone without the key, so a masked word
  ``x + mask mod 2^m`` is a one-time pad of ``x``; no number of outputs reveals the key or the
  other outputs;
- domain, round and owner/pair go into ``info``, so masks never repeat across rounds, owners,
  pairs or purposes even if a secret were reused.

Randomness enters only through the secrets; this module is deterministic by design (both ends of
a pair, and the server after reconstruction, must compute the same mask).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secure_agg.secagg.errors import InputError

#: Domain tag of self masks ``PRG(b_u)`` (versioned: changing it breaks interoperability).
SELF_MASK_DOMAIN = b"lab/secagg/v1/self-mask"

#: Domain tag of pairwise masks ``PRG(s_uv)``.
PAIRWISE_MASK_DOMAIN = b"lab/secagg/v1/pairwise-mask"

#: Bytes of a derived PRG key (a ChaCha20 key).
KEY_BYTES = 32

#: Longest mask, in words: ChaCha20's 32-bit block counter gives 2^32 blocks of 8 words;
#: this stays far below that (32 GiB of mask).
MAX_WORDS = 2**32

#: ChaCha20's 16-byte IV in ``cryptography``: a 4-byte block counter then a 12-byte nonce.
_ZERO_IV = bytes(16)

Words = npt.NDArray[np.uint64]


def derive_key(secret: bytes, *, domain: bytes, round_id: int, context: bytes = b"") -> bytes:
    """``HKDF-SHA256(secret, info = len(domain) || domain || round_id || context)``.

    Parameters
    ----------
    secret : bytes
        A high-entropy secret: a 32-byte seed or an X25519 shared secret.
    domain : bytes
        The purpose (e.g. :data:`SELF_MASK_DOMAIN`).
    round_id : int
        The aggregation round, ``0 <= round_id < 2^64``.
    context : bytes
        Further binding (owner id or pair of ids), fixed-length by convention of the caller.

    Returns
    -------
    bytes
        A :data:`KEY_BYTES`-byte key.
    """
    if len(secret) < 16:
        raise InputError(f"a PRG secret must have at least 16 bytes, got {len(secret)}")
    if not 0 <= round_id < 2**64:
        raise InputError(f"round id {round_id} outside 0..2^64-1")
    info = len(domain).to_bytes(2, "big") + domain + round_id.to_bytes(8, "big") + context
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(secret)


def expand(key: bytes, length: int, modulus_bits: int) -> Words:
    """``length`` uniform words modulo ``2^modulus_bits`` from the ChaCha20 keystream of ``key``.

    Parameters
    ----------
    key : bytes
        A :data:`KEY_BYTES`-byte key from :func:`derive_key` (used for this keystream only).
    length : int
        Number of words, ``0 <= length <= MAX_WORDS``.
    modulus_bits : int
        ``m`` in ``1..64``: words are reduced modulo ``2^m``.

    Returns
    -------
    numpy.ndarray of uint64, shape (length,)
    """
    if len(key) != KEY_BYTES:
        raise InputError(f"a PRG key is {KEY_BYTES} bytes, got {len(key)}")
    if not 0 <= length <= MAX_WORDS:
        raise InputError(f"mask length {length} outside 0..{MAX_WORDS}")
    if not 1 <= modulus_bits <= 64:
        raise InputError(f"modulus bits {modulus_bits} outside 1..64")
    encryptor = Cipher(algorithms.ChaCha20(key, _ZERO_IV), mode=None).encryptor()
    stream = encryptor.update(bytes(8 * length))
    words = np.frombuffer(stream, dtype="<u8").astype(np.uint64, copy=True)
    if modulus_bits < 64:
        words &= np.uint64((1 << modulus_bits) - 1)
    return words


def self_mask(seed: bytes, *, round_id: int, owner: int, length: int, modulus_bits: int) -> Words:
    """``PRG(b_u)``: the self mask of client ``owner`` from its seed ``b_u``."""
    key = derive_key(seed, domain=SELF_MASK_DOMAIN, round_id=round_id, context=_id_bytes(owner))
    return expand(key, length, modulus_bits)


def pairwise_mask(
    shared_secret: bytes,
    *,
    round_id: int,
    pair: tuple[int, int],
    length: int,
    modulus_bits: int,
) -> Words:
    """``PRG(s_uv)``: the mask clients ``u`` and ``v`` share (the order of ``pair`` is ignored).

    The caller adds it with sign +1 for the smaller id and -1 for the larger, so the pair's two
    masks cancel in the sum.
    """
    low, high = sorted(pair)
    if low == high:
        raise InputError(f"a pairwise mask needs two distinct clients, got {pair}")
    key = derive_key(
        shared_secret,
        domain=PAIRWISE_MASK_DOMAIN,
        round_id=round_id,
        context=_id_bytes(low) + _id_bytes(high),
    )
    return expand(key, length, modulus_bits)


def _id_bytes(client_id: int) -> bytes:
    if not 0 <= client_id < 2**64:
        raise InputError(f"client id {client_id} outside 0..2^64-1")
    return client_id.to_bytes(8, "big")
