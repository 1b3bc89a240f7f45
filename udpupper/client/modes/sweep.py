"""``udpupper-client --ping --sweep``: the path's MTU, and whether fragments
get through (:class:`udpupper.client.sweep.Sweep`)."""

from __future__ import annotations

import socket
import sys

from udpupper.client import events
from udpupper.client.modes.output import Output
from udpupper.client.options import EXIT_OUTPUT_CLOSED, Options
from udpupper.client.signals import on_stop
from udpupper.client.sweep import CANNOT_SEND, Sweep, dont_fragment
from udpupper.client.target import interface_for, server_of
from udpupper.client.wire import MIN_SIZE
from udpupper.transform import max_payload
from udpupper.udp import ClientPort


def run(reactor, options: Options) -> int:
    """``--ping --sweep`` from start to end, on ``reactor``: the exit status."""
    family, server = server_of(options)
    host = options["host"]
    maximum = max_payload(server[0])
    header = 48 if family == socket.AF_INET6 else 28
    outcome: dict[str, int] = {}

    def lost() -> None:  # | head -1: nobody reads us any more
        outcome["status"] = EXIT_OUTPUT_CLOSED
        sweep.abandon()
        if reactor.running:
            reactor.stop()

    output = Output(lost)
    say = output.say
    port = ClientPort(0, None, interface_for(family), reactor)
    sweep = Sweep(
        server,
        reactor,
        say,
        lambda on: dont_fragment(port.socket, not on),
        maximum=maximum,
        timeout=options["timeout"],
        header=header,
        json_lines=options["json"],
        host=host,
    )
    port.protocol = sweep

    def done(status: int) -> None:
        outcome["status"] = status
        if reactor.running:
            reactor.stop()

    def interrupted(number: int) -> None:
        outcome.setdefault("status", 128 + number)
        sweep.abandon()
        if reactor.running:
            reactor.stop()

    sweep.when_done = done
    if options["json"]:
        say(
            events.start(
                "sweep",
                host,
                server,
                min_size=MIN_SIZE,
                max_size=maximum,
                timeout_s=options["timeout"],
            )
        )
    else:
        say(
            f"SWEEP {host} ({server[0]}) port {server[1]}: the largest probe answered with "
            f"the DF bit set, {MIN_SIZE} to {maximum} bytes."
        )
    if output.lost:
        return EXIT_OUTPUT_CLOSED
    try:
        port.startListening()
        port.connect_socket(server)
    except OSError as error:
        print(
            f"udpupper-client: cannot send to {server[0]}: {error.strerror or error}",
            file=sys.stderr,
        )
        return CANNOT_SEND
    on_stop(reactor, interrupted)
    reactor.callWhenRunning(sweep.start)
    reactor.run()
    sweep.abandon()
    return outcome.get("status", 1)
