"""Prometheus metrics over HTTP (``--metrics ENDPOINT``), read from Stats.

Needs ``prometheus_client`` (the ``metrics`` extra).  The
collector reads the counters at scrape time; nothing is added to the hot
path.  Served by twisted.web on any Twisted server endpoint, at /metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from twisted.application import internet, service
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.web.resource import Resource
from twisted.web.server import Site

from udpupper.options import exit_with
from udpupper.stats import Stats

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


class StatsCollector:
    """A prometheus_client collector of one daemon's counters.

    ``refresh`` is called before each scrape (to read the kernel's drops);
    ``prefixes`` and ``workers`` give the two gauges.
    """

    def __init__(
        self,
        stats: Stats | None,
        refresh: Callable[[], object] = lambda: None,
        prefixes: Callable[[], int] = lambda: 0,
        workers: Callable[[], int] = lambda: 1,
    ) -> None:
        self.stats = stats
        self.refresh = refresh
        self.prefixes = prefixes
        self.workers = workers

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield GaugeMetricFamily(
            "udpupper_workers_alive", "Processes answering datagrams.", value=self.workers()
        )
        stats = self.stats
        if stats is None:  # a supervisor: its workers keep the counters
            return
        self.refresh()
        for name, documentation, value in (
            ("udpupper_datagrams_received", "Datagrams received.", stats.received),
            ("udpupper_datagrams_replied", "Datagrams answered.", stats.replied),
            ("udpupper_received_bytes", "Payload bytes received.", stats.bytes_in),
            ("udpupper_sent_bytes", "Payload bytes sent in replies.", stats.bytes_out),
        ):
            yield CounterMetricFamily(name, documentation, value=value)
        dropped = CounterMetricFamily(
            "udpupper_datagrams_dropped",
            "Datagrams not answered, by reason (receive_buffer_full: by the kernel).",
            labels=["reason"],
        )
        # Every reason, from 0 on, as Prometheus wants each series to exist.
        for reason, count in sorted(stats.all_drops().items()):
            dropped.add_metric([reason.value], count)
        yield dropped
        yield GaugeMetricFamily(
            "udpupper_rate_limit_prefixes",
            "Source prefixes in the rate limiter's table.",
            value=self.prefixes(),
        )


class MetricsPage(Resource):
    """GET /metrics: the registry in Prometheus's text format."""

    isLeaf = True

    def __init__(self, registry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request) -> bytes:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.registry)


class QuietSite(Site):
    """A site that writes no access-log line: a scrape every few seconds
    would otherwise fill the daemon's log with them."""

    noisy = False

    def log(self, request) -> None:
        pass


class MetricsService(internet.StreamServerEndpointService):
    """Serves the page; an endpoint that cannot listen ends the daemon with
    one line on stderr, as a UDP port in use does, not a traceback."""

    def __init__(self, description: str, factory, reactor=None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        super().__init__(serverFromString(reactor, description), factory)
        self.description = description
        self._raiseSynchronously = True  # as strports.service does

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except (CannotListenError, OSError) as error:
            # An OSError comes from a UNIX socket's lock file, before any bind.
            cause = getattr(error, "socketError", error)
            reason = getattr(cause, "strerror", None) or cause
            exit_with(f"udpupper: cannot serve metrics on {self.description}: {reason}")


def metrics_service(endpoint: str, collector: StatsCollector, reactor=None) -> service.IService:
    """The HTTP service for ``endpoint`` (a Twisted server endpoint string)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(collector)
    root = Resource()
    root.putChild(b"metrics", MetricsPage(registry))
    return MetricsService(endpoint, QuietSite(root), reactor)
