"""udpupper-bench --flood: its sources, its ancillary data, a short real run;
and bench/flood, which starts daemons and floods them with it."""

from __future__ import annotations

import json
import os
import socket
import subprocess

from twisted.trial import unittest

from tests import tiers
from tests.bench.test_load import BENCH
from tests.processes import METRICS_AT, Daemon, hiding, run_bench_script
from tests.support import free_port, long_run
from udpupper.bench.flood import FloodResult, socket_drops, sources
from udpupper.server import metrics

try:
    from udpupper import _batch
except ImportError:
    _batch = None


@tiers.unit
class SourcesTests(unittest.TestCase):
    def test_random_covers_every_slash_24_each_round(self) -> None:
        addresses = sources("random", rounds=2)
        self.assertEqual(len(addresses), 2 << 16)
        for half in (addresses[: 1 << 16], addresses[1 << 16 :]):
            prefixes = {address.rpartition(".")[0] for address in half}
            self.assertEqual(len(prefixes), 1 << 16)
        self.assertNotEqual(addresses[: 1 << 16], addresses[1 << 16 :])
        self.assertTrue(all(address.startswith("127.") for address in addresses))

    def test_one_is_one_slash_24(self) -> None:
        addresses = sources("one", rounds=1)
        self.assertEqual({address.rpartition(".")[0] for address in addresses}, {"127.0.0"})
        self.assertGreater(len(set(addresses)), 200)

    def test_unknown_kind(self) -> None:
        self.assertRaises(ValueError, sources, "everything")

    def test_result_figures(self) -> None:
        result = FloodResult(
            duration=2.0, sent=1000, quiet_sent=200, quiet_answered=199, intake=400.0
        )
        figures = result.as_dict()
        self.assertEqual(
            (figures["flood_sent_per_s"], figures["quiet_answered_pct"]), (500.0, 99.5)
        )


@tiers.loopback
class SocketDropsTests(unittest.TestCase):
    """What the kernel dropped at a port: the intake of a server without metrics."""

    skip = None if os.path.exists("/proc/net/udp") else "no /proc/net/udp"

    def test_counts_what_a_full_socket_dropped(self) -> None:
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(receiver.close)
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        receiver.bind(("127.0.0.1", 0))
        port = receiver.getsockname()[1]
        self.assertEqual(socket_drops(port), 0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(200):
                sender.sendto(b"x" * 1000, ("127.0.0.1", port))
        self.assertGreater(socket_drops(port), 0)

    def test_a_port_nobody_holds(self) -> None:
        port = free_port()
        self.assertIsNone(socket_drops(port))


@tiers.system
class FloodRunTests(unittest.TestCase):
    skip = (None if metrics.available() else metrics.MISSING) or (
        None if _batch is not None else "--flood needs the C helper"
    )

    def test_a_short_flood_against_the_daemon(self) -> None:
        daemon = Daemon("--port", "0", "--exempt", "", "--metrics", "tcp:0:interface=127.0.0.1")
        self.addCleanup(daemon.stop)
        port = daemon.start()
        page = int(daemon.find(METRICS_AT).group(1))
        result = subprocess.run(
            [
                *BENCH,
                "--port",
                str(port),
                "--flood",
                "random",
                "--flood-rate",
                "20000",
                "--duration",
                "1",
                "--json",
                "--metrics",
                f"http://127.0.0.1:{page}/metrics",
            ],
            capture_output=True,
            timeout=120,
        )
        figures = json.loads(result.stdout.splitlines()[-1])
        self.assertEqual(result.returncode, 0, figures)
        self.assertGreater(figures["daemon_intake_per_s"], 10_000)
        self.assertLess(figures["flood_sent_per_s"], 25_000)  # paced
        self.assertGreaterEqual(figures["quiet_answered_pct"], 99)
        counters = daemon.summary()
        self.assertGreater(counters["received"], 10_000)

    def test_without_metrics(self) -> None:
        """Any server: the measured part is what follows the warm-up, and the
        intake is what was sent less what the server's socket dropped."""
        daemon = Daemon("--port", "0", "--exempt", "")
        self.addCleanup(daemon.stop)
        port = daemon.start()
        result = subprocess.run(
            [
                *BENCH,
                "--port",
                str(port),
                "--flood",
                "one",
                "--flood-rate",
                "20000",
                "--duration",
                "1",
                "--warmup",
                "0.5",
                "--json",
            ],
            capture_output=True,
            timeout=120,
        )
        figures = json.loads(result.stdout.splitlines()[-1])
        # (No delta= to assertAlmostEqual: Twisted 26.10's trial ignores it.)
        self.assertLess(abs(figures["duration_s"] - 1.0), 0.2, figures)
        self.assertGreater(figures["flood_sent_per_s"], 10_000)
        self.assertLess(figures["flood_sent_per_s"], 25_000)  # paced
        self.assertIsNotNone(figures["socket_drops"])
        dropped_per_s = figures["socket_drops"] / figures["duration_s"]
        intake = figures["flood_sent_per_s"] - dropped_per_s
        self.assertLess(abs(figures["daemon_intake_per_s"] - intake), 50, figures)

    def test_usage_errors(self) -> None:
        for options in (["--flood", "sometimes"], ["--flood", "one", "--quiet-rate", "0"]):
            result = subprocess.run([*BENCH, *options], capture_output=True, timeout=60)
            self.assertEqual(result.returncode, 2, options)
            self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)


@tiers.system
class FloodScriptTests(unittest.TestCase):
    skip = None if _batch is not None else "--flood needs the C helper"

    @long_run
    def test_without_prometheus_client(self) -> None:
        # A plain `pip install .` has no prometheus_client, so no --metrics:
        # the intake is then what was sent less what the socket dropped.
        result = run_bench_script(
            "flood",
            "--rounds",
            "1",
            "--duration",
            "1",
            "--warmup",
            "1",
            "--no-limit",
            env=hiding(self, "prometheus_client"),
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("(prometheus_client is not installed)", result.stdout)
        rows = {
            cells[1]: cells
            for cells in (
                [cell.strip() for cell in line.strip("|").split("|")]
                for line in result.stdout.splitlines()
                if line.startswith("| udpupper |")
            )
        }
        self.assertEqual(set(rows), {"one", "random"}, result.stdout)
        for cells in rows.values():
            self.assertGreater(float(cells[3].replace(",", "")), 1_000, cells)  # intake/s
        self.assertEqual(rows["one"][4], "1.00")

    def test_a_daemon_that_cannot_start_is_named(self) -> None:
        result = run_bench_script(
            "flood",
            "--rounds",
            "1",
            "--duration",
            "1",
            "--warmup",
            "1",
            "--no-limit",
            "--daemon",
            "--rate -5",
        )
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn(
            "bench/flood: the server exited with status 1; the server's last "
            "line: twistd udpupper: error: --rate: ",
            result.stderr,
        )
