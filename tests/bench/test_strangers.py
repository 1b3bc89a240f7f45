"""bench/strangers: it runs, times the three senders, and answers every datagram."""

from __future__ import annotations

import subprocess

from twisted.trial import unittest

from tests import tiers
from tests.processes import run_bench_script


@tiers.system
class StrangersTests(unittest.TestCase):
    def run_script(self, *options: str) -> subprocess.CompletedProcess:
        return run_bench_script("strangers", *options)

    def test_every_datagram_answered(self) -> None:
        result = self.run_script("--count", "3000", "--rounds", "1")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(
            result.stdout,
            r"^a known /24, no rate limit: [\d,]+ ns a datagram\n"
            r"a known /24, rate limit: [\d,]+ ns a datagram\n"
            r"strangers of 65,536 /24s: [\d,]+ ns a datagram\n$",
        )

    def test_bad_options(self) -> None:
        result = self.run_script("--rounds", "0")
        self.assertEqual(result.returncode, 2)
        self.assertIn("--count and --rounds are at least 1", result.stderr)
