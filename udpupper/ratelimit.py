"""Response-rate limiting: a token bucket per source prefix, in bounded memory.

As BIND, NSD and Knot do for DNS: each /24 (IPv4) or /56 (IPv6) prefix may
have ``rate`` replies a second, with bursts up to ``burst``.  The table holds
at most ``size`` prefixes; the one seen least recently is forgotten first, so
a flood from spoofed sources cannot grow memory, and forgetting a prefix only
ever gives it a full bucket again.
"""

from __future__ import annotations

from collections.abc import Hashable


class RateLimiter:
    """Decides, prefix by prefix, whether one more reply may go now."""

    __slots__ = ("rate", "burst", "size", "buckets")

    def __init__(self, rate: float, burst: float, size: int = 65_536) -> None:
        if rate <= 0 or burst < 1 or size < 1:
            raise ValueError("rate must be > 0, burst >= 1 and size >= 1")
        self.rate = rate
        self.burst = burst
        self.size = size
        # prefix -> [tokens, when last refilled]; dict order is recency order.
        self.buckets: dict[Hashable, list[float]] = {}

    def allow(self, prefix: Hashable, now: float) -> bool:
        """Take one token from ``prefix``'s bucket at time ``now``, if it has one."""
        buckets = self.buckets
        bucket = buckets.pop(prefix, None)
        if bucket is None:
            if len(buckets) >= self.size:
                del buckets[next(iter(buckets))]  # the least recently seen
            bucket = [self.burst, now]
        else:
            elapsed = now - bucket[1]
            if elapsed > 0:
                bucket[0] = min(self.burst, bucket[0] + elapsed * self.rate)
                bucket[1] = now
        buckets[prefix] = bucket
        if bucket[0] >= 1:
            bucket[0] -= 1
            return True
        return False

    def __len__(self) -> int:
        """How many prefixes the table holds now."""
        return len(self.buckets)
