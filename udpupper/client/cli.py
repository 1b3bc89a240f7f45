"""``udpupper-client``: read lines from stdin, print each upper-cased reply."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

from twisted.internet import fdesc, stdio

from udpupper.client.lines import LineReader
from udpupper.client.options import (
    COMMAND,
    EXIT_INTERRUPTED,
    EXIT_OUTPUT_CLOSED,
    EXIT_USAGE,
    Options,
)
from udpupper.client.ping import UDP_HEADER, Forward, Ping
from udpupper.client.prober import limits_for, run_prober
from udpupper.client.protocol import PROMPT, UpperClient
from udpupper.client.sweep import run_sweep
from udpupper.clock import use_monotonic_clock
from udpupper.dscp import mark
from udpupper.options import one_line
from udpupper.passwords import checker
from udpupper.transform import max_payload
from udpupper.udp import MarkedPort, UDPPort


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

    pinger = Ping(
        server,
        reactor,
        say,
        count=options["count"],
        interval=options["interval"],
        size=size,
        timeout=options["timeout"],
        quiet=options["quiet"],
        json_lines=options["json"],
        ports=options["ports"],
        dscp=options["dscp"],
    )
    pinger.when_done = done
    ip_header = 40 if family == socket.AF_INET6 else 20
    if options["json"]:
        say(
            json.dumps(
                {
                    "event": "start",
                    "host": host,
                    "server": server[0],
                    "port": server[1],
                    "size": size,
                    "count": options["count"],
                    "interval_s": options["interval"],
                    "timeout_s": options["timeout"],
                    "ports": options["ports"],
                    "dscp": options["dscp"],
                }
            )
        )
    else:
        say(
            f"PING {host} ({server[0]}) port {server[1]}: "
            f"{size}({size + UDP_HEADER + ip_header}) bytes of data."
        )
    interface = "::" if family == socket.AF_INET6 else "0.0.0.0"
    for index in range(options["ports"]):
        port = MarkedPort(0, pinger if index == 0 else Forward(pinger), interface, reactor)
        port.startListening()
        port.connect_socket(server)  # a stranger's forged reply never reaches it
        if options["dscp"] is not None:
            mark(port.socket, options["dscp"])
        pinger.transports.append(port)
    reactor.callWhenRunning(take_signals)
    reactor.callWhenRunning(pinger.start)
    reactor.run()
    return outcome.get("status", pinger.status)


def hash_password_mode() -> int:
    """``--hash-password``: a password in, its hash out (not echoed on a terminal)."""
    import getpass

    from udpupper.passwords import hash_password

    if os.isatty(0):
        password = getpass.getpass("Password: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print(f"{COMMAND}: no password given", file=sys.stderr)
        return EXIT_USAGE
    print(hash_password(password))
    return 0


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    options = Options()
    options.parseOptions(sys.argv[1:] if argv is None else argv)
    if options["hash-password"]:
        raise SystemExit(hash_password_mode())
    if options["serve-probes"]:
        from twisted.internet import reactor

        limits = limits_for(
            options["probe-networks"],
            options.exposed,
            max_probes=options["max-probes"],
            max_count=options["max-count"],
            max_duration=options["max-duration"],
            max_scrape_bytes=options["max-scrape-bytes"],
            byte_rate=options["probe-byte-rate"],
        )
        users = options["probe-auth"]
        check = checker(users) if users else None
        if options.exposed and check is None and not options["serve-probes"].startswith("ssl:"):
            print(
                f"{COMMAND}: serving probes beyond this host without TLS or "
                "--probe-auth: anyone who reaches it may have it probe",
                file=sys.stderr,
            )
        raise SystemExit(run_prober(reactor, options["serve-probes"], limits, check))
    try:
        family, server = resolve(options["host"], options["port"])
    except (OSError, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or error
        print(f"{COMMAND}: cannot resolve {options['host']!r}: {reason}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    if options["ping"] and options["size"] > max_payload(server[0]):
        print(
            f"{COMMAND}: error: --size: at most {max_payload(server[0])} bytes "
            f"to {server[0]}, not {options['size']}",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_USAGE)
    from twisted.internet import reactor

    use_monotonic_clock(reactor)  # a wall-clock step neither hangs nor hurries it
    try:
        if options["sweep"]:
            code = run_sweep(
                reactor,
                options["host"],
                server,
                family,
                options["timeout"],
                lambda line: print(line, flush=True),
            )
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
