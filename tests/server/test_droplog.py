"""Drop reasons reach the log at most once per period, with their counts."""

from __future__ import annotations

from twisted.logger import Logger, formatEvent
from twisted.trial import unittest

from tests import tiers
from udpupper.server.droplog import DropLog
from udpupper.server.stats import Stats


@tiers.unit
class DropLogTests(unittest.TestCase):
    def setUp(self) -> None:
        self.events: list[dict] = []
        self.stats = Stats()
        self.drop_log = DropLog(self.stats, Logger(observer=self.events.append), period=30)

    def lines(self) -> list[str]:
        return [formatEvent(event) for event in self.events]

    def test_quiet_when_nothing_drops(self) -> None:
        self.drop_log.check(0)
        self.drop_log.check(100)
        self.assertEqual(self.events, [])

    def test_once_per_period_with_the_count_since(self) -> None:
        for _ in range(5):
            self.stats.drop("rate_limited")
        self.drop_log.check(1.0)
        for second in range(2, 31):
            for _ in range(1000):
                self.stats.drop("rate_limited")
            self.drop_log.check(float(second))
        self.assertEqual(self.lines(), ["udpupper dropped 5 datagram(s) for rate_limited so far"])
        self.drop_log.check(31.0)
        self.assertEqual(
            self.lines()[1],
            "udpupper dropped 29000 datagram(s) for rate_limited in the last 30 s",
        )
        self.drop_log.check(100.0)
        self.assertEqual(len(self.events), 2)  # nothing new: no line

    def test_each_reason_has_its_own_period(self) -> None:
        self.stats.drop("low_source_port")
        self.drop_log.check(0)
        self.stats.drop("bad_source")
        self.drop_log.check(1)
        self.assertEqual(len(self.events), 2)

    def test_kernel_drops(self) -> None:
        self.stats.kernel_drops = 7
        self.drop_log.check(0)
        self.assertEqual(
            self.lines(), ["udpupper dropped 7 datagram(s) for receive_buffer_full so far"]
        )
