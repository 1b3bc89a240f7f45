"""The socket code both programs use: a lean ``udp.Port`` for udpupper.

Twisted's ``udp.Port`` is general: it truncates at 8,192 bytes by default and
re-validates the address of every datagram it writes.  :class:`UDPPort`
reads any datagram UDP can carry, serves IPv4 and IPv6 on one socket, and
writes without the check (the client's address was resolved once, the
server's come from the kernel).  The daemon's transport,
:class:`udpupper.server.port.ServerPort`, builds on it.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from errno import ECONNREFUSED, EINTR

from twisted.internet import udp
from twisted.internet.interfaces import IHalfCloseableDescriptor
from twisted.logger import Logger
from zope.interface import implementer

from udpupper import errqueue
from udpupper.dscp import arrived_with, receive_marking

# Enough for the largest UDP payload, IPv4 or IPv6.
MAX_DATAGRAM = 65_535

# Room for the ancillary data that says a datagram's TOS or traffic class.
MARKING_SPACE = socket.CMSG_SPACE(4) * 2

# Datagrams handled per readiness event before the reactor gets a turn, so
# timers and signals are never starved by a flood.
READ_BUDGET = 256


@implementer(IHalfCloseableDescriptor)
class UDPPort(udp.Port):
    """A UDP port that reads whole datagrams and writes them directly.

    Its socket may be connected (:meth:`connect_socket`).  The kernel then
    keeps an ICMP error about what it sent (a port unreachable) as the
    socket's error, which epoll reports as a hang-up; Twisted's reactor
    closes a descriptor that hangs up, unless it takes a half-close
    (``IHalfCloseableDescriptor``): this port does, takes the error, says
    it to the protocol where it listens (``socketError(errno)``) and reads
    on.
    """

    log = Logger()

    def __init__(self, port: int, protocol, interface: str = "", reactor=None):
        super().__init__(port, protocol, interface, MAX_DATAGRAM, reactor)

    def createInternetSocket(self) -> socket.socket:
        skt = super().createInternetSocket()
        if self.addressFamily == socket.AF_INET6:
            # One socket for both families: IPv4 peers appear as
            # ::ffff:a.b.c.d, whatever net.ipv6.bindv6only says.
            skt.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        return skt

    def connect_socket(self, address: tuple[str, int]) -> None:
        """Have the kernel take datagrams from ``address`` alone (and say
        where it sends).  The socket is connected, not the port: Twisted's
        own ``connect`` would have the epoll reactor close the port at the
        first ICMP port unreachable; this port reads on past it."""
        host, port = address
        if self.addressFamily == socket.AF_INET6 and ":" not in host:
            host = "::ffff:" + host
        self.socket.connect((host, port))

    # Whether the socket hears what the network says of what it sends (ICMP
    # errors, IP_RECVERR): the protocol's ``networkError(error)`` is told.
    hears_network = False

    def readConnectionLost(self, reason) -> None:
        """The reactor's "hang-up": a socket error pending, not an end."""
        if self.socket is None or not self.connected:
            return
        error = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)  # and clears it
        told = getattr(self.protocol, "socketError", None)
        if error and told is not None and not self.hears_network:
            told(error)
        self._network_said()
        if self.socket is not None and self.connected:
            self.startReading()

    def _network_said(self) -> None:
        """Pass on what waits in the error queue: departures, and what the
        network said."""
        if not self.hears_network:
            return
        for message in errqueue.read_error_queue(self.socket):
            if isinstance(message, errqueue.Departure):
                departed = getattr(self.protocol, "departed", None)
                if departed is not None:
                    departed(self, message)
            elif message.origin != errqueue.SO_EE_ORIGIN_LOCAL:
                # (the host's own refusals, EMSGSIZE, were the send's error)
                told = getattr(self.protocol, "networkError", None)
                if told is not None:
                    try:
                        told(message)
                    except Exception:
                        self.log.failure("unexpected error handling {error}", error=message)
            if self.socket is None:  # the protocol stopped the port
                return

    def writeConnectionLost(self, reason) -> None:
        """Never: a UDP port's writes do not hang up."""

    # Twisted's udp.Port.write takes (datagram, addr) where FileDescriptor's
    # takes (data); this one needs the address (the port is not connected).
    def write(self, datagram: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        """Send ``datagram`` to ``addr``, an IP literal; ``OSError`` is the caller's."""
        self.socket.sendto(datagram, addr)

    def _received(self, receive, *args) -> Iterator:
        """What ``receive(*args)`` gives, until nothing waits (READ_BUDGET at most)."""
        for _ in range(READ_BUDGET):
            try:
                yield receive(*args)
            except BlockingIOError:
                return
            except OSError as error:
                if not self._receive_failed(error):
                    return

    def _receive_failed(self, error: OSError) -> bool:
        """Whether to go on reading after ``error`` from a receive call."""
        if error.errno in (ECONNREFUSED, EINTR):
            # A pending ICMP error surfaces here on some systems; it says
            # nothing about the next datagram.
            return True
        # Anything else is the host's trouble, not a stranger's: say so and
        # try again on the next readiness event, never close the port.
        self.log.error("receive failed: {error}", error=error)
        return False

    def doRead(self) -> None:
        self._network_said()
        received = self.protocol.datagramReceived
        for datagram, addr in self._received(self.socket.recvfrom, MAX_DATAGRAM):
            try:
                received(datagram, addr[:2])
            except Exception:
                self.log.failure("unexpected error handling {addr}", addr=addr)


# What an ICMP message about an earlier datagram leaves pending on a socket
# that asks for them (IP_RECVERR): the next send call fails with it.
PENDING = frozenset(
    {
        errno.ECONNREFUSED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EACCES,
        errno.EMSGSIZE,
        errno.EPROTO,
    }
)


# Send errors that say "not now" (a full buffer, a signal): the timer that
# sends again will do; any other is the host's "never", and ends a client mode.
RETRY_LATER = frozenset({errno.ENOBUFS, errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR})


class ClientPort(UDPPort):
    """The client's port: it hears what the network says of what it sends
    (a port unreachable, a link too small, a time exceeded)."""

    hears_network = True

    def createInternetSocket(self) -> socket.socket:
        skt = super().createInternetSocket()
        errqueue.report_errors(skt)
        return skt

    def write(self, datagram: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        """Send; where the call fails with an error an ICMP message left
        pending (about an earlier datagram: it is in the error queue, to be
        read), this datagram was not sent: send it again, once.  The
        failure cleared the error; a second is this datagram's own."""
        try:
            self.socket.sendto(datagram, addr)
        except OSError as error:
            if error.errno not in PENDING:
                raise
            self.socket.sendto(datagram, addr)


class MarkedPort(ClientPort):
    """A client port that also says the TOS byte (DSCP << 2 | ECN) each
    datagram arrived with, and when, by the kernel's stamp:
    ``protocol.datagramReceived(datagram, addr, tos, arrived)`` (None where
    the kernel did not say); and when each datagram it sent left:
    ``protocol.departed(port, departure)``.  ``stamped``: whether the kernel
    stamps them."""

    stamped = False

    def createInternetSocket(self) -> socket.socket:
        skt = super().createInternetSocket()
        receive_marking(skt)
        self.stamped = errqueue.stamp(skt)
        return skt

    def doRead(self) -> None:
        self._network_said()  # departures first: a reply is matched with its own
        received = self.protocol.datagramReceived
        for datagram, ancdata, _, addr in self._received(
            self.socket.recvmsg, MAX_DATAGRAM, MARKING_SPACE + errqueue.STAMP_SPACE
        ):
            try:
                received(datagram, addr[:2], arrived_with(ancdata), errqueue.stamp_of(ancdata))
            except Exception:
                self.log.failure("unexpected error handling {addr}", addr=addr)
