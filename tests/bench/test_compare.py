"""bench/compare: from a checkout, it measures the installed package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from twisted.trial import unittest

from tests import tiers
from tests.processes import BENCH_DIR, hiding
from tests.support import free_port, long_run

try:
    import udpupper._batch  # noqa: F401

    HAVE_HELPERS = True
except ImportError:
    HAVE_HELPERS = False


@tiers.system
class CompareTests(unittest.TestCase):
    def checkout(self) -> str:
        """A checkout as cloned: bench/ beside a udpupper/ with nothing built in it."""
        # A real temporary directory: under pytest, trial's mktemp() is
        # relative to the checkout, and would leave files in it.
        root = tempfile.mkdtemp(prefix="udpupper-compare-")
        self.addCleanup(shutil.rmtree, root, True)
        shutil.copytree(BENCH_DIR, os.path.join(root, "bench"))
        package = os.path.join(os.path.dirname(BENCH_DIR), "udpupper")
        shutil.copytree(
            package,
            os.path.join(root, "udpupper"),
            ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"),
        )
        return root

    @long_run
    def test_the_daemon_and_the_bare_loop_from_a_checkout(self) -> None:
        # The servers once ran with the checkout first on PYTHONPATH: there
        # the daemon ran without its C helpers under the label "defaults",
        # and the bare helpers' loop could not start at all.
        root = self.checkout()
        servers = ["textbook", "udpupper"] + (["helpers"] if HAVE_HELPERS else [])
        table = os.path.join(root, "table.md")
        result = subprocess.run(
            [
                sys.executable,
                os.path.join(root, "bench", "compare"),
                "--rounds",
                "1",
                "--duration",
                "0.5",
                "--sizes",
                "32",
                "--windows",
                "4",
                "--servers",
                ",".join(servers),
                "--port",
                str(free_port()),
                "--output",
                table,
            ],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(table) as written:
            rows = [line for line in written if line.startswith("| ") and " 32 | 4 |" in line]
        self.assertEqual(len(rows), len(servers), rows)
        for row in rows:
            cells = [cell.strip() for cell in row.strip("|\n").split("|")]
            self.assertGreater(float(cells[3].replace(",", "")), 0, row)
            self.assertEqual(cells[-1], "0", row)  # no reply mismatched (a loss is the host's)

    @long_run
    def test_a_daemon_without_the_helpers_is_not_measured_as_the_daemon(self) -> None:
        if not HAVE_HELPERS:
            raise unittest.SkipTest("the C helpers are not built here")
        # Hidden from twistd alone, as a checkout first on its path hid them.
        result = subprocess.run(
            [
                sys.executable,
                os.path.join(BENCH_DIR, "compare"),
                "--rounds",
                "1",
                "--duration",
                "0.5",
                "--sizes",
                "32",
                "--windows",
                "4",
                "--servers",
                "textbook,udpupper",
                "--port",
                str(free_port()),
            ],
            env=hiding(self, "udpupper._batch", "twistd"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn(
            "bench/compare: the daemon ran without the C helpers this Python has: ", result.stderr
        )
        self.assertIn("udpupper runs without its C helper", result.stderr)

    def test_a_server_that_cannot_start_is_named(self) -> None:
        result = subprocess.run(
            [
                sys.executable,
                os.path.join(BENCH_DIR, "compare"),
                "--rounds",
                "1",
                "--duration",
                "0.5",
                "--servers",
                "textbook",
                "--textbook",
                "no-such-server.py",
                "--port",
                str(free_port()),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 1)
        self.assertRegex(
            result.stderr,
            r"bench/compare: textbook: it exited with status \d+ "
            r"before answering on port \d+; its last line: .*"
            r"no-such-server\.py",
        )

    def test_a_load_that_is_not_a_load_generator(self) -> None:
        missing = subprocess.run(
            [
                sys.executable,
                os.path.join(BENCH_DIR, "compare"),
                "--servers",
                "textbook",
                "--loadgen",
                os.path.join(BENCH_DIR, "no-such-loadgen"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(missing.returncode, 2)
        self.assertRegex(
            missing.stderr.splitlines()[-1],
            r"^compare: error: --loadgen: no program to run at .*no-such-loadgen$",
        )
        echo = shutil.which("echo")
        if echo is None:
            raise unittest.SkipTest("no echo(1) to stand in for a load that says nothing useful")
        silent = subprocess.run(
            [
                sys.executable,
                os.path.join(BENCH_DIR, "compare"),
                "--rounds",
                "1",
                "--duration",
                "0.5",
                "--servers",
                "textbook",
                "--loadgen",
                echo,
                "--port",
                str(free_port()),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(silent.returncode, 1)
        self.assertIn(
            "bench/compare: the load against textbook gave no result (exit status 0): -p ",
            silent.stderr,
        )
