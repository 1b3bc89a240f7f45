"""The destination check: answer only unicast, from the address asked.

On a wildcard bind the kernel says, for each datagram, where it was sent
(IP_PKTINFO, IPV6_PKTINFO).  A datagram sent to a broadcast or multicast
address gets no reply (it would be a many-to-one amplifier); one whose
destination the kernel did not say, or said in truncated ancillary data,
gets none either: the check fails closed.  The reply carries the request's
destination as its source, so a host with several addresses answers from
the one it was asked on.

The C helper (``_batch.c``, ``reply_control``) does the same for batches;
the tests hold both to one table of cases.  Pure: no socket here.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import NamedTuple

from udpupper.dscp import reflected
from udpupper.kernel import IP_PKTINFO
from udpupper.server.stats import Reason

Ancillary = list[tuple[int, int, bytes]]

# Room for an IPV6_PKTINFO and an IP_PKTINFO message together, and for what
# a socket unit may turn on besides (timestamps, the drop counter, ...).
CONTROL_SPACE = 512

# An int, not the socket module's flag enum: `&` on that is a Python call.
_MSG_CTRUNC = int(getattr(socket, "MSG_CTRUNC", 8))


class Destination(NamedTuple):
    """How to answer a datagram that was sent to a unicast address."""

    ancillary: Ancillary  # makes the reply leave from the address asked
    ipv4: bool  # the datagram came over IPv4 (on an IPv6 socket too)


def is_wildcard(interface: str) -> bool:
    """Whether ``interface`` means every local address ("", "::", "0.0.0.0")."""
    if not interface:
        return True
    return ipaddress.ip_address(interface.partition("%")[0]).is_unspecified


def check_destination(ancdata: Ancillary, flags: int = 0) -> Destination | Reason:
    """How to answer a datagram received with ``ancdata`` and ``flags``, or why not.

    For IPv4, IP_PKTINFO gives the header's destination and the local
    address the kernel would answer from: they differ for a subnet
    broadcast.  An IPv4 datagram on an IPv6 socket brings both messages.
    """
    if flags & _MSG_CTRUNC:
        return Reason.NO_DESTINATION
    ipv6 = ipv4 = None
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(data) >= 20:
            ipv6 = data
        elif level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            ipv4 = data
    if ipv4 is not None:
        # struct in_pktinfo: ifindex, local address, header destination
        local, destination = ipv4[4:8], ipv4[8:12]
        if destination != local or destination[0] >= 224:
            return Reason.NOT_UNICAST_DESTINATION  # broadcast, 224/4 or 240/4
        # IP_PKTINFO on an IPv6 socket too: it fits the kernel's stack
        # buffer for ancillary data, where IPV6_PKTINFO costs an allocation.
        return Destination([(socket.IPPROTO_IP, IP_PKTINFO, bytes(4) + local + bytes(4))], True)
    if ipv6 is not None:
        # struct in6_pktinfo: destination address, ifindex
        if ipv6[0] == 0xFF:
            return Reason.NOT_UNICAST_DESTINATION  # ff00::/8
        return Destination([(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, ipv6[:20])], False)
    return Reason.NO_DESTINATION


def reply_route(
    ancdata: Ancillary, flags: int = 0, pktinfo: bool = True, reflect: bool = False
) -> Destination | Reason:
    """How to answer a datagram on a socket bound to every address
    (``pktinfo``: :func:`check_destination`) or to one, with ``reflect`` the
    DSCP it arrived with added (:func:`udpupper.dscp.reflected`); or why not."""
    if pktinfo:
        destination = check_destination(ancdata, flags)
        if destination.__class__ is not Destination:
            return destination
    else:
        # One address bound: an IPv4-mapped sender can only be IPv4 (Linux
        # drops IPv6 packets from mapped sources).
        destination = Destination([], True)
    if reflect:
        return Destination(destination.ancillary + reflected(ancdata), destination.ipv4)
    return destination


class DestinationCache:
    """:func:`reply_route`, remembered for the ancillary data it saw.

    For the path without the C helper: a datagram's ancillary data repeats
    (it names one of our addresses), and checking it again costs about a
    microsecond.  At most ``size`` kinds are remembered; then it starts over.
    """

    def __init__(self, size: int = 256, pktinfo: bool = True, reflect: bool = False) -> None:
        self.size = size
        self.pktinfo = pktinfo
        self.reflect = reflect
        self.known: dict[tuple, Destination | Reason] = {}

    def check(self, ancdata: Ancillary, flags: int = 0) -> Destination | Reason:
        if self.pktinfo and flags & _MSG_CTRUNC:
            return Reason.NO_DESTINATION
        key = tuple(ancdata)
        found = self.known.get(key)
        if found is None:
            found = reply_route(ancdata, flags, self.pktinfo, self.reflect)
            if len(self.known) >= self.size:
                self.known.clear()
            self.known[key] = found
        return found
