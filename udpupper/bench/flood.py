"""An open-loop flood from many sources: what a spoofed-source attack costs.

On loopback every 127/8 address is local, so one socket can send from any of
them (IP_PKTINFO's ``ipi_spec_dst``) without a raw socket or root.  The
``random`` flood comes from all 65,536 /24 prefixes of 127/8 in random
orders, with random host bytes: almost every datagram from an address the
daemon has not seen lately, as with a spoofed flood.  The ``one`` flood comes from random
hosts of one /24: the baseline.  Beside either, a quiet client sends
``quiet_rate`` datagrams a second from its own prefix (127.255.255.1) and
counts its replies.  The server's intake, the figure to compare, is read
from the daemon's ``/metrics`` page before and after; without one (any
server: the C limit too), it is what was sent less what the kernel dropped
at the server's socket (its ``drops`` in ``/proc/net/udp``).
"""

from __future__ import annotations

import random
import re
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass

FLOODS = ("random", "one")
QUIET_SOURCE = "127.255.255.1"
PAYLOAD = b"flood " * 5 + b"!!"  # 32 bytes that upper-casing changes: no loop
RECEIVED = re.compile(rb"^udpupper_datagrams_received_total (\S+)$", re.M)


def sources(kind: str, seed: int = 0, rounds: int = 4) -> list[str]:
    """Where each datagram of a flood comes from, in order (then again).

    ``random``: every /24 of 127/8 once a round, in a new random order each
    round, each time with random host bytes, so that the daemon has not seen
    the address lately (a 65,536-entry table forgets it in between).  ``one``:
    random hosts of 127.0.0.0/24.
    """
    rng = random.Random(seed)
    if kind == "random":
        addresses = []
        for _ in range(rounds):
            prefixes = list(range(1 << 16))
            rng.shuffle(prefixes)
            addresses += [f"127.{p >> 8}.{p & 255}.{rng.randrange(1, 255)}" for p in prefixes]
        return addresses
    if kind == "one":
        return [f"127.0.0.{rng.randrange(1, 255)}" for _ in range(rounds << 16)]
    raise ValueError(f"flood must be one of {', '.join(FLOODS)}, not {kind!r}")


def socket_drops(port: int) -> int | None:
    """What the kernel dropped at the sockets bound to local ``port`` (full
    receive buffers), from ``/proc/net/udp`` and ``udp6``; None off Linux."""
    suffix, total, found = f":{port:04X}", 0, False
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as lines:
                rows = lines.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 12 and fields[1].endswith(suffix):
                total += int(fields[-1])
                found = True
    return total if found else None


def daemon_received(metrics_url: str | None) -> float | None:
    """The daemon's received counter, from its metrics page."""
    if metrics_url is None:
        return None
    with urllib.request.urlopen(metrics_url, timeout=10) as page:
        match = RECEIVED.search(page.read())
    return float(match.group(1)) if match else None


@dataclass
class FloodResult:
    """What one flood measured."""

    duration: float = 0.0
    sent: int = 0
    send_errors: int = 0
    quiet_sent: int = 0
    quiet_answered: int = 0
    intake: float | None = None  # datagrams a second the daemon received
    dropped: int | None = None  # of the flood, at the server's socket

    def as_dict(self) -> dict:
        return {
            "flood_sent_per_s": round(self.sent / self.duration, 1),
            "flood_send_errors": self.send_errors,
            "daemon_intake_per_s": None if self.intake is None else round(self.intake, 1),
            "socket_drops": self.dropped,
            "quiet_sent": self.quiet_sent,
            "quiet_answered": self.quiet_answered,
            "quiet_answered_pct": round(100 * self.quiet_answered / max(self.quiet_sent, 1), 2),
            "duration_s": round(self.duration, 3),
        }


class Quiet(threading.Thread):
    """A client sending ``rate`` a second from its own prefix, counting replies."""

    def __init__(self, port: int, rate: float, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.rate, self.stop = port, rate, stop
        self.sent = self.answered = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((QUIET_SOURCE, 0))
        self.sock.settimeout(0.001)

    def run(self) -> None:
        answers: set[bytes] = set()
        next_send = time.perf_counter()
        while not self.stop.is_set() or time.perf_counter() < next_send + 0.5:
            now = time.perf_counter()
            if now >= next_send and not self.stop.is_set():
                self.sock.sendto(b"quiet %d" % self.sent, ("127.0.0.1", self.port))
                self.sent += 1
                next_send += 1 / self.rate
            try:
                answers.add(self.sock.recv(100))
            except OSError:
                pass
        self.answered = len(answers)
        self.sock.close()


def run_flood(
    port: int,
    kind: str,
    duration: float,
    rate: float = 0.0,
    quiet_rate: float = 100.0,
    metrics_url: str | None = None,
    batch=None,
    warmup: float = 0.0,
) -> FloodResult:
    """Flood ``127.0.0.1:port`` for ``warmup`` + ``duration`` s (``rate`` a
    second; 0: flat out), measuring the last ``duration`` s: after the
    warm-up the daemon's tables hold what the flood brings, a steady state."""
    if batch is None:
        from udpupper import helpers

        batch = helpers.load("batch")
        if batch is None:
            raise ImportError(f"no C helper: {helpers.missing['batch']}")
    # Each from its source: the route, IP_PKTINFO included, as the helper makes it.
    items = [(PAYLOAD, batch.route("127.0.0.1", port, source)) for source in sources(kind)]
    size = batch.BATCH
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    result = FloodResult()
    stop = threading.Event()
    quiet = Quiet(port, quiet_rate, stop)
    quiet.start()
    start = time.perf_counter()
    measured_from = start + warmup
    end, at, offered = measured_from + duration, 0, 0
    warming = warmup > 0
    before = None if warming else daemon_received(metrics_url)
    drops_before = None if warming else socket_drops(port)
    try:
        while (now := time.perf_counter()) < end:
            if warming and now >= measured_from:  # the measured part begins
                warming = False
                before, drops_before = daemon_received(metrics_url), socket_drops(port)
                measured_from = time.perf_counter()
                end = measured_from + duration
                result.sent = result.send_errors = 0
            if rate and offered > (now - start) * rate:
                continue  # open loop, paced: wait for the next batch's time
            chunk = items[at : at + size]
            at = (at + size) % len(items)
            sent, _, errors = batch.send_batch(sock.fileno(), chunk)
            offered += len(chunk)
            result.sent += sent
            result.send_errors += len(errors)
    finally:
        result.duration = time.perf_counter() - measured_from
        after, drops_after = daemon_received(metrics_url), socket_drops(port)
        stop.set()
        quiet.join()
        sock.close()
    if drops_before is not None and drops_after is not None:
        result.dropped = drops_after - drops_before
    if before is not None and after is not None:
        result.intake = (after - before) / result.duration
    elif result.dropped is not None:
        result.intake = (result.sent - result.dropped) / result.duration
    result.quiet_sent, result.quiet_answered = quiet.sent, quiet.answered
    return result
