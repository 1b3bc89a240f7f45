"""``udpupper-client``'s options: four modes (lines, ``--ping``, ``--sweep``,
``--serve-probes``) and which options go with which."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from udpupper.client.ping import MIN_SIZE
from udpupper.options import (
    OneLineUsageErrors,
    bounded,
    count,
    parse_networks,
    peer_port,
    positive_float,
)
from udpupper.transform import MAX_IPV4_PAYLOAD, MAX_IPV6_PAYLOAD

COMMAND = "udpupper-client"

# Exit statuses: every line answered, some line not, bad command line or
# host, interrupted (128 + SIGINT, as a shell reports it; 143 for SIGTERM).
EXIT_OK, EXIT_UNANSWERED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_OUTPUT_CLOSED = -1  # end as cat does when nobody reads: by SIGPIPE


class Options(OneLineUsageErrors, usage.Options):
    """Options of ``udpupper-client``."""

    command = COMMAND
    usage_status = EXIT_USAGE
    synopsis = (
        f"Usage: {COMMAND} [--host HOST] [--port PORT] [--timeout SECONDS] "
        "[--retries N] [--window N]\n"
        f"       {COMMAND} --ping [--host HOST] [--port PORT] [--count N] "
        "[--interval SECONDS] [--size BYTES] [--timeout SECONDS] [--ports N] [--dscp N] "
        "[--quiet] [--json]\n"
        f"       {COMMAND} --ping --sweep [--host HOST] [--port PORT] [--timeout SECONDS]\n"
        f"       {COMMAND} --serve-probes ENDPOINT [--probe-networks CIDR,...] "
        "[--max-probes N] [--max-count N]"
    )
    longdesc = (
        "Send each line of standard input (without its line ending) to a "
        "udpupper server as one datagram and print each reply on its own "
        "line, in input order. Exit status: 0 when every line was answered, "
        "1 when any was not, 2 for a usage error or a host that does not "
        "resolve. With --ping, instead: probe the server as ping does, with "
        "ping's lines, summary and exit status (0 when any probe was answered, "
        "1 when none was), and a third summary line with jitter, percentiles "
        "and reordered, duplicate, late and wrong replies."
    )
    optFlags = [
        ["ping", None, "Probe the server as ping does, instead of reading stdin."],
        ["quiet", "q", "With --ping: only the first line and the summary."],
        ["sweep", None, "With --ping: find the largest probe answered with the DF bit set "
         "(the path's MTU), and whether larger ones get through fragmented."],
        ["json", "j", "With --ping: one JSON object a line, for the start, each probe "
         "event and the summary (JSON Lines), instead of ping's text."],
    ]
    optParameters = [
        ["host", "H", "localhost", "Server name or IPv4/IPv6 address (a name is "
         "resolved once, IPv4 first)."],
        ["port", "p", 12000, "Server UDP port."],
        ["timeout", "t", 1.0, "Seconds to wait for a reply before asking again (with "
         "--ping: before saying a probe has no answer yet)."],
        ["retries", "r", 3, "How many times to ask again before reporting a line "
         "as unanswered."],
        ["window", "w", 32, "Lines in flight at once (1 sends a line only after "
         "the last is settled)."],
        ["count", "c", None, "With --ping: probes to send (default: until Ctrl-C)."],
        ["interval", "i", None, "With --ping: seconds between probes, at least "
         "0.001 (default 1)."],
        ["size", "s", None, f"With --ping: probe bytes, {MIN_SIZE} to {MAX_IPV4_PAYLOAD} "
         f"({MAX_IPV6_PAYLOAD} over IPv6; default 32)."],
        ["ports", "P", None, "With --ping: source ports to send probes from in turn, "
         "1 to 64, each reported too (ECMP paths; default 1)."],
        ["dscp", "Q", None, "With --ping: mark the probes with this DSCP, 0 to 63, and "
         "say what the replies came back with."],
        ["serve-probes", None, None, "Instead: serve a UDP prober for Prometheus, "
         "GET /probe?target=IP:PORT, on this Twisted endpoint, e.g. "
         "tcp:9813:interface=127.0.0.1."],
        ["probe-networks", None, None, "With --serve-probes: networks a target may be in "
         "(default 127.0.0.0/8,::1/128)."],
        ["max-probes", None, None, "With --serve-probes: probes running at once, 1 to 64; "
         "a scrape beyond gets 503 (default 4)."],
        ["max-count", None, None, "With --serve-probes: probes one scrape may ask for, "
         "1 to 1000 (default 10)."],
    ]
    checks = {
        "port": peer_port,
        "timeout": positive_float,
        "retries": count,
        "window": bounded(count, 1, 1024),
    }
    # Only with --ping, and their defaults there.
    ping_checks = {
        "count": (bounded(count, 1, 10**9), None),
        "interval": (bounded(positive_float, 0.001, 3600), 1.0),
        "size": (bounded(count, MIN_SIZE, MAX_IPV6_PAYLOAD), 32),
        "ports": (bounded(count, 1, 64), 1),
        "dscp": (bounded(count, 0, 63), None),
    }
    # Only with --serve-probes, and their defaults there.
    probe_checks: dict[str, tuple[Callable[[str], object], str]] = {
        "probe-networks": (parse_networks, "127.0.0.0/8,::1/128"),
        "max-probes": (bounded(count, 1, 64), "4"),
        "max-count": (bounded(count, 1, 1000), "10"),
    }

    def parseArgs(self, *args: str) -> None:
        if args:
            raise usage.UsageError(f"unexpected argument: {args[0]!r}")

    def postOptions(self) -> None:
        super().postOptions()
        given = {name for name in self.ping_checks if self[name] is not None}
        given |= {flag for flag in ("quiet", "json", "sweep") if self[flag]}
        if given and not self["ping"]:
            raise usage.UsageError(f"--{sorted(given)[0]} is only for --ping")
        if self["sweep"] and given - {"sweep"}:
            raise usage.UsageError(f"--{sorted(given - {'sweep'})[0]} is not for --sweep")
        probing = {name for name in self.probe_checks if self[name] is not None}
        if probing and not self["serve-probes"]:
            raise usage.UsageError(f"--{sorted(probing)[0]} is only for --serve-probes")
        if self["serve-probes"] and (given or self["ping"]):
            raise usage.UsageError("--serve-probes is not for --ping")
        for name, (check, default) in self.ping_checks.items():
            try:
                self[name] = default if self[name] is None else check(self[name])
            except ValueError as error:
                raise usage.UsageError(f"--{name}: {error}") from None
        for option, (parse, fallback) in self.probe_checks.items():
            try:
                self[option] = parse(fallback if self[option] is None else self[option])
            except ValueError as error:
                raise usage.UsageError(f"--{option}: {error}") from None
        if self["serve-probes"]:
            try:
                serverFromString(None, self["serve-probes"])
            except Exception as error:  # Twisted's parser raises whatever it meets
                raise usage.UsageError(f"--serve-probes: not a server endpoint "
                                       f"({error or type(error).__name__})") from None
