"""Token buckets by key, in bounded memory: the rate limit and the loop budget.

As BIND, NSD and Knot do for DNS: each key (a /24 or /56 source prefix for
the rate limit) may have ``rate`` tokens a second, with bursts up to
``burst``.  As an LRU table of ``size`` keys would, the table forgets a key
only once ``size`` others have been seen since it last was; it holds at
most twice ``size``, so a flood from spoofed sources can grow neither memory
nor the cost of one datagram, and forgetting a key only ever gives it a
full bucket again.

It is kept as two plain dicts, generations of up to ``size`` keys: a key
seen is in ``recent``, or moves there from ``older``; when ``recent`` is
full it becomes ``older`` and what ``older`` held is forgotten.  A known key
then costs one look-up and one store: an ``OrderedDict`` kept in recency
order (``move_to_end``) cost twice that under a flood from 65,536 prefixes,
in cache misses on its links (775 against 387 ns a datagram measured).

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

``RateLimiter`` is the same class in C (``_ratelimit.c``) where it could be
built: under a flood from 65,536 prefixes a dict's look-up is a chain of
cache misses, and the C table keeps a key's hash and bucket in one slot of
an array.  It knows a key by its (SipHash) hash, as the loop breaker does.
``PythonRateLimiter`` is what runs without a compiler; the tests hold both
to the same cases, and to each other.
"""

from __future__ import annotations

from collections.abc import Hashable


class PythonRateLimiter:
    """Decides, key by key, whether one more token may be spent now."""

    __slots__ = ("rate", "burst", "size", "recent", "older", "interval", "depth", "limit",
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
        # key -> when its bucket is full again, in two generations: the keys
        # seen since ``recent`` began, and those of the generation before
        # that have not been seen again since.
        self.recent: dict[Hashable, float] = {}
        self.older: dict[Hashable, float] = {}
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
        recent = self.recent
        full_at = recent.get(key)  # the hot path: one look-up, one store
        if full_at is None:
            full_at = self.older.pop(key, None)
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
                full_at = now  # a new key has a full bucket
            if len(recent) >= self.size:
                # A generation is full: the one before it, the keys not seen
                # for ``size`` others, is forgotten, all at once.
                self.older = recent
                self.recent = recent = {}
        if full_at < now:
            full_at = now  # full: tokens beyond the burst are not kept
        elif full_at > now + self.depth:
            full_at = now + self.depth  # the clock stepped back: empty, from now
        if full_at - now > self.limit:
            recent[key] = full_at
            return False  # less than one token left
        recent[key] = full_at + self.interval
        return True

    def __contains__(self, key: Hashable) -> bool:
        return key in self.recent or key in self.older

    def __len__(self) -> int:
        """How many keys the table holds now: at most twice ``size``."""
        return len(self.recent) + len(self.older)


try:  # the same class in C, where it could be built
    from udpupper._ratelimit import RateLimiter
except ImportError:  # pragma: no cover - depends on the build
    RateLimiter = PythonRateLimiter  # type: ignore[misc]
