"""``udpupper-client``: read lines from stdin, print each upper-cased reply."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Callable

from twisted.internet import fdesc, stdio
from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from udpupper.client.lines import LineReader
from udpupper.client.ping import MIN_SIZE, UDP_HEADER, Forward, Ping
from udpupper.client.prober import Limits, run_prober
from udpupper.client.protocol import PROMPT, UpperClient
from udpupper.client.sweep import run_sweep
from udpupper.clock import use_monotonic_clock
from udpupper.dscp import mark
from udpupper.options import (
    OneLineUsageErrors,
    bounded,
    count,
    one_line,
    parse_networks,
    peer_port,
    positive_float,
)
from udpupper.transform import MAX_IPV4_PAYLOAD, MAX_IPV6_PAYLOAD, max_payload
from udpupper.udp import MarkedPort, UDPPort

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


def resolve(host: str, port: int) -> tuple[int, tuple[str, int]]:
    """Resolve ``host`` once: its address family and an IP literal address.

    A name with both IPv4 and IPv6 addresses gives the IPv4 one, as the
    textbook client does, so an IPv4-only server on ``localhost`` works.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, sockaddr = min(infos, key=lambda info: info[0] != socket.AF_INET)
    return family, (str(sockaddr[0]), int(sockaddr[1]))


def run(reactor, options: Options, family: int, server: tuple[str, int]) -> int:
    """Run the client on ``reactor`` until stdin ends; return the exit status."""
    interactive = os.isatty(0)
    outcome: dict[str, int] = {}

    def report(message: str) -> None:
        print(one_line(f"{COMMAND}: {message}"), file=sys.stderr, flush=True)

    def when_done(code: int) -> None:
        outcome.setdefault("status", code)
        if interactive and not reader.output_lost and "stopping" not in outcome:
            write_out(b"\n")  # after Ctrl-D, the shell's prompt on a line of its own
        reader.close(then=stop)

    def stop() -> None:
        if "stopping" not in outcome:
            reactor.stop()

    def on_shutdown() -> None:
        # Ctrl-C (or SIGTERM) stops the reactor before the input has ended.
        # Whether nobody read our output is decided now: shutting down
        # closes stdout too.
        outcome["stopping"] = 1
        if reader.output_lost:
            outcome["status"] = EXIT_OUTPUT_CLOSED
        outcome.setdefault("status", EXIT_INTERRUPTED)

    def on_idle() -> None:
        if interactive:
            write_out(PROMPT)

    def write_out(data: bytes) -> None:
        # A reply may come after stdout has closed (| head -1): drop it.
        if reader.transport is not None and not reader.output_lost:
            reader.transport.write(data)

    def on_signal(number: int, frame) -> None:
        outcome.setdefault("status", 128 + number)  # 130 for Ctrl-C, 143 for SIGTERM
        reactor.callFromThread(reactor.stop)

    def take_signals() -> None:
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, on_signal)

    client = UpperClient(
        server,
        reactor,
        write_out=write_out,
        report=report,
        timeout=options["timeout"],
        retries=options["retries"],
        window=options["window"],
        max_datagram=max_payload(server[0]),
        on_idle=on_idle,
    )
    client.when_done = when_done
    interface = "::" if family == socket.AF_INET6 else "0.0.0.0"
    UDPPort(0, client, interface, reactor).startListening()
    reader = LineReader(client)
    stdio.StandardIO(reader, reactor=reactor)
    reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)
    reactor.callWhenRunning(take_signals)
    reactor.callWhenRunning(client.start)
    reactor.run()
    return outcome.get("status", EXIT_INTERRUPTED)


def ping(reactor, options: Options, family: int, server: tuple[str, int]) -> int:
    """``--ping``: probe until ``--count`` or a signal; ping's exit status."""
    host = options["host"]
    size = options["size"]
    outcome: dict[str, int] = {}

    def say(line: str) -> None:
        if "output_lost" in outcome:
            return
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # | head -1: nobody reads us any more
            outcome["output_lost"] = 1
            outcome["status"] = EXIT_OUTPUT_CLOSED
            pinger.finish()

    def done(status: int) -> None:
        outcome.setdefault("status", status)
        blank = [] if options["json"] else [""]  # a blank line first, as ping
        for line in [*blank, *pinger.summary(host)]:
            say(line)
        if reactor.running:
            reactor.stop()

    def on_signal(number: int, frame) -> None:
        if number == signal.SIGTERM:
            outcome.setdefault("status", 128 + number)
        reactor.callFromThread(pinger.finish)  # Ctrl-C: the summary, as ping

    def take_signals() -> None:
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, on_signal)

    pinger = Ping(server, reactor, say, count=options["count"],
                  interval=options["interval"], size=size,
                  timeout=options["timeout"], quiet=options["quiet"],
                  json_lines=options["json"], ports=options["ports"], dscp=options["dscp"])
    pinger.when_done = done
    ip_header = 40 if family == socket.AF_INET6 else 20
    if options["json"]:
        say(json.dumps({"event": "start", "host": host, "server": server[0],
                        "port": server[1], "size": size, "count": options["count"],
                        "interval_s": options["interval"], "timeout_s": options["timeout"],
                        "ports": options["ports"], "dscp": options["dscp"]}))
    else:
        say(f"PING {host} ({server[0]}) port {server[1]}: "
            f"{size}({size + UDP_HEADER + ip_header}) bytes of data.")
    interface = "::" if family == socket.AF_INET6 else "0.0.0.0"
    for index in range(options["ports"]):
        port = MarkedPort(0, pinger if index == 0 else Forward(pinger), interface, reactor)
        port.startListening()
        if options["dscp"] is not None:
            mark(port.socket, options["dscp"])
        pinger.transports.append(port)
    reactor.callWhenRunning(take_signals)
    reactor.callWhenRunning(pinger.start)
    reactor.run()
    return outcome.get("status", pinger.status)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    options = Options()
    options.parseOptions(sys.argv[1:] if argv is None else argv)
    if options["serve-probes"]:
        from twisted.internet import reactor

        limits = Limits(tuple(options["probe-networks"]), options["max-probes"],
                        options["max-count"])
        raise SystemExit(run_prober(reactor, options["serve-probes"], limits))
    try:
        family, server = resolve(options["host"], options["port"])
    except (OSError, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or error
        print(f"{COMMAND}: cannot resolve {options['host']!r}: {reason}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    if options["ping"] and options["size"] > max_payload(server[0]):
        print(f"{COMMAND}: error: --size: at most {max_payload(server[0])} bytes "
              f"to {server[0]}, not {options['size']}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    from twisted.internet import reactor

    use_monotonic_clock(reactor)  # a wall-clock step neither hangs nor hurries it
    try:
        if options["sweep"]:
            code = run_sweep(reactor, options["host"], server, family, options["timeout"],
                             lambda line: print(line, flush=True))
        else:
            code = (ping if options["ping"] else run)(reactor, options, family, server)
    finally:
        # StandardIO made stdin and stdout non-blocking; the shell that
        # shares them expects them back as they were.
        for fd in (0, 1):
            try:
                fdesc.setBlocking(fd)
            except OSError:
                pass
    if code == EXIT_OUTPUT_CLOSED:
        # Nobody reads what we write (| head -1): end as cat does, by the
        # signal that Python ignores, with nothing said.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGPIPE)
    if code == EXIT_INTERRUPTED:
        print(file=sys.stderr)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
