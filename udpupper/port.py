"""The listening port: a lean ``udp.Port`` for a server that only answers.

Twisted's ``udp.Port`` is general: it truncates at 8,192 bytes by default and
re-validates the address of every datagram it writes.  A reply goes back to an
address that ``recvfrom`` has just given, so this port skips that check, reads
datagrams of any size UDP can carry, and serves IPv4 and IPv6 on one socket.
"""

from __future__ import annotations

import socket
from errno import ECONNREFUSED, EINTR

from twisted.internet import udp
from twisted.logger import Logger

# Enough for the largest UDP payload, IPv4 or IPv6.
MAX_DATAGRAM = 65_535

# Datagrams handled per readiness event before the reactor gets a turn, so
# timers and signals are never starved by a flood.
READ_BUDGET = 256


class UpperPort(udp.Port):
    """A UDP port that reads whole datagrams and writes replies directly."""

    log = Logger()

    def __init__(self, port: int, protocol, interface: str = "", reactor=None):
        super().__init__(port, protocol, interface, MAX_DATAGRAM, reactor)

    def createInternetSocket(self) -> socket.socket:
        skt = super().createInternetSocket()
        if self.addressFamily == socket.AF_INET6:
            # One socket for both families: IPv4 clients appear as
            # ::ffff:a.b.c.d, whatever net.ipv6.bindv6only says.
            skt.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        return skt

    def write(self, datagram: bytes, addr: tuple[str, int]) -> None:
        """Send ``datagram`` to ``addr``; an ``OSError`` is the caller's.

        ``addr`` must be an IP literal of this socket's family, as every
        address that ``recvfrom`` gives is.
        """
        self.socket.sendto(datagram, addr)

    def doRead(self) -> None:
        recvfrom = self.socket.recvfrom
        received = self.protocol.datagramReceived
        ipv6 = self.addressFamily == socket.AF_INET6
        for _ in range(READ_BUDGET):
            try:
                datagram, addr = recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError as error:
                # A pending ICMP error surfaces here on some systems; it
                # says nothing about the next datagram.
                if error.errno in (ECONNREFUSED, EINTR):
                    continue
                # Anything else is the host's trouble, not a stranger's:
                # say so and try again on the next readiness event.
                self.log.error("receive failed: {error}", error=error)
                return
            if ipv6:
                addr = addr[:2]
            try:
                received(datagram, addr)
            except Exception:
                self.log.failure("unexpected error answering {addr}", addr=addr)
