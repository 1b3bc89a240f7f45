"""The few places udpupper reaches into Twisted's internals, each named here.

Everything else uses Twisted's public API.  For each: what it does, why no
public way serves, the Twisted versions it was checked against (22.10, the
floor in setup.cfg, to 26.10), and the upstream ticket where there is one.
A test runs each against the installed Twisted (tests/test_twisted_privates.py).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import cast

from twisted.internet import udp
from twisted.logger import ILogObserver, Logger

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
    setattr(port, "_preexistingSocket", skt)


def observe_accept_log(listening_port: object,
                       wrap: Callable[[Callable[[dict], None]], Callable[[dict], None]]) -> bool:
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
    setattr(listening_port, "_logger", Logger(namespace=logger.namespace, observer=observer))
    return True


def take_stop_signals(reactor: object, handler: Callable[[int, object], None]) -> None:
    """Have ``reactor`` install ``handler`` for SIGINT, SIGTERM (and SIGBREAK)
    where it would install its own ``sigInt``, ``sigTerm`` and ``sigBreak``.

    The reactor looks those methods up on itself as it starts running
    (``_handleSignals`` in 22.10, ``_signalsFactory`` from 23.8) and
    installs them under its own conditions (SIGINT only where Python's
    default handler is in place); no public way replaces what they do.
    Set on the instance, before ``run``.  Checked 22.10 to 26.10; no
    upstream ticket (the deadlock they work around: :mod:`.server.signals`).
    """
    for name in ("sigInt", "sigTerm", "sigBreak"):
        setattr(reactor, name, handler)


def set_exit_signal(reactor: object, number: int) -> None:
    """Have twistd end by signal ``number``, as after Twisted's own handlers.

    Those set ``reactor._exitSignal``, which twistd's ``ApplicationRunner``
    reads once the reactor has stopped, and with which it then kills itself
    (so that a supervisor sees "killed by SIGTERM").  Checked 22.10 to
    26.10; no upstream ticket.
    """
    setattr(reactor, "_exitSignal", number)
