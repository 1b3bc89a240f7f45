"""The counters and the line they make for the log."""

from twisted.trial import unittest

from udpupper.stats import Stats


class StatsTests(unittest.TestCase):
    def test_starts_at_zero(self) -> None:
        stats = Stats()
        self.assertEqual(
            (stats.received, stats.replied, stats.bytes_in, stats.bytes_out, stats.dropped),
            (0, 0, 0, 0, 0),
        )
        self.assertEqual(
            stats.summary(),
            "received=0 replied=0 bytes_in=0 bytes_out=0 dropped=0 kernel_drops=0",
        )

    def test_drops_by_reason(self) -> None:
        stats = Stats()
        stats.received = 5
        stats.replied = 2
        stats.bytes_in = 50
        stats.bytes_out = 20
        stats.drop("too_large")
        stats.drop("send_buffer_full")
        stats.drop("too_large")
        self.assertEqual(stats.dropped, 3)
        self.assertEqual(stats.drops["too_large"], 2)
        self.assertEqual(
            stats.summary(),
            "received=5 replied=2 bytes_in=50 bytes_out=20 dropped=3 "
            "(send_buffer_full=1, too_large=2) kernel_drops=0",
        )
