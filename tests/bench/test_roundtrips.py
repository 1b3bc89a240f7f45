"""bench/roundtrips, the profiler's harness: it runs, and every round trip is answered."""

from __future__ import annotations

import re
import subprocess

from twisted.trial import unittest

from tests import tiers
from tests.processes import run_bench_script


@tiers.system
class RoundTripsTests(unittest.TestCase):
    def run_script(self, *options: str) -> subprocess.CompletedProcess:
        return run_bench_script("roundtrips", *options)

    def test_with_and_without_the_helpers(self) -> None:
        for options in ((), ("--without-helpers", "--size", "1400")):
            result = self.run_script("--count", "300", *options)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertRegex(result.stdout, r"^300 round trips of \d+ B: [\d.]+ us each\n$")

    def test_bad_options(self) -> None:
        result = self.run_script("--size", "7")
        self.assertEqual(result.returncode, 2)
        self.assertTrue(re.search(r"--size is 8 to 65507", result.stderr), result.stderr)
