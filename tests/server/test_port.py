"""The daemon's listening port on its own: what it reads, drains and counts.

(It is driven through the whole service in test_service too.)
"""

from __future__ import annotations

import mmap
import socket

from twisted.internet import reactor
from twisted.trial import unittest

from tests import tiers
from tests.support import NO_IPV6
from udpupper.dscp import IP_TOS, IPV6_TCLASS, arrived_with, receive_marking
from udpupper.kernel import socket_drops
from udpupper.server import ctypes_batch
from udpupper.server.port import ServerPort
from udpupper.server.protocol import UpperProtocol


@tiers.loopback
class ServerPortTests(unittest.TestCase):
    batch = ServerPort.batch

    def start(self) -> tuple[ServerPort, UpperProtocol, socket.socket]:
        protocol = UpperProtocol()
        port = ServerPort(0, protocol, "127.0.0.1", reactor, rcvbuf=4 << 20)
        port.batch = self.batch
        port.startListening()
        self.addCleanup(port.stopListening)
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.settimeout(5)
        self.addCleanup(peer.close)
        return port, protocol, peer

    def test_drain_answers_what_waits(self) -> None:
        port, protocol, peer = self.start()
        port.stopReading()  # as if the reactor had not come round yet
        for number in range(600):
            peer.sendto(b"waiting %d" % number, ("127.0.0.1", port.getHost().port))
        drained = port.drain(5.0)
        stats = protocol.stats
        self.assertEqual((stats.received, stats.replied), (drained, drained))
        # All of them, where the buffer holds them all (root, or rmem_max).
        self.assertEqual(drained + (socket_drops(port.socket) or 0), 600)
        self.assertGreater(drained, 100)
        self.assertEqual(peer.recv(100), b"WAITING 0")

    def test_counts_in_shared_memory(self) -> None:
        port, _protocol, peer = self.start()
        port.stopReading()
        counts = mmap.mmap(-1, 32)
        port.count_into(counts)
        if port.batch is not None:
            self.addCleanup(port.batch.count_into, None)
        for payload in (b"a", b"bb"):
            peer.sendto(payload, ("127.0.0.1", port.getHost().port))
        port.drain(5.0)
        self.assertEqual(memoryview(counts).cast("Q").tolist(), [2, 2, 3, 3])

    def marked_exchange(self, interface: str, host: str, reflect: bool, tos: int) -> int | None:
        """The TOS a reply to a datagram sent with ``tos`` came back with."""
        port = ServerPort(0, UpperProtocol(), interface, reactor, reflect_dscp=reflect)
        port.batch = self.batch
        port.startListening()
        self.addCleanup(port.stopListening)
        port.stopReading()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as peer:
            peer.settimeout(5)
            receive_marking(peer)
            if family == socket.AF_INET6:
                peer.setsockopt(socket.IPPROTO_IPV6, IPV6_TCLASS, tos)
            else:
                peer.setsockopt(socket.IPPROTO_IP, IP_TOS, tos)
            peer.sendto(b"marked", (host, port.getHost().port))
            self.assertEqual(port.drain(5.0), 1)
            reply, ancdata, _, _ = peer.recvmsg(100, 64)
        self.assertEqual(reply, b"MARKED")
        return arrived_with(ancdata)

    def test_reflect_dscp(self) -> None:
        """With reflect_dscp a reply leaves with the request's DSCP (46, EF),
        its ECN bits cleared, over IPv4 and IPv6, on a wildcard socket and
        on one address; without it, with none."""
        cases = [("::", "127.0.0.1"), ("::", "::1"), ("127.0.0.1", "127.0.0.1"), ("::1", "::1")]
        if NO_IPV6:
            cases = [("0.0.0.0", "127.0.0.1"), ("127.0.0.1", "127.0.0.1")]
        for interface, host in cases:
            self.assertEqual(
                self.marked_exchange(interface, host, True, 46 << 2 | 1), 46 << 2, (interface, host)
            )
            self.assertEqual(self.marked_exchange(interface, host, True, 0), 0)
            self.assertEqual(
                self.marked_exchange(interface, host, False, 46 << 2), 0, (interface, host)
            )


@tiers.loopback
class OneByOneServerPortTests(ServerPortTests):
    batch = None


@tiers.loopback
class CtypesServerPortTests(ServerPortTests):
    batch = ctypes_batch.load()
    skip = None if batch is not None else "no recvmmsg through ctypes here"
