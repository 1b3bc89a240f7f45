"""Where the daemon listens, and the one line when it cannot."""

from __future__ import annotations

import socket

from twisted.trial import unittest

from tests import tiers
from tests.support import CapturedStderr
from udpupper.server.listening import format_endpoint, interfaces_to_try, reserve_port


@tiers.loopback
class ListeningTests(unittest.TestCase):
    def test_format_endpoint(self) -> None:
        self.assertEqual(format_endpoint("::", 12000), "[::]:12000/udp")
        self.assertEqual(format_endpoint("0.0.0.0", 1), "0.0.0.0:1/udp")

    def test_both_stacks_then_ipv4(self) -> None:
        self.assertEqual(interfaces_to_try(None), ["::", "0.0.0.0"])
        self.assertEqual(interfaces_to_try("127.0.0.1"), ["127.0.0.1"])

    def test_reserve_picks_a_free_port_or_says_why_not(self) -> None:
        host, port = reserve_port("127.0.0.1", 0)
        self.assertEqual(host, "127.0.0.1")
        self.assertGreater(port, 0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            busy = taken.getsockname()[1]
            with CapturedStderr() as stderr, self.assertRaises(SystemExit):
                reserve_port("127.0.0.1", busy)
        self.assertEqual(
            stderr.text,
            f"udpupper: cannot listen on 127.0.0.1:{busy}/udp: Address already in use\n",
        )
