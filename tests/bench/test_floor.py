"""bench/floor, the floor of a round trip against the tools users trust: it
runs every case it can here, in one JSON object, and refuses bad options."""

from __future__ import annotations

import json
import shutil

from twisted.trial import unittest

from tests import tiers
from tests.processes import run_bench_script


@tiers.system
class FloorTests(unittest.TestCase):
    skip = None if shutil.which("cc") or shutil.which("gcc") else "no C compiler for limit.c"

    def test_one_short_round(self) -> None:
        result = run_bench_script(
            "floor", "--rounds", "1", "--probes", "20", "--interval", "0.005", "--json"
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        found = json.loads(result.stdout)
        measured = set(found["median_rtt_us"])
        self.assertTrue({"minimal", "client-c", "client-daemon"} <= measured, found)
        self.assertEqual(
            measured | set(found["skipped"]),
            {"ping", "irtt", "minimal", "client-c", "client-daemon"},
        )
        self.assertTrue(all(value > 0 for value in found["median_rtt_us"].values()), found)
        goals = {goal["goal"] for goal in found["goals"]}
        self.assertIn("the daemon's share (client-daemon less client-c)", goals)
        # The client read the kernel's stamps: nothing said of its clocks.
        self.assertNotIn("timed by", result.stderr)

    def test_bad_options(self) -> None:
        for options in (["--rounds", "0"], ["--interval", "0.0001"], ["--probes", "3"]):
            result = run_bench_script("floor", *options)
            self.assertEqual(result.returncode, 2, options)
            self.assertIn("--rounds at least 1", result.stderr)
