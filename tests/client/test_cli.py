"""udpupper-client's name resolution and main (its options: test_options)."""

from __future__ import annotations

import io
import socket
from contextlib import redirect_stderr
from unittest import mock

from twisted.trial import unittest

from tests import tiers
from udpupper.client import cli as client_cli


@tiers.unit
class ResolveTests(unittest.TestCase):
    def test_literals(self) -> None:
        self.assertEqual(client_cli.resolve("127.0.0.1", 5), (socket.AF_INET, ("127.0.0.1", 5)))
        self.assertEqual(client_cli.resolve("::1", 5), (socket.AF_INET6, ("::1", 5)))

    def test_a_name_prefers_ipv4(self) -> None:
        answers = [
            (socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("2001:db8::1", 7, 0, 0)),
            (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("192.0.2.1", 7)),
        ]
        with mock.patch.object(socket, "getaddrinfo", return_value=answers):
            self.assertEqual(
                client_cli.resolve("dual.example", 7), (socket.AF_INET, ("192.0.2.1", 7))
            )

    def test_ipv6_only_name(self) -> None:
        answers = [(socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("2001:db8::1", 7, 0, 0))]
        with mock.patch.object(socket, "getaddrinfo", return_value=answers):
            self.assertEqual(
                client_cli.resolve("six.example", 7), (socket.AF_INET6, ("2001:db8::1", 7))
            )

    def test_unknown_host_exits_2(self) -> None:
        error = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        stderr = io.StringIO()
        with (
            mock.patch.object(socket, "getaddrinfo", side_effect=error),
            redirect_stderr(stderr),
            self.assertRaises(SystemExit) as raised,
        ):
            client_cli.main(["--host", "nowhere.invalid"])
        self.assertEqual(raised.exception.code, 2)
        self.assertEqual(
            stderr.getvalue(),
            "udpupper-client: cannot resolve 'nowhere.invalid': Name or service not known\n",
        )
