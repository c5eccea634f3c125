"""Token buckets, and keyed registries of them with bounded memory (``gateway.handlers.limits`` keys
them by device, user and source address)."""

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; ``take`` spends one if available."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._stamp = clock()

    def _refill(self) -> float:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        return now

    def take(self) -> bool:
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait_s(self) -> float:
        """Seconds until a token is available (0.0: one is available now)."""
        self._refill()
        return max(0.0, (1.0 - self._tokens) / self._rate)

    def full(self) -> bool:
        """Whether the bucket has refilled to its burst: it is then the same as a new one."""
        self._refill()
        return self._tokens >= self._burst


def take_all(buckets: Sequence[TokenBucket]) -> float:
    """Take one token from every bucket or from none: 0.0 when taken, else the seconds until
    every bucket has one (a refused request spends nothing)."""
    wait = max(bucket.wait_s() for bucket in buckets)
    if wait > 0.0:
        return wait
    for bucket in buckets:
        bucket.take()
    return 0.0


class KeyedBuckets(Generic[K]):
    """One ``TokenBucket`` per key, in memory bounded two ways: a bucket that refilled to its
    burst is dropped (a new one would be identical, so nothing is forgotten), and past
    ``max_keys`` the least recently used key goes (it starts again with a full bucket)."""

    def __init__(self, rate: float, burst: int, max_keys: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[K, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def get(self, key: K) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self._rate, self._burst, self._clock)
        else:
            self._buckets.move_to_end(key)
        self._evict()
        return bucket

    def _evict(self) -> None:
        """Drop idle buckets from the least recently used end, then any over the cap."""
        while len(self._buckets) > 1:
            key, oldest = next(iter(self._buckets.items()))
            if not oldest.full():
                break
            del self._buckets[key]
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
