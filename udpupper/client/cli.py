"""``udpupper-client``: the console script.  Its options choose one mode
(:mod:`udpupper.client.modes`), each run the same way; what every mode's
end asks of the terminal is done here."""

from __future__ import annotations

import os
import signal
import sys

from twisted.internet import fdesc

from udpupper.client.modes import lines, password, ping, probes, sweep
from udpupper.client.options import (
    COMMAND,
    EXIT_INTERRUPTED,
    EXIT_OUTPUT_CLOSED,
    EXIT_USAGE,
    Options,
)
from udpupper.client.target import resolve, server_of  # noqa: F401 - where tests find them
from udpupper.clock import use_monotonic_clock
from udpupper.transform import max_payload


def mode_of(options: Options):
    """The module of the mode ``options`` ask for."""
    if options["hash-password"]:
        return password
    if options["serve-probes"]:
        return probes
    if options["sweep"]:
        return sweep
    return ping if options["ping"] else lines


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    options = Options()
    options.parseOptions(sys.argv[1:] if argv is None else argv)
    mode = mode_of(options)
    if mode is ping:
        _, server = server_of(options)
        if options["size"] > max_payload(server[0]):
            print(
                f"{COMMAND}: error: --size: at most {max_payload(server[0])} bytes "
                f"to {server[0]}, not {options['size']}",
                file=sys.stderr,
            )
            raise SystemExit(EXIT_USAGE)
    from twisted.internet import reactor

    use_monotonic_clock(reactor)  # a wall-clock step neither hangs nor hurries it
    try:
        code = mode.run(reactor, options)
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
