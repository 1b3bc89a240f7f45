"""udpupper.clock: timers on a monotonic clock."""

from __future__ import annotations

import time

from twisted.internet import task
from twisted.trial import unittest

from tests import tiers
from udpupper.clock import use_monotonic_clock


@tiers.unit
class MonotonicClockTests(unittest.TestCase):
    def test_a_reactor_with_no_timer_yet_is_made_monotonic(self) -> None:
        clock = task.Clock()
        self.assertTrue(use_monotonic_clock(clock))
        self.assertIs(clock.seconds, time.monotonic)
        self.assertTrue(use_monotonic_clock(clock))  # once is enough

    def test_a_pending_timer_on_the_wall_clock_is_left_alone(self) -> None:
        clock = task.Clock()
        clock.callLater(1.0, lambda: None)
        self.assertFalse(use_monotonic_clock(clock))
        self.assertIsNot(clock.seconds, time.monotonic)
