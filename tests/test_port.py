"""The ports: how a reply's source is chosen, and when there is no reply."""

from __future__ import annotations

import socket

from twisted.trial import unittest

from udpupper.kernel import IP_PKTINFO
from udpupper.port import is_wildcard, reply_ancillary

V6 = socket.IPPROTO_IPV6, socket.IPV6_PKTINFO
V4 = socket.IPPROTO_IP, IP_PKTINFO


def in_pktinfo(ifindex: int, local: str, destination: str) -> tuple[int, int, bytes]:
    data = (ifindex.to_bytes(4, "little") + socket.inet_aton(local)
            + socket.inet_aton(destination))
    return (*V4, data)


def in6_pktinfo(destination: str, ifindex: int = 1) -> tuple[int, int, bytes]:
    return (*V6, socket.inet_pton(socket.AF_INET6, destination)
            + ifindex.to_bytes(4, "little"))


class ReplyAncillaryTests(unittest.TestCase):
    def test_ipv4_unicast_on_an_ipv4_socket(self) -> None:
        self.assertEqual(
            reply_ancillary([in_pktinfo(2, "10.0.0.2", "10.0.0.2")]),
            [(*V4, bytes(4) + socket.inet_aton("10.0.0.2") + bytes(4))],
        )

    def test_ipv4_unicast_on_a_dual_stack_socket(self) -> None:
        mapped = in6_pktinfo("::ffff:10.0.0.2", 2)
        self.assertEqual(
            reply_ancillary([mapped, in_pktinfo(2, "10.0.0.2", "10.0.0.2")]), [mapped]
        )

    def test_ipv4_broadcast_and_multicast_get_none(self) -> None:
        for local, destination in (
            ("10.0.0.1", "10.0.0.255"),  # subnet broadcast
            ("10.0.0.1", "255.255.255.255"),
            ("10.0.0.1", "224.0.0.1"),
            ("10.0.0.1", "239.1.2.3"),
        ):
            ancdata = [in6_pktinfo("::ffff:" + destination), in_pktinfo(2, local, destination)]
            self.assertIsNone(reply_ancillary(ancdata), destination)
            self.assertIsNone(reply_ancillary(ancdata[1:]), destination)

    def test_ipv6(self) -> None:
        unicast = in6_pktinfo("2001:db8::2", 3)
        self.assertEqual(reply_ancillary([unicast]), [unicast])
        self.assertIsNone(reply_ancillary([in6_pktinfo("ff02::1")]))

    def test_no_pktinfo_means_plain_reply(self) -> None:
        self.assertEqual(reply_ancillary([]), [])


class WildcardTests(unittest.TestCase):
    def test_wildcards(self) -> None:
        for interface in ("", "::", "0.0.0.0", "0:0::0", "::0"):
            self.assertTrue(is_wildcard(interface), interface)
        for interface in ("127.0.0.1", "::1", "10.0.0.1", "fe80::1%eth0"):
            self.assertFalse(is_wildcard(interface), interface)
