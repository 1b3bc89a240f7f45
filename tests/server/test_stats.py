"""The counters and the line they make for the log."""

from twisted.trial import unittest

from tests import tiers
from udpupper.server.stats import Reason, Stats


@tiers.unit
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
        stats.drop(Reason.TOO_LARGE)
        stats.drop(Reason.SEND_BUFFER_FULL)
        stats.drop(Reason.TOO_LARGE)
        self.assertEqual(stats.dropped, 3)
        self.assertEqual(stats.drops[Reason.TOO_LARGE], 2)
        self.assertEqual(
            stats.summary(),
            "received=5 replied=2 bytes_in=50 bytes_out=20 dropped=3 "
            "(send_buffer_full=1, too_large=2) kernel_drops=0",
        )

    def test_every_reason_is_there_from_zero(self) -> None:
        stats = Stats()
        self.assertEqual(set(stats.all_drops()), set(Reason))
        self.assertEqual(set(stats.all_drops().values()), {0})
        self.assertEqual(stats.counted(), {})

    def test_a_misspelt_reason_is_an_error_not_a_new_series(self) -> None:
        stats = Stats()
        self.assertRaises(KeyError, stats.drop, "rate_limted")
        self.assertEqual(stats.counted(), {})

    def test_send_errors_by_errno(self) -> None:
        import errno

        stats = Stats()
        for code in (
            errno.EMSGSIZE,
            errno.EAGAIN,
            errno.ENOBUFS,
            errno.ECONNREFUSED,
            errno.EPERM,
            None,
        ):
            stats.send_failed(code)
        self.assertEqual(
            stats.counted(),
            {
                Reason.TOO_LARGE: 1,
                Reason.SEND_BUFFER_FULL: 2,
                Reason.REFUSED: 1,
                Reason.SEND_ERROR: 2,
            },
        )
