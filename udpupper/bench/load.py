"""A closed-loop load generator for upper-case UDP echo servers.

Each of several sockets keeps a window of requests in flight.  A request
starts with a 16-digit sequence number (digits are the same upper-cased), so
every reply is matched to its request, checked against the upper-cased
request, and timed.  A request without a reply after the timeout is counted
lost and replaced, so the window stays full.  With the C helper, datagrams
move in batches, as the server's do.
"""

from __future__ import annotations

import random
import select
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from udpupper import helpers
from udpupper.latency import Latencies
from udpupper.transform import upper

_batch: Any = helpers.load("batch")

HEADER = 16  # digits of sequence number at the start of every request
PAYLOADS = ("ascii", "unicode", "binary")
UNICODE_TEXT = "Grüße straße ελληνικά кириллица ǆ ﬁ日本語 "


def make_body(kind: str, size: int, seed: int = 0) -> bytes:
    """The part of every request after its sequence number: ``size`` bytes."""
    if kind == "ascii":
        return (b"the quick brown fox jumps over the lazy dog " * (size // 44 + 1))[:size]
    if kind == "unicode":
        text = (UNICODE_TEXT * (size // len(UNICODE_TEXT.encode()) + 1)).encode()
        body = text[:size].decode("utf-8", "ignore").encode()
        return body + b"x" * (size - len(body))
    if kind == "binary":
        return random.Random(seed).randbytes(size)
    raise ValueError(f"payload must be one of {', '.join(PAYLOADS)}, not {kind!r}")


@dataclass
class Result:
    """What one run measured."""

    duration: float = 0.0
    sent: int = 0
    received: int = 0
    lost: int = 0
    mismatched: int = 0
    late: int = 0
    cpu: float = 0.0  # the benchmark's own CPU seconds while measuring
    latencies: Latencies = field(default_factory=Latencies)  # bounded memory

    @property
    def replies_per_s(self) -> float:
        return self.received / self.duration if self.duration else 0.0

    @property
    def cpu_share(self) -> float:
        """The benchmark's own CPU use, as a share of one core."""
        return self.cpu / self.duration if self.duration else 0.0

    def percentile(self, share: float) -> float:
        """Latency in microseconds below which ``share`` of replies came."""
        return self.percentiles(share)[0]

    def percentiles(self, *shares: float) -> list[float]:
        """:meth:`percentile` for each share (within 0.5% of the exact one)."""
        return [seconds * 1e6 for seconds in self.latencies.percentiles(*shares)]

    def weighted_us(self) -> list[tuple[float, int]]:
        """The latencies in microseconds, by bucket: (value, how many), in order."""
        return [(seconds * 1e6, count) for seconds, count in self.latencies.weighted()]

    def as_dict(self) -> dict:
        p50, p90, p99 = self.percentiles(0.50, 0.90, 0.99)
        return {
            "replies_per_s": round(self.replies_per_s, 1),
            "sent": self.sent,
            "received": self.received,
            "lost": self.lost,
            "mismatched": self.mismatched,
            "late": self.late,
            "p50_us": round(p50, 1),
            "p90_us": round(p90, 1),
            "p99_us": round(p99, 1),
            "max_us": round(self.latencies.greatest * 1e6 if len(self.latencies) else 0, 1),
            "duration_s": round(self.duration, 3),
            "bench_cpu_pct": round(100 * self.cpu_share, 1),
        }


class Bench:
    """Runs the closed loop against one server address."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        window: int,
        sockets: int,
        size: int,
        payload: str,
        timeout: float,
        batch=_batch,
        prefixes: bool = False,
    ) -> None:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        self.family, self.server = info[0], info[4][:2]
        # The route send_batch takes, as the C helper itself defines it.
        self.route = batch.route(*self.server) if batch is not None else None
        self.window, self.timeout, self.batch = window, timeout, batch
        self.body = make_body(payload, size - HEADER)
        self.expected_body = upper(self.body)
        self.sockets = []
        for number in range(sockets):
            sock = socket.socket(self.family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            if prefixes:  # each its own /24: a load from many prefixes (loopback)
                sock.bind((f"127.0.{number}.1", 0))
            sock.connect(self.server)  # the kernel filters out other senders
            self.sockets.append(sock)
        self.next_sequence = 0
        self.pending: dict[int, tuple[float, int]] = {}  # sequence -> (sent, socket)
        self.result = Result()
        self.measuring = False

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()

    def _send(self, index: int, count: int, now: float) -> None:
        requests = []
        for _ in range(count):
            sequence = self.next_sequence
            self.next_sequence += 1
            self.pending[sequence] = (now, index)
            requests.append(b"%016d" % sequence + self.body)
        sock = self.sockets[index]
        if self.batch is not None:
            sent = self.batch.send_batch(sock.fileno(), [(r, self.route) for r in requests])[0]
        else:
            sent = 0
            for request in requests:
                try:
                    sock.send(request)
                    sent += 1
                except OSError:
                    pass  # its timeout will replace it
        if self.measuring:
            self.result.sent += sent

    def _receive(self, index: int) -> list[bytes]:
        sock = self.sockets[index]
        if self.batch is not None:
            try:
                batch = self.batch.recv_batch(sock.fileno(), self.batch.BATCH, False)
            except OSError:  # an ICMP error: the requests will time out
                return []
            return [datagram for datagram, *_ in batch]
        replies = []
        while True:
            try:
                replies.append(sock.recv(65_535))
            except OSError:  # nothing more now (or an ICMP error: a timeout follows)
                return replies

    def _settle(self, reply: bytes, now: float) -> bool:
        """Account for one reply; whether it answered a request in flight."""
        try:
            sequence = int(reply[:HEADER])
        except ValueError:
            sequence = -1
        request = self.pending.pop(sequence, None)
        result = self.result
        if request is None:
            if self.measuring:
                result.late += 1  # after its timeout, a duplicate, or garbage
            return False
        if self.measuring:
            result.received += 1
            result.latencies.pending.append(now - request[0])
            if reply[HEADER:] != self.expected_body:
                result.mismatched += 1
        return True

    def _expire(self, now: float) -> None:
        """Count requests past their timeout lost, and send others instead."""
        refill = [0] * len(self.sockets)
        for sequence, (sent, index) in list(self.pending.items()):
            if now - sent > self.timeout:
                del self.pending[sequence]
                refill[index] += 1
                if self.measuring:
                    self.result.lost += 1
        for index, count in enumerate(refill):
            if count:
                self._send(index, count, now)

    def run(
        self,
        duration: float,
        warmup: float,
        progress: Callable[[Result, float], object] | None = None,
    ) -> Result:
        poller = select.epoll()
        by_fd = {sock.fileno(): index for index, sock in enumerate(self.sockets)}
        for fd in by_fd:
            poller.register(fd, select.EPOLLIN)
        clock = time.perf_counter
        start = clock()
        for index in range(len(self.sockets)):
            self._send(index, self.window, start)
        measure_from, stop_at = start + warmup, start + warmup + duration
        cpu_from = 0.0
        next_check = start + 0.05
        next_progress = measure_from + 1.0
        while True:
            now = clock()
            if not self.measuring and now >= measure_from:
                self.measuring, cpu_from = True, time.process_time()
            if now >= stop_at:
                break
            for fd, _ in poller.poll(0.01):
                index = by_fd[fd]
                replies = self._receive(index)
                now = clock()
                answered = sum(self._settle(reply, now) for reply in replies)
                if answered:
                    self._send(index, answered, now)
                    self.result.latencies.fold_if_due()
            if now >= next_check:
                self._expire(now)
                next_check = now + 0.05
            if progress is not None and now >= next_progress:
                progress(self.result, now - measure_from)
                next_progress = now + 1.0
        poller.close()
        self.result.duration = now - measure_from
        self.result.cpu = time.process_time() - cpu_from
        return self.result


def cpu_bound(result: Result) -> bool:
    """Whether the benchmark itself, on its one core, was the bottleneck."""
    return result.cpu_share >= 0.9


def report(result: Result, out=sys.stdout) -> None:
    """The human-readable summary of a run."""
    d = result.as_dict()
    if not result.received:
        print(
            f"no replies: {d['sent']:,} requests sent, {d['lost']:,} lost, none "
            "answered (is a server listening on that address and port?)",
            file=out,
        )
        return
    print(f"replies/s  {d['replies_per_s']:,.0f}", file=out)
    print(
        f"sent {d['sent']:,}  received {d['received']:,}  lost {d['lost']:,}  "
        f"mismatched {d['mismatched']:,}  late {d['late']:,}",
        file=out,
    )
    print(
        f"latency us  p50 {d['p50_us']}  p90 {d['p90_us']}  p99 {d['p99_us']}  max {d['max_us']}",
        file=out,
    )
    print(f"udpupper-bench used {d['bench_cpu_pct']}% of one core", file=out)
    if cpu_bound(result):
        print(
            "udpupper-bench, not the server, was the bottleneck: these figures "
            "are a lower bound for the server (give the bench more cores, or use "
            "a C load generator)",
            file=out,
        )
