"""Token buckets by name (a key id, or a client address), in memory, per search process.

Each bucket holds up to `burst` tokens and gains `rate` per second; a request takes one. The buckets are kept in
least-recently-used order and bounded, so a flood of distinct addresses costs bounded memory (a dropped bucket
comes back full, which only ever lets one address through sooner). With several replicas each keeps its own
buckets: a key's effective rate is its rate times the replicas its requests reach.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class TokenBuckets:
    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def _refilled(self, name: str, rate: float, burst: int) -> _Bucket:
        now = self.clock()
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = _Bucket(float(burst), now)
            self._buckets[name] = bucket
            if len(self._buckets) > self.max_entries:
                self._buckets.popitem(last=False)
        else:
            bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.stamp) * rate)
            bucket.stamp = now
            self._buckets.move_to_end(name)
        return bucket

    def take(self, name: str, rate: float, burst: int) -> float:
        """Take a token: 0.0 when there was one, else the seconds until there is (nothing taken)."""
        bucket = self._refilled(name, rate, burst)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate

    def wait(self, name: str, rate: float, burst: int) -> float:
        """Seconds until `name` has a token (0.0: it has one now), taking nothing."""
        bucket = self._refilled(name, rate, burst)
        return 0.0 if bucket.tokens >= 1.0 else (1.0 - bucket.tokens) / rate

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after(seconds: float) -> str:
    """The Retry-After header: whole seconds, at least 1 (a client that retries sooner is refused again)."""
    return str(max(1, math.ceil(seconds)))
