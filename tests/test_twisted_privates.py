"""Each private of Twisted that udpupper uses, against the installed Twisted:
when one changes upstream, this fails first, and names it."""

from __future__ import annotations

import inspect
import socket

from twisted.internet import reactor, tcp, udp
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.trial import unittest

from udpupper.twisted_privates import EMFILE_RECOVERY, adopt_socket, observe_accept_log


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
