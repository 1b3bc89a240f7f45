"""The destination check: one table of cases, for the Python path and the
C helper's alike (they are two writings of one rule)."""

from __future__ import annotations

import socket
import struct
import sys

from twisted.trial import unittest

from tests import tiers
from udpupper.dscp import IP_TOS
from udpupper.kernel import IP_PKTINFO
from udpupper.server.port import HELPER_REFUSALS
from udpupper.server.protections.destination import (
    Destination,
    DestinationCache,
    check_destination,
    is_wildcard,
    reply_route,
)
from udpupper.server.stats import Reason

try:
    from udpupper import _batch
except ImportError:
    _batch = None

V6 = socket.IPPROTO_IPV6, socket.IPV6_PKTINFO
V4 = socket.IPPROTO_IP, IP_PKTINFO
TIMESTAMP = socket.SOL_SOCKET, 37  # SCM_TIMESTAMPING, as a socket unit may turn on


def in_pktinfo(ifindex: int, local: str, destination: str) -> tuple[int, int, bytes]:
    data = ifindex.to_bytes(4, "little") + socket.inet_aton(local) + socket.inet_aton(destination)
    return (*V4, data)


def in6_pktinfo(destination: str, ifindex: int = 1) -> tuple[int, int, bytes]:
    return (*V6, socket.inet_pton(socket.AF_INET6, destination) + ifindex.to_bytes(4, "little"))


def answer_ipv4(local: str) -> Destination:
    return Destination([(*V4, bytes(4) + socket.inet_aton(local) + bytes(4))], True)


MAPPED = in6_pktinfo("::ffff:10.0.0.2", 2)
UNICAST6 = in6_pktinfo("2001:db8::2", 3)
CTRUNC = socket.MSG_CTRUNC
TIMESTAMPS = (*TIMESTAMP, bytes(48))

# (what, ancillary data, flags, what the check must say)
CASES = [
    (
        "IPv4 unicast on an IPv4 socket",
        [in_pktinfo(2, "10.0.0.2", "10.0.0.2")],
        0,
        answer_ipv4("10.0.0.2"),
    ),
    (
        "IPv4 unicast on a dual-stack socket",
        [MAPPED, in_pktinfo(2, "10.0.0.2", "10.0.0.2")],
        0,
        answer_ipv4("10.0.0.2"),
    ),
    ("IPv6 unicast", [UNICAST6], 0, Destination([UNICAST6], False)),
    ("IPv6 unicast after a timestamp", [TIMESTAMPS, UNICAST6], 0, Destination([UNICAST6], False)),
    ("IPv6 multicast", [in6_pktinfo("ff02::1")], 0, Reason.NOT_UNICAST_DESTINATION),
    ("IPv6 multicast, global scope", [in6_pktinfo("ff0e::1")], 0, Reason.NOT_UNICAST_DESTINATION),
    ("no destination at all", [], 0, Reason.NO_DESTINATION),
    ("only a timestamp", [TIMESTAMPS], 0, Reason.NO_DESTINATION),
    ("truncated (MSG_CTRUNC), pktinfo lost", [], CTRUNC, Reason.NO_DESTINATION),
    (
        "truncated (MSG_CTRUNC), pktinfo kept",
        [in_pktinfo(2, "10.0.0.2", "10.0.0.2")],
        CTRUNC,
        Reason.NO_DESTINATION,
    ),
    ("a short IP_PKTINFO", [(*V4, bytes(8))], 0, Reason.NO_DESTINATION),
]
for local, destination in (
    ("10.0.0.1", "10.0.0.255"),  # subnet broadcast
    ("10.0.0.1", "255.255.255.255"),
    ("10.0.0.1", "224.0.0.1"),
    ("10.0.0.1", "239.1.2.3"),
    ("10.0.0.1", "240.0.0.1"),  # class E
    ("240.0.0.1", "240.0.0.1"),
):
    ipv4 = in_pktinfo(2, local, destination)
    CASES.append((f"to {destination} (IPv4 socket)", [ipv4], 0, Reason.NOT_UNICAST_DESTINATION))
    CASES.append(
        (
            f"to {destination} (dual-stack socket)",
            [in6_pktinfo("::ffff:" + destination), ipv4],
            0,
            Reason.NOT_UNICAST_DESTINATION,
        )
    )


def raw_control(ancdata) -> bytes:
    """``ancdata`` as the kernel lays it out (struct cmsghdr, aligned)."""
    out = b""
    for level, kind, data in ancdata:
        item = struct.pack("@Nii", socket.CMSG_LEN(len(data)), level, kind) + data
        out += item + bytes(socket.CMSG_SPACE(len(data)) - len(item))
    return out


def parse_control(raw: bytes) -> list[tuple[int, int, bytes]]:
    """The reverse of :func:`raw_control`."""
    header = struct.calcsize("@Nii")
    out = []
    while raw:
        length, level, kind = struct.unpack_from("@Nii", raw)
        out.append((level, kind, raw[header:length]))
        raw = raw[socket.CMSG_SPACE(length - header) :]
    return out


@tiers.unit
class CheckDestinationTests(unittest.TestCase):
    def test_python_path(self) -> None:
        for what, ancdata, flags, expected in CASES:
            self.assertEqual(check_destination(ancdata, flags), expected, what)

    def test_remembered(self) -> None:
        """The cache answers as the check does, twice over, and stays small."""
        cache = DestinationCache(size=3)
        for _ in range(2):
            for what, ancdata, flags, expected in CASES:
                self.assertEqual(cache.check(ancdata, flags), expected, what)
                self.assertLessEqual(len(cache.known), 3)

    def test_one_address_bound_and_dscp_reflected(self) -> None:
        """Without pktinfo the route is the kernel's own (any IPv4-mapped
        sender is IPv4); with reflect, the request's DSCP is added, ECN
        cleared, after the destination check and never in place of it."""
        tos = (socket.IPPROTO_IP, IP_TOS, b"\xb9")
        marked = (socket.IPPROTO_IP, IP_TOS, (0xB8).to_bytes(4, sys.byteorder))
        self.assertEqual(reply_route([tos], 0, pktinfo=False), Destination([], True))
        self.assertEqual(
            reply_route([tos], 0, pktinfo=False, reflect=True), Destination([marked], True)
        )
        for what, ancdata, flags, expected in CASES:
            verdict = reply_route([*ancdata, tos], flags, reflect=True)
            if isinstance(expected, Reason):
                self.assertEqual(verdict, expected, what)
            else:
                self.assertEqual(
                    verdict, Destination([*expected.ancillary, marked], expected.ipv4), what
                )
        cache = DestinationCache(pktinfo=False)
        self.assertEqual(cache.check([], socket.MSG_CTRUNC), Destination([], True))

    def test_c_helper(self) -> None:
        if _batch is None:
            raise unittest.SkipTest("the C helper is not built here")
        for what, ancdata, flags, expected in CASES:
            verdict = _batch.check_control(raw_control(ancdata), flags)
            if isinstance(expected, Reason):
                self.assertIsInstance(verdict, int, what)
                self.assertEqual(HELPER_REFUSALS[verdict], expected, what)
            else:
                self.assertEqual(parse_control(verdict), expected.ancillary, what)

    def test_every_refusal_of_the_helper_has_its_reason(self) -> None:
        if _batch is None:
            raise unittest.SkipTest("the C helper is not built here")
        self.assertEqual(
            HELPER_REFUSALS,
            {
                _batch.NOT_UNICAST: Reason.NOT_UNICAST_DESTINATION,
                _batch.NO_DESTINATION: Reason.NO_DESTINATION,
                _batch.NOT_IP: Reason.BAD_SOURCE,
            },
        )
        self.assertEqual(len({_batch.NOT_UNICAST, _batch.NO_DESTINATION, _batch.NOT_IP}), 3)


@tiers.unit
class WildcardTests(unittest.TestCase):
    def test_wildcards(self) -> None:
        for interface in ("", "::", "0.0.0.0", "0:0::0", "::0"):
            self.assertTrue(is_wildcard(interface), interface)
        for interface in ("127.0.0.1", "::1", "10.0.0.1", "fe80::1%eth0"):
            self.assertFalse(is_wildcard(interface), interface)
