"""Signals as the daemon takes them."""

from __future__ import annotations

import signal

from twisted.internet.error import ReactorNotRunning
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from udpupper.server.signals import queue_stop_signals, stop_once


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


class QueuedReactor(Reactor):
    """Records what a signal handler queues and what it sets."""

    def __init__(self) -> None:
        super().__init__()
        self.queued: list = []

    def callFromThread(self, f, *args) -> None:  # noqa: N802 - Twisted's name
        self.queued.append((f, args))

    def run_queued(self) -> None:
        queued, self.queued = self.queued, []
        for f, args in queued:
            f(*args)


class StopSignalTests(unittest.TestCase):
    def setUp(self) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_a_handler_only_notes_the_signal_and_queues_the_stop(self) -> None:
        """Nothing is logged, and no lock taken, inside the handler: a second
        signal there could wait for ever on a lock the first one holds."""
        reactor = QueuedReactor()
        queue_stop_signals(reactor)
        reactor.sigInt(signal.SIGINT, None)
        reactor.sigTerm(signal.SIGTERM, None)  # the second, at once
        self.assertEqual(self.events, [])
        self.assertEqual(reactor._exitSignal, signal.SIGTERM)  # twistd's exit status
        self.assertEqual(reactor.stops, 0)
        reactor.run_queued()
        self.assertEqual(reactor.stops, 2)  # the second stop is no traceback
        self.assertEqual([formatEvent(event) for event in self.events],
                         ["Received SIGINT, shutting down.", "Received SIGTERM, shutting down."])
