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
refused and not remembered.

Given the ``sender`` too (the source address), a key not in the table goes
through a *trial* first, as a cache keeps its regulars from a scan
(segmented LRU, 2Q, TinyLFU's admission).  Spoofed sources rarely send
twice from one address, and never three times; real clients ask again.
So:

- An address not on probation, asking for a key not in the table, is
  answered within ``new_rate`` (shared by all of them) and the key's
  bucket; the key is put on trial: a table of its own, ``trial`` keys a
  generation, with a bucket each, the same rate and burst.
- An address that asks again (remembered on probation, two generations of
  PROBATION_TIME seconds and at most ``probation`` each) puts its key on
  trial whatever ``new_rate`` says: a client refused at its first try gets
  in at its second, however many new keys a flood brings.
- A key on trial that two datagrams from addresses that asked before reach
  *settles*: it moves to the table proper, at most ``size`` / SETTLE_TIME a
  second all together.

A flood of spoofed sources, each sending once or twice, from a large space
or a small one that recurs, fills the trial and the probation, never the
table: a known key, quiet, is kept for ``size`` keys settled after it, at
least SETTLE_TIME seconds whatever the flood.  Every key keeps its own
bucket wherever it is, so its rate holds, but across a trial that a flood
turns over before the key comes back: that key starts again from a full
bucket.

``RateLimiter`` is the same class in C (``_ratelimit.c``) where it could be
built: under a flood from 65,536 prefixes a dict's look-up is a chain of
cache misses, and the C table keeps a key's hash and bucket in one slot of
an array.  It knows a key by its (SipHash) hash, as the loop breaker does.
``PythonRateLimiter`` is what runs without a compiler; the tests hold both
to the same cases, and to each other.
"""

from __future__ import annotations

from collections.abc import Hashable

from udpupper import helpers

# How long a generation of probation lasts: an address is on probation for
# two to four seconds after it last asked (less under a flood that fills a
# generation first), and a client asks again after one.
PROBATION_TIME = 2.0
# A key settles after this many datagrams on trial from addresses that asked
# before (a client's second and third: one more than a source spoofed twice).
SETTLE_HITS = 2
# The table takes in at most ``size`` settled keys in this many seconds: a
# known key is kept at least that long, whatever a flood does.
SETTLE_TIME = 120.0
TRIAL_MEMORY = 65_536  # keys on trial a generation, at most


def gate_depth(interval: float) -> float:
    """How deep a gate of one key per ``interval`` seconds is: a second's
    worth, at least one key (a rate below one a second still lets one by)."""
    return max(1.0, interval)


class PythonRateLimiter:
    """Decides, key by key, whether one more token may be spent now."""

    __slots__ = (
        "burst",
        "depth",
        "interval",
        "limit",
        "new_depth",
        "new_full_at",
        "new_interval",
        "older",
        "probation",
        "rate",
        "recent",
        "seen",
        "seen_before",
        "seen_since",
        "settle_depth",
        "settle_interval",
        "settled_full_at",
        "size",
        "trial",
        "trial_older",
        "trial_recent",
    )

    def __init__(
        self,
        rate: float,
        burst: float,
        size: int = 65_536,
        new_rate: float = 0.0,
        probation: int | None = None,
        trial: int | None = None,
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
        if trial is None:
            trial = min(size, TRIAL_MEMORY)
        if trial < 1:
            raise ValueError(f"trial must be 1 or more, not {trial}")
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
        # The same algorithm for new keys, all together (0: no limit), and
        # for the keys that settle.
        self.new_interval = 1.0 / new_rate if new_rate else 0.0
        self.new_depth = gate_depth(self.new_interval)
        self.new_full_at = 0.0
        self.settle_interval = SETTLE_TIME / size
        self.settle_depth = gate_depth(self.settle_interval)
        self.settled_full_at = 0.0
        # The keys on trial: key -> (when its bucket is full again, its
        # datagrams from addresses that asked before), in two generations.
        self.trial = trial
        self.trial_recent: dict[Hashable, tuple[float, int]] = {}
        self.trial_older: dict[Hashable, tuple[float, int]] = {}
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
        ``sender``, a key not in the table goes through its trial instead.
        """
        recent = self.recent
        full_at = recent.get(key)  # the hot path: one look-up, one store
        if full_at is None:
            full_at = self.older.pop(key, None)
            if full_at is None:
                if sender is not None:
                    return self._on_trial(key, now, sender)
                if not self._new_key(now):
                    return None
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

    def _on_trial(self, key: Hashable, now: float, sender: Hashable) -> bool | None:
        """:meth:`allow` for a key not in the table, from ``sender``."""
        self._age_probation(now)
        asked_before = self._recall(sender, now)
        if not asked_before and not self._new_key(now):
            return None  # a stranger beyond the strangers' rate
        trial = self.trial_recent
        entry = trial.get(key)
        in_recent = entry is not None
        if entry is None:
            entry = self.trial_older.pop(key, None)
            if entry is None:
                entry = (now, 0)  # on trial, with a full bucket
        full_at, hits = entry
        if asked_before:
            hits += 1
        full_at, allowed = self._spend(full_at, now)
        if hits >= SETTLE_HITS and self._settles(now):
            if in_recent:
                del trial[key]
            recent = self.recent
            if len(recent) >= self.size:
                self.older = recent
                self.recent = recent = {}
            recent[key] = full_at
        else:
            if not in_recent and len(trial) >= self.trial:
                self.trial_older = trial
                self.trial_recent = trial = {}
            trial[key] = (full_at, hits)
        return allowed

    def _spend(self, full_at: float, now: float) -> tuple[float, bool]:
        """A bucket full again at ``full_at``, at ``now``: its new state, and
        whether it had a token to spend (as :meth:`allow`'s hot path)."""
        if full_at < now:
            full_at = now
        elif full_at > now + self.depth:
            full_at = now + self.depth
        if full_at - now > self.limit:
            return full_at, False
        return full_at + self.interval, True

    def _new_key(self, now: float) -> bool:
        """Whether one more new key may be answered this second."""
        if not self.new_interval:
            return True
        self.new_full_at, allowed = gate(self.new_full_at, now, self.new_interval, self.new_depth)
        return allowed

    def _settles(self, now: float) -> bool:
        """Whether one more key may settle in the table now."""
        self.settled_full_at, allowed = gate(
            self.settled_full_at, now, self.settle_interval, self.settle_depth
        )
        return allowed

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

    def _recall(self, sender: Hashable, now: float) -> bool:
        """Whether ``sender`` asked before (while on probation); either way it
        is on probation, in the recent generation, from now."""
        if sender in self.seen:
            return True
        asked_before = sender in self.seen_before
        if len(self.seen) >= self.probation:
            self._next_generation(now)
        self.seen.add(sender)
        return asked_before

    def where(self, key: Hashable) -> int:
        """0: ``key`` is not known; 1: it is on trial; 2: in the table."""
        if key in self.recent or key in self.older:
            return 2
        return 1 if key in self.trial_recent or key in self.trial_older else 0

    def __contains__(self, key: Hashable) -> bool:
        return self.where(key) != 0

    def __len__(self) -> int:
        """How many keys are known now, in the table and on trial: at most
        twice ``size`` and twice ``trial``."""
        return len(self.recent) + len(self.older) + len(self.trial_recent) + len(self.trial_older)


def gate(full_at: float, now: float, interval: float, depth: float) -> tuple[float, bool]:
    """One bucket for keys together, one key per ``interval`` seconds and
    ``depth`` seconds' worth at once: its new state, and whether one more
    may pass at ``now``."""
    if full_at < now:
        full_at = now
    elif full_at > now + depth:
        full_at = now + depth  # the clock stepped back
    if full_at - now > depth - interval * 0.999:
        return full_at, False
    return full_at + interval, True


def probation_size(size: int) -> int:
    """Entries a generation of probation holds for a table of ``size`` keys:
    four times as many, from 262,144 to 1,048,576 (8 to 32 MiB in C).  At
    262,144, an address is on probation for at least 1.6 s under a flood of
    150,000 new ones a second (the keys answered add ``new_rate``), and a
    client asks again after one: the floor is for the flood, not the table."""
    return min(max(4 * size, 1 << 18), 1 << 20)


_ratelimit = helpers.load("ratelimit")  # the same class in C, where it could be built
RateLimiter = PythonRateLimiter if _ratelimit is None else _ratelimit.RateLimiter
