"""Ctrl-C and SIGTERM, as every client mode takes them, in one place.

The handler only queues the mode's ``stop(number)`` on the reactor's loop
(a handler that logs or stops there itself can deadlock on a second
signal); the mode decides what a stop means: ping's summary, a status of
128 + the signal for lines cut short.
"""

from __future__ import annotations

import signal
from collections.abc import Callable


def on_stop(reactor, stop: Callable[[int], object]) -> None:
    """Once ``reactor`` runs, SIGINT and SIGTERM call ``stop(number)`` there."""

    def handler(number: int, frame) -> None:
        reactor.callFromThread(stop, number)

    def install() -> None:
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, handler)

    reactor.callWhenRunning(install)
