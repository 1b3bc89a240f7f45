"""``udpupper-client``'s options: four modes (lines, ``--ping``, ``--sweep``,
``--serve-probes``) and which options go with which."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from udpupper.client.exits import (  # noqa: F401 - the modes' statuses, here too
    EXIT_CANNOT_SEND,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUTPUT_CLOSED,
    EXIT_UNANSWERED,
    EXIT_USAGE,
)
from udpupper.client.wire import MIN_SIZE
from udpupper.options import (
    OneLineUsageErrors,
    bounded,
    count,
    parse_networks,
    peer_port,
    positive_float,
)
from udpupper.passwords import read_users
from udpupper.transform import MAX_IPV4_PAYLOAD, MAX_IPV6_PAYLOAD

COMMAND = "udpupper-client"


def prober_endpoint(description: str) -> tuple[str, bool]:
    """``--serve-probes``' endpoint, a bare port bound to loopback, and
    whether it listens beyond this host.  ValueError where it is not an
    endpoint Twisted can listen on."""
    from udpupper.twisted_privates import tcp_listening_address

    if description.startswith("ssl:"):
        try:
            import OpenSSL  # noqa: F401
        except ImportError:
            raise usage.UsageError(
                "--serve-probes: ssl: endpoints need pyOpenSSL: pip "
                "install 'udpupper[tls]' (Twisted's tls extra)"
            ) from None
    try:
        address = tcp_listening_address(serverFromString(None, description))
    except Exception as error:  # Twisted's parser raises whatever it meets
        raise usage.UsageError(
            f"--serve-probes: not a server endpoint ({error or type(error).__name__})"
        ) from None
    if address is None:  # unix: this host's alone
        return description, False
    interface, _ = address
    if "interface=" not in description:  # a bare port: loopback, not every interface
        loopback = "\\:\\:1" if description.startswith("tcp6:") else "127.0.0.1"
        return f"{description}:interface={loopback}", False
    try:
        return description, not ipaddress.ip_address(interface.partition("%")[0]).is_loopback
    except ValueError:
        return description, True


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
        f"       {COMMAND} --ping --sweep [--host HOST] [--port PORT] [--timeout SECONDS] "
        "[--json]\n"
        f"       {COMMAND} --serve-probes ENDPOINT [--probe-networks CIDR,...] "
        "[--max-probes N] [--max-count N] [--max-duration SECONDS] [--max-scrape-bytes N] "
        "[--probe-byte-rate N] [--probe-auth FILE]\n"
        f"       {COMMAND} --hash-password"
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
        [
            "sweep",
            None,
            "With --ping: find the largest probe answered with the DF bit set "
            "(the path's MTU), and whether larger ones get through fragmented.",
        ],
        [
            "json",
            "j",
            "With --ping (and --sweep): one JSON object a line, for the start, "
            "each event and the summary (JSON Lines), instead of ping's text.",
        ],
        [
            "hash-password",
            None,
            "Instead: read a password on standard input and print "
            "its hash, for --probe-auth's file.",
        ],
    ]
    optParameters = [
        [
            "host",
            "H",
            "localhost",
            "Server name or IPv4/IPv6 address, [IPv6] too (a name is resolved once, IPv4 first).",
        ],
        ["port", "p", 12000, "Server UDP port."],
        [
            "timeout",
            "t",
            1.0,
            "Seconds to wait for a reply before asking again, at most 3600 (with "
            "--ping: before saying a probe has no answer yet).",
        ],
        ["retries", "r", 3, "How many times to ask again before reporting a line as unanswered."],
        [
            "window",
            "w",
            32,
            "Lines in flight at once (1 sends a line only after the last is settled).",
        ],
        ["count", "c", None, "With --ping: probes to send (default: until Ctrl-C)."],
        ["interval", "i", None, "With --ping: seconds between probes, at least 0.001 (default 1)."],
        [
            "size",
            "s",
            None,
            f"With --ping: probe bytes, {MIN_SIZE} to {MAX_IPV4_PAYLOAD} "
            f"({MAX_IPV6_PAYLOAD} over IPv6; default 32).",
        ],
        [
            "ports",
            "P",
            None,
            "With --ping: source ports to send probes from in turn, "
            "1 to 64, each reported too (ECMP paths; default 1).",
        ],
        [
            "dscp",
            "Q",
            None,
            "With --ping: mark the probes with this DSCP, 0 to 63, and "
            "say what the replies came back with.",
        ],
        [
            "serve-probes",
            None,
            None,
            "Instead: serve a UDP prober for Prometheus, "
            "GET /probe?target=IP:PORT, on this Twisted endpoint: tcp:9813 listens on "
            "127.0.0.1; tcp:9813:interface=0.0.0.0 beyond this host; ssl:... with TLS.",
        ],
        [
            "probe-networks",
            None,
            None,
            "With --serve-probes: networks a target may be in "
            "(default 127.0.0.0/8,::1/128; required when listening beyond this host, "
            "where loopback targets are refused unless named here).",
        ],
        [
            "max-probes",
            None,
            None,
            "With --serve-probes: probes running at once, 1 to 64; "
            "a scrape beyond gets 503 (default 4).",
        ],
        [
            "max-count",
            None,
            None,
            "With --serve-probes: probes one scrape may ask for, 1 to 1000 (default 10).",
        ],
        [
            "max-duration",
            None,
            None,
            "With --serve-probes: seconds a probe may last, "
            "0.1 to 60, and less than the scrape's own timeout (default 10).",
        ],
        [
            "max-scrape-bytes",
            None,
            None,
            "With --serve-probes: payload bytes one scrape "
            "may send, 24 to 1048576 (default 16384).",
        ],
        [
            "probe-byte-rate",
            None,
            None,
            "With --serve-probes: payload bytes a second all "
            "scrapes together may send, 1 to 1e9 (default 8192).",
        ],
        [
            "probe-auth",
            None,
            None,
            "With --serve-probes: a file of user:hash lines "
            "(--hash-password): scrapes must give one's password (HTTP basic auth).",
        ],
    ]
    checks = {
        "port": peer_port,
        "timeout": bounded(positive_float, 0.001, 3600),
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
        "max-duration": (bounded(positive_float, 0.1, 60), "10"),
        "max-scrape-bytes": (bounded(count, MIN_SIZE, 1 << 20), "16384"),
        "probe-byte-rate": (bounded(positive_float, 1, 1e9), "8192"),
        "probe-auth": (read_users, ""),
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
        if self["sweep"] and given - {"sweep", "json"}:
            raise usage.UsageError(f"--{sorted(given - {'sweep', 'json'})[0]} is not for --sweep")
        probing = {name for name in self.probe_checks if self[name] is not None}
        if probing and not self["serve-probes"]:
            raise usage.UsageError(f"--{sorted(probing)[0]} is only for --serve-probes")
        if self["serve-probes"] and (given or self["ping"]):
            raise usage.UsageError("--serve-probes is not for --ping")
        if self["hash-password"] and (given or self["ping"] or self["serve-probes"]):
            raise usage.UsageError("--hash-password is a mode of its own")
        for name, (check, default) in self.ping_checks.items():
            try:
                self[name] = default if self[name] is None else check(self[name])
            except ValueError as error:
                raise usage.UsageError(f"--{name}: {error}") from None
        self.networks_given = self["probe-networks"] is not None
        for option, (parse, fallback) in self.probe_checks.items():
            if option == "probe-auth" and self[option] is None:
                continue
            try:
                self[option] = parse(fallback if self[option] is None else self[option])
            except (ValueError, OSError) as error:
                reason = getattr(error, "strerror", None) or error
                raise usage.UsageError(f"--{option}: {reason}") from None
        if self["serve-probes"]:
            self["serve-probes"], self.exposed = prober_endpoint(self["serve-probes"])
            if self.exposed and not self.networks_given:
                raise usage.UsageError(
                    "--serve-probes listens beyond this host: give --probe-networks, the "
                    "networks its scrapers may probe (loopback only where named there)"
                )
