"""``udpupper-client --ping``: probes as ``ping`` sends them, lines and
summary as ``ping`` prints them (:class:`udpupper.client.ping.Ping`), from
one source port or ``--ports`` of them, with kernel timestamps where the
kernel gives them."""

from __future__ import annotations

import socket
import sys

from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol

from udpupper.client import events
from udpupper.client.modes.output import Output
from udpupper.client.options import (
    COMMAND,
    EXIT_CANNOT_SEND,
    EXIT_OUTPUT_CLOSED,
    EXIT_USAGE,
    Options,
)
from udpupper.client.ping import Ping
from udpupper.client.signals import on_stop
from udpupper.client.target import interface_for, server_of
from udpupper.client.wire import UDP_HEADER
from udpupper.defaults import DEFAULT_RATE
from udpupper.dscp import mark
from udpupper.errqueue import Departure, NetworkError
from udpupper.udp import MarkedPort


class Forward(DatagramProtocol):
    """The protocol of ``--ports``' other ports: what they hear goes to the Ping."""

    noisy = False

    def __init__(self, pinger: Ping) -> None:
        self.pinger = pinger

    def datagramReceived(
        self, datagram: bytes, addr: tuple, tos: int | None = None, stamp: float | None = None
    ) -> None:
        self.pinger.datagramReceived(datagram, addr, tos, stamp)

    def departed(self, port, departure: Departure) -> None:
        self.pinger.departed(port, departure)

    def networkError(self, error: NetworkError) -> None:  # noqa: N802 - the ports' name
        self.pinger.networkError(error)


def rate_note(interval: float) -> str | None:
    """A word, at start, where the probes come faster than a udpupper daemon
    answers a source that is not exempt by default: what it withholds is
    its rate limit, not the path's loss."""
    if 1 / interval <= DEFAULT_RATE:
        return None
    return (
        f"{1 / interval:g} probes a second is more than a udpupper daemon answers a "
        f"source by default ({DEFAULT_RATE} a second, after a burst of "
        f"{2 * DEFAULT_RATE}): unless this host is exempt there, the daemon's "
        "rate_limited drops will read as loss (docs/client.md)"
    )


def run(reactor, options: Options) -> int:
    """``--ping``: probe until ``--count``, a port unreachable, or a signal;
    ping's exit status."""
    family, server = server_of(options)
    host = options["host"]
    size = options["size"]
    outcome: dict[str, int] = {}

    def lost() -> None:  # | head -1: nobody reads us any more
        outcome["status"] = EXIT_OUTPUT_CLOSED
        pinger.finish()

    output = Output(lost)
    say = output.say

    def done(status: int) -> None:
        outcome.setdefault("status", status)
        blank = [] if options["json"] else [""]  # a blank line first, as ping
        for line in [*blank, *pinger.summary(host, costs=True)]:
            say(line)
        if reactor.running:
            reactor.stop()

    def interrupted(number: int) -> None:
        if number == 15:  # SIGTERM: 143; Ctrl-C ends as ping does, with the summary
            outcome.setdefault("status", 128 + number)
        pinger.finish()

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
    for index in range(options["ports"]):
        port = MarkedPort(
            0, pinger if index == 0 else Forward(pinger), interface_for(family), reactor
        )
        try:
            port.startListening()
        except (CannotListenError, OSError) as error:
            cause = getattr(error, "socketError", error)
            print(
                f"{COMMAND}: cannot open {options['ports']} source ports: "
                f"{getattr(cause, 'strerror', None) or cause}",
                file=sys.stderr,
            )
            return EXIT_USAGE
        try:
            port.connect_socket(server)  # a stranger's forged reply never reaches it
        except OSError as error:  # broadcast without leave, no route: never
            print(
                f"{COMMAND}: cannot send to {server[0]}: {error.strerror or error}",
                file=sys.stderr,
            )
            return EXIT_CANNOT_SEND
        if options["dscp"] is not None:
            mark(port.socket, options["dscp"])
        pinger.transports.append(port)
    stamped = all(getattr(port, "stamped", False) for port in pinger.transports)
    note = rate_note(options["interval"])
    ip_header = 40 if family == socket.AF_INET6 else 20
    if options["json"]:
        say(
            events.start(
                "ping",
                host,
                server,
                size=size,
                count=options["count"],
                interval_s=options["interval"],
                timeout_s=options["timeout"],
                ports=options["ports"],
                dscp=options["dscp"],
                timestamps="kernel" if stamped else "client",
                rate_note=note,
            )
        )
    else:
        say(
            f"PING {host} ({server[0]}) port {server[1]}: "
            f"{size}({size + UDP_HEADER + ip_header}) bytes of data."
        )
        if note:
            print(f"{COMMAND}: note: {note}", file=sys.stderr, flush=True)
    on_stop(reactor, interrupted)
    reactor.callWhenRunning(pinger.start)
    reactor.run()
    return outcome.get("status", pinger.status)
