"""Token buckets by key, in bounded memory: the rate limit and the loop budget.

As BIND, NSD and Knot do for DNS: each key (a /24 or /56 source prefix for
the rate limit) may have ``rate`` tokens a second, with bursts up to
``burst``.  The table holds at most ``size`` keys; the one seen least
recently is forgotten first, in constant time, so a flood from spoofed
sources can grow neither memory nor the cost of one datagram, and
forgetting a key only ever gives it a full bucket again.

Time is whatever the caller says it is, and may step back: a bucket is then
refilled from the new time on, never starved until the old one comes back.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class RateLimiter:
    """Decides, key by key, whether one more token may be spent now."""

    __slots__ = ("rate", "burst", "size", "buckets")

    def __init__(self, rate: float, burst: float, size: int = 65_536) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be more than 0, not {rate:g}")
        if not burst >= 1:
            raise ValueError(f"burst must be 1 or more, not {burst:g}")
        if size < 1:
            raise ValueError(f"size must be 1 or more, not {size}")
        self.rate = rate
        self.burst = burst
        self.size = size
        # key -> [tokens, when last refilled], least recently seen first.
        self.buckets: OrderedDict[Hashable, list[float]] = OrderedDict()

    def allow(self, key: Hashable, now: float) -> bool:
        """Take one token from ``key``'s bucket at time ``now``, if it has one."""
        buckets = self.buckets
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= self.size:
                buckets.popitem(last=False)  # the least recently seen
            buckets[key] = bucket = [self.burst, now]
        else:
            buckets.move_to_end(key)
            elapsed = now - bucket[1]
            if elapsed:
                # Back in time: start again from now, with what it has.
                if elapsed > 0:
                    bucket[0] = min(self.burst, bucket[0] + elapsed * self.rate)
                bucket[1] = now
        if bucket[0] >= 1:
            bucket[0] -= 1
            return True
        return False

    def __len__(self) -> int:
        """How many keys the table holds now."""
        return len(self.buckets)
