"""Signals as a daemon takes them: SIGHUP asks for news, a second stop is no-op.

Shared by the lone daemon and the ``--workers`` parent (a stop signal only
queues the stop: ``udpupper.twisted_privates.queue_stop_signals``).
"""

from __future__ import annotations

import signal

from twisted.internet.error import ReactorNotRunning


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
