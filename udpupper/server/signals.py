"""Signals as a daemon takes them: SIGHUP asks for news, a second stop is a
no-op, and a stop signal only queues the stop.

Shared by the lone daemon, its workers and the ``--workers`` parent.
"""

from __future__ import annotations

import signal

from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger

from udpupper.twisted_privates import set_exit_signal, take_stop_signals

log = Logger()


def on_hangup(reactor, action) -> None:
    """Run ``action`` in the reactor on SIGHUP, unless SIGHUP is taken already.

    A daemon has no terminal to hang up: SIGHUP is the operator asking for
    news, as with many daemons, and never ends it.
    """
    if signal.getsignal(signal.SIGHUP) in (signal.SIG_DFL, None):
        try:
            signal.signal(signal.SIGHUP, lambda number, frame: reactor.callFromThread(action))
        except ValueError:  # not the main thread (some test runners)
            pass


def stop_once(reactor) -> None:
    """Make stopping ``reactor`` a second time a no-op, not a traceback.

    A terminal's Ctrl-C reaches ``--workers``' processes as their parent
    stops them too: two signals, each of which Twisted answers with
    ``reactor.stop`` (looked up when the signal comes), and the second
    raises ``ReactorNotRunning``.  Wrapping the stop itself covers signals
    at any moment, before the reactor runs included.
    """
    stop = reactor.stop
    if getattr(stop, "once", False):
        return

    def stop_only_once() -> None:
        try:
            stop()
        except ReactorNotRunning:
            pass  # stopping already

    stop_only_once.once = True  # type: ignore[attr-defined]
    reactor.stop = stop_only_once


def queue_stop_signals(reactor) -> None:
    """Have SIGINT and SIGTERM only queue the reactor's stop, and say so
    from the reactor's loop, not from inside the signal handler.

    Twisted 22.10's own handlers log from inside the handler, through
    ``twisted.python.log``, whose lock is a pure-Python ``RLock``: a second
    signal that lands while the first handler is taking that lock waits for
    it for ever, and the process with it.  A terminal's Ctrl-C followed by
    a SIGTERM (the ``--workers`` parent's to its workers, a supervisor's, or
    a test's) hung the parent so, about one stop in 90 on a loaded machine.
    What these do inside the handler is what Twisted's do besides logging:
    note the signal for twistd's exit status and queue the stop.  Call it
    before the reactor runs (it installs its handlers as it starts, with
    its own conditions: an ignored SIGINT stays ignored).
    """

    def on_stop_signal(number: int, frame: object = None) -> None:
        set_exit_signal(reactor, number)
        reactor.callFromThread(_stop_for, reactor, number)

    take_stop_signals(reactor, on_stop_signal)


def _stop_for(reactor, number: int) -> None:
    """In the reactor's loop: Twisted's own line, then the stop."""
    log.info("Received {name}, shutting down.", name=signal.Signals(number).name)
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass  # stopping already
