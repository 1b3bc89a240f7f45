"""bench/loops: a loop timed, and a clear refusal where it cannot run."""

from __future__ import annotations

from twisted.trial import unittest

from tests import tiers
from tests.processes import hiding, run_bench_script
from udpupper.bench.spoof import why_not
from udpupper.server import metrics


@tiers.system
class LoopsScriptTests(unittest.TestCase):
    skip = why_not()

    def test_a_daemon_answering_itself(self) -> None:
        if not metrics.available():
            raise unittest.SkipTest(metrics.MISSING)
        result = run_bench_script("loops", "--scenario", "itself")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(
            result.stdout,
            r"^itself +1 loop\(s\): +1 datagrams in +[\d.]+ ms "
            r"\(at most 10 ms more\); ended by \{'loop': 1\}\n$",
        )

    def test_without_prometheus_client(self) -> None:
        # A plain `pip install .`: one line saying what to install, not a
        # traceback from the first daemon refusing --metrics.
        result = run_bench_script("loops", env=hiding(self, "prometheus_client"))
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(result.stdout, "")
        self.assertIn(
            "error: the daemons' counters are read from their --metrics: needs prometheus_client",
            result.stderr.splitlines()[-1],
        )
