"""Standard input and output for the client: lines in, replies out.

:class:`LineReader` reads stdin line by line for :class:`UpperClient`
and writes what it prints; a closed output is output lost, not a traceback.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.stdio import StandardIO
from zope.interface import implementer

from udpupper.client.protocol import UpperClient


@implementer(IHalfCloseableProtocol)
class LineReader(Protocol):
    """Reads stdin line by line for the client and writes its output.

    Lines go to the client without their LF or CRLF.  A line too long for a
    datagram is not kept in memory: its length is counted until its end, and
    the client reports it.
    """

    transport: StandardIO  # stdin and stdout, set by the reactor

    def __init__(self, client: UpperClient) -> None:
        self.client = client
        self.buffer = b""
        self.overlong = 0  # bytes so far of a line too long to send
        self.output_lost = False
        self.when_closed: Callable[[], object] | None = None

    def connectionMade(self) -> None:
        self.client.on_busy = self.transport.pauseProducing
        self.client.on_drain = self.transport.resumeProducing

    def dataReceived(self, data: bytes) -> None:
        *lines, rest = (self.buffer + data).split(b"\n")
        for line in lines:
            if self.overlong:
                self.client.skip_line(self.overlong + len(line.removesuffix(b"\r")))
                self.overlong = 0
            else:
                self.client.send_line(line.removesuffix(b"\r"))
        # One byte of slack: a CR may end a line of exactly the maximum.
        if self.overlong or len(rest) > self.client.max_datagram + 1:
            self.overlong += len(rest)
            rest = b""
        self.buffer = rest

    def readConnectionLost(self) -> None:
        """End of input: a last line without a newline still counts."""
        if self.buffer or self.overlong:
            self.dataReceived(b"\n")
        self.client.end_input()

    def writeConnectionLost(self) -> None:
        """Nobody reads our output any more: stop sending."""
        self.output_lost = True
        self.client.abort()

    def close(self, then: Callable[[], object]) -> None:
        """Flush what is left to write, close stdin and stdout, then ``then()``."""
        if self.output_lost:
            then()
            return
        self.when_closed = then
        self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        """Stdin and stdout are closed.  Not cleanly (a write failed): nobody
        reads our output, whichever way Twisted said it (22.10 says so here,
        not in ``writeConnectionLost``)."""
        if reason is not None and not reason.check(ConnectionDone):
            self.output_lost = True
        self.client.abort()
        if self.when_closed is not None:
            then, self.when_closed = self.when_closed, None
            then()
