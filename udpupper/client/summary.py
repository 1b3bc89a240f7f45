"""What ``udpupper-client --ping`` sums up: ``ping``'s two lines, and a third.

The third says what irtt and sockperf report: jitter (IPDV, as RFC 3550 and
irtt compute it: the mean absolute difference of the round trips of
consecutive probes), the 50th, 90th and 99th percentiles (1% buckets,
bounded memory, from :mod:`udpupper.latency`), and replies reordered
(RFC 4737), duplicated, late and wrong.  Round trips are in seconds;
:meth:`PingStats.figures` gives them in milliseconds for ``--json``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from udpupper.latency import Latencies

COSTS_KEPT = 4096


def format_ms(seconds: float) -> str:
    """A round trip as ``ping`` prints one: three significant places or so."""
    ms = seconds * 1000
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


@dataclass
class PingStats:
    """What ``ping`` sums up at the end; round trips in seconds."""

    transmitted: int = 0
    received: int = 0
    duplicates: int = 0
    wrong: int = 0  # replies not a probe upper-cased: "+N errors" on ping's line
    rtt_min: float = math.inf
    rtt_max: float = 0.0
    rtt_sum: float = 0.0
    rtt_squares: float = 0.0
    reordered: int = 0
    late: int = 0
    ipdv_sum: float = 0.0  # |rtt(n) - rtt(n - 1)| over answered neighbours
    ipdv_count: int = 0
    dscp_seen: dict[int, int] = field(default_factory=dict)  # replies by arriving DSCP
    network_errors: int = 0  # what the network said (ICMP): with ``wrong``, "+N errors"
    # How each round trip was timed: kernel, kernel arrival, client (errqueue.round_trip).
    timed: dict[str, int] = field(default_factory=dict)
    # Seconds a send call took, and how late its timer sent a probe: the last
    # COSTS_KEPT of each (bounded, however long the run).
    send_calls: deque[float] = field(default_factory=lambda: deque(maxlen=COSTS_KEPT))
    timer_late: deque[float] = field(default_factory=lambda: deque(maxlen=COSTS_KEPT))

    def __post_init__(self) -> None:
        self.latencies = Latencies()  # bounded: 1% buckets, whatever the run

    def add(self, rtt: float) -> None:
        self.received += 1
        self.rtt_min = min(self.rtt_min, rtt)
        self.rtt_max = max(self.rtt_max, rtt)
        self.rtt_sum += rtt
        self.rtt_squares += rtt * rtt
        self.latencies.pending.append(rtt)
        self.latencies.fold_if_due()

    @property
    def jitter(self) -> float | None:
        """IPDV: the mean absolute difference of consecutive probes' round trips."""
        return self.ipdv_sum / self.ipdv_count if self.ipdv_count else None

    def figures(self, elapsed: float) -> dict:
        """The summary as numbers (milliseconds), for ``--json``."""
        average = self.rtt_sum / self.received if self.received else None
        mdev = (
            math.sqrt(max(0.0, self.rtt_squares / self.received - average**2))
            if average is not None
            else None
        )
        p50, p90, p99 = (
            self.latencies.percentiles(0.5, 0.9, 0.99) if self.received else (None, None, None)
        )
        jitter = self.jitter

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 6)

        return {
            "transmitted": self.transmitted,
            "received": self.received,
            "loss_pct": round(self.loss, 6),
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "late": self.late,
            "wrong": self.wrong,
            "time_ms": round(elapsed * 1000, 3),
            "rtt_min_ms": ms(self.rtt_min if self.received else None),
            "rtt_avg_ms": ms(average),
            "rtt_max_ms": ms(self.rtt_max if self.received else None),
            "rtt_mdev_ms": ms(mdev),
            "jitter_ms": ms(jitter),
            "rtt_p50_ms": ms(p50),
            "rtt_p90_ms": ms(p90),
            "rtt_p99_ms": ms(p99),
            "network_errors": self.network_errors,
            **self.client_costs(),
        }

    def client_costs(self) -> dict:
        """What the client's own timing cost, as irtt reports it: how the
        round trips were timed, how long a send call took, and how late
        its timer sent a probe (medians and maxima of the last COSTS_KEPT,
        microseconds)."""

        def us(values: deque[float], which: str) -> float | None:
            if not values:
                return None
            ordered = sorted(values)
            value = ordered[len(ordered) // 2] if which == "median" else ordered[-1]
            return round(value * 1e6, 1)

        return {
            "timed": dict(sorted(self.timed.items())),
            "send_call_median_us": us(self.send_calls, "median"),
            "send_call_max_us": us(self.send_calls, "max"),
            "timer_late_median_us": us(self.timer_late, "median"),
            "timer_late_max_us": us(self.timer_late, "max"),
        }

    def costs_line(self) -> str:
        """The client's own costs, in a line: how far to trust the figures."""
        costs = self.client_costs()
        timed = ", ".join(f"{count} {how}" for how, count in costs["timed"].items())
        line = f"round trips timed by {timed or 'none'}"
        if costs["send_call_median_us"] is not None:
            line += (
                f"; send call {costs['send_call_median_us']:g} us median, "
                f"{costs['send_call_max_us']:g} max"
            )
        if costs["timer_late_median_us"] is not None:
            line += (
                f"; timer late {costs['timer_late_median_us']:g} us median, "
                f"{costs['timer_late_max_us']:g} max"
            )
        return line

    @property
    def loss(self) -> float:
        """Per cent of probes that got no right reply."""
        if not self.transmitted:
            return 0.0
        return 100 * (self.transmitted - self.received) / self.transmitted

    def dscp_line(self, sent: int) -> str:
        """What DSCP the replies came back with, for ``--dscp``."""
        seen = ", ".join(f"{dscp} ({count})" for dscp, count in sorted(self.dscp_seen.items()))
        return f"dscp sent {sent}, replies came back with {seen or 'none said'}"

    def path_line(self) -> str:
        """One source port's figures, for ``--ports``."""
        line = (
            f"{self.transmitted} transmitted, {self.received} received, {self.loss:g}% packet loss"
        )
        if self.duplicates:
            line += f", +{self.duplicates} duplicates"
        if self.received:
            figures = (self.rtt_min, self.rtt_sum / self.received, self.rtt_max)
            line += (
                ", rtt min/avg/max = "
                + "/".join(f"{value * 1000:.3f}" for value in figures)
                + " ms"
            )
        return line

    def summary(self, host: str, elapsed: float) -> list[str]:
        """``ping``'s closing lines (no round-trip line when nothing came back)."""
        parts = [f"{self.transmitted} packets transmitted", f"{self.received} received"]
        if self.duplicates:
            parts.append(f"+{self.duplicates} duplicates")
        if self.wrong + self.network_errors:
            parts.append(f"+{self.wrong + self.network_errors} errors")
        parts += [f"{self.loss:g}% packet loss", f"time {elapsed * 1000:.0f}ms"]
        lines = [f"--- {host} ping statistics ---", ", ".join(parts)]
        if self.received:
            average = self.rtt_sum / self.received
            mdev = math.sqrt(max(0.0, self.rtt_squares / self.received - average**2))
            figures = (self.rtt_min, average, self.rtt_max, mdev)
            lines.append(
                "rtt min/avg/max/mdev = "
                + "/".join(f"{value * 1000:.3f}" for value in figures)
                + " ms"
            )
        counts = (
            f"{self.reordered} reordered, {self.duplicates} duplicates, "
            f"{self.late} late, {self.wrong} wrong"
        )
        if self.received:
            jitter = self.jitter
            percentiles = self.latencies.percentiles(0.5, 0.9, 0.99)
            lines.append(
                ("jitter n/a, " if jitter is None else f"jitter {jitter * 1000:.3f} ms, ")
                + "rtt p50/p90/p99 = "
                + "/".join(f"{value * 1000:.3f}" for value in percentiles)
                + f" ms, {counts}"
            )
        else:
            lines.append(counts)
        return lines
