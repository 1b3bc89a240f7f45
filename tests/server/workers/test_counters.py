"""What the --workers parent adds up of its workers' counters."""

from __future__ import annotations

from twisted.trial import unittest

from tests import tiers


@tiers.unit
class WorkerCountersTests(unittest.TestCase):
    def report(self, received: int, replied: int, **drops: int) -> dict:
        return {
            "received": received,
            "replied": replied,
            "bytes_in": received,
            "bytes_out": replied,
            "drops": drops,
        }

    def test_what_a_killed_worker_did_after_its_report_is_counted(self) -> None:
        from udpupper.server.stats import Reason, Stats
        from udpupper.server.workers.counters import WorkerCounters

        counters = WorkerCounters(["worker-1"])
        counters.update("worker-1", self.report(10, 8, rate_limited=2))
        shared = Stats()  # then it read 15 more and answered 12, and was killed
        shared.received, shared.replied, shared.bytes_in, shared.bytes_out = 25, 20, 25, 20
        last = counters.retire("worker-1", shared)
        self.assertEqual((last.received, last.replied), (10, 8))  # as it said
        total = counters.totals()
        self.assertEqual((total.received, total.replied, total.bytes_out), (25, 20, 20))
        self.assertEqual(total.counted(), {Reason.RATE_LIMITED: 2, Reason.WORKER_ENDED: 3})
        counters.update("worker-1", self.report(4, 4))  # its successor
        counters.retire("worker-1", shared_of(4, 4))  # stopped: all reported
        total = counters.totals()
        self.assertEqual((total.received, total.replied, total.dropped), (29, 24, 5))


def shared_of(received: int, replied: int):
    from udpupper.server.stats import Stats

    shared = Stats()
    shared.received, shared.replied, shared.bytes_in, shared.bytes_out = (
        received,
        replied,
        received,
        replied,
    )
    return shared
