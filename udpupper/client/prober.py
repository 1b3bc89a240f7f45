"""``udpupper-client --serve-probes``: a UDP prober for Prometheus.

Prometheus' blackbox_exporter has no UDP prober.  This serves the same
multi-target pattern: Prometheus scrapes ``/probe?target=HOST:PORT`` (its
relabelling turns each target into that parameter), and each scrape runs a
short ``--ping`` to the target and answers with what it measured: whether it
was answered, loss, round trips as a histogram, jitter, and replies
reordered, duplicated, late and wrong.  Each reply is checked (the probe
upper-cased), so an echo that does not upper-case, or a loop, is not
success.

It is meant for the scraper's network: targets must be IP literals in the
networks given at start, at most ``max_probes`` probes run at once (others
get 503 at once), and what a query may ask for (``count``, ``interval``,
``size``, ``timeout``, ``dscp``) is bounded by :class:`Limits`; a query
beyond them gets 400 and sends nothing.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

from twisted.web import resource, server

from udpupper.client.ping import MIN_SIZE, Ping
from udpupper.client.summary import PingStats
from udpupper.dscp import mark
from udpupper.transform import max_payload
from udpupper.twisted_privates import queue_stop_signals
from udpupper.udp import MarkedPort

# The round-trip histogram's upper bounds, in seconds.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
           0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class Limits:
    """What one query may ask for, and how many probes run at once."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    max_probes: int = 4
    max_count: int = 10
    min_interval: float = 0.01
    max_timeout: float = 5.0


class QueryError(ValueError):
    """A query the prober will not run: its HTTP status and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def parse_target(target: str, limits: Limits) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``, an IP literal in the allowed networks."""
    host, _, port_text = target.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(host)
        port = int(port_text)
    except ValueError:
        raise QueryError(400, "target must be IP:PORT or [IPV6]:PORT") from None
    if not 1 <= port <= 65535:
        raise QueryError(400, "the target's port must be 1 to 65535")
    if not any(address in network for network in limits.networks):
        raise QueryError(403, f"{address} is not in the networks this prober may probe")
    return str(address), port


def parse_query(args: dict[bytes, list[bytes]], limits: Limits) -> dict:
    """The ping's settings from the query string, each within ``limits``."""

    def one(name: str, kind, default, low, high):
        values = args.get(name.encode())
        if not values:
            return default
        try:
            value = kind(values[0].decode())
        except (ValueError, UnicodeDecodeError):
            raise QueryError(400, f"{name} must be a number") from None
        if not low <= value <= high:
            raise QueryError(400, f"{name} must be {low} to {high}")
        return value

    targets = args.get(b"target")
    if not targets:
        raise QueryError(400, "give a target: /probe?target=HOST:PORT")
    host, port = parse_target(targets[0].decode(errors="replace"), limits)
    return {
        "server": (host, port),
        "count": one("count", int, min(3, limits.max_count), 1, limits.max_count),
        "interval": one("interval", float, max(0.1, limits.min_interval),
                        limits.min_interval, 10.0),
        "size": one("size", int, 32, MIN_SIZE, max_payload(host)),
        "timeout": one("timeout", float, min(1.0, limits.max_timeout), 0.01,
                       limits.max_timeout),
        "dscp": one("dscp", int, None, 0, 63),
    }


def exposition(stats: PingStats, duration: float) -> bytes:
    """What one probe measured, in Prometheus' text format."""
    lines = []

    def gauge(name: str, value: float, text: str) -> None:
        lines.extend([f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {value:g}"])

    gauge("probe_success", int(stats.received > 0), "1 when some probe was answered right")
    gauge("probe_duration_seconds", duration, "How long the probe took")
    gauge("udpupper_probe_sent", stats.transmitted, "Probes sent")
    gauge("udpupper_probe_received", stats.received, "Probes answered right")
    gauge("udpupper_probe_loss_ratio", stats.loss / 100, "Probes unanswered, of those sent")
    for name, text in (
        ("duplicates", "Second and later replies to a probe"),
        ("reordered", "Replies with a lower sequence number than one answered before (RFC 4737)"),
        ("late", "Replies that came after their probe's timeout"),
        ("wrong", "Replies that were not a probe upper-cased"),
    ):
        gauge(f"udpupper_probe_{name}", getattr(stats, name), text)
    jitter = stats.jitter
    if jitter is not None:
        gauge("udpupper_probe_jitter_seconds", jitter,
              "IPDV: mean absolute difference of consecutive probes' round trips")
    name = "udpupper_probe_rtt_seconds"
    lines += [f"# HELP {name} Round trips of the probes answered (1% buckets, folded)",
              f"# TYPE {name} histogram"]
    weighted = stats.latencies.weighted()
    for bound in BUCKETS:
        below = sum(count for value, count in weighted if value <= bound)
        lines.append(f'{name}_bucket{{le="{bound:g}"}} {below}')
    lines += [f'{name}_bucket{{le="+Inf"}} {stats.received}',
              f"{name}_sum {stats.rtt_sum:g}", f"{name}_count {stats.received}"]
    return ("\n".join(lines) + "\n").encode()


class ProbeResource(resource.Resource):
    """``GET /probe?target=...``: one short ping, its figures as metrics."""

    isLeaf = True

    def __init__(self, reactor, limits: Limits) -> None:
        super().__init__()
        self.reactor = reactor
        self.limits = limits
        self.running = 0

    def render_GET(self, request) -> bytes | int:
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        try:
            settings = parse_query(request.args, self.limits)
            if self.running >= self.limits.max_probes:
                raise QueryError(503, f"busy: {self.running} running, the most "
                                      "--max-probes allows")
        except QueryError as error:
            request.setResponseCode(error.status)
            return f"{error}\n".encode()
        host, _ = settings["server"]
        started = time.monotonic()
        pinger = Ping(settings["server"], self.reactor, lambda line: None, quiet=True,
                      count=settings["count"], interval=settings["interval"],
                      size=settings["size"], timeout=settings["timeout"],
                      dscp=settings["dscp"], now=time.monotonic)
        port = MarkedPort(0, pinger, "::" if ":" in host else "0.0.0.0", self.reactor)
        try:
            port.startListening()
            if settings["dscp"] is not None:
                mark(port.socket, settings["dscp"])
        except Exception as error:  # out of descriptors, say: the host's trouble
            port.stopListening()
            request.setResponseCode(500)
            return f"cannot probe now: {error}\n".encode()
        self.running += 1
        finished: list[int] = []
        lost: list[object] = []

        def done(status: int) -> None:
            finished.append(status)
            self.running -= 1
            port.stopListening()
            if not lost:
                request.write(exposition(pinger.stats, time.monotonic() - started))
                request.finish()

        def gone(reason) -> None:  # the scraper gave up: stop probing at once
            lost.append(reason)
            if not finished:
                pinger.finish()

        pinger.when_done = done
        request.notifyFinish().addErrback(gone)
        pinger.start()
        return server.NOT_DONE_YET


def serve_probes(reactor, endpoint: str, limits: Limits):
    """Listen on the Twisted server ``endpoint`` (``tcp:9813``...) for scrapes:
    a Deferred of the listening port."""
    from twisted.internet.endpoints import serverFromString

    root = resource.Resource()
    root.putChild(b"probe", ProbeResource(reactor, limits))
    return serverFromString(reactor, endpoint).listen(server.Site(root))



def run_prober(reactor, endpoint: str, limits: Limits) -> int:
    """``--serve-probes``: serve until stopped; the exit status."""
    import sys

    outcome: dict[str, int] = {}

    def listening(port) -> None:
        address = port.getHost()
        print(f"udpupper-client: serving probes at http://{address.host}:{address.port}/probe",
              flush=True)

    def failed(failure) -> None:
        print(f"udpupper-client: cannot serve probes on {endpoint}: "
              f"{failure.getErrorMessage()}", file=sys.stderr)
        outcome["status"] = 1
        reactor.callWhenRunning(reactor.stop)

    serve_probes(reactor, endpoint, limits).addCallbacks(listening, failed)
    queue_stop_signals(reactor)  # Ctrl-C then SIGTERM: no deadlock
    reactor.run()
    return outcome.get("status", 0)
