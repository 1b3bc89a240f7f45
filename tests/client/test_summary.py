"""The summary of ``--ping``: ping's two lines exactly, and the third."""

from __future__ import annotations

from twisted.trial import unittest

from tests import tiers
from udpupper.client.summary import PingStats, format_ms


@tiers.unit
class FormatTests(unittest.TestCase):
    def test_round_trips_printed_as_ping_does(self) -> None:
        self.assertEqual(
            [format_ms(seconds) for seconds in (0.000081, 0.00123, 0.0123, 0.1234)],
            ["0.081", "1.23", "12.3", "123"],
        )


@tiers.unit
class StatsTests(unittest.TestCase):
    def test_summary_lines(self) -> None:
        stats = PingStats(transmitted=5, duplicates=1, wrong=2)
        for ms in (1, 2, 3):
            stats.add(ms / 1000)
        self.assertEqual(
            stats.summary("example", 4.0021),
            [
                "--- example ping statistics ---",
                "5 packets transmitted, 3 received, +1 duplicates, +2 errors, "
                "40% packet loss, time 4002ms",
                # mdev = sqrt(mean of squares - square of mean) = sqrt(14/3 - 4)
                "rtt min/avg/max/mdev = 1.000/2.000/3.000/0.816 ms",
                # The percentiles from 1% buckets: within 0.5%, the ends exact.
                "jitter n/a, rtt p50/p90/p99 = 1.996/3.000/3.000 ms, "
                "0 reordered, 1 duplicates, 0 late, 2 wrong",
            ],
        )

    def test_nothing_received_has_no_round_trip_line(self) -> None:
        stats = PingStats(transmitted=3)
        self.assertEqual(
            stats.summary("h", 2.0)[1:],
            [
                "3 packets transmitted, 0 received, 100% packet loss, time 2000ms",
                "0 reordered, 0 duplicates, 0 late, 0 wrong",
            ],
        )
        self.assertEqual(PingStats(transmitted=3, received=1).loss, 100 * 2 / 3)
        self.assertEqual(PingStats().loss, 0.0)

    def test_third_line(self) -> None:
        stats = PingStats(transmitted=4, duplicates=2, wrong=1, reordered=1, late=1)
        for ms in (10, 20, 30, 40):
            stats.add(ms / 1000)
        stats.ipdv_sum, stats.ipdv_count = 0.03, 3
        third = stats.summary("h", 1.0)[3]
        self.assertEqual(
            third,
            "jitter 10.000 ms, rtt p50/p90/p99 = 29.894/40.000/40.000 ms, "
            "1 reordered, 2 duplicates, 1 late, 1 wrong",
        )

    def test_percentiles_within_half_a_per_cent_in_bounded_memory(self) -> None:
        stats = PingStats()
        for n in range(1, 200_001):
            stats.add(n / 1e6)  # 1 us to 200 ms
        p50, p90, p99 = (
            stats.figures(1.0)[key] for key in ("rtt_p50_ms", "rtt_p90_ms", "rtt_p99_ms")
        )
        for got, exact in ((p50, 100.001), (p90, 180.001), (p99, 198.001)):
            self.assertLess(abs(got - exact) / exact, 0.005)
        self.assertLess(len(stats.latencies.counts), 2_000)

    def test_figures_without_replies(self) -> None:
        figures = PingStats(transmitted=2).figures(2.0)
        self.assertEqual(
            (
                figures["loss_pct"],
                figures["rtt_avg_ms"],
                figures["jitter_ms"],
                figures["rtt_p99_ms"],
            ),
            (100.0, None, None, None),
        )
