"""Prometheus metrics over HTTP (``--metrics ENDPOINT``), read from Stats.

Needs ``prometheus_client`` (the ``metrics`` extra).  The
collector reads the counters at scrape time; nothing is added to the hot
path.  Served by :mod:`udpupper.scrape` on any Twisted server endpoint, at
/metrics: whatever an HTTP client sends, the datagrams go first, and the
connections it may hold leave the process descriptors of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from twisted.application import service
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from udpupper.options import exit_with
from udpupper.scrape import MAX_CONNECTIONS, Request, Response, ScrapeFactory
from udpupper.server.droplog import LOG_PERIOD, Throttle
from udpupper.server.stats import Stats
from udpupper.twisted_privates import (
    EMFILE_RECOVERY,
    observe_accept_log,
    tcp_listening_address,
)

MISSING = (
    "needs prometheus_client: in a checkout, pip install '.[metrics]'; "
    "from a package index, pip install 'udpupper[metrics]'"
)


def available() -> bool:
    """Whether prometheus_client can be imported."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


COUNTERS = (
    ("datagrams_received", "Datagrams received.", "received"),
    ("datagrams_replied", "Datagrams answered.", "replied"),
    ("received_bytes", "Payload bytes received.", "bytes_in"),
    ("sent_bytes", "Payload bytes sent in replies.", "bytes_out"),
)


def counter_families(prefix: str, labels: list[str], rows: list[tuple[list[str], Stats]]):
    """The counter families for ``rows`` of (label values, counters)."""
    from prometheus_client.core import CounterMetricFamily

    for name, documentation, attribute in COUNTERS:
        family = CounterMetricFamily(prefix + name, documentation, labels=labels)
        for values, stats in rows:
            family.add_metric(values, getattr(stats, attribute))
        yield family
    dropped = CounterMetricFamily(
        prefix + "datagrams_dropped",
        "Datagrams not answered, by reason (receive_buffer_full: by the kernel).",
        labels=[*labels, "reason"],
    )
    for values, stats in rows:
        # Every reason, from 0 on, as Prometheus wants each series to exist.
        for reason, count in sorted(stats.all_drops().items()):
            dropped.add_metric([*values, reason.value], count)
    yield dropped


def gauge(name: str, documentation: str, value: float):
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(name, documentation, value=value)


PREFIXES = "Source prefixes the rate limiter knows: settled in its table, or on trial."


class StatsCollector:
    """A prometheus_client collector of one daemon's counters.

    ``refresh`` is called before each scrape (to read the kernel's drops);
    ``prefixes`` gives the gauge.
    """

    def __init__(
        self,
        stats: Stats,
        refresh: Callable[[], object] = lambda: None,
        prefixes: Callable[[], int] = lambda: 0,
    ) -> None:
        self.stats = stats
        self.refresh = refresh
        self.prefixes = prefixes

    def collect(self) -> Iterator:
        yield gauge("udpupper_workers_alive", "Processes answering datagrams.", 1)
        self.refresh()
        yield from counter_families("udpupper_", [], [([], self.stats)])
        yield gauge("udpupper_rate_limit_prefixes", PREFIXES, self.prefixes())


class WorkersCollector:
    """The collector of a ``--workers`` parent: the totals under the names a
    lone daemon uses (dashboards work either way), and each worker's
    counters under ``udpupper_worker_*`` with a ``worker`` label.  A restarted
    worker's own counters start again from 0 (Prometheus sees a reset); the
    totals keep what every earlier run counted."""

    def __init__(self, workers) -> None:
        self.workers = workers

    def collect(self) -> Iterator:
        workers = self.workers
        yield gauge(
            "udpupper_workers_alive",
            "Processes answering datagrams (workers that reported within the last 2 s).",
            workers.alive(),
        )
        drops = workers.kernel_drops()  # one read of each socket a scrape
        yield from counter_families("udpupper_", [], [([], workers.totals(drops))])
        counters = workers.counters
        rows = []
        for name in workers.names:
            stats = Stats.from_dict(counters.current[name].as_dict())
            stats.kernel_drops = drops.get(name, 0)  # the socket's: all its runs
            rows.append(([name.removeprefix("worker-")], stats))
        yield from counter_families("udpupper_worker_", ["worker"], rows)
        yield gauge("udpupper_rate_limit_prefixes", PREFIXES, sum(counters.prefixes.values()))
        from prometheus_client.core import GaugeMetricFamily

        per_worker = GaugeMetricFamily(
            "udpupper_worker_rate_limit_prefixes", PREFIXES, labels=["worker"]
        )
        for name in workers.names:
            per_worker.add_metric([name.removeprefix("worker-")], counters.prefixes[name])
        yield per_worker


# Descriptors the HTTP connections leave free: what a --workers parent needs
# to start a worker (its pipes, its socket), and the daemon for its own.
RESERVED_DESCRIPTORS = 32


def connection_cap(limit: int = MAX_CONNECTIONS) -> int:
    """How many HTTP connections at once: ``limit``, or fewer where the
    process's descriptor limit would leave fewer than RESERVED_DESCRIPTORS."""
    import os
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 16
    if soft == resource.RLIM_INFINITY:
        return limit
    return max(1, min(limit, soft - in_use - RESERVED_DESCRIPTORS))


def exposition_page(registry):
    """GET /metrics: the registry in Prometheus's text format."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    def page(request: Request) -> Response:
        return Response(200, generate_latest(registry), CONTENT_TYPE_LATEST)

    return page


class AcceptLog:
    """The metrics listener's own log, with refused connections counted.

    Out of file descriptors, Twisted's listener logs up to three lines for
    each connection it cannot accept; a client retrying in a loop turns that
    into a flood.  This observer takes the listener's events: a refused
    connection is counted and said at most once per period, with the count,
    as the drop log does; any other event goes on unchanged.
    """

    log = Logger()

    def __init__(self, forward, clock, period: float = LOG_PERIOD) -> None:
        self.forward = forward  # the observer the listener logged to before
        self.clock = clock
        self.period = period
        self.throttle = Throttle(period)
        self.refused = 0
        self.errors: set[str] = set()
        self.flush_later = None

    def __call__(self, event: dict) -> None:
        text = event.get("log_format") or ""
        if "acceptError" in event or text.startswith(EMFILE_RECOVERY):
            self.refused += 1
            self.errors.add(event.get("acceptError", "EMFILE"))
            self.say()
        elif "EMFILE" not in text:  # the rest of the recovery dance is noise
            self.forward(event)

    def say(self, now_or_never: bool = False) -> None:
        """Log the count now if a period has passed, else once it has."""
        now = self.clock.seconds()
        last = self.throttle.last
        if self.refused and (self.throttle.due(now) or now_or_never):
            self.log.warn(
                "udpupper could not accept {count} metrics connection(s) {since} "
                "({errors}: out of file descriptors or memory)",
                count=self.refused,
                errors=", ".join(sorted(self.errors)),
                since="so far" if last is None else f"in the last {now - last:.0f} s",
            )
            self.refused = 0
            self.errors.clear()
        elif self.refused and self.flush_later is None:
            wait = max(0.0, (self.throttle.last or now) + self.period - now)
            self.flush_later = self.clock.callLater(wait, self.flush)

    def flush(self) -> None:
        self.flush_later = None
        self.say()

    def stop(self) -> None:
        """Say what is still uncounted in the log: stopping loses nothing."""
        if self.flush_later is not None and self.flush_later.active():
            self.flush_later.cancel()
        self.flush_later = None
        self.say(now_or_never=True)


class MetricsService(service.Service):
    """Serves the page on a server endpoint; one that cannot listen ends the
    daemon with one line on stderr, as a UDP port in use does, not a
    traceback.  (tcp and unix endpoints listen at once: their Deferred has
    fired when ``listen`` returns.)"""

    log = Logger()

    def __init__(self, description: str, factory, reactor=None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.endpoint = serverFromString(reactor, description)
        self.factory = factory
        self.description = description
        self.reactor = reactor
        self.port: IListeningPort | None = None
        self.accept_log: AcceptLog | None = None
        self.asked = False  # whether the endpoint was asked to listen

    def privilegedStartService(self) -> None:
        self.asked = True
        self.listen(self._listening)
        super().privilegedStartService()

    def listen(self, then) -> None:
        failures: list[Failure] = []
        self.endpoint.listen(self.factory).addCallbacks(then, failures.append)
        if failures:
            error = failures[0].value
            # An OSError comes from a UNIX socket's lock file, before any bind.
            cause = getattr(error, "socketError", error)
            reason = getattr(cause, "strerror", None) or cause
            exit_with(f"udpupper: cannot serve metrics on {self.description}: {reason}")

    def startService(self) -> None:
        if not self.asked:  # started without twistd's privileged step
            self.privilegedStartService()
        super().startService()

    def _listening(self, port: IListeningPort) -> None:
        """Give the listener (a tcp or unix Port) an :class:`AcceptLog`."""
        self.port = port
        address = port.getHost()
        host, number = getattr(address, "host", None), getattr(address, "port", "")
        where = (
            f"http://{'[' + host + ']' if ':' in host else host}:{number}/metrics"
            if host is not None
            else f"{self.description} (/metrics)"
        )
        self.log.info("udpupper serving metrics at {where}", where=where)

        def wrap(observer):
            self.accept_log = AcceptLog(observer, self.reactor)
            return self.accept_log

        observe_accept_log(port, wrap)

    def stopService(self):
        super().stopService()
        if self.accept_log is not None:
            self.accept_log.stop()
        port, self.port = self.port, None
        return None if port is None else port.stopListening()


def try_endpoint(description: str, reactor) -> None:
    """Whether a TCP endpoint's port can be had now: exits with one line, as
    the service would, where it cannot (other endpoints are tried when the
    service starts)."""
    import socket

    address = tcp_listening_address(serverFromString(reactor, description))
    if address is None:
        return
    interface, port = address
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted's
            probe.bind((interface, port))
    except OSError as error:
        exit_with(f"udpupper: cannot serve metrics on {description}: {error.strerror or error}")


def metrics_service(
    endpoint: str, collector: StatsCollector | WorkersCollector, reactor=None
) -> service.IService:
    """The HTTP service for ``endpoint`` (a Twisted server endpoint string)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(collector)
    factory = ScrapeFactory(
        {"/metrics": exposition_page(registry)}, reactor, max_connections=connection_cap()
    )
    return MetricsService(endpoint, factory, reactor)
