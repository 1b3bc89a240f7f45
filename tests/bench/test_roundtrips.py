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


@tiers.system
class WithoutTheVenvTests(unittest.TestCase):
    """A bench script run by a Python without udpupper, away from a clone's
    .venv: one line saying how, not a ModuleNotFoundError."""

    def test_one_line_saying_how(self) -> None:
        import os
        import shutil
        import sys
        import tempfile

        from tests.processes import BENCH_DIR, hiding

        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder, True)
        copy = os.path.join(folder, "bench")
        shutil.copytree(BENCH_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
        for script in ("compare", "roundtrips", "strangers", "floor"):
            result = subprocess.run(
                [sys.executable, os.path.join(copy, script), "--help"],
                capture_output=True,
                text=True,
                timeout=60,
                env=hiding(self, "udpupper"),
            )
            self.assertEqual(result.returncode, 1, (script, result.stderr))
            lines = result.stderr.strip().splitlines()
            self.assertEqual(len(lines), 1, (script, lines))
            self.assertIn("udpupper is not installed for", lines[0])
            self.assertIn("make test", lines[0])
