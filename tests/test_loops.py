"""Loops between echo services die: the loop breaker, then real daemons.

One spoofed datagram from an echo's address and port to another echo (or
to the same one) starts a loop; with the default options it must die within
a second and be counted as ``loop``, while legitimate clients that repeat
themselves notice nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request

from twisted.trial import unittest

from tests import spoof
from tests.processes import Daemon, run_client
from tests.test_bench import BENCH
from tests.support import NO_IPV6
from udpupper import metrics
from udpupper.loops import LoopBreaker
from udpupper.transform import upper


class LoopBreakerTests(unittest.TestCase):
    def test_first_repeat_is_free_then_the_budget(self) -> None:
        breaker = LoopBreaker(budget=3, size=16)
        allowed = [breaker.allow("127.0.0.1", b"SAME", 0.0) for _ in range(10)]
        self.assertEqual(allowed, [True] * 4 + [False] * 6)

    def test_new_payloads_are_free(self) -> None:
        breaker = LoopBreaker(budget=1, size=1024)
        self.assertTrue(all(breaker.allow("127.0.0.1", b"%d" % n, 0.0) for n in range(100)))

    def test_refill_is_a_tenth_a_second(self) -> None:
        breaker = LoopBreaker(budget=10, size=16)
        for _ in range(20):
            breaker.allow("::1", b"X", 0.0)
        self.assertEqual(sum(breaker.allow("::1", b"X", 1.0) for _ in range(20)), 1)
        self.assertEqual(sum(breaker.allow("::1", b"X", 11.0) for _ in range(20)), 10)

    def test_bounded_by_size(self) -> None:
        breaker = LoopBreaker(budget=1, size=100)
        self.assertEqual(len(breaker.seen), 128)
        for n in range(10_000):
            breaker.allow(f"10.0.{n // 256 % 256}.{n % 256}", b"X", 0.0)
            breaker.allow(f"10.0.{n // 256 % 256}.{n % 256}", b"X", 0.0)
        self.assertEqual(len(breaker.seen), 128)
        self.assertLessEqual(len(breaker.limiter), 200)  # the limiter holds up to twice its size


def scrape(port: int) -> dict:
    """The daemon's counters from its /metrics page."""
    from tests.test_metrics import parse

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
        return parse(page.read().decode())


class RealLoopTests(unittest.TestCase):
    """Daemons with their default protections, as twistd runs them."""

    skip = spoof.why_not() or (None if metrics.available() else metrics.MISSING)

    def daemon(self, *options: str) -> tuple[int, int]:
        """A daemon with default protections; its UDP and metrics ports."""
        daemon = Daemon("--port", "0", *options, "--metrics", "tcp:0:interface=127.0.0.1")
        self.addCleanup(daemon.stop)
        port = daemon.start()
        return port, int(daemon.find(r"Site starting on (\d+)").group(1))

    def assert_loop_dies(self, host: str, first: tuple[int, int], second: tuple[int, int],
                         other_host: str | None = None) -> None:
        """Spoof one datagram from ``first`` to ``second``: the loop between
        them ends within a second, counted under ``loop``."""
        daemons = sorted({first[1], second[1]})  # their metrics ports
        spoof.send_spoofed((host, first[0]), (other_host or host, second[0]), b"loop")
        time.sleep(1.0)
        at_one_second = [scrape(metrics_port) for metrics_port in daemons]
        time.sleep(0.5)
        later = [scrape(metrics_port) for metrics_port in daemons]
        received = "udpupper_datagrams_received_total"
        loops = ("udpupper_datagrams_dropped_total", "loop")
        self.assertEqual([figures[received] for figures in later],
                         [figures[received] for figures in at_one_second],
                         "still looping after 1 s")
        self.assertGreater(sum(figures[received] for figures in later), 0)
        self.assertEqual(sum(figures[loops] for figures in later), 1, later)

    def test_a_daemon_with_itself(self) -> None:
        own = self.daemon()
        self.assert_loop_dies("127.0.0.1", own, own)
        self.assertEqual(scrape(own[1])["udpupper_datagrams_replied_total"], 0)

    def test_two_daemons_on_two_ports(self) -> None:
        self.assert_loop_dies("127.0.0.1", self.daemon(), self.daemon())

    def test_two_daemons_on_two_ports_ipv6(self) -> None:
        if NO_IPV6:
            raise unittest.SkipTest(NO_IPV6)
        self.assert_loop_dies("::1", self.daemon(), self.daemon())

    def test_two_daemons_on_one_port(self) -> None:
        first = self.daemon("--interface", "127.0.0.1")
        second = Daemon("--port", str(first[0]), "--interface", "127.0.0.2",
                        "--metrics", "tcp:0:interface=127.0.0.1")
        self.addCleanup(second.stop)
        second.start()
        metrics_port = int(second.find(r"Site starting on (\d+)").group(1))
        self.assert_loop_dies("127.0.0.1", first, (first[0], metrics_port), "127.0.0.2")


class LegitimateTrafficTests(unittest.TestCase):
    """What clients send at full speed on loopback, with the default options
    (loopback exempt, the loop breaker on): every reply comes."""

    def setUp(self) -> None:
        self.daemon = Daemon("--port", "0")
        self.addCleanup(self.daemon.stop)
        self.port = self.daemon.start()

    def test_client_repeating_upper_case_and_empty_lines(self) -> None:
        lines = [b"HELLO", b"HELLO", b"", b"", b"", b"OK", b"hello", b"\xff\xfe"] * 600
        result = run_client("--port", str(self.port), stdin=b"\n".join(lines) + b"\n")
        self.assertEqual(result.stdout.splitlines(), [upper(line) for line in lines])
        self.assertEqual((result.returncode, result.stderr), (0, b""))
        self.assertEqual(self.daemon.summary()["dropped"], 0)

    def test_bench_with_every_payload_at_full_speed(self) -> None:
        # Size 16 is the sequence number alone: digits, never changed.
        for payload, size in (("ascii", 32), ("unicode", 200), ("binary", 32),
                              ("binary", 1400), ("ascii", 16)):
            result = subprocess.run(
                [*BENCH, "--port", str(self.port), "--duration", "1", "--warmup", "0.2",
                 "--sockets", "2", "--window", "32", "--payload", payload,
                 "--size", str(size), "--json"],
                capture_output=True, timeout=60,
            )
            figures = json.loads(result.stdout.splitlines()[-1])
            self.assertGreater(figures["received"], 1000, (payload, size))
            self.assertEqual((figures["lost"], figures["mismatched"]), (0, 0), (payload, size))
        self.assertEqual(self.daemon.summary()["dropped"], 0)

    def test_socat(self) -> None:
        if shutil.which("socat") is None:
            raise unittest.SkipTest("socat is not installed")
        for _ in range(3):  # the same line, three times
            result = subprocess.run(
                ["socat", "-T", "5", "-", f"UDP:127.0.0.1:{self.port}"],
                input=b"SAME LINE\n", capture_output=True, timeout=30,
            )
            self.assertEqual(result.stdout, b"SAME LINE\n")
