"""Randomness made ahead: pools of secret factors, filled while their party waits.

Both schemes encrypt as ``(plaintext part) · (randomness part)`` and the randomness part does
not depend on the plaintext (:mod:`secure_agg.backends`): Paillier's key holder computes
``(1 + m·n) · h_s^a mod n²`` and the whole cost is the factor ``h_s^a``; OU computes
``g^m · h^r mod n`` and ``h^r`` is about 60% of it. A party that will encrypt a batch later
(SecureBoost's bank, which encrypts every tree's gradients and otherwise waits for the platforms)
starts :meth:`RandomnessPool.fill` when it starts waiting and :meth:`RandomnessPool.take` s the
factors when it encrypts. The ciphertexts are exactly those of the backend's ``encrypt_private``
with the same exponents, so their distribution, and everything argued in
:mod:`secure_agg.paillier` and :mod:`secure_agg.ou`, is unchanged.

Security
--------
A factor is as secret as the plaintext it will hide: ``c / f`` is ``1 + m·n`` (Paillier) or
``g^m`` (OU). Hence:

- exponents are drawn with :mod:`secrets` by the backends, like every encryption's;
- factors live only in the memory of the process that made them, in a :class:`RandomnessPool`
  (never in a party store, a message, a log or a pickle: the pool refuses pickling and its
  ``repr`` shows counts only);
- each factor is handed out once: :meth:`RandomnessPool.take` removes what it returns. Two
  ciphertexts sharing a factor would reveal the difference of their plaintexts
  (``c₁ / c₂ = 1 + (m₁ - m₂)·n`` for Paillier);
- :func:`forget_pools` drops every factor of the process (the end of a job,
  :meth:`models.vertical.keys.KeyPair.forget`); a process keeps the pools of at most
  :data:`POOL_CACHE_SIZE` keys.

The background thread calls the C kernels, which release the GIL, one chunk at a time, at the
lowest CPU priority (:data:`NICE`): it uses cores nobody else needs, so the factors cost the
waiting party (and its peers on the same host) no wall time. Setting
:data:`PRECOMPUTE_ENV` to ``off`` disables pools (:func:`enabled`; the equal-model tests
compare both paths).

A sender's own re-randomisation factors
---------------------------------------
The same pool holds the ``y^n`` that a party multiplies into the ciphertexts it returns to the key
holder (:mod:`secure_agg.own_randomness`; SecureBoost's platform packing histogram sums):
``RandomnessPool(backend, public, own=True)`` makes them with :meth:`HEBackend.own_factors`
(``y`` uniform in ``Z*_n`` from :mod:`secrets`, nothing but ``n`` from the key holder), and
:func:`own_pool_for` keeps one per party and key. The rules above hold unchanged: such a
factor is the whole re-randomisation of one ciphertext (a reused ``y^n`` would let the key holder
divide two re-randomised sums and see the quotient of what was summed), so it stays in its
maker's memory, is handed out once, and is dropped at the end of the job (:func:`forget_pools`,
:func:`forget_own_pools`). Its chunks are small (:data:`OWN_CHUNK`): a factor costs a full
exponentiation, and the party pauses the thread when it packs. Pools never hold more than
:data:`MAX_POOL_BYTES` of such factors (:func:`capped_target`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict, deque
from typing import Any, NoReturn

from secure_agg.backends import HEBackend

logger = logging.getLogger(__name__)

#: Environment variable: ``off`` disables precomputed randomness in this process.
PRECOMPUTE_ENV = "SECURE_AGG_PRECOMPUTE"
#: Factors made per kernel call of the background thread: small enough that pausing it waits
#: at most ~15 ms (256 OU factors at ~35 µs) or ~60 ms (Paillier, ~250 µs), large enough that
#: the per-call overhead is negligible.
CHUNK = 256
#: Factors per kernel call of an own-randomness pool: a factor is a full ``n``-bit
#: exponentiation (~2.3 ms OU, ~8.5 ms Paillier mod ``n²`` at 2048 bits), so pausing the thread
#: when the party packs waits at most ~35 ms.
OWN_CHUNK = 4
#: Keys whose pools a process keeps (older ones are forgotten).
POOL_CACHE_SIZE = 2
#: (party, key) pairs whose own-randomness pools a process keeps: a process may act for several
#: platforms (embedded runtime, estimator); older pools are forgotten.
OWN_POOL_CACHE_SIZE = 4
#: Memory an own-randomness pool may fill (32 MiB: 65536 Paillier factors mod ``n²`` of a
#: 2048-bit key, far more than a tree of SecureBoost packs).
MAX_POOL_BYTES = 32 << 20
#: Nice value of the background thread (19: the lowest priority): it uses idle cores only.
NICE = 19


def enabled() -> bool:
    """Whether pools are in use (:data:`PRECOMPUTE_ENV` is not ``off``)."""
    return os.environ.get(PRECOMPUTE_ENV, "").strip().lower() != "off"


def capped_target(count: int, factor_bytes: int) -> int:
    """``count`` factors of ``factor_bytes`` each, at most :data:`MAX_POOL_BYTES` of them."""
    return max(0, min(int(count), MAX_POOL_BYTES // max(1, int(factor_bytes))))


class RandomnessPool:
    """Secret factors for one key, made by a background thread, each handed out once.

    Parameters
    ----------
    backend : HEBackend
        The key's scheme.
    key : object
        The private key (its scheme's class) for encryption factors
        (:meth:`HEBackend.random_factors`); with ``own``, the key holder's public key. The pool
        holds a reference, never a copy.
    chunk : int
        Factors per kernel call of the background thread.
    own : bool
        Make the holder's own re-randomisation factors ``y^n``
        (:meth:`HEBackend.own_factors`) instead of the key holder's encryption factors.
    """

    def __init__(
        self, backend: HEBackend, key: Any, *, chunk: int = CHUNK, own: bool = False
    ) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, got {chunk}")
        self._backend = backend
        self._key = key
        self._own = own
        self._chunk = chunk
        self._factors: deque[int] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._target = 0
        #: Seconds the background thread spent making the factors now in the pool.
        self._seconds = 0.0
        #: Factors made and handed out over the pool's life (counts only).
        self.made = 0
        self.taken = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._factors)

    def __repr__(self) -> str:
        kind = ", own" if self._own else ""
        return (
            f"RandomnessPool({self._backend.name}{kind}, ready={len(self)}, target={self._target})"
        )

    def __reduce__(self) -> NoReturn:
        raise TypeError("a RandomnessPool holds secret encryption factors and is never pickled")

    def fill(self, target: int) -> None:
        """Make factors in a background thread until ``target`` are ready (0: make none).

        Returns at once; the thread stops at ``target``, at :meth:`pause` or :meth:`forget`.
        """
        self.pause()
        with self._lock:
            self._target = max(0, int(target))
            if len(self._factors) >= self._target:
                return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="he-precompute", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        _lower_priority()
        while not self._stop.is_set():
            with self._lock:
                missing = self._target - len(self._factors)
            if missing <= 0:
                return
            started = time.perf_counter()
            count = min(self._chunk, missing)
            try:
                if self._own:
                    made = self._backend.own_factors(self._key, count, workers=1)
                else:
                    made = self._backend.random_factors(self._key, count, workers=1)
            except Exception as exc:  # the party falls back to making factors inline
                logger.warning("precomputing randomness stopped: %s", type(exc).__name__)
                return
            elapsed = time.perf_counter() - started
            with self._lock:
                self._factors.extend(made)
                self._seconds += elapsed
                self.made += len(made)

    def pause(self) -> None:
        """Stop the background thread after its current chunk and wait for it."""
        thread = self._thread
        if thread is not None:
            self._stop.set()
            thread.join()
            self._thread = None

    def take(self, count: int) -> tuple[list[int], float]:
        """Pause filling; remove and return up to ``count`` factors and the seconds they took.

        Each factor is returned once: it leaves the pool here. The seconds are the background
        thread's for the factors returned (proportional share of what it spent on the pool).
        """
        self.pause()
        with self._lock:
            k = min(max(0, int(count)), len(self._factors))
            out = [self._factors.popleft() for _ in range(k)]
            share = self._seconds * k / (k + len(self._factors)) if k else 0.0
            self._seconds -= share
            self.taken += k
        return out, share

    def forget(self) -> None:
        """Stop the thread and drop every factor (the end of the key's use)."""
        self.pause()
        with self._lock:
            self._factors.clear()
            self._target = 0
            self._seconds = 0.0


def _lower_priority() -> None:
    """Run the calling thread at the lowest CPU priority (Linux: per-thread nice value).

    The factors are for later: they should use idle cores only, never slow down what the party
    (or a peer on the same host) is computing now. Raising one's own nice value needs no
    privilege; elsewhere, or if refused, the thread keeps its priority.
    """
    setpriority = getattr(os, "setpriority", None)
    if setpriority is None or not hasattr(threading, "get_native_id"):
        return
    try:
        setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
    except OSError:
        logger.debug("could not lower the priority of the precomputing thread")


_POOLS: OrderedDict[str, RandomnessPool] = OrderedDict()
_POOLS_LOCK = threading.Lock()


def pool_for(backend: HEBackend, private: Any) -> RandomnessPool:
    """This process's pool for ``private`` (keyed by its public key's fingerprint)."""
    key = f"{backend.name}:{private.public_key.fingerprint}"
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            pool = RandomnessPool(backend, private)
            _POOLS[key] = pool
            while len(_POOLS) > POOL_CACHE_SIZE:
                _POOLS.popitem(last=False)[1].forget()
        else:
            _POOLS.move_to_end(key)
        return pool


_OWN_POOLS: OrderedDict[tuple[str, str], RandomnessPool] = OrderedDict()


def own_pool_for(party: str, backend: HEBackend, public: Any) -> RandomnessPool:
    """``party``'s pool of own re-randomisation factors for the key holder's ``public`` key."""
    key = (party, f"{backend.name}:{public.fingerprint}")
    with _POOLS_LOCK:
        pool = _OWN_POOLS.get(key)
        if pool is None:
            pool = RandomnessPool(backend, public, chunk=OWN_CHUNK, own=True)
            _OWN_POOLS[key] = pool
            while len(_OWN_POOLS) > OWN_POOL_CACHE_SIZE:
                _OWN_POOLS.popitem(last=False)[1].forget()
        else:
            _OWN_POOLS.move_to_end(key)
        return pool


def forget_own_pools(party: str) -> None:
    """Stop ``party``'s own-randomness pools and drop their factors (the end of its job)."""
    with _POOLS_LOCK:
        keys = [key for key in _OWN_POOLS if key[0] == party]
        pools = [_OWN_POOLS.pop(key) for key in keys]
    for pool in pools:
        pool.forget()


def forget_pools() -> None:
    """Stop every pool's thread and drop every precomputed factor of this process."""
    with _POOLS_LOCK:
        pools = [*_POOLS.values(), *_OWN_POOLS.values()]
        _POOLS.clear()
        _OWN_POOLS.clear()
    for pool in pools:
        pool.forget()


def _after_fork_in_child() -> None:
    """A forked child has none of its parent's threads, and must not inherit its factors."""
    global _POOLS_LOCK
    _POOLS_LOCK = threading.Lock()
    _POOLS.clear()
    _OWN_POOLS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
