"""udpupper-bench: its payloads, its arithmetic, and a short real run."""

from __future__ import annotations

import json
import socket
import subprocess
import threading

from twisted.trial import unittest

from tests import tiers
from tests.processes import Daemon, command
from udpupper.bench.load import HEADER, Bench, Result, make_body
from udpupper.transform import upper

BENCH = command("udpupper-bench", ["-m", "udpupper.bench.cli"])


@tiers.unit
class PayloadTests(unittest.TestCase):
    def test_sizes_are_exact(self) -> None:
        for kind in ("ascii", "unicode", "binary"):
            for size in (0, 1, 16, 1400, 65_491):
                self.assertEqual(len(make_body(kind, size)), size, (kind, size))

    def test_unicode_is_valid_text_that_changes(self) -> None:
        body = make_body("unicode", 1400)
        self.assertNotEqual(upper(body), body)
        self.assertEqual(upper(body), body.decode().upper().encode())

    def test_bad_kind(self) -> None:
        self.assertRaises(ValueError, make_body, "emoji", 10)


@tiers.unit
class ResultTests(unittest.TestCase):
    def test_percentiles_and_rate(self) -> None:
        result = Result(duration=2.0, received=4)
        result.latencies.pending.extend([0.000010, 0.000020, 0.000030, 0.000040])
        self.assertEqual(result.replies_per_s, 2.0)
        # Within half a percent (1%-wide buckets), exact at the ends.
        self.assertLess(abs(result.percentile(0.5) - 30.0), 0.15)
        self.assertEqual(result.percentile(0.99), 40.0)
        self.assertEqual(result.as_dict()["max_us"], 40.0)


@tiers.system
class RunTests(unittest.TestCase):
    def test_against_the_daemon(self) -> None:
        daemon = Daemon("--port", "0")
        self.addCleanup(daemon.stop)
        port = daemon.start()
        result = subprocess.run(
            [
                *BENCH,
                "--port",
                str(port),
                "--duration",
                "1",
                "--warmup",
                "0.2",
                "--sockets",
                "2",
                "--window",
                "8",
                "--payload",
                "unicode",
                "--size",
                "200",
                "--json",
            ],
            capture_output=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        figures = json.loads(result.stdout)
        self.assertGreater(figures["received"], 100)
        self.assertEqual((figures["lost"], figures["mismatched"]), (0, 0))
        self.assertLessEqual(figures["p50_us"], figures["p90_us"])
        self.assertLessEqual(figures["p90_us"], figures["p99_us"])
        self.assertLessEqual(figures["p99_us"], figures["max_us"])

    def test_a_wrong_server_is_caught(self) -> None:
        """A plain echo (no upper case) gets every reply counted mismatched."""
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind(("127.0.0.1", 0))
        server.settimeout(0.5)
        self.addCleanup(server.close)
        stop = threading.Event()

        def echo() -> None:
            while not stop.is_set():
                try:
                    data, peer = server.recvfrom(65_535)
                except OSError:
                    continue
                server.sendto(data, peer)

        thread = threading.Thread(target=echo, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 5)  # cleanups run last first: stop, join, close
        self.addCleanup(stop.set)
        bench = Bench(
            "127.0.0.1",
            server.getsockname()[1],
            window=2,
            sockets=1,
            size=HEADER + 10,
            payload="ascii",
            timeout=0.5,
        )
        self.addCleanup(bench.close)
        result = bench.run(0.3, 0.0)
        self.assertGreater(result.received, 0)
        self.assertEqual(result.mismatched, result.received)

    def test_dead_port_counts_losses_and_exits_1(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        result = subprocess.run(
            [
                *BENCH,
                "--port",
                str(port),
                "--duration",
                "0.5",
                "--warmup",
                "0",
                "--timeout",
                "0.1",
                "--json",
            ],
            capture_output=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 1)
        figures = json.loads(result.stdout)
        self.assertEqual(figures["received"], 0)
        self.assertGreater(figures["lost"], 0)
        plain = subprocess.run(
            [*BENCH, "--port", str(port), "--duration", "0.3", "--warmup", "0", "--timeout", "0.1"],
            capture_output=True,
            timeout=60,
        )
        self.assertEqual(plain.returncode, 1)
        self.assertTrue(plain.stdout.startswith(b"no replies: "), plain.stdout)
        self.assertNotIn(b"p50", plain.stdout)  # no latencies of nothing


@tiers.system
class PrefixesTests(unittest.TestCase):
    def test_each_socket_from_its_own_prefix(self) -> None:
        seen = []
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind(("127.0.0.1", 0))
        self.addCleanup(server.close)
        bench = Bench(
            "127.0.0.1",
            server.getsockname()[1],
            window=1,
            sockets=3,
            size=32,
            payload="ascii",
            timeout=1,
            prefixes=True,
        )
        self.addCleanup(bench.close)
        seen = [sock.getsockname()[0] for sock in bench.sockets]
        self.assertEqual(seen, ["127.0.0.1", "127.0.1.1", "127.0.2.1"])

    def test_only_to_loopback(self) -> None:
        result = subprocess.run(
            [*BENCH, "--prefixes", "--host", "::1"], capture_output=True, timeout=60
        )
        self.assertEqual(result.returncode, 2)
        self.assertEqual(len(result.stderr.splitlines()), 1)
