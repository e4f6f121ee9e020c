"""Per-bank token-bucket rate limiting of the scoring endpoint.

Each bank has a bucket of ``burst`` tokens refilled at ``rate`` tokens per second; a request
takes ``cost`` tokens or is refused with the time until enough are back (HTTP 429 with
``Retry-After``). The endpoint keeps two limiters per bank: one counting calls (each has a fixed
cost: authentication, an audit entry), one counting work, ``enterprises x splits`` of a call
(each enterprise is an authorization lookup, each split a bit revealed). Buckets live in the
endpoint process's memory: a restart refills them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    stamp: float


#: Calls per second a bank may make, sustained, and at once after being idle.
DEFAULT_CALL_RATE = 20.0
DEFAULT_CALL_BURST = 40
#: Decisions (enterprises x splits, or x columns for a hetero LR part) per second a bank may ask
#: for, sustained, and at once: the burst is also the most one call may ask (1,000 enterprises,
#: the most a call may name, times 20 splits).
DEFAULT_DECISION_RATE = 2000.0
DEFAULT_DECISION_BURST = 20000


class TokenBucketLimiter:
    """Token buckets keyed by bank.

    Parameters
    ----------
    rate : float
        Tokens added per second (sustained calls per second per bank), > 0.
    burst : int
        Bucket size (calls a bank may make at once after being idle), >= 1.
    clock : callable, optional
        Monotonic seconds; default :func:`time.monotonic`.
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0 calls per second, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1 call, got {burst}")
        self.rate = float(rate)
        self.burst = int(burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, key: str, cost: float = 1.0) -> float:
        """Take ``cost`` tokens for ``key``; return 0.0, or the seconds until enough are back.

        Raises
        ------
        ValueError
            If ``cost`` exceeds the bucket (``burst``): it could never be granted.
        """
        if cost > self.burst:
            raise ValueError(f"a cost of {cost:g} exceeds the bucket of {self.burst}")
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.tokens >= cost:
                bucket.tokens -= cost
                return 0.0
            return (cost - bucket.tokens) / self.rate
