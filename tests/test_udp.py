"""The UDP port both programs use: whole datagrams, both stacks."""

from __future__ import annotations

import socket

from twisted.internet import defer, reactor, threads
from twisted.internet.protocol import DatagramProtocol
from twisted.trial import unittest

from tests import tiers
from udpupper.udp import MAX_DATAGRAM, UDPPort


class Collect(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple]] = []
        self.arrived = defer.Deferred()

    def datagramReceived(self, datagram: bytes, addr: tuple) -> None:
        self.received.append((datagram, addr))
        if not self.arrived.called:
            self.arrived.callback(None)


@tiers.loopback
class UDPPortTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_a_datagram_past_twisted_s_8192_bytes_arrives_whole(self) -> None:
        protocol = Collect()
        port = UDPPort(0, protocol, "127.0.0.1", reactor)
        port.startListening()
        self.addCleanup(port.stopListening)
        payload = b"x" * 65_507  # the largest IPv4 payload

        def send() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
                peer.sendto(payload, ("127.0.0.1", port.getHost().port))

        yield threads.deferToThread(send)
        yield protocol.arrived
        self.assertEqual(protocol.received[0][0], payload)
        self.assertGreaterEqual(MAX_DATAGRAM, 65_507)
