"""Signals as the daemon takes them."""

from __future__ import annotations

from twisted.internet.error import ReactorNotRunning
from twisted.trial import unittest

from udpupper.server.signals import stop_once


class Reactor:
    """Stops once; a second stop raises, as Twisted's does."""

    def __init__(self) -> None:
        self.stops = 0

    def stop(self) -> None:
        self.stops += 1
        if self.stops > 1:
            raise ReactorNotRunning("Can't stop reactor that isn't running.")


class StopOnceTests(unittest.TestCase):
    def test_a_second_stop_is_no_traceback(self) -> None:
        reactor = Reactor()
        stop_once(reactor)
        stop_once(reactor)  # wrapped once only
        reactor.stop()
        reactor.stop()  # a second signal while stopping
        self.assertEqual(reactor.stops, 2)

