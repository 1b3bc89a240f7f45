"""The C helpers the tests run against, said where every runner shows it."""

from __future__ import annotations

import sys

from twisted.trial import unittest

from tests import tiers
from tests.helpers import banner, missing


@tiers.unit
class HelpersBuiltTests(unittest.TestCase):
    def test_built_for_this_python(self) -> None:
        """Skipped, with the reason in the runner's summary, where they are
        not: trial and pytest both list skips at the end."""
        if missing():
            sys.stderr.write(banner() + "\n")
            raise unittest.SkipTest(banner())
        self.assertIn("all built", banner())


@tiers.system
class PurePythonTests(unittest.TestCase):
    """UDPUPPER_PURE_PYTHON=1: every helper's Python twin runs, and the
    daemon says so once, naming each and why."""

    def test_the_daemon_in_pure_python(self) -> None:
        import os

        from tests.processes import Daemon
        from tests.support import exchange

        os.environ["UDPUPPER_PURE_PYTHON"] = "1"
        try:
            daemon = Daemon("--port", "0", "--interface", "127.0.0.1")
        finally:
            del os.environ["UDPUPPER_PURE_PYTHON"]
        self.addCleanup(daemon.stop)
        port = daemon.start()
        self.assertEqual(exchange("127.0.0.1", port, b"pure")[0], b"PURE")
        line = daemon.find(r"udpupper runs without its C helpers .*").group(0)
        for module in (
            "udpupper._batch",
            "udpupper._transform",
            "_ratelimit",
            "_sources",
            "_loops",
        ):
            self.assertIn(f"{module} (UDPUPPER_PURE_PYTHON is set)", line)
        daemon.stop()
        self.assertEqual(sum("without its C helpers" in line for line in daemon.log), 1)
