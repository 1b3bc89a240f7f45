"""DSCP both ways: what a datagram arrived with, and a reply's marking."""

from __future__ import annotations

import socket
import sys

from twisted.trial import unittest

from tests import tiers
from tests.support import NO_IPV6
from udpupper.dscp import IP_TOS, IPV6_TCLASS, arrived_with, mark, receive_marking, reflected

V4 = socket.IPPROTO_IP, IP_TOS
V6 = socket.IPPROTO_IPV6, IPV6_TCLASS


@tiers.loopback
class MarkingTests(unittest.TestCase):
    def test_arrived_with(self) -> None:
        self.assertEqual(arrived_with([(*V4, bytes([0xB9]))]), 0xB9)
        self.assertEqual(arrived_with([(*V6, (0xB9).to_bytes(4, sys.byteorder))]), 0xB9)
        self.assertIsNone(arrived_with([]))
        self.assertIsNone(arrived_with([(*V4, b"")]))

    def test_reflected_without_ecn(self) -> None:
        self.assertEqual(
            reflected([(*V4, bytes([0xBB]))]), [(*V4, (0xB8).to_bytes(4, sys.byteorder))]
        )
        self.assertEqual(
            reflected([(*V6, (0x03).to_bytes(4, sys.byteorder))]),
            [(*V6, (0).to_bytes(4, sys.byteorder))],
        )
        self.assertEqual(reflected([(socket.IPPROTO_IP, 8, bytes(12))]), [])

    def test_mark_and_read_back_over_loopback(self) -> None:
        hosts = ["127.0.0.1"] + ([] if NO_IPV6 else ["::1"])
        for host in hosts:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with (
                socket.socket(family, socket.SOCK_DGRAM) as server,
                socket.socket(family, socket.SOCK_DGRAM) as client,
            ):
                server.bind((host, 0))
                server.settimeout(5)
                receive_marking(server)
                mark(client, 34)  # AF41
                client.sendto(b"x", server.getsockname()[:2])
                _, ancdata, _, _ = server.recvmsg(10, 64)
                self.assertEqual(arrived_with(ancdata), 34 << 2, host)

    def test_only_six_bits(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for wrong in (-1, 64):
                with self.assertRaises(ValueError):
                    mark(sock, wrong)
