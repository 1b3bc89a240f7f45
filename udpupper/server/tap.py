"""``twistd udpupper``: command-line options and the service they make."""

from __future__ import annotations

import os

from twisted.application import service
from twisted.python import usage

from udpupper.clock import use_monotonic_clock
from udpupper.options import (
    OneLineUsageErrors,
    bounded,
    count,
    exit_with,
    expect_background,
    non_negative_float,
    port_number,
    positive_float,
    unicast_interface,
)
from udpupper.server import metrics, systemd
from udpupper.server.listening import reserve_port
from udpupper.server.port import DEFAULT_BUSY_POLL
from udpupper.server.protections.policy import (
    DEFAULT_EXEMPT,
    DEFAULT_LOOP_BUDGET,
    DEFAULT_NEW_PREFIX_RATE,
    DEFAULT_RATE,
    DEFAULT_RATE_TABLE,
    Protections,
    parse_networks,
)
from udpupper.server.protections.ratelimit import TRIAL_MEMORY, probation_size
from udpupper.server.service import DEFAULT_RCVBUF, UpperService
from udpupper.server.workers.parent import Workers
from udpupper.server.workers.worker import die_with_parent

DEFAULT_PORT = 12000
MAX_RCVBUF = (1 << 30) - 1  # bytes: Linux caps a receive buffer at INT_MAX / 2


def metrics_endpoint(value: str | None) -> str | None:
    """A Twisted server endpoint description, when prometheus_client is there."""
    if value is None:
        return None
    from twisted.internet.endpoints import serverFromString

    try:
        # Parsed only: the reactor it would listen with is makeService's.
        serverFromString(None, value)
    except Exception as error:  # Twisted's parser raises whatever it meets
        reason = str(error) or type(error).__name__
        raise ValueError(f"not a server endpoint ({reason}): {value!r}") from None
    if not metrics.available():
        raise ValueError(metrics.MISSING)
    return value


class Options(OneLineUsageErrors, usage.Options):
    """Options of ``twistd udpupper``."""

    command = "twistd udpupper"
    synopsis = (
        "[--port PORT] [--interface ADDRESS] [--rate R] [--burst B] "
        "[--rate-table N] [--new-prefix-rate N] [--loop-budget N] [--exempt CIDR,...] "
        "[--max-amplification F] [--allow-low-ports] [--rcvbuf BYTES] [--workers N] "
        "[--reuse-port] [--busy-poll US] [--reflect-dscp] [--metrics ENDPOINT]"
    )
    longdesc = (
        "Answer every UDP datagram with its text in upper case (UTF-8; bytes "
        "that are not UTF-8 come back unchanged), safely on a public address: "
        "no reply to low source ports, bad sources, or broadcast and multicast "
        "destinations; replies limited per source prefix and never larger than "
        "their requests, except for the exempt sources."
    )
    optFlags = [
        ["allow-low-ports", None, "Answer source ports 1-1023 too (port 0 never)."],
        [
            "reuse-port",
            None,
            "Share the port with other processes (SO_REUSEPORT); what each of --workers does.",
        ],
        [
            "reflect-dscp",
            None,
            "Answer each datagram with the DSCP it arrived with "
            "(as TWAMP-Light reflectors do; off: a reply to a spoofed source would carry "
            "the attacker's marking).",
        ],
    ]
    optParameters = [
        ["port", "p", DEFAULT_PORT, "UDP port to listen on; 0 picks a free one."],
        [
            "interface",
            "i",
            None,
            "IPv4 or IPv6 address to listen on "
            "[default: :: serving IPv4 and IPv6, or 0.0.0.0 without IPv6].",
        ],
        [
            "rate",
            None,
            DEFAULT_RATE,
            "Replies a second per source /24 (IPv4) or /56 (IPv6); 0: no limit.",
        ],
        ["burst", None, None, "Replies a prefix may get at once [default: 2 x rate]."],
        [
            "rate-table",
            None,
            DEFAULT_RATE_TABLE,
            "Prefixes the rate limiter's table keeps at least (the most recent to "
            "settle; it holds at most twice as many, and takes in at most as many "
            "in 120 s).",
        ],
        [
            "new-prefix-rate",
            None,
            DEFAULT_NEW_PREFIX_RATE,
            "Strangers answered a second, all together (addresses not heard from "
            "in seconds, of prefixes not in that table); beyond it no reply, but an "
            "address that asks again gets one (a spoofed-source flood); 0: no limit.",
        ],
        [
            "loop-budget",
            None,
            DEFAULT_LOOP_BUDGET,
            "Each loop through an echo service (a request that is its own upper case "
            "and echoes a reply sent to its address, exactly or with a few bytes "
            "written in) ends within this many round trips, however many loops; a "
            "client that repeats itself sends one line in as many again; exempt "
            "sources too; 0: never.",
        ],
        [
            "exempt",
            None,
            DEFAULT_EXEMPT,
            "Comma-separated networks never rate limited or capped; '' for none.",
        ],
        [
            "max-amplification",
            None,
            1.0,
            "A reply to a source not exempt may be at most this many times its request's size.",
        ],
        [
            "rcvbuf",
            None,
            DEFAULT_RCVBUF,
            "Bytes of socket receive buffer to ask for; 0: the kernel's default.",
        ],
        [
            "workers",
            None,
            1,
            "Processes answering on the port (SO_REUSEPORT, Linux), "
            "supervised and restarted, each source prefix steered to one of them.",
        ],
        [
            "busy-poll",
            None,
            DEFAULT_BUSY_POLL,
            "Microseconds to poll for the next "
            "datagram after answering (lower latency, more CPU under light load); 0: "
            "never.",
        ],
        [
            "metrics",
            None,
            None,
            "Serve Prometheus metrics at /metrics on this Twisted "
            "endpoint, e.g. tcp:9812:interface=127.0.0.1 [default: off].",
        ],
    ]
    checks = {
        "port": port_number,
        "interface": unicast_interface,
        "rate": non_negative_float,
        "rate-table": bounded(count, 1, 1 << 24),
        "new-prefix-rate": bounded(non_negative_float, 0, 1e7),
        "loop-budget": bounded(count, 0, 1 << 24),
        "exempt": parse_networks,
        "max-amplification": positive_float,
        # The kernel takes at most INT_MAX / 2 (it doubles what it is given).
        "rcvbuf": bounded(count, 0, MAX_RCVBUF),
        "workers": bounded(count, 1, 256),
        "busy-poll": bounded(count, 0, 10_000),
        "metrics": metrics_endpoint,
    }

    def postOptions(self) -> None:
        # As typed (or the default), before the checks convert them: what
        # --workers passes on to each worker.
        flags = {flag[0] for flag in self.optFlags}
        self.given = {
            name: (bool(value) or None) if name in flags else value
            for name, value in self.opts.items()
        }
        super().postOptions()
        if self["burst"] is not None:
            try:
                burst = positive_float(self["burst"])
            except ValueError as error:
                raise usage.UsageError(f"--burst: {error}") from None
            if burst < 1:
                raise usage.UsageError(f"--burst: must be 1 or more, not {burst:g}")
            self["burst"] = burst


def makeService(config: Options, reactor=None) -> service.IService:
    """Make the service that ``twistd udpupper`` runs, on ``reactor``.

    The global reactor unless told otherwise, imported only now: parsing
    options installs none.
    """
    if reactor is None:
        from twisted.internet import reactor

        use_monotonic_clock(reactor)  # the timers: a wall-clock step changes nothing
    die_with_parent()  # when this is one of --workers' processes
    if will_daemonize(config):
        check_before_forking(config, reactor)
    daemon: service.IService
    collector: metrics.StatsCollector | metrics.WorkersCollector
    if config["workers"] > 1:
        if systemd.inherited_descriptors():
            exit_with(
                "udpupper: --workers binds a group of sockets of its own and cannot "
                "serve the socket systemd passed: run udpupper-workers.service, "
                "without a .socket unit (contrib/systemd), or drop --workers"
            )
        interface, port = reserve_port(config["interface"], config["port"])
        workers = Workers(
            config["workers"],
            interface,
            port,
            worker_options(config),
            rcvbuf=config["rcvbuf"],
            reactor=reactor,
        )
        daemon, collector = workers, metrics.WorkersCollector(workers)
    else:
        protections = Protections.from_options(config)
        try:
            lone = UpperService(
                config["port"],
                config["interface"],
                reactor,
                protections=protections,
                rcvbuf=config["rcvbuf"],
                reuse_port=bool(config["reuse-port"]),
                busy_poll=config["busy-poll"],
                reflect_dscp=bool(config["reflect-dscp"]),
            )
        except MemoryError:
            exit_with(
                f"udpupper: not enough memory for the tables of --rate-table "
                f"{config['rate-table']} (up to {table_mib(config['rate-table']):,} MiB); "
                f"give a smaller --rate-table"
            )
        limiter = lone.protocol.limiter
        daemon = lone
        collector = metrics.StatsCollector(
            lone.stats,
            refresh=lone.update_kernel_drops,
            prefixes=lambda: len(limiter) if limiter is not None else 0,
        )
    if config["metrics"] is None:
        return daemon
    both = service.MultiService()
    daemon.setServiceParent(both)
    metrics.metrics_service(config["metrics"], collector, reactor).setServiceParent(both)
    return both


def will_daemonize(config: Options) -> bool:
    """Whether twistd runs without ``-n``: it forks the daemon into the
    background once this makeService has returned."""
    parent = getattr(config, "parent", None)
    return parent is not None and not parent.get("nodaemon", True)


def check_before_forking(config: Options, reactor) -> None:
    """What can make a start fail, tried while twistd is still in the
    foreground: a port in use, an address not on the host.  Each exits with
    its one line on the terminal, before a pidfile is written; what fails
    later, in the background, twistd reports (:func:`exit_with`)."""
    parent = config.parent
    assert parent is not None  # twistd's options: will_daemonize said so
    log_file = parent.get("logfile") or "twistd.log"  # twistd's, in the background
    if parent.get("syslog") or log_file == "-":
        log_file = None
    else:  # where twistd will open it: after changing to --rundir
        log_file = os.path.join(parent.get("rundir") or ".", log_file)
    expect_background(log_file)
    if config["workers"] == 1 and "LISTEN_FDS" not in os.environ:
        reserve_port(config["interface"], config["port"], bool(config["reuse-port"]))
    if config["metrics"] is not None:
        metrics.try_endpoint(config["metrics"], reactor)


def table_mib(rate_table: int) -> int:
    """The most the rate limiter's tables for ``rate_table`` take, in MiB.

    Each is an array of a power of two of slots, at least twice the keys
    of a generation, two generations: the table's 16-byte slots, the
    trial's 24-byte slots (at most TRIAL_MEMORY keys a generation) and
    probation's 8-byte hashes.  The loop breaker's memory is apart: 4 MiB
    at most."""

    def slots(keys: int) -> int:
        return 1 << max(2 * keys - 1, 1).bit_length()

    trial = min(rate_table, TRIAL_MEMORY)
    return (
        2 * 16 * slots(rate_table)
        + 2 * 24 * slots(trial)
        + 2 * 8 * slots(probation_size(rate_table))
    ) >> 20


# What only the parent of --workers does: each worker serves the socket the
# parent bound and passed it, and the parent serves the metrics.
PARENT_ONLY = frozenset({"workers", "metrics", "port", "interface", "reuse-port"})


def worker_options(config: Options) -> list[str]:
    """The options each worker gets: all the parent was given, as given,
    but for what only the parent does.  Nothing is listed by name here, so an
    option added later reaches the workers too."""
    options = []
    for name, value in config.given.items():
        if name in PARENT_ONLY or value is None:
            continue
        options.append(f"--{name}" if value is True else f"--{name}={value}")
    return options
