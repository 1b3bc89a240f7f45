"""udpupper-client's first mode: each line of standard input as a datagram,
each reply printed, in input order (:class:`UpperClient`, :class:`LineReader`)."""

from __future__ import annotations

import os
import sys

from twisted.internet import stdio

from udpupper.client.lines import LineReader
from udpupper.client.options import COMMAND, EXIT_INTERRUPTED, EXIT_OUTPUT_CLOSED, Options
from udpupper.client.protocol import PROMPT, UpperClient
from udpupper.client.signals import on_stop
from udpupper.client.target import interface_for, server_of
from udpupper.options import one_line
from udpupper.transform import max_payload
from udpupper.udp import ClientPort


def run(reactor, options: Options) -> int:
    """Run the client on ``reactor`` until stdin ends; return the exit status."""
    family, server = server_of(options)
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

    def interrupted(number: int) -> None:
        outcome.setdefault("status", 128 + number)  # 130 for Ctrl-C, 143 for SIGTERM
        if reactor.running:
            reactor.stop()

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
    ClientPort(0, client, interface_for(family), reactor).startListening()
    reader = LineReader(client)
    stdio.StandardIO(reader, reactor=reactor)
    reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)
    on_stop(reactor, interrupted)
    reactor.callWhenRunning(client.start)
    reactor.run()
    return outcome.get("status", EXIT_INTERRUPTED)
