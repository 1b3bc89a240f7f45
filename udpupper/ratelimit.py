"""Token buckets by key, in bounded memory: the rate limit and the loop budget.

As BIND, NSD and Knot do for DNS: each key (a /24 or /56 source prefix for
the rate limit) may have ``rate`` tokens a second, with bursts up to
``burst``.  The table holds at most ``size`` keys; the one seen least
recently is forgotten first, in constant time, so a flood from spoofed
sources can grow neither memory nor the cost of one datagram, and
forgetting a key only ever gives it a full bucket again.

Each bucket is one float, the time at which it would be full again (the
generic cell rate algorithm, exactly a token bucket): no object per key for
the garbage collector to walk, which a flood of new keys would make costly.
Time is whatever the caller says it is, and may step back: a bucket is then
taken as empty at the new time at worst and refills from there, never
starved until the old time comes back.

Keys not in the table may also have a rate of their own, all together
(``new_rate`` a second, a second's worth at once): beyond it a new key is
refused and not remembered.  A flood from spoofed sources, each one new,
then neither pushes the keys that talk out of the table nor has each of its
datagrams answered.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class RateLimiter:
    """Decides, key by key, whether one more token may be spent now."""

    __slots__ = ("rate", "burst", "size", "buckets", "interval", "depth", "limit",
                 "new_interval", "new_limit", "new_full_at")

    def __init__(
        self, rate: float, burst: float, size: int = 65_536, new_rate: float = 0.0
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be more than 0, not {rate:g}")
        if not burst >= 1:
            raise ValueError(f"burst must be 1 or more, not {burst:g}")
        if size < 1:
            raise ValueError(f"size must be 1 or more, not {size}")
        if not new_rate >= 0:
            raise ValueError(f"new_rate must be 0 or more, not {new_rate:g}")
        self.rate = rate
        self.burst = burst
        self.size = size
        self.interval = 1.0 / rate  # what one token is worth, in seconds
        self.depth = burst * self.interval  # a full bucket, in seconds
        # A token may be spent while the bucket is full again within this
        # long (a thousandth of a token spare for the float sums' rounding).
        self.limit = self.depth - self.interval * 0.999
        # key -> when its bucket is full again, least recently seen first.
        self.buckets: OrderedDict[Hashable, float] = OrderedDict()
        # The same algorithm for new keys, all together: one bucket of a
        # second's worth (0: no limit on new keys).
        self.new_interval = 1.0 / new_rate if new_rate else 0.0
        self.new_limit = 1.0 - self.new_interval * 0.999
        self.new_full_at = 0.0

    def allow(self, key: Hashable, now: float) -> bool | None:
        """Take one token from ``key``'s bucket at time ``now``, if it has one.

        True: it had one.  False: its bucket is empty.  None: the key is new,
        and so many new keys came this second that it is not taken in.
        """
        buckets = self.buckets
        full_at = buckets.get(key)
        if full_at is None:
            if self.new_interval:
                new_full_at = self.new_full_at
                if new_full_at < now:
                    new_full_at = now
                elif new_full_at > now + 1.0:
                    new_full_at = now + 1.0  # the clock stepped back
                if new_full_at - now > self.new_limit:
                    self.new_full_at = new_full_at
                    return None
                self.new_full_at = new_full_at + self.new_interval
            if len(buckets) >= self.size:
                buckets.popitem(last=False)  # the least recently seen
            buckets[key] = now + self.interval
            return True  # a new key has a full bucket
        buckets.move_to_end(key)
        if full_at < now:
            full_at = now  # full: tokens beyond the burst are not kept
        elif full_at > now + self.depth:
            full_at = now + self.depth  # the clock stepped back: empty, from now
        if full_at - now > self.limit:
            buckets[key] = full_at
            return False  # less than one token left
        buckets[key] = full_at + self.interval
        return True

    def __len__(self) -> int:
        """How many keys the table holds now."""
        return len(self.buckets)
