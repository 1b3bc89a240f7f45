"""``twistd udpupper``: the plugin, its options and the service they make."""

from __future__ import annotations

import io
from contextlib import redirect_stderr

from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.trial import unittest

from tests import tiers
from tests.support import CapturedStderr
from udpupper.server import metrics, tap
from udpupper.server.protections.policy import parse_networks
from udpupper.server.service import UpperService


def parse(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


@tiers.unit
class OptionsTests(unittest.TestCase):
    def test_defaults(self) -> None:
        options = parse()
        self.assertEqual(options["port"], 12000)
        self.assertIsNone(options["interface"])
        self.assertEqual(
            (
                options["rate"],
                options["burst"],
                options["rate-table"],
                options["max-amplification"],
                options["allow-low-ports"],
                options["rcvbuf"],
            ),
            (200.0, None, 65_536, 1.0, 0, 4 * 1024 * 1024),
        )
        self.assertEqual(options["exempt"], parse_networks("127.0.0.0/8,::1/128"))

    def test_protection_options(self) -> None:
        options = parse(
            "--rate",
            "0",
            "--burst",
            "5",
            "--rate-table",
            "10",
            "--exempt",
            "",
            "--max-amplification",
            "3",
            "--allow-low-ports",
            "--rcvbuf",
            "0",
        )
        self.assertEqual(
            (
                options["rate"],
                options["burst"],
                options["rate-table"],
                options["exempt"],
                options["max-amplification"],
                options["allow-low-ports"],
                options["rcvbuf"],
            ),
            (0.0, 5.0, 10, [], 3.0, 1, 0),
        )
        self.assertEqual(
            parse("--exempt", "10.0.0.0/8, 2001:db8::/32")["exempt"],
            parse_networks("10.0.0.0/8,2001:db8::/32"),
        )

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
        self.assert_usage_error("--interface", "224.0.0.1", says="unicast")
        self.assert_usage_error("--interface", "255.255.255.255", says="unicast")
        self.assert_usage_error("--rate", "-1", says="--rate")
        self.assert_usage_error("--rate", "fast", says="--rate")
        self.assert_usage_error("--burst", "0.5", says="--burst: must be 1 or more")
        self.assert_usage_error("--burst", "x", says="--burst")
        self.assert_usage_error("--rate-table", "0", says="--rate-table")
        self.assert_usage_error("--exempt", "10.0.0.0/33", says="--exempt")
        self.assert_usage_error("--max-amplification", "0", says="--max-amplification")
        self.assert_usage_error("--rcvbuf", "-5", says="--rcvbuf")
        self.assert_usage_error(
            "--rcvbuf", "2147483648", says="--rcvbuf: must be 0 to 1073741823, not 2147483648"
        )
        self.assert_usage_error(
            "--interface",
            "fe80::1%nosuchif",
            says="--interface: no network interface 'nosuchif' on this host",
        )
        self.assert_usage_error("--interface", "127.0.0.1%lo", says="IPv4 address has no scope")
        self.assert_usage_error(
            "--interface", "fe80::1%999999", says="no network interface '999999' on this host"
        )
        self.assert_usage_error(
            "--interface", "::1%lo", says="only a link-local address (fe80::/10) takes a scope"
        )
        self.assert_usage_error("--metrics", "tcp:abc", says="--metrics: not a server endpoint")
        self.assert_usage_error("--metrics", "bogus:1", says="--metrics")

    def test_metrics_without_prometheus_client_says_how_to_install_it(self) -> None:
        self.patch(metrics, "available", lambda: False)
        self.assert_usage_error(
            "--metrics",
            "tcp:9812",
            says=(
                "--metrics: needs prometheus_client: in a checkout, pip install '.[metrics]'; "
                "from a package index, pip install 'udpupper[metrics]'"
            ),
        )
        self.assert_usage_error("--workers", "0", says="--workers")
        self.assert_usage_error("--busy-poll", "-1", says="--busy-poll")
        self.assert_usage_error("--loop-budget", "-1", says="--loop-budget")
        self.assert_usage_error("--loop-budget", "16777217", says="--loop-budget")


@tiers.unit
class MakeServiceTests(unittest.TestCase):
    def test_service_from_options(self) -> None:
        service = tap.makeService(
            parse("--port", "0", "--interface", "127.0.0.1", "--rate", "10", "--rcvbuf", "0")
        )
        self.assertIsInstance(service, UpperService)
        self.assertEqual((service.port_number, service.interface), (0, "127.0.0.1"))
        self.assertEqual(
            (service.protocol.limiter.rate, service.protocol.limiter.burst), (10.0, 20.0)
        )
        self.assertEqual(service.rcvbuf, 0)
        self.assertEqual(tap.makeService(parse("--busy-poll", "0")).busy_poll, 0)

    def test_metrics_adds_a_web_service(self) -> None:
        from twisted.application.service import IServiceCollection

        both = tap.makeService(parse("--metrics", "tcp:0:interface=127.0.0.1"))
        children = list(IServiceCollection(both))
        self.assertEqual(len(children), 2)
        self.assertIsInstance(children[0], UpperService)

    def test_rate_0_means_no_limiter(self) -> None:
        self.assertIsNone(tap.makeService(parse("--rate", "0")).protocol.limiter)

    def test_a_rate_below_half_gets_a_burst_of_one(self) -> None:
        limiter = tap.makeService(parse("--rate", "0.1")).protocol.limiter
        self.assertEqual((limiter.rate, limiter.burst), (0.1, 1.0))

    def test_loop_budget(self) -> None:
        loops = tap.makeService(parse("--loop-budget", "50")).protocol.loops
        self.assertEqual((loops.every, loops.size), (50, 65_536))
        self.assertIsNone(tap.makeService(parse("--loop-budget", "0")).protocol.loops)
        self.assertEqual(tap.makeService(parse("--rate-table", "1")).protocol.loops.size, 6)

    def test_the_reactor_is_a_parameter(self) -> None:
        from twisted.internet.testing import MemoryReactorClock

        reactor = MemoryReactorClock()
        service = tap.makeService(parse("--port", "0"), reactor)
        self.assertIs(service.reactor, reactor)
        self.assertIs(service.checker.clock, reactor)

    def test_workers_pass_the_loop_budget_on(self) -> None:
        self.assertIn("--loop-budget=7", tap.worker_options(parse("--loop-budget", "7")))


@tiers.unit
class PluginTests(unittest.TestCase):
    def test_twistd_finds_the_plugin(self) -> None:
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        self.assertIn("udpupper", makers)
        self.assertIs(makers["udpupper"].options, tap.Options)


# Taken from Options itself: an option added later is tried too.
OPTION_NAMES = [parameter[0] for parameter in tap.Options.optParameters]
VALUES = st.one_of(
    st.integers(-(2**40), 2**40).map(str),
    st.floats().map(repr),  # nan, inf, -0.0, 1e+300 ...
    st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=24),
    st.sampled_from(
        [
            "",
            "0",
            "1",
            "-1",
            "0.4",
            "65535",
            "65536",
            "16777217",
            "::",
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.1",
            "fe80::1%lo",
            "10.0.0.0/8",
            "10.0.0.0/33",
            ",",
            "tcp:0",
            "tcp:0:interface=127.0.0.1",
            "unix:",
            "bogus:1",
            "x",
        ]
    ),
)


@tiers.unit
class AnythingTypedTests(unittest.TestCase):
    """Whatever values, alone or together, with or without --workers: the
    options and the service they make end in a service, or in one line on
    stderr and status 1; never a traceback."""

    @settings(max_examples=200, deadline=None)
    @given(st.dictionaries(st.sampled_from(OPTION_NAMES), VALUES, max_size=4), st.booleans())
    @example({"metrics": "\x1e"}, False)  # a record separator: splitlines() splits there
    @example({"exempt": "\u2028"}, True)
    @example({"metrics": "a=b"}, False)  # IndexError inside Twisted's parser
    @example({"metrics": "tcp:0:\\"}, False)  # RuntimeError there
    def test_any_values(self, values: dict[str, str], workers: bool) -> None:
        argv = [f"--{name}={value}" for name, value in values.items()]
        if workers and "workers" not in values:
            argv.append("--workers=2")
        usage = io.StringIO()
        with CapturedStderr() as fd2, redirect_stderr(usage):
            try:
                options = parse(*argv)
                tap.makeService(options, MemoryReactorClock())
            except SystemExit as exit:
                code = exit.code
            else:
                code = 0
        said = (usage.getvalue() + fd2.text).splitlines()
        if code == 0:
            self.assertEqual(said, [], argv)
        else:
            self.assertEqual(code, 1, argv)
            self.assertEqual(len(said), 1, (argv, said))
            self.assertTrue(said[0].startswith(("twistd udpupper: error: --", "udpupper: ")), said)


@tiers.unit
class ProtectionsOptionsTests(unittest.TestCase):
    """A protection is one field, one option: each field of Protections is
    the option of its name, and makeService gives them all through."""

    def test_every_field_is_an_option(self) -> None:
        from dataclasses import fields

        from udpupper.server.protections.policy import Protections

        names = {option[0] for option in tap.Options.optParameters + tap.Options.optFlags}
        for setting in fields(Protections):
            self.assertIn(setting.name.replace("_", "-"), names, setting.name)

    def test_the_options_reach_the_protocol(self) -> None:
        service = tap.makeService(
            parse(
                "--rate",
                "7",
                "--burst",
                "3",
                "--rate-table",
                "100",
                "--new-prefix-rate",
                "9",
                "--loop-budget",
                "5",
                "--exempt",
                "10.0.0.0/8",
                "--max-amplification",
                "2",
                "--allow-low-ports",
            )
        )
        protocol = service.protocol
        limiter = protocol.limiter
        self.assertEqual(
            (limiter.rate, limiter.burst, limiter.size, limiter.new_rate), (7, 3, 100, 9)
        )
        self.assertEqual(protocol.loops.every, 5)
        self.assertEqual(protocol.max_amplification, 2)
        self.assertEqual(protocol.lowest_port, 1)
        self.assertEqual(protocol.sources.get("10.1.2.3")[0], 1)  # exempt
