"""udpupper-client's options (more of their edges: test_ping, test_sweep,
test_prober, and tests/test_options.py for the one-line usage errors)."""

from __future__ import annotations

import io
from contextlib import redirect_stderr

from twisted.trial import unittest

from tests import tiers
from udpupper.client.options import Options


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


@tiers.unit
class OptionsTests(unittest.TestCase):
    def test_defaults(self) -> None:
        options = parse()
        self.assertEqual(
            (
                options["host"],
                options["port"],
                options["timeout"],
                options["retries"],
                options["window"],
            ),
            ("localhost", 12000, 1.0, 3, 32),
        )

    def test_values(self) -> None:
        options = parse("--host", "::1", "-p", "9", "-t", "0.5", "-r", "0", "-w", "1")
        self.assertEqual(
            (
                options["host"],
                options["port"],
                options["timeout"],
                options["retries"],
                options["window"],
            ),
            ("::1", 9, 0.5, 0, 1),
        )

    def test_usage_errors_exit_2_with_one_line(self) -> None:
        for argv in (
            ["--port", "0"],
            ["--timeout", "0"],
            ["--window", "2000"],
            ["--retries", "many"],
            ["stray"],
        ):
            stderr = io.StringIO()
            with redirect_stderr(stderr), self.assertRaises(SystemExit) as raised:
                parse(*argv)
            self.assertEqual(raised.exception.code, 2, argv)
            self.assertEqual(len(stderr.getvalue().splitlines()), 1, argv)
            self.assertTrue(stderr.getvalue().startswith("udpupper-client: error: "))
