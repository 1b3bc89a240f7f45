"""Receive buffers and the kernel's drop counter, on real sockets."""

from __future__ import annotations

import socket
import sys

from twisted.trial import unittest

from tests import tiers
from udpupper.kernel import (
    IP_MTU_DISCOVER,
    IP_PMTUDISC_OMIT,
    IPV6_MTU_DISCOVER,
    prepare_server_socket,
    proc_socket_drops,
    set_receive_buffer,
    socket_drops,
)

LINUX = None if sys.platform.startswith("linux") else "Linux only"


@tiers.loopback
class KernelTests(unittest.TestCase):
    skip = LINUX

    def socket(self, family=socket.AF_INET) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1" if family == socket.AF_INET else "::1", 0))
        return sock

    def test_server_sockets_are_deaf_to_path_mtu(self) -> None:
        """Both stacks of a dual-stack socket, and an IPv4 one: replies leave
        at the interface's MTU, whatever a stranger's ICMP says of the path
        (tests/test_netns.py sends one)."""
        for family in (socket.AF_INET, socket.AF_INET6):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            self.addCleanup(sock.close)
            prepare_server_socket(sock, destinations=True)
            self.assertEqual(sock.getsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER), IP_PMTUDISC_OMIT)
            if family == socket.AF_INET6:
                self.assertEqual(
                    sock.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER), IP_PMTUDISC_OMIT
                )

    def test_receive_buffer_is_granted_something(self) -> None:
        granted = set_receive_buffer(self.socket(), 1 << 20)
        self.assertGreater(granted, 0)
        self.assertLessEqual(granted, 1 << 20)

    def test_drops_counted_when_the_buffer_overflows(self) -> None:
        receiver = self.socket()
        set_receive_buffer(receiver, 4096)
        self.assertEqual(socket_drops(receiver), 0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(200):
                sender.sendto(b"x" * 1000, receiver.getsockname())
        self.assertGreater(socket_drops(receiver), 0)
        # SO_MEMINFO and /proc/net/udp agree.
        self.assertEqual(socket_drops(receiver), proc_socket_drops(receiver))

    def test_a_larger_buffer_is_never_made_smaller(self) -> None:
        sock = self.socket()
        granted = set_receive_buffer(sock, 1 << 20)
        self.assertEqual(set_receive_buffer(sock, 4096), granted)
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2, granted)

    def test_ipv6_socket(self) -> None:
        try:
            receiver = self.socket(socket.AF_INET6)
        except OSError:
            raise unittest.SkipTest("no IPv6 loopback") from None
        self.assertEqual(socket_drops(receiver), 0)
