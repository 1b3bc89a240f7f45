"""The loop breaker: a budget on echoes that repeat, per source address.

Two echo services can be made to answer each other for ever with one
spoofed datagram: after the first bounce every datagram of the loop is
already upper case, so each reply equals its request, and the same payload
comes back from the same address again and again.  A client's traffic
rarely looks like that, and never for long: a benchmark numbers its
requests, a person repeats a line now and then.  So a reply that equals its
request, to a request already seen from that address (same payload), spends
one token of that address's budget: ``budget`` at once, refilled at a tenth
of it a second.  A loop at tens of thousands of datagrams a second spends it
in a fraction of a second and dies; the first repetition of a line is free,
so a client's second identical line is answered.

Requests seen are remembered as hashes in a fixed table of ``size`` slots,
and budgets for at most ``size`` addresses: bounded, whatever the flood.
The source port is not part of either, so a loop through a proxy that
changes its source port for each datagram is seen too.
"""

from __future__ import annotations

from array import array

from udpupper.ratelimit import RateLimiter

REFILL_SECONDS = 10.0  # a spent budget is whole again after this long


class LoopBreaker:
    """Whether one more unchanged echo of a repeated request may go."""

    __slots__ = ("limiter", "seen", "mask")

    def __init__(self, budget: int, size: int) -> None:
        self.limiter = RateLimiter(budget / REFILL_SECONDS, budget, size)
        slots = 1 << max(size - 1, 1).bit_length()  # a power of two >= size
        self.seen = array("q", bytes(8 * slots))
        self.mask = slots - 1

    def allow(self, host: str, payload: bytes, now: float) -> bool:
        """For a reply equal to its request ``payload`` from ``host``, at ``now``."""
        key = hash((host, payload))
        slot = key & self.mask
        if self.seen[slot] != key:
            self.seen[slot] = key  # the first time: free
            return True
        return self.limiter.allow(host, now)
