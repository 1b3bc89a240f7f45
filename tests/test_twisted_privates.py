"""Each private of Twisted that udpupper uses, against the installed Twisted:
when one changes upstream, this fails first, and names it."""

from __future__ import annotations

import inspect
import signal
import socket
import subprocess
import sys

from twisted.application import app
from twisted.internet import reactor, tcp, udp
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from tests import tiers
from tests.support import StoppingReactor
from udpupper.twisted_privates import (
    EMFILE_RECOVERY,
    adopt_socket,
    observe_accept_log,
    queue_stop_signals,
)


@tiers.system
class TwistedPrivatesTests(unittest.TestCase):
    def test_a_udp_port_adopts_a_bound_socket(self) -> None:
        skt = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        skt.bind(("127.0.0.1", 0))
        skt.setblocking(False)
        port = udp.Port(0, DatagramProtocol(), "127.0.0.1", reactor=reactor)
        adopt_socket(port, skt)
        port.startListening()
        self.addCleanup(port.stopListening)
        self.assertEqual(port.getHost().port, skt.getsockname()[1])

    def test_a_tcp_port_s_accept_log_can_be_observed(self) -> None:
        port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        seen: list[dict] = []
        self.assertTrue(observe_accept_log(port, lambda observer: seen.append))
        port._logger.info("probe")
        self.assertEqual(len(seen), 1)

    def test_the_emfile_text_is_twisted_s(self) -> None:
        source = inspect.getsource(tcp).replace('" "', "")  # "EMFILE recovery:" " Closed"
        self.assertIn(EMFILE_RECOVERY, source)

    def test_the_reactor_installs_the_stop_handlers_it_is_given(self) -> None:
        """A real reactor, run: SIGINT and SIGTERM are the handler
        queue_stop_signals gave it, and two at once stop it, with the last
        noted where twistd reads its exit signal."""
        script = (
            "import os, signal\n"
            "from twisted.internet import reactor\n"
            "from udpupper.twisted_privates import queue_stop_signals\n"
            "queue_stop_signals(reactor)\n"
            "def check():\n"
            "    print(signal.getsignal(signal.SIGINT).__name__,"
            " signal.getsignal(signal.SIGTERM).__name__)\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "reactor.callWhenRunning(check)\n"
            "reactor.run()\n"
            "print(reactor._exitSignal)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
        self.assertEqual(
            result.stdout.split(),
            ["on_stop_signal", "on_stop_signal", str(int(signal.SIGTERM))],
            result.stderr,
        )

    def test_twistd_takes_its_exit_signal_from_the_reactor(self) -> None:
        self.assertIn("reactor._exitSignal", inspect.getsource(app))


@tiers.unit
class StopSignalTests(unittest.TestCase):
    def setUp(self) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def test_a_handler_only_notes_the_signal_and_queues_the_stop(self) -> None:
        """Nothing is logged, and no lock taken, inside the handler: a second
        signal there could wait for ever on a lock the first one holds."""
        reactor = StoppingReactor()
        queue_stop_signals(reactor)
        reactor.sigInt(signal.SIGINT, None)
        reactor.sigTerm(signal.SIGTERM, None)  # the second, at once
        self.assertEqual(self.events, [])
        self.assertEqual(reactor._exitSignal, signal.SIGTERM)  # twistd's exit status
        self.assertEqual(reactor.stops, 0)
        reactor.run_queued()
        self.assertEqual(reactor.stops, 2)  # the second stop is no traceback
        self.assertEqual(
            [formatEvent(event) for event in self.events],
            ["Received SIGINT, shutting down.", "Received SIGTERM, shutting down."],
        )
