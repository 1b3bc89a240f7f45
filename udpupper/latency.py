"""Round trips in bounded memory: buckets 1% wide, whatever the run's length.

A 600 s run at 330,000 replies a second is 200 million round trips: kept
one by one, 1.6 GB, and several more to sort them at the end.  Here the
bench appends each round trip to a small buffer (``pending``, an array:
one C call a reply, as before), and every ``FOLD`` of them the buffer is
sorted (in C) and folded into counts by bucket, found by bisecting at the
buckets' edges, one bisection an occupied bucket.  A bucket is 1% wide
(edges ``FLOOR * 1.01**k``), so a percentile read from it is within 0.5%
of the exact one; the least and the greatest are kept exactly.  The counts
are a dict of at most a few thousand buckets: from 10 ns to 100 s, 2,316.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left

FOLD = 1 << 16  # round trips buffered before they are folded into counts
FLOOR = 1e-8  # seconds: the first bucket's lower edge (10 ns)
GROWTH = 1.01  # each bucket's upper edge over its lower one
_LOG_GROWTH = math.log(GROWTH)


def bucket_of(seconds: float) -> int:
    """The bucket a round trip falls in (0 for anything below FLOOR)."""
    if seconds <= FLOOR:
        return 0
    return int(math.log(seconds / FLOOR) / _LOG_GROWTH)


def lower_edge(bucket: int) -> float:
    return FLOOR * GROWTH**bucket


class Latencies:
    """Counts of round trips by bucket, plus those not folded in yet."""

    __slots__ = ("counts", "greatest", "least", "pending", "total")

    def __init__(self) -> None:
        self.pending = array("d")  # the bench appends here, then calls fold_if_due
        self.counts: dict[int, int] = {}
        self.total = 0
        self.least = math.inf
        self.greatest = 0.0

    def fold_if_due(self) -> None:
        if len(self.pending) >= FOLD:
            self.fold()

    def fold(self) -> None:
        """Count what is pending by bucket, and empty the buffer."""
        if not self.pending:
            return
        ordered = sorted(self.pending)
        del self.pending[:]
        self.least = min(self.least, ordered[0])
        self.greatest = max(self.greatest, ordered[-1])
        self.total += len(ordered)
        counts, size, start = self.counts, len(ordered), 0
        while start < size:
            bucket = bucket_of(ordered[start])
            end = bisect_left(ordered, lower_edge(bucket + 1), start)
            end = max(end, start + 1)  # an edge's rounding never stalls the walk
            counts[bucket] = counts.get(bucket, 0) + end - start
            start = end

    def __len__(self) -> int:
        return self.total + len(self.pending)

    def percentiles(self, *shares: float) -> list[float]:
        """The round trips (seconds) below which each share lies, by the
        bench's rule (the value at rank ``int(share * n)``), within 0.5%; the
        least and the greatest exactly."""
        self.fold()
        if not self.total:
            return [0.0] * len(shares)
        ranks = [min(self.total - 1, int(share * self.total)) for share in shares]
        found: dict[int, float] = {0: self.least, self.total - 1: self.greatest}
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            for rank in ranks:
                if rank not in found and rank < seen:
                    # The bucket's middle, within the exact least and greatest.
                    middle = lower_edge(bucket) * math.sqrt(GROWTH)
                    found[rank] = min(max(middle, self.least), self.greatest)
            if all(rank in found for rank in ranks):
                break
        return [found[rank] for rank in ranks]

    def weighted(self) -> list[tuple[float, int]]:
        """Each occupied bucket's middle (seconds) and count, in order."""
        self.fold()
        return [
            (
                min(max(lower_edge(bucket) * math.sqrt(GROWTH), self.least), self.greatest),
                self.counts[bucket],
            )
            for bucket in sorted(self.counts)
        ]
