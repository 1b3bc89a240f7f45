"""``twistd udpupper``: the plugin, its options and the service they make."""

from __future__ import annotations

import io
from contextlib import redirect_stderr

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial import unittest

from udpupper import tap
from udpupper.service import UpperService


def parse(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(unittest.TestCase):
    def test_defaults(self) -> None:
        options = parse()
        self.assertEqual(options["port"], 12000)
        self.assertIsNone(options["interface"])

    def test_port_and_interface(self) -> None:
        self.assertEqual(parse("--port", "0")["port"], 0)
        self.assertEqual(parse("-p", "65535", "-i", "::1")["interface"], "::1")
        self.assertEqual(parse("--interface", "127.0.0.1")["interface"], "127.0.0.1")

    def assert_usage_error(self, *argv: str, says: str) -> None:
        stderr = io.StringIO()
        with redirect_stderr(stderr), self.assertRaises(SystemExit) as raised:
            parse(*argv)
        self.assertEqual(raised.exception.code, 1)
        lines = stderr.getvalue().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn(says, lines[0])
        self.assertTrue(lines[0].startswith("twistd udpupper: error: "), lines[0])

    def test_bad_values_give_one_line(self) -> None:
        self.assert_usage_error("--port", "70000", says="--port: must be 0 to 65535")
        self.assert_usage_error("--port", "-1", says="--port")
        self.assert_usage_error("--port", "abc", says="not a port number: 'abc'")
        self.assert_usage_error("--interface", "nonsense", says="--interface")
        self.assert_usage_error("--interface", "localhost", says="--interface")
        self.assert_usage_error("--bogus", says="--bogus")


class MakeServiceTests(unittest.TestCase):
    def test_service_from_options(self) -> None:
        service = tap.makeService(parse("--port", "0", "--interface", "127.0.0.1"))
        self.assertIsInstance(service, UpperService)
        self.assertEqual((service.port_number, service.interface), (0, "127.0.0.1"))


class PluginTests(unittest.TestCase):
    def test_twistd_finds_the_plugin(self) -> None:
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        self.assertIn("udpupper", makers)
        self.assertIs(makers["udpupper"].options, tap.Options)
