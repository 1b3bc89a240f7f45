"""The listening ports: lean ``udp.Port`` subclasses for udpupper.

Twisted's ``udp.Port`` is general: it truncates at 8,192 bytes by default and
re-validates the address of every datagram it writes.  :class:`UDPPort` reads
any datagram UDP can carry, serves IPv4 and IPv6 on one socket, and writes
without the check (the client's address was resolved once, the server's
come from the kernel).  :class:`ServerPort` adds what a server bound to a
wildcard address needs: the destination of each datagram (IP_PKTINFO), so it
never answers a broadcast or multicast datagram and always answers from the
address it was asked on.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from errno import ECONNREFUSED, EINTR

from twisted.internet import udp
from twisted.logger import Logger

from udpupper.kernel import IP_PKTINFO, set_receive_buffer

try:  # recvmmsg/sendmmsg, where the C helper could be built
    from udpupper import _batch
except ImportError:  # pragma: no cover - depends on the build
    _batch = None

# Enough for the largest UDP payload, IPv4 or IPv6.
MAX_DATAGRAM = 65_535

# Datagrams handled per readiness event before the reactor gets a turn, so
# timers and signals are never starved by a flood.
READ_BUDGET = 256


# After answering, wait this many microseconds for the next datagram before
# going back to the reactor: a request is often one round trip behind its
# reply, and the reactor's way round costs more than the wait.
DEFAULT_BUSY_POLL = 50

# Room for an IPV6_PKTINFO and an IP_PKTINFO message together.
PKTINFO_SPACE = socket.CMSG_SPACE(20) + socket.CMSG_SPACE(12)

Ancillary = list[tuple[int, int, bytes]]


class UDPPort(udp.Port):
    """A UDP port that reads whole datagrams and writes them directly."""

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

    def write(self, datagram: bytes, addr: tuple[str, int]) -> None:
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
        received = self.protocol.datagramReceived
        for datagram, addr in self._received(self.socket.recvfrom, MAX_DATAGRAM):
            try:
                received(datagram, addr[:2])
            except Exception:
                self.log.failure("unexpected error handling {addr}", addr=addr)


def is_wildcard(interface: str) -> bool:
    """Whether ``interface`` means every local address ("", "::", "0.0.0.0")."""
    if not interface:
        return True
    return ipaddress.ip_address(interface.partition("%")[0]).is_unspecified


def reply_ancillary(ancdata: Ancillary) -> Ancillary | None:
    """How to answer a datagram that came with ``ancdata``; None: do not.

    None for a datagram sent to a broadcast or multicast address.  Else the
    ancillary data that makes the reply leave from the address the datagram
    was sent to.  For IPv4, IP_PKTINFO gives the header's destination and the
    local address the kernel would answer from: they differ for a subnet
    broadcast.
    """
    ipv6 = ipv4 = None
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
            ipv6 = data
        elif level == socket.IPPROTO_IP and kind == IP_PKTINFO:
            ipv4 = data
    if ipv4 is not None:
        # struct in_pktinfo: ifindex, local address, header destination
        local, destination = ipv4[4:8], ipv4[8:12]
        if destination != local or destination[0] >= 224:
            return None  # broadcast, multicast (224/4) or class E
        if ipv6 is None:
            return [(socket.IPPROTO_IP, IP_PKTINFO, bytes(4) + local + bytes(4))]
    if ipv6 is not None:
        # struct in6_pktinfo: destination address, ifindex
        if ipv6[0] == 0xFF:
            return None  # IPv6 multicast, ff00::/8
        return [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, ipv6)]
    return []


class ServerPort(UDPPort):
    """The daemon's port: answers through ``protocol.answer``.

    Bound to a wildcard address, it learns each datagram's destination;
    bound to one address, it needs not (the kernel delivers only unicast
    datagrams sent to that address).  ``rcvbuf`` bytes of receive buffer
    are asked for (0 leaves the kernel's default); ``rcvbuf_granted`` says
    what the kernel gave.  With ``reuse_port``, other processes may bind the
    same address (SO_REUSEPORT) and the kernel shares datagrams out among
    them.  With the C helper (``batch``) it moves up to 64 datagrams per
    system call, and after answering polls ``busy_poll`` microseconds for
    the next before going back to the reactor; without it, one datagram a
    call.
    """

    batch = _batch

    def __init__(
        self,
        port: int,
        protocol,
        interface: str = "",
        reactor=None,
        rcvbuf: int = 0,
        reuse_port: bool = False,
        busy_poll: int = DEFAULT_BUSY_POLL,
    ):
        super().__init__(port, protocol, interface, reactor)
        self.reuse_port = reuse_port
        self.busy_poll = busy_poll
        self.rcvbuf = rcvbuf
        self.rcvbuf_granted: int | None = None
        self.pktinfo = is_wildcard(interface)

    def createInternetSocket(self) -> socket.socket:
        return self._configure(super().createInternetSocket())

    def adopt(self, skt: socket.socket) -> None:
        """Serve ``skt``, bound already (by systemd), instead of binding one."""
        self._preexistingSocket = self._configure(skt)

    def _configure(self, skt: socket.socket) -> socket.socket:
        if self.pktinfo:
            skt.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            if self.addressFamily == socket.AF_INET6:
                skt.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        if self.rcvbuf:
            self.rcvbuf_granted = set_receive_buffer(skt, self.rcvbuf)
        if self.reuse_port:
            skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return skt

    def doRead(self) -> None:
        if self.batch is not None:
            self._read_batches()
        else:
            self._read_one_by_one()

    def _read_batches(self) -> None:
        """The hot loop: a batch in, each answered or not, the replies out."""
        fd = self.socket.fileno()
        recv_batch, send_batch = self.batch.recv_batch, self.batch.send_batch
        size = self.batch.BATCH
        protocol = self.protocol
        answer = protocol.answer
        stats = protocol.stats
        pktinfo = self.pktinfo
        spin = handled = 0
        while handled < READ_BUDGET:
            try:
                datagrams = recv_batch(fd, size, pktinfo, spin)
            except OSError as error:
                handled += 1  # a persistent error must not hold the reactor
                if self._receive_failed(error):
                    continue
                return
            if not datagrams:
                return
            handled += len(datagrams)
            replies = []
            for datagram, host, port, route in datagrams:
                if route is None:
                    protocol.refuse(datagram, "not_unicast_destination")
                    continue
                reply = answer(datagram, host, port)
                if reply is not None:
                    replies.append((reply, route))
            if replies:
                sent, sent_bytes, errors = send_batch(fd, replies)
                stats.replied += sent
                stats.bytes_out += sent_bytes
                for errno in errors:
                    stats.send_failed(errno)
            spin = self.busy_poll

    def _read_one_by_one(self) -> None:
        space = PKTINFO_SPACE if self.pktinfo else 0
        sendmsg = self.socket.sendmsg
        protocol = self.protocol
        answer = protocol.answer
        stats = protocol.stats
        for datagram, ancdata, _, addr in self._received(
            self.socket.recvmsg, MAX_DATAGRAM, space
        ):
            ancillary = reply_ancillary(ancdata)
            if ancillary is None:
                protocol.refuse(datagram, "not_unicast_destination")
                continue
            reply = answer(datagram, addr[0], addr[1])
            if reply is None:
                continue
            try:
                sendmsg((reply,), ancillary, 0, addr)
            except OSError as error:
                stats.send_failed(error.errno)
            else:
                stats.replied += 1
                stats.bytes_out += len(reply)
