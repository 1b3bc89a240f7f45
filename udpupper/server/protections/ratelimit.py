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

Given the ``sender`` too (the source address), a key not in the table is
on probation first.  Spoofed sources rarely send twice from one address;
real clients ask again.  Every address not in the table is remembered, and
a key's first datagram is answered within ``new_rate`` (the key remembered
too), but the key is not taken in.  The next datagram from an address or a
key remembered takes the key in (within a rate of its own, ``new_rate``
too), with a full bucket less the token of the first reply: a key not in
the table gets one reply, then its rate.  Probation is short and bounded:
two generations of PROBATION_TIME seconds and at most ``probation``
entries each.  So a flood of new sources, however fast, neither fills the
table (a quiet client stays known: only a key answered before, or an
address that asks again, gets in) nor shuts out a new client that asks
twice.

``RateLimiter`` is the same class in C (``_ratelimit.c``) where it could be
built: under a flood from 65,536 prefixes a dict's look-up is a chain of
cache misses, and the C table keeps a key's hash and bucket in one slot of
an array.  It knows a key by its (SipHash) hash, as the loop breaker does.
``PythonRateLimiter`` is what runs without a compiler; the tests hold both
to the same cases, and to each other.
"""

from __future__ import annotations

from collections.abc import Hashable

# How long a generation of probation lasts: an address or a key is on
# probation for two to four seconds (less under a flood that fills a
# generation first), and a client asks again after one.
PROBATION_TIME = 2.0


class PythonRateLimiter:
    """Decides, key by key, whether one more token may be spent now."""

    __slots__ = ("rate", "burst", "size", "recent", "older", "interval", "depth", "limit",
                 "new_interval", "new_limit", "new_full_at", "promoted_full_at",
                 "probation", "seen", "seen_before", "seen_since")

    def __init__(
        self,
        rate: float,
        burst: float,
        size: int = 65_536,
        new_rate: float = 0.0,
        probation: int | None = None,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be more than 0, not {rate:g}")
        if not burst >= 1:
            raise ValueError(f"burst must be 1 or more, not {burst:g}")
        if size < 1:
            raise ValueError(f"size must be 1 or more, not {size}")
        if not new_rate >= 0:
            raise ValueError(f"new_rate must be 0 or more, not {new_rate:g}")
        if probation is None:
            probation = probation_size(size)
        if probation < 1:
            raise ValueError(f"probation must be 1 or more, not {probation}")
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
        self.promoted_full_at = 0.0  # the same, for keys that come back
        # The senders of keys not in the table, in two generations of up to
        # ``probation``, as the table's keys are.
        self.probation = probation
        self.seen: set[Hashable] = set()
        self.seen_before: set[Hashable] = set()
        self.seen_since = 0.0  # when ``seen`` began

    def allow(self, key: Hashable, now: float, sender: Hashable = None) -> bool | None:
        """Take one token from ``key``'s bucket at time ``now``, if it has one.

        True: it had one.  False: its bucket is empty.  None: the key is new,
        and so many new keys came this second that it is not taken in.  With
        ``sender``, a new key is on probation: its sender's first datagram is
        answered (True) within the new keys' rate and the key not taken in.
        """
        recent = self.recent
        full_at = recent.get(key)  # the hot path: one look-up, one store
        if full_at is None:
            full_at = self.older.pop(key, None)
            if full_at is None:
                if sender is None:
                    if not self._new_key(now):
                        return None
                    full_at = now  # a new key has a full bucket
                else:
                    self._age_probation(now)
                    if not self._on_probation(sender):
                        self._put_on_probation(sender, now)
                        if not self._on_probation(key):
                            if not self._new_key(now):
                                return None
                            self._put_on_probation(key, now)
                            return True  # answered; the key is not taken in
                    # The address asks again, or the key does (another of its
                    # addresses, after its first reply): taken in.
                    if not self._comes_back(now):
                        return None
                    # Taken in, less the token its first reply took.
                    full_at = now + min(self.interval, self.limit)
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

    def _new_key(self, now: float) -> bool:
        """Whether one more new key may be answered this second."""
        self.new_full_at, allowed = self._gate(self.new_full_at, now)
        return allowed

    def _comes_back(self, now: float) -> bool:
        """Whether one more key on probation may be taken in this second."""
        self.promoted_full_at, allowed = self._gate(self.promoted_full_at, now)
        return allowed

    def _gate(self, full_at: float, now: float) -> tuple[float, bool]:
        """One bucket of a second's worth for keys together: its new state,
        and whether one more may pass (always, with no ``new_rate``)."""
        if not self.new_interval:
            return full_at, True
        if full_at < now:
            full_at = now
        elif full_at > now + 1.0:
            full_at = now + 1.0  # the clock stepped back
        if full_at - now > self.new_limit:
            return full_at, False
        return full_at + self.new_interval, True

    def _age_probation(self, now: float) -> None:
        """A new generation every PROBATION_TIME (or when the clock steps back);
        two, when the last began two or more before."""
        elapsed = now - self.seen_since
        if not 0.0 <= elapsed < PROBATION_TIME:
            self._next_generation(now)
            if not elapsed < 2 * PROBATION_TIME:
                self._next_generation(now)

    def _next_generation(self, now: float) -> None:
        self.seen_before = self.seen
        self.seen = set()
        self.seen_since = now

    def _on_probation(self, item: Hashable) -> bool:
        return item in self.seen or item in self.seen_before

    def _put_on_probation(self, item: Hashable, now: float) -> None:
        if len(self.seen) >= self.probation:
            self._next_generation(now)
        self.seen.add(item)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.recent or key in self.older

    def __len__(self) -> int:
        """How many keys the table holds now: at most twice ``size``."""
        return len(self.recent) + len(self.older)


def probation_size(size: int) -> int:
    """Entries a generation of probation holds for a table of ``size`` keys:
    four times as many, from 262,144 to 1,048,576 (8 to 32 MiB in C).  At
    262,144, an address is on probation for at least 1.6 s under a flood of
    150,000 new ones a second (the keys answered add ``new_rate``), and a
    client asks again after one: the floor is for the flood, not the table."""
    return min(max(4 * size, 1 << 18), 1 << 20)


try:  # the same class in C, where it could be built
    from udpupper.server.protections._ratelimit import RateLimiter
except ImportError:  # pragma: no cover - depends on the build
    RateLimiter = PythonRateLimiter  # type: ignore[misc, assignment]
