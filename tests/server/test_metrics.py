"""Prometheus metrics: the collector's figures, and a real scrape over HTTP."""

from __future__ import annotations

import re
import resource
import socket
import time
import urllib.error
import urllib.request

from twisted.internet import task
from twisted.logger import Logger
from twisted.trial import unittest

from tests import tiers
from tests.processes import METRICS_AT, Daemon
from tests.support import exchange
from udpupper.server import metrics
from udpupper.server.stats import Stats

SAMPLE = re.compile(r"^(\w+)(?:\{reason=\"(\w+)\"\})? (\S+)$")


def parse(text: str) -> dict:
    """Prometheus text format to {name or (name, reason): value}."""
    figures = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            name, reason, value = match.groups()
            figures[(name, reason) if reason else name] = float(value)
    return figures


@tiers.unit
class CollectorTests(unittest.TestCase):
    skip = None if metrics.available() else metrics.MISSING

    def scrape(self, collector) -> dict:
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry()
        registry.register(collector)
        return parse(generate_latest(registry).decode())

    def test_figures_follow_the_counters(self) -> None:
        stats = Stats()
        stats.received, stats.replied, stats.bytes_in, stats.bytes_out = 10, 7, 100, 70
        stats.drop("rate_limited")
        stats.drop("rate_limited")
        stats.drop("amplification")
        stats.kernel_drops = 4
        refreshed = []
        figures = self.scrape(
            metrics.StatsCollector(stats, refresh=lambda: refreshed.append(1), prefixes=lambda: 3)
        )
        self.assertEqual(refreshed, [1])
        self.assertEqual(figures["udpupper_datagrams_received_total"], 10)
        self.assertEqual(figures["udpupper_datagrams_replied_total"], 7)
        self.assertEqual(figures["udpupper_received_bytes_total"], 100)
        self.assertEqual(figures["udpupper_sent_bytes_total"], 70)
        self.assertEqual(figures[("udpupper_datagrams_dropped_total", "rate_limited")], 2)
        self.assertEqual(figures[("udpupper_datagrams_dropped_total", "amplification")], 1)
        self.assertEqual(figures[("udpupper_datagrams_dropped_total", "receive_buffer_full")], 4)
        self.assertEqual(figures[("udpupper_datagrams_dropped_total", "bad_source")], 0)
        self.assertEqual(figures["udpupper_rate_limit_prefixes"], 3)
        self.assertEqual(figures["udpupper_workers_alive"], 1)

    def test_workers_totals_and_each_worker(self) -> None:
        """A --workers parent: the totals keep what ended workers counted;
        each worker's own series start again when it does."""
        from udpupper.server.workers.counters import WorkerCounters

        counters = WorkerCounters(["worker-1", "worker-2"])
        one, two = Stats(), Stats()
        one.received, one.replied = 10, 9
        one.drop("loop")
        two.received = two.replied = 5
        counters.update("worker-1", {**one.as_dict(), "prefixes": 3})
        counters.update("worker-2", {**two.as_dict(), "prefixes": 1})

        class Parent:  # what the collector reads of Workers
            names = ["worker-1", "worker-2"]

            def alive(self):
                return 2

            def kernel_drops(self):
                return {"worker-1": 4, "worker-2": 0}

            def totals(self, kernel_drops=None):
                total = counters.totals()
                total.kernel_drops = sum((kernel_drops or self.kernel_drops()).values())
                return total

        Parent.counters = counters
        figures = self.scrape(metrics.WorkersCollector(Parent()))
        self.assertEqual(figures["udpupper_datagrams_received_total"], 15)
        self.assertEqual(figures[("udpupper_datagrams_dropped_total", "loop")], 1)
        self.assertEqual(figures[("udpupper_datagrams_dropped_total", "receive_buffer_full")], 4)
        self.assertEqual(figures["udpupper_rate_limit_prefixes"], 4)
        self.assertEqual(figures["udpupper_workers_alive"], 2)
        counters.retire("worker-1")  # it died; its successor starts from 0
        counters.update("worker-1", {**Stats().as_dict(), "prefixes": 0})
        figures = self.scrape(metrics.WorkersCollector(Parent()))
        self.assertEqual(figures["udpupper_datagrams_received_total"], 15)
        self.assertEqual(figures[("udpupper_datagrams_dropped_total", "loop")], 1)


@tiers.system
class ScrapeTests(unittest.TestCase):
    skip = None if metrics.available() else metrics.MISSING

    def test_known_traffic_gives_exact_figures(self) -> None:
        daemon = Daemon(
            "--port",
            "0",
            "--exempt",
            "127.0.0.1/32",
            "--rate",
            "1",
            "--burst",
            "2",
            "--metrics",
            "tcp:0:interface=127.0.0.1",
        )
        self.addCleanup(daemon.stop)
        port = daemon.start()
        http_port = int(daemon.find(METRICS_AT).group(1))
        for text in (b"one", b"two", b"three"):  # exempt: all answered
            self.assertEqual(exchange("127.0.0.1", port, text)[0], text.upper())
        answered = 0
        for _ in range(4):  # 127.1.0.0/24: a burst of 2, then limited
            try:
                exchange("127.0.0.1", port, b"four", source="127.1.0.1", timeout=0.3)
                answered += 1
            except TimeoutError:
                pass
        with self.assertRaises(TimeoutError):  # 2 bytes that grow to 6: capped
            exchange("127.0.0.1", port, "\u0390".encode(), source="127.2.0.1", timeout=0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as page:
            self.assertTrue(page.headers["Content-Type"].startswith("text/plain"))
            figures = parse(page.read().decode())
        limited = 4 - answered
        self.assertIn(answered, (2, 3))  # plus one refilled token at most
        self.assertEqual(figures["udpupper_datagrams_received_total"], 3 + 4 + 1)
        self.assertEqual(figures["udpupper_datagrams_replied_total"], 3 + answered)
        self.assertEqual(figures["udpupper_received_bytes_total"], 3 + 3 + 5 + 4 * 4 + 2)
        self.assertEqual(figures["udpupper_sent_bytes_total"], 3 + 3 + 5 + 4 * answered)
        self.assertEqual(figures[("udpupper_datagrams_dropped_total", "rate_limited")], limited)
        self.assertEqual(figures[("udpupper_datagrams_dropped_total", "amplification")], 1)
        self.assertEqual(figures[("udpupper_datagrams_dropped_total", "low_source_port")], 0)
        self.assertEqual(figures[("udpupper_datagrams_dropped_total", "receive_buffer_full")], 0)
        # 127.1.0/24 asked again from its address: settled in the table;
        # 127.2.0/24 asked once: on trial.  The gauge counts both.
        self.assertEqual(figures["udpupper_rate_limit_prefixes"], 2)
        self.assertEqual(figures["udpupper_workers_alive"], 1)
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10):
            pass  # a second scrape
        daemon.stop()
        scrapes = [
            line
            for line in daemon.log
            if ("/metrics" in line or '"GET' in line) and "serving metrics at" not in line
        ]
        self.assertEqual(scrapes, [], "a scrape wrote to the log")


@tiers.unit
class AcceptLogTests(unittest.TestCase):
    """Refused connections: counted, said at most once per period."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.forwarded: list[dict] = []
        self.accept_log = metrics.AcceptLog(self.forwarded.append, self.clock, period=30)
        self.lines: list[dict] = []
        self.accept_log.log = Logger(observer=self.lines.append)
        # What Twisted's listener logs for connections it cannot accept.
        self.listener = Logger(namespace="twisted.internet.tcp.Port", observer=self.accept_log)

    def refuse(self, times: int) -> None:
        for _ in range(times):
            self.listener.info("EMFILE encountered; releasing reserved file descriptor.")
            self.listener.info("EMFILE recovery: Closed socket from {address}", address="x")
            self.listener.info("Re-reserving EMFILE recovery file descriptor.")
            self.listener.info(
                "Could not accept new connection ({acceptError})", acceptError="ENFILE"
            )

    def counts(self) -> list[int]:
        return [line["count"] for line in self.lines]

    def test_one_line_per_period_with_the_count(self) -> None:
        self.refuse(1)
        self.assertEqual(self.counts(), [1])  # the first is said at once
        self.refuse(500)
        self.clock.advance(29)
        self.assertEqual(self.counts(), [1])
        self.clock.advance(1)
        self.assertEqual(self.counts(), [1, 1001])
        self.assertEqual(self.lines[-1]["errors"], "EMFILE, ENFILE")
        self.assertEqual(self.forwarded, [])
        self.clock.advance(3600)  # quiet: nothing more to say
        self.assertEqual(self.counts(), [1, 1001])

    def test_stop_says_what_is_left(self) -> None:
        self.refuse(3)
        self.accept_log.stop()
        self.assertEqual(self.counts(), [1, 5])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_other_events_pass_unchanged(self) -> None:
        self.listener.info("Site starting on {port}", port=1)
        self.assertEqual([event["port"] for event in self.forwarded], [1])
        self.assertEqual(self.lines, [])


@tiers.system
class OutOfDescriptorsTests(unittest.TestCase):
    """A daemon with few file descriptors, and clients that keep connecting
    and holding on: the metrics connections never take the last of them."""

    skip = None if metrics.available() else metrics.MISSING

    def test_held_connections_leave_descriptors_free(self) -> None:
        limit = 64

        def few_descriptors() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        daemon = Daemon(
            "--port", "0", "--metrics", "tcp:0:interface=127.0.0.1", preexec=few_descriptors
        )
        self.addCleanup(daemon.stop)
        port = daemon.start()
        http_port = int(daemon.find(METRICS_AT).group(1))
        held = []
        self.addCleanup(lambda: [connection.close() for connection in held])
        for _ in range(300):
            try:  # the attacker's: one the daemon closes at once is no matter
                held.append(socket.create_connection(("127.0.0.1", http_port), timeout=10))
            except OSError:
                pass
        # A scrape and a datagram are answered while they are held (once the
        # kernel has handed the daemon the connections it queued: a scrape
        # among them may be closed for a newer one, as a storm's would).
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{http_port}/metrics", timeout=10
                ) as page:
                    self.assertIn(b"udpupper_datagrams_received_total", page.read())
                break
            except (ConnectionError, urllib.error.URLError):
                self.assertLess(time.monotonic(), deadline, "no scrape got in")
                time.sleep(0.2)
        self.assertEqual(exchange("127.0.0.1", port, b"still here")[0], b"STILL HERE")
        # The oldest were closed to let the newer in: the daemon reads EOF on
        # no more than what its cap allows, and never ran out.
        open_held = 0
        for connection in held:
            connection.setblocking(False)
            try:
                open_held += connection.recv(1) != b""
            except BlockingIOError:
                open_held += 1
            except ConnectionError:
                pass
        self.assertLessEqual(open_held, limit - metrics.RESERVED_DESCRIPTORS)
        daemon.stop()
        refusals = [line for line in daemon.log if "EMFILE" in line or "accept" in line]
        self.assertEqual(refusals, [])
        self.assertIn("udpupper stopped:", "\n".join(daemon.log))
