"""Timers on a monotonic clock: a wall-clock step changes nothing.

Twisted's reactors schedule ``callLater`` on ``reactor.seconds``, which is
``time.time``: with the wall clock stepped back an hour, a timer due in a
second waits an hour (Twisted ticket #2424, open; checked against Twisted
22.10 to 26.10).  The workaround that ticket's duplicates describe is to
make ``reactor.seconds`` monotonic before any timer is scheduled: every
``DelayedCall`` then takes its times from it, and the reactor computes its
wait from it.  Nothing in udpupper reads ``reactor.seconds()`` as a date:
log lines take their time from the logger, not from here.
"""

from __future__ import annotations

import time


def use_monotonic_clock(reactor) -> bool:
    """Make ``reactor`` schedule on ``time.monotonic``; whether it does now.

    Only while no timer is pending: one scheduled on the wall clock would
    otherwise fire decades late.  (None is, when the daemon and the client
    call this, before their reactor runs.)
    """
    if reactor.seconds is time.monotonic:
        return True
    if reactor.getDelayedCalls():
        return False
    reactor.seconds = time.monotonic
    return True
