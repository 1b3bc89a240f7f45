"""``udpupper-client --serve-probes``: a UDP prober for Prometheus.

Prometheus' blackbox_exporter has no UDP prober.  This serves the same
multi-target pattern: Prometheus scrapes ``/probe?target=HOST:PORT`` (its
relabelling turns each target into that parameter), and each scrape runs a
short ``--ping`` to the target and answers with what it measured: whether it
was answered, loss, round trips as a histogram, jitter, and replies
reordered, duplicated, late and wrong.  Each reply is checked (the probe,
with the run's secret token, upper-cased), so an echo that does not
upper-case, a loop, or a stranger's forged reply is not success.

A prober sends packets on a stranger's request, so what a request may ask
for is bounded (:class:`Limits`):

- targets are IP literals, judged as what they are (an IPv4-mapped IPv6
  address as its IPv4 address), in the networks given at start; never an
  unspecified, broadcast or multicast address, nor one with a zone;
- a probe lasts at most ``max_duration``, and less than the scrape's own
  timeout (``X-Prometheus-Scrape-Timeout-Seconds``, less ``MARGIN``);
- it sends at most ``max_scrape_bytes`` of payload, and all scrapes
  together at most ``byte_rate`` a second; at most ``max_probes`` run at
  once (others get 503 at once);
- the HTTP side is :mod:`udpupper.scrape`'s, with its caps and timeouts,
  and basic authentication where it is asked for.

A query beyond the limits gets 400, 403 or 503, and sends nothing.
"""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass

from twisted.internet import defer

from udpupper.client.ping import Ping
from udpupper.client.summary import PingStats
from udpupper.client.wire import MIN_SIZE
from udpupper.dscp import mark
from udpupper.errqueue import NetworkError
from udpupper.scrape import Request, Response, ScrapeFactory, text
from udpupper.transform import max_payload
from udpupper.twisted_privates import queue_stop_signals
from udpupper.udp import MarkedPort

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# The round-trip histogram's upper bounds, in seconds.
BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
EXPOSITION = "text/plain; version=0.0.4; charset=utf-8"
# Seconds a probe leaves of the scrape's timeout, for the answer to get back
# (blackbox_exporter's default offset).
MARGIN = 0.5
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?\Z")


@dataclass(frozen=True)
class Limits:
    """What one query may ask for, and how much the prober sends."""

    networks: tuple[Network, ...] = LOOPBACK
    max_probes: int = 4
    max_count: int = 10
    min_interval: float = 0.01
    max_timeout: float = 5.0
    max_duration: float = 10.0  # seconds a probe may last
    max_scrape_bytes: int = 16_384  # payload bytes one scrape may send
    byte_rate: float = 8_192  # payload bytes a second, all scrapes together
    exposed: bool = False  # listening beyond this host: loopback only where named


def limits_for(networks: list[Network], exposed: bool, **bounds) -> Limits:
    """The limits for ``networks``; listening beyond this host (``exposed``),
    a loopback target only in a loopback network given, not in a wider one."""
    return Limits(tuple(networks), exposed=exposed, **bounds)


def names_loopback(network: Network) -> bool:
    return any(
        network.version == loopback.version and network.subnet_of(loopback)  # type: ignore[arg-type]
        for loopback in LOOPBACK
    )


class QueryError(ValueError):
    """A query the prober will not run: its HTTP status and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def judge_target(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, limits: Limits
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``address`` as it is probed (IPv4-mapped IPv6 as IPv4), if it may be."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if (
        address.is_unspecified
        or address.is_multicast
        or address == ipaddress.IPv4Address("255.255.255.255")
        or (
            isinstance(address, ipaddress.IPv4Address)
            and address in ipaddress.ip_network("0.0.0.0/8")
        )
    ):
        raise QueryError(403, f"{address} is not a host: never probed")
    if not any(address in network for network in limits.networks):
        raise QueryError(403, f"{address} is not in the networks this prober may probe")
    if (
        limits.exposed
        and address.is_loopback
        and not any(address in network for network in limits.networks if names_loopback(network))
    ):
        raise QueryError(
            403,
            f"{address} is this host's own, and this prober serves "
            "scrapers beyond it: name it in --probe-networks",
        )
    return address


def parse_target(target: str, limits: Limits) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``, an IP literal in the allowed networks."""
    host, _, port_text = target.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if "%" in host:
        raise QueryError(400, "a target with a zone (%) is not probed: give a global address")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise QueryError(400, "target must be IP:PORT or [IPV6]:PORT") from None
    if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
        raise QueryError(400, "the target's port must be 1 to 65535, in ASCII digits")
    return str(judge_target(address, limits)), int(port_text)


def parse_query(args: dict[str, list[str]], limits: Limits) -> dict:
    """The ping's settings from the query string, each within ``limits``."""

    def one(name: str, kind, default, low, high):
        values = args.get(name)
        if not values:
            return default
        value = values[0]
        if not NUMBER.match(value) or (kind is int and "." in value):
            raise QueryError(400, f"{name} must be a number in ASCII digits")
        number = kind(value)
        if not low <= number <= high:
            raise QueryError(400, f"{name} must be {low} to {high}")
        return number

    targets = args.get("target")
    if not targets:
        raise QueryError(400, "give a target: /probe?target=HOST:PORT")
    host, port = parse_target(targets[0], limits)
    return {
        "server": (host, port),
        "count": one("count", int, min(3, limits.max_count), 1, limits.max_count),
        "interval": one(
            "interval", float, max(0.1, limits.min_interval), limits.min_interval, 10.0
        ),
        "size": one("size", int, 32, MIN_SIZE, max_payload(host)),
        "timeout": one("timeout", float, min(1.0, limits.max_timeout), 0.01, limits.max_timeout),
        "dscp": one("dscp", int, None, 0, 63),
    }


def duration(settings: dict) -> float:
    """The longest a probe of ``settings`` lasts: its last probe's timeout."""
    return (settings["count"] - 1) * settings["interval"] + settings["timeout"]


def scrape_timeout(headers: dict[str, str]) -> float | None:
    """Prometheus's timeout for this scrape, if it said."""
    value = headers.get("x-prometheus-scrape-timeout-seconds", "")
    return float(value) if NUMBER.match(value) else None


def exposition(stats: PingStats, duration: float, ended_by: NetworkError | None = None) -> bytes:
    """What one probe measured, in Prometheus' text format; ``ended_by``,
    the ICMP message that ended it at once (a port unreachable), if any."""
    lines = []

    def gauge(name: str, value: float, meaning: str) -> None:
        lines.extend([f"# HELP {name} {meaning}", f"# TYPE {name} gauge", f"{name} {value:g}"])

    gauge("probe_success", int(stats.received > 0), "1 when some probe was answered right")
    gauge("probe_duration_seconds", duration, "How long the probe took")
    gauge("udpupper_probe_sent", stats.transmitted, "Probes sent")
    gauge("udpupper_probe_received", stats.received, "Probes answered right")
    gauge("udpupper_probe_loss_ratio", stats.loss / 100, "Probes unanswered, of those sent")
    for name, meaning in (
        ("duplicates", "Second and later replies to a probe"),
        ("reordered", "Replies with a lower sequence number than one answered before (RFC 4737)"),
        ("late", "Replies that came after their probe's timeout"),
        ("wrong", "Replies that were not a probe upper-cased"),
    ):
        gauge(f"udpupper_probe_{name}", getattr(stats, name), meaning)
    gauge(
        "udpupper_probe_network_errors",
        stats.network_errors,
        "ICMP messages about the probes (unreachable, too big, time exceeded)",
    )
    if ended_by is not None:
        name = "udpupper_probe_ended_by_network"
        lines += [
            f"# HELP {name} The ICMP message that ended the probe at once, and who sent it",
            f"# TYPE {name} gauge",
            f'{name}{{said="{ended_by.what}",source="{ended_by.offender or ""}"}} 1',
        ]
    jitter = stats.jitter
    if jitter is not None:
        gauge(
            "udpupper_probe_jitter_seconds",
            jitter,
            "IPDV: mean absolute difference of consecutive probes' round trips",
        )
    name = "udpupper_probe_rtt_seconds"
    lines += [
        f"# HELP {name} Round trips of the probes answered (1% buckets, folded)",
        f"# TYPE {name} histogram",
    ]
    weighted = stats.latencies.weighted()
    for bound in BUCKETS:
        below = sum(count for value, count in weighted if value <= bound)
        lines.append(f'{name}_bucket{{le="{bound:g}"}} {below}')
    lines += [
        f'{name}_bucket{{le="+Inf"}} {stats.received}',
        f"{name}_sum {stats.rtt_sum:g}",
        f"{name}_count {stats.received}",
    ]
    return ("\n".join(lines) + "\n").encode()


class Prober:
    """``GET /probe?target=...``: one short ping, its figures as metrics."""

    def __init__(self, reactor, limits: Limits) -> None:
        self.reactor = reactor
        self.limits = limits
        self.running = 0
        # The payload bytes all scrapes may still send now: a bucket of
        # ``max_scrape_bytes`` refilled at ``byte_rate``.
        self.budget = float(limits.max_scrape_bytes)
        self.budget_at = reactor.seconds()

    def spend(self, payload: int) -> bool:
        """Take ``payload`` bytes from the shared budget, if it has them."""
        now = self.reactor.seconds()
        elapsed = max(0.0, now - self.budget_at)
        self.budget_at = now
        self.budget = min(
            float(self.limits.max_scrape_bytes), self.budget + elapsed * self.limits.byte_rate
        )
        if payload > self.budget:
            return False
        self.budget -= payload
        return True

    def settings(self, request: Request) -> dict:
        """The probe ``request`` asks for, or the QueryError that refuses it."""
        settings = parse_query(request.query, self.limits)
        limits = self.limits
        allowed, why = limits.max_duration, f"--max-duration is {limits.max_duration:g} s"
        waits = scrape_timeout(request.headers)
        if waits is not None and waits - MARGIN < allowed:
            allowed = waits - MARGIN
            why = f"the scrape's timeout is {waits:g} s, less {MARGIN:g} s"
        if duration(settings) > allowed:
            raise QueryError(
                400,
                f"this probe takes up to {duration(settings):g} s, and "
                f"{why}: ask for fewer probes, or shorter",
            )
        payload = settings["count"] * settings["size"]
        if payload > limits.max_scrape_bytes:
            raise QueryError(
                400,
                f"this probe sends {payload} bytes; a scrape may send "
                f"{limits.max_scrape_bytes} (--max-scrape-bytes)",
            )
        if self.running >= limits.max_probes:
            raise QueryError(503, f"busy: {self.running} running, the most --max-probes allows")
        if not self.spend(payload):
            raise QueryError(
                503,
                f"busy: the probes sent their {limits.byte_rate} bytes "
                "a second (--probe-byte-rate); try later",
            )
        return settings

    def __call__(self, request: Request) -> Response | defer.Deferred[Response]:
        try:
            settings = self.settings(request)
        except QueryError as error:
            return text(error.status, str(error))
        host, _ = settings["server"]
        started = time.monotonic()
        pinger = Ping(
            settings["server"],
            self.reactor,
            lambda line: None,
            quiet=True,
            count=settings["count"],
            interval=settings["interval"],
            size=settings["size"],
            timeout=settings["timeout"],
            dscp=settings["dscp"],
            now=time.monotonic,
        )
        port = MarkedPort(0, pinger, "::" if ":" in host else "0.0.0.0", self.reactor)
        try:
            port.startListening()
            port.connect_socket(settings["server"])  # strangers' replies never reach it
            if settings["dscp"] is not None:
                mark(port.socket, settings["dscp"])
        except Exception as error:  # out of descriptors, say: the host's trouble
            port.stopListening()
            return text(500, f"cannot probe now: {error}")
        self.running += 1
        answer: defer.Deferred[Response] = defer.Deferred(lambda _: pinger.finish())

        def done(status: int) -> None:
            self.running -= 1
            port.stopListening()
            if not answer.called:
                answer.callback(
                    Response(
                        200,
                        exposition(pinger.stats, time.monotonic() - started, pinger.network_said),
                        EXPOSITION,
                    )
                )

        pinger.when_done = done
        pinger.start()
        return answer


def serve_probes(reactor, endpoint: str, limits: Limits, check=None):
    """Listen on the Twisted server ``endpoint`` (``tcp:9813``...) for scrapes:
    a Deferred of the listening port."""
    from twisted.internet.endpoints import serverFromString

    factory = ScrapeFactory(
        {"/probe": Prober(reactor, limits)}, reactor, check=check, realm="udpupper prober"
    )
    return serverFromString(reactor, endpoint).listen(factory)


def run_prober(reactor, endpoint: str, limits: Limits, check=None) -> int:
    """``--serve-probes``: serve until stopped; the exit status."""
    import sys

    outcome: dict[str, int] = {}

    def listening(port) -> None:
        address = port.getHost()
        host = getattr(address, "host", None)
        if host is None:  # a unix socket
            where = f"unix:{getattr(address, 'name', b'?').decode(errors='replace')} /probe"
        else:
            scheme = "https" if endpoint.startswith("ssl:") else "http"
            where = f"{scheme}://{f'[{host}]' if ':' in host else host}:{address.port}/probe"
        print(f"udpupper-client: serving probes at {where}", flush=True)

    def failed(failure) -> None:
        print(
            f"udpupper-client: cannot serve probes on {endpoint}: {failure.getErrorMessage()}",
            file=sys.stderr,
        )
        outcome["status"] = 1
        reactor.callWhenRunning(reactor.stop)

    serve_probes(reactor, endpoint, limits, check).addCallbacks(listening, failed)
    queue_stop_signals(reactor)  # Ctrl-C then SIGTERM: no deadlock
    reactor.run()
    return outcome.get("status", 0)
