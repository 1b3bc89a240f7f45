"""Signals as the daemon takes them."""

from __future__ import annotations

from twisted.trial import unittest

from tests import tiers
from tests.support import StoppingReactor
from udpupper.server.signals import stop_once


@tiers.unit
class StopOnceTests(unittest.TestCase):
    def test_a_second_stop_is_no_traceback(self) -> None:
        reactor = StoppingReactor()
        stop_once(reactor)
        stop_once(reactor)  # wrapped once only
        reactor.stop()
        reactor.stop()  # a second signal while stopping
        self.assertEqual(reactor.stops, 2)
