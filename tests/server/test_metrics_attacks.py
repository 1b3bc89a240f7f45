"""What an HTTP client of ``--metrics`` can do to the datagrams: nothing.

Real daemons, real connections (the system tier): pipelined scrapes never
read, a body of half a gigabyte, connections held at the descriptor limit.
Through each, every datagram is answered (within a second: only a stall
misses it), memory grows by at most a few MiB, and a scrape still works.
"""

from __future__ import annotations

import os
import resource
import socket
import threading
import time
import urllib.error
import urllib.request

from twisted.trial import unittest

from tests import tiers
from tests.processes import METRICS_AT, Daemon
from udpupper.server import metrics


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def scrape(port: int) -> bytes:
    return scrape_url(f"http://127.0.0.1:{port}/metrics")


def scrape_url(url: str) -> bytes:
    """One scrape, retried while the kernel still hands the server
    connections queued before it (a storm's may close a newcomer)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as page:
                return page.read()
        except (ConnectionError, urllib.error.URLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class Pinger:
    """Datagrams to the daemon, one at a time, from many prefixes, in a
    thread: each must come back within ``patience`` seconds."""

    def __init__(self, port: int, patience: float = 1.0) -> None:
        self.port = port
        self.patience = patience
        self.round_trips: list[float] = []
        self.missed = 0
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        n = 0
        while self.running:
            # Exempt loopback sources of 64 prefixes (127.N.0.1), as the
            # attack's measure used: none is rate limited.
            source = f"127.{n % 64 + 1}.0.1"
            n += 1
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
                peer.bind((source, 0))
                peer.settimeout(self.patience)
                started = time.monotonic()
                peer.sendto(b"ping %d" % n, ("127.0.0.1", self.port))
                try:
                    peer.recv(100)
                    self.round_trips.append(time.monotonic() - started)
                except TimeoutError:
                    self.missed += 1
            time.sleep(0.005)

    def stop(self) -> None:
        self.running = False
        self.thread.join(10)

    def p99(self) -> float:
        ordered = sorted(self.round_trips)
        return ordered[int(0.99 * (len(ordered) - 1))] if ordered else float("nan")


@tiers.long
class MetricsAttackTests(unittest.TestCase):
    skip = None if metrics.available() else metrics.MISSING

    def daemon(self, *options: str, preexec=None) -> tuple[Daemon, int, int]:
        daemon = Daemon(
            "--port", "0", "--metrics", "tcp:0:interface=127.0.0.1", *options, preexec=preexec
        )
        self.addCleanup(daemon.stop)
        port = daemon.start()
        return daemon, port, int(daemon.find(METRICS_AT).group(1))

    def pinger(self, port: int) -> Pinger:
        pinger = Pinger(port)
        self.addCleanup(pinger.stop)
        deadline = time.monotonic() + 30
        while not pinger.round_trips:  # the daemon answers: from now on, every time
            self.assertLess(time.monotonic(), deadline, "no datagram answered")
            time.sleep(0.01)
        return pinger

    def test_pipelined_scrapes_never_read(self) -> None:
        """Eight connections each write 8,000 requests (2.2 MB in all) and
        read nothing (before: 0 of 64 prefixes answered within 0.5 s for 16
        of 20 s, RSS 54 to 185 MiB)."""
        self.pipelined()

    def test_pipelined_scrapes_at_a_workers_parent(self) -> None:
        """The same at a --workers parent (before: the parent stalled, its
        watchdog killed both healthy workers, and nothing answered for 22 s)."""
        daemon = self.pipelined("--workers", "2", "--interface", "127.0.0.1")
        self.assertEqual([line for line in daemon.log if "killed, to be replaced" in line], [])

    def pipelined(self, *options: str) -> Daemon:
        daemon, port, http_port = self.daemon(*options)
        before = rss_kib(daemon.process.pid)
        pinger = self.pinger(port)
        request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        attackers = []
        for _ in range(8):
            attacker = socket.create_connection(("127.0.0.1", http_port), timeout=10)
            attacker.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # reads nothing
            attacker.setblocking(False)
            self.addCleanup(attacker.close)
            attackers.append([attacker, request * 8000])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(pending for _, pending in attackers):
            for pair in attackers:
                try:
                    pair[1] = pair[1][pair[0].send(pair[1]) :]
                except BlockingIOError:
                    pass
            time.sleep(0.01)
        sent_at = time.monotonic()
        while time.monotonic() - sent_at < 3:  # datagrams meanwhile
            time.sleep(0.1)
        pinger.stop()
        self.assertEqual(pinger.missed, 0)
        self.assertGreater(len(pinger.round_trips), 20)
        self.assertLess(rss_kib(daemon.process.pid) - before, 16 * 1024)
        self.assertIn(b"udpupper_datagrams_received_total", scrape(http_port))
        return daemon

    def test_a_body_is_refused_before_it_is_read(self) -> None:
        """POST /metrics with a 512 MiB body: answered 413 at once, nothing
        of it kept (before: written whole to a temporary file first)."""
        daemon, port, http_port = self.daemon()
        pinger = self.pinger(port)
        before = rss_kib(daemon.process.pid)
        with socket.create_connection(("127.0.0.1", http_port), timeout=10) as attacker:
            attacker.sendall(b"POST /metrics HTTP/1.1\r\nContent-Length: 536870912\r\n\r\n")
            answer = attacker.recv(4096)
            self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer)
            sent = 0
            try:
                while sent < 64 << 20:
                    sent += attacker.send(b"x" * 65536)
            except OSError:
                pass  # closed on us, as it should be
        self.assertLess(sent, 64 << 20)
        fds = os.listdir(f"/proc/{daemon.process.pid}/fd")
        targets = [os.readlink(f"/proc/{daemon.process.pid}/fd/{fd}") for fd in fds]
        self.assertEqual([t for t in targets if t.startswith("/tmp") or "(deleted)" in t], [])
        pinger.stop()
        self.assertEqual(pinger.missed, 0)
        self.assertLess(rss_kib(daemon.process.pid) - before, 16 * 1024)

    def test_held_connections_at_the_descriptor_limit(self) -> None:
        """1,000 idle connections under ``ulimit -n 1024`` (before: none
        closed, scrapes reset for as long as they were held)."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 1500:
            raise unittest.SkipTest("this test holds 1,100 connections")
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1500), hard))
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))

        def descriptors() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

        daemon, port, http_port = self.daemon(preexec=descriptors)
        pinger = self.pinger(port)
        held = []
        self.addCleanup(lambda: [connection.close() for connection in held])
        for _ in range(1100):
            try:  # the attacker's: one the daemon closes at once is no matter
                held.append(socket.create_connection(("127.0.0.1", http_port), timeout=10))
            except OSError:
                pass
        self.assertIn(b"udpupper_datagrams_received_total", scrape(http_port))
        pinger.stop()
        self.assertEqual(pinger.missed, 0)
        daemon.stop()
        self.assertEqual([line for line in daemon.log if "could not accept" in line], [])
