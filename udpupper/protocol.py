"""The server protocol: answer each datagram to its sender, upper-cased."""

from __future__ import annotations

from errno import EAGAIN, ECONNREFUSED, EMSGSIZE, ENOBUFS, EWOULDBLOCK

from twisted.internet.error import MessageLengthError
from twisted.internet.protocol import DatagramProtocol

from udpupper.stats import Stats
from udpupper.transform import upper

# Why a reply could not be sent, by the errno that sendto() gave.
SEND_ERRORS = {
    EMSGSIZE: "too_large",
    EAGAIN: "send_buffer_full",
    EWOULDBLOCK: "send_buffer_full",
    ENOBUFS: "send_buffer_full",
    ECONNREFUSED: "refused",
}


class UpperProtocol(DatagramProtocol):
    """Upper-cases every datagram back to where it came from.

    Works over any datagram transport.  A reply that cannot be sent is
    counted under its reason in ``stats`` and never raises: what a stranger
    sends must not produce a traceback.
    """

    noisy = False

    def __init__(self, stats: Stats | None = None) -> None:
        self.stats = Stats() if stats is None else stats

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        stats = self.stats
        stats.received += 1
        stats.bytes_in += len(datagram)
        reply = upper(datagram)
        try:
            self.transport.write(reply, addr)
        except MessageLengthError:
            # Twisted's own udp.Port turns EMSGSIZE into this.
            stats.drop("too_large")
        except OSError as error:
            stats.drop(SEND_ERRORS.get(error.errno, "send_error"))
        else:
            stats.replied += 1
            stats.bytes_out += len(reply)
