"""The few places udpupper reaches into Twisted's internals, each named here.

Everything else uses Twisted's public API.  For each: what it does, why no
public way serves, the Twisted versions it was checked against (22.10, the
floor in setup.cfg, to 26.10), and the upstream ticket where there is one.
A test runs each against the installed Twisted (tests/test_twisted_privates.py).
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from typing import cast

from twisted.internet import udp
from twisted.internet.error import ReactorNotRunning
from twisted.logger import ILogObserver, Logger

_log = Logger()

# How Twisted's tcp and unix ports log that accept() ran out of descriptors
# ("EMFILE recovery: Closed socket fd ..."): the one accept failure they log
# as text, not with an ``acceptError`` key.  Checked 22.10 to 26.10.
EMFILE_RECOVERY = "EMFILE recovery: Closed"


def adopt_socket(port: udp.Port, skt: socket.socket) -> None:
    """Make ``port`` (a udp.Port subclass, not yet listening) serve ``skt``,
    bound already, instead of binding a socket of its own.

    ``reactor.adoptDatagramPort`` adopts a descriptor, but into a plain
    ``udp.Port``, not a subclass: udpupper's port batches and checks
    destinations.  Sets ``udp.Port._preexistingSocket``, which
    ``startListening`` then uses (what ``adoptDatagramPort`` does itself).
    Checked 22.10 to 26.10; no upstream ticket.
    """
    port._preexistingSocket = skt  # type: ignore[assignment]  # Twisted types it None


def observe_accept_log(
    listening_port: object, wrap: Callable[[Callable[[dict], None]], Callable[[dict], None]]
) -> bool:
    """Route what a tcp or unix listening port logs through ``wrap(observer)``;
    whether it could.

    The ports log accept failures (out of descriptors or memory) through a
    ``Logger`` of their own class, ``_logger``, with no hook to count them:
    udpupper counts them for its metrics and logs them once a period instead
    of once a connection.  Checked 22.10 to 26.10; no upstream ticket.
    """
    logger = getattr(listening_port, "_logger", None)
    if not isinstance(logger, Logger):
        return False
    observer = cast(ILogObserver, wrap(logger.observer))
    setattr(listening_port, "_logger", Logger(namespace=logger.namespace, observer=observer))  # noqa: B010
    return True


def tcp_listening_address(endpoint: object) -> tuple[str, int] | None:
    """The interface and port a TCP server endpoint (``tcp:``, ``tcp6:``,
    ``ssl:``) would listen on, or None for any other.

    To try a port before twistd forks into the background: listening with
    the endpoint itself, then stopping, lets the socket go only once the
    reactor runs, in the daemon, which then finds its port taken.  Reads the
    endpoints' ``_interface`` and ``_port``.  Checked 22.10 to 26.10; no
    upstream ticket.
    """
    interface = getattr(endpoint, "_interface", None)
    port = getattr(endpoint, "_port", None)
    if not isinstance(interface, str) or not isinstance(port, int):
        return None
    return interface, port


def queue_stop_signals(reactor) -> None:
    """Have SIGINT and SIGTERM only queue ``reactor``'s stop, and say so
    from the reactor's loop, not from inside the signal handler.

    Twisted 22.10's own handlers log from inside the handler, through
    ``twisted.python.log``, whose lock is a pure-Python ``RLock``: a second
    signal that lands while the first handler is taking that lock waits for
    it for ever, and the process with it.  A terminal's Ctrl-C followed by
    a SIGTERM (the ``--workers`` parent's to its workers, a supervisor's, or
    a test's) hung the parent so, about one stop in 90 on a loaded machine.
    What these do inside the handler is what Twisted's do besides logging:
    note the signal for twistd's exit status and queue the stop.

    Two privates: the reactor looks ``sigInt``, ``sigTerm`` and
    ``sigBreak`` up on itself as it starts running (``_handleSignals`` in
    22.10, ``_signalsFactory`` from 23.8) and installs them under its own
    conditions (SIGINT only where Python's default handler is in place: an
    ignored SIGINT stays ignored), so these are set on the instance, before
    ``run``; and twistd's ``ApplicationRunner`` reads
    ``reactor._exitSignal`` once the reactor has stopped and kills itself
    with it (a supervisor sees "killed by SIGTERM").  Checked 22.10 to
    26.10; no upstream ticket.
    """

    def on_stop_signal(number: int, frame: object = None) -> None:
        reactor._exitSignal = number
        reactor.callFromThread(_stop_for, reactor, number)

    for name in ("sigInt", "sigTerm", "sigBreak"):
        setattr(reactor, name, on_stop_signal)


def _stop_for(reactor, number: int) -> None:
    """In the reactor's loop: Twisted's own line, then the stop."""
    _log.info("Received {name}, shutting down.", name=signal.Signals(number).name)
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass  # stopping already
