"""DSCP, both ways: mark what is sent, read what arrived, reflect it.

The six high bits of the IPv4 TOS byte and the IPv6 traffic class ask the
path for a class of service (RFC 2474); the two low bits are ECN's.  The
client marks its probes with ``--dscp`` and reads the marking each reply
arrived with; the daemon, with ``--reflect-dscp``, answers each request with
the DSCP it arrived with (TWAMP-Light and STAMP reflectors do the same), so
a path that bleaches or re-marks DSCP is seen from one end, either way.
ECN is never reflected: it says something of the request's path, not the
reply's.  Pure: sockets are only given options here.
"""

from __future__ import annotations

import socket
import sys

IP_TOS = socket.IP_TOS
IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)
IPV6_TCLASS = getattr(socket, "IPV6_TCLASS", 67)
IPV6_RECVTCLASS = getattr(socket, "IPV6_RECVTCLASS", 66)

Ancillary = list[tuple[int, int, bytes]]


def receive_marking(sock: socket.socket) -> None:
    """Have the kernel say, for each datagram, the TOS or traffic class it
    arrived with (IPv4 datagrams on an IPv6 socket too)."""
    sock.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVTCLASS, 1)


def mark(sock: socket.socket, dscp: int) -> None:
    """Send everything from ``sock`` with ``dscp`` (0 to 63), ECN not-ECT."""
    if not 0 <= dscp <= 63:
        raise ValueError(f"DSCP is 0 to 63, not {dscp}")
    sock.setsockopt(socket.IPPROTO_IP, IP_TOS, dscp << 2)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_TCLASS, dscp << 2)


def _marking(ancdata: Ancillary) -> tuple[int, int, int] | None:
    """(level, type, TOS byte) of the marking a datagram arrived with, or None."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_TOS and data:
            return level, kind, data[0]
        if level == socket.IPPROTO_IPV6 and kind == IPV6_TCLASS and len(data) >= 4:
            return level, kind, int.from_bytes(data[:4], sys.byteorder) & 0xFF
    return None


def arrived_with(ancdata: Ancillary) -> int | None:
    """The TOS byte (DSCP << 2 | ECN) a datagram arrived with, or None."""
    marking = _marking(ancdata)
    return None if marking is None else marking[2]


def reflected(ancdata: Ancillary) -> Ancillary:
    """The ancillary data that sends a reply with the DSCP the request
    arrived with (as IP_TOS or IPV6_TCLASS, as it came), ECN cleared."""
    marking = _marking(ancdata)
    if marking is None:
        return []
    level, kind, tos = marking
    return [(level, kind, (tos & 0xFC).to_bytes(4, sys.byteorder))]
