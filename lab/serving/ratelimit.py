"""Per-bank token-bucket rate limiting of the scoring endpoint.

Each bank has a bucket of ``burst`` tokens refilled at ``rate`` tokens per second; a call takes
one token or is refused with the time until the next one (HTTP 429 with ``Retry-After``).
Buckets live in the endpoint process's memory: a restart refills them.
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

    def acquire(self, key: str) -> float:
        """Take one token for ``key``; return 0.0, or the seconds to wait if none is left."""
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate
