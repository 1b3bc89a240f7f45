"""The option checks both programs share."""

import subprocess

from twisted.trial import unittest

from tests import tiers
from udpupper import __version__, options
from udpupper.options import bounded, count, one_line, peer_port, port_number, positive_float


@tiers.unit
class ChecksTests(unittest.TestCase):
    def test_port_number(self) -> None:
        self.assertEqual([port_number(v) for v in ("0", "12000", "65535")], [0, 12000, 65535])
        for bad in ("-1", "65536", "abc", "1.5", "", "-0", "+5", "1_2", " 12", "١٢", "１２"):
            self.assertRaises(ValueError, port_number, bad)

    def test_positive_float(self) -> None:
        self.assertEqual(positive_float("0.25"), 0.25)
        for bad in ("0", "-1", "nan", "inf", "x"):
            self.assertRaises(ValueError, positive_float, bad)

    def test_count(self) -> None:
        self.assertEqual(count("0"), 0)
        for bad in ("-1", "x", "2.0", "-0", "+2", "1_000", "٣"):
            self.assertRaises(ValueError, count, bad)

    def test_peer_port(self) -> None:
        self.assertEqual(peer_port("1"), 1)
        for bad, says in (
            ("0", "must be 1 to 65535, not 0"),
            ("70000", "must be 1 to 65535, not 70000"),
        ):
            with self.assertRaises(ValueError) as raised:
                peer_port(bad)
            self.assertEqual(str(raised.exception), says)

    def test_range_messages_name_the_range_enforced(self) -> None:
        for check, bad, says in (
            (bounded(count, 1, 1 << 24), "16777217", "must be 1 to 16777216, not 16777217"),
            (bounded(count, 1, 1 << 24), "0", "must be 1 to 16777216, not 0"),
            (bounded(positive_float, 0.1, 600), "0.05", "must be 0.1 to 600, not 0.05"),
            (port_number, "65536", "must be 0 to 65535, not 65536"),
            # Below what the check itself takes: the range, not "0 or more"
            # (--workers -1 must not suggest that 0 would do).
            (bounded(count, 1, 256), "-1", "must be 1 to 256, not -1"),
            (bounded(count, 8, 65527), "-5", "must be 8 to 65527, not -5"),
            (bounded(positive_float, 0.001, 3600), "0", "must be 0.001 to 3600, not 0"),
            (bounded(positive_float, 0.1, 600), "-2.5", "must be 0.1 to 600, not -2.5"),
            # What is no number of the kind keeps the check's own words.
            (bounded(count, 1, 256), "2.5", "not a whole number: '2.5'"),
            (
                bounded(positive_float, 0.1, 600),
                "nan",
                "must be a finite number greater than 0, not nan",
            ),
            (bounded(positive_float, 0.1, 600), "x", "not a number: 'x'"),
        ):
            with self.assertRaises(ValueError) as raised:
                check(bad)
            self.assertEqual(str(raised.exception), says)


@tiers.system
class VersionTests(unittest.TestCase):
    """``--version`` says udpupper's version, whichever program is asked."""

    def test_every_program(self) -> None:
        from tests.bench.test_load import BENCH
        from tests.processes import CLIENT, TWISTD

        for command in (CLIENT, BENCH, [*TWISTD, "udpupper"]):
            result = subprocess.run([*command, "--version"], capture_output=True, timeout=60)
            self.assertEqual(
                (result.stdout, result.returncode),
                (f"udpupper {__version__}\n".encode(), 0),
                command,
            )


@tiers.unit
class OneLineTests(unittest.TestCase):
    def test_nothing_typed_can_break_the_line(self) -> None:
        text = one_line("a\x1eb\nc\rd\u2028e\x85f\x0bg\x1bh é 日本")
        self.assertEqual(text.splitlines(), [text])
        self.assertEqual(text, "a\\x1eb\\nc\\rd\\u2028e\\x85f\\x0bg\\x1bh é 日本")


@tiers.unit
class ExitWithTests(unittest.TestCase):
    """How a start that fails ends: in the foreground, one line and a status;
    in twistd's daemon, an exception twistd reports (a SystemExit there
    left twistd's first process waiting for ever)."""

    def setUp(self) -> None:
        self.patch(options, "_foreground", None)
        self.patch(options, "_log_file", None)

    def test_in_the_foreground(self) -> None:
        from tests.support import CapturedStderr

        with CapturedStderr() as stderr, self.assertRaises(SystemExit) as exited:
            options.exit_with("udpupper: no\nway")
        self.assertEqual(exited.exception.code, 1)
        self.assertEqual(stderr.text, "udpupper: no\\nway\n")

    def test_before_forking_the_line_goes_to_the_log_too(self) -> None:
        import os
        import tempfile

        from tests.support import CapturedStderr

        log = os.path.join(tempfile.mkdtemp(), "twistd.log")
        options.expect_background(log)
        with CapturedStderr(), self.assertRaises(SystemExit):
            options.exit_with("udpupper: cannot listen")
        with open(log) as written:
            self.assertRegex(written.read(), r"^\S+ \[udpupper#error\] udpupper: cannot listen\n$")

    def test_in_the_daemon(self) -> None:
        import os

        from twisted.logger import globalLogPublisher

        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.patch(options, "_foreground", os.getpid() + 1)  # forked since
        with self.assertRaises(RuntimeError) as raised:
            options.exit_with("udpupper: cannot serve metrics on tcp:1: Permission denied")
        self.assertEqual(str(raised.exception), "cannot serve metrics on tcp:1: Permission denied")
        self.assertEqual(
            [event["line"] for event in events if "line" in event],
            ["udpupper: cannot serve metrics on tcp:1: Permission denied"],
        )
