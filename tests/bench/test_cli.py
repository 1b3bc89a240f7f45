"""``udpupper-bench``'s command line."""

from __future__ import annotations

import subprocess

from twisted.trial import unittest

from tests import tiers
from tests.bench.test_load import BENCH


@tiers.system
class UsageTests(unittest.TestCase):
    def test_usage_errors_are_one_line_and_2(self) -> None:
        for options in (
            ["--size", "5"],
            ["--duration", "601"],
            ["--sockets", "0"],
            ["--payload", "emoji"],
            ["--window", "2000"],
        ):
            result = subprocess.run([*BENCH, *options], capture_output=True, timeout=60)
            self.assertEqual(result.returncode, 2, options)
            self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)

    def test_help(self) -> None:
        result = subprocess.run([*BENCH, "--help"], capture_output=True, timeout=60)
        self.assertEqual(result.returncode, 0)
        self.assertIn(b"--window", result.stdout)
