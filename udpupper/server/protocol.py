"""The server protocol: answer each datagram to its sender, upper-cased.

``datagramReceived`` is the one path every datagram takes, over the
daemon's port or any other datagram transport.  A datagram meets, in order:
the loop guard (bad sources, low source ports, our own port), the rate
limit, the transform, the amplification cap and the loop breaker; the reply
goes out with ``transport.write``.  Whatever is not answered is counted by
reason, an exception included: nothing a datagram does escapes.
"""

from __future__ import annotations

import time

from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IUDPTransport
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from udpupper.server.droplog import LOG_PERIOD, Throttle
from udpupper.server.interfaces import Clock, IServerProtocol
from udpupper.server.protections.policy import (
    BAD,
    EXEMPT,
    Protections,
)
from udpupper.server.stats import Reason, Stats
from udpupper.transform import upper

BAD_SOURCE = Reason.BAD_SOURCE
LOW_SOURCE_PORT = Reason.LOW_SOURCE_PORT
LOOP = Reason.LOOP
RATE_LIMITED = Reason.RATE_LIMITED
NEW_PREFIX_LIMITED = Reason.NEW_PREFIX_LIMITED
AMPLIFICATION = Reason.AMPLIFICATION


class MonotonicClock:
    """``seconds()`` that never steps back: what rate decisions are made on."""

    seconds = staticmethod(time.monotonic)


@implementer(IServerProtocol)
class UpperProtocol(DatagramProtocol):
    """Upper-cases every datagram back to where it came from, safely.

    Applies ``protections`` (the daemon's defaults unless told otherwise) on
    ``clock``'s time (monotonic unless told otherwise).  ``transform`` is
    what a reply is made with.  A reply that cannot be sent is counted,
    never raised; so is any error while handling a datagram, logged with its
    traceback at most once per ``LOG_PERIOD``.
    """

    noisy = False
    log = Logger()
    transport: IUDPTransport  # the port's, set before the first datagram

    def __init__(
        self,
        stats: Stats | None = None,
        clock: Clock | None = None,
        protections: Protections = Protections(),
        transform=upper,
    ) -> None:
        self.stats = Stats() if stats is None else stats
        self.clock = MonotonicClock() if clock is None else clock
        self.seconds = self.clock.seconds
        self.transform = transform
        self.sources = protections.sources()
        self.limiter = protections.rate_limiter()
        self.loops = protections.loop_breaker()
        self.max_amplification = protections.amplification_cap()
        self.lowest_port = protections.lowest_port()
        self.own_port = 0  # the port we listen on, once we do: 0 is never a source
        self.errors = Throttle(LOG_PERIOD)

    def startProtocol(self) -> None:
        get_host = getattr(self.transport, "getHost", None)
        if get_host is not None:
            self.own_port = get_host().port

    def datagramReceived(self, datagram: bytes, addr: tuple) -> None:
        # The daemon's hot path: one frame, the checks that refuse anything
        # in helpers off it.  Order: loop guard, rate limit, transform,
        # amplification cap, loop breaker.  A callable kept in an attribute
        # is loaded, then called: Python 3.11 makes ``self.seconds`` a quick
        # load, where ``self.seconds()`` is a generic look-up every time.
        stats = self.stats
        stats.received += 1
        stats.bytes_in += len(datagram)
        try:
            host, port = addr[0], addr[1]
            source = self.sources.get(host)
            kind = source[0]
            if kind == BAD or port < self.lowest_port or port == self.own_port:
                stats.drop(self.guard_reason(kind, port))
                return
            exempt = kind == EXEMPT
            if not exempt and self.limiter is not None:
                # A prefix not in the table is on probation by address.
                seconds = self.seconds
                allowed = self.limiter.allow(source, seconds(), host)
                if not allowed:
                    stats.drop(RATE_LIMITED if allowed is False else NEW_PREFIX_LIMITED)
                    return
            transform = self.transform
            reply = transform(datagram)
            if not exempt and len(reply) > self.max_amplification * len(datagram):
                stats.drop(AMPLIFICATION)
                return
            if self.loops is not None and not self.loops.allow(host, datagram, reply):
                stats.drop(LOOP)
                return
            self.transport.write(reply, addr)
        except MessageLengthError:
            # Twisted's own udp.Port turns EMSGSIZE into this.
            stats.drop(Reason.TOO_LARGE)
        except OSError as error:
            stats.send_failed(error.errno)
        except Exception:
            self.internal_error()
        else:
            stats.replied += 1
            stats.bytes_out += len(reply)

    def guard_reason(self, kind: int, port: int) -> Reason:
        """Why the loop guard refuses a source of ``kind`` sending from ``port``."""
        if kind == BAD:
            return BAD_SOURCE
        if port < self.lowest_port:
            return LOW_SOURCE_PORT
        return LOOP  # our own port: another echo answering us, or ourselves

    def refuse(self, datagram: bytes, reason: Reason) -> None:
        """Count a datagram that the transport will not deliver, for ``reason``."""
        stats = self.stats
        stats.received += 1
        stats.bytes_in += len(datagram)
        stats.drop(reason)

    def send_failed(self, reply: bytes, errno: int | None) -> None:
        """A reply that ``transport.write`` took could not be sent after all.

        For a transport that sends later (the daemon's, a batch at a time).
        """
        stats = self.stats
        stats.replied -= 1
        stats.bytes_out -= len(reply)
        stats.send_failed(errno)

    def internal_error(self) -> None:
        """Count the exception being handled; log it, at most once a period."""
        self.stats.drop(Reason.INTERNAL_ERROR)
        self.log_error()

    def log_error(self) -> None:
        """Log the exception being handled, with its traceback, at most once a period."""
        if self.errors.due(self.clock.seconds()):
            self.log.failure(
                "udpupper could not handle a datagram (counted as internal_error; "
                "logged at most once per {period:.0f} s)",
                period=self.errors.period,
            )
