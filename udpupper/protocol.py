"""The server protocol: answer each datagram to its sender, upper-cased.

One datagram meets, in order: the loop guard, the rate limit, the transform
and the amplification cap; whatever is not answered is counted by reason.
"""

from __future__ import annotations

from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol

from udpupper.policy import Protections, Sources, lowest_port
from udpupper.ratelimit import RateLimiter
from udpupper.stats import Stats
from udpupper.transform import upper


class UpperProtocol(DatagramProtocol):
    """Upper-cases every datagram back to where it came from, safely.

    Applies ``protections`` (the daemon's defaults unless told otherwise) on
    ``clock``'s time.  Works over any datagram transport; a reply that
    cannot be sent is counted, never raised.
    """

    noisy = False

    def __init__(
        self,
        stats: Stats | None = None,
        clock: IReactorTime | None = None,
        protections: Protections = Protections(),
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.stats = Stats() if stats is None else stats
        self.clock = clock
        self.sources = Sources(protections.exempt)
        rate = protections.rate
        self.limiter = (
            RateLimiter(
                rate,
                2 * rate if protections.burst is None else protections.burst,
                protections.rate_table,
            )
            if rate
            else None
        )
        self.max_amplification = protections.max_amplification
        self.lowest_port = lowest_port(protections.allow_low_ports)

    def answer(self, datagram: bytes, host: str, port: int) -> bytes | None:
        """The reply owed to ``datagram`` from ``host``/``port``, or None.

        Counts the datagram, and the reason when it gets no reply.
        """
        stats = self.stats
        stats.received += 1
        stats.bytes_in += len(datagram)
        source = self.sources.get(host)
        if source.bad:
            stats.drop("bad_source")
            return None
        if port < self.lowest_port:
            stats.drop("low_source_port")
            return None
        if source.exempt:
            return upper(datagram)
        limiter = self.limiter
        if limiter is not None and not limiter.allow(source.prefix, self.clock.seconds()):
            stats.drop("rate_limited")
            return None
        reply = upper(datagram)
        if len(reply) > self.max_amplification * len(datagram):
            stats.drop("amplification")
            return None
        return reply

    def refuse(self, datagram: bytes, reason: str) -> None:
        """Count a datagram the port will not answer, for ``reason``."""
        stats = self.stats
        stats.received += 1
        stats.bytes_in += len(datagram)
        stats.drop(reason)

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        reply = self.answer(datagram, addr[0], addr[1])
        if reply is None:
            return
        try:
            self.transport.write(reply, addr)
        except MessageLengthError:
            # Twisted's own udp.Port turns EMSGSIZE into this.
            self.stats.drop("too_large")
        except OSError as error:
            self.stats.send_failed(error.errno)
        else:
            self.stats.replied += 1
            self.stats.bytes_out += len(reply)
