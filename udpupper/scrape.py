"""A small HTTP/1.1 server for Prometheus's scrapes, that nothing it is sent
can turn against the datagrams it shares a thread with.

The daemon's ``--metrics`` and the client's ``--serve-probes`` answer on it.
Prometheus sends a GET with a few headers and reads the answer; whatever
else a client does costs the process a bounded, small amount:

- GET and HEAD only (405 otherwise), exact paths (404); a request with a
  body (a Content-Length above 0, any Transfer-Encoding) is answered 413
  and the connection closed before a byte of the body is read; a request
  head of more than ``MAX_HEAD`` bytes, 431.  Nothing is written to disk.
- One request at a time per connection: the next is read only once the
  answer is written, and only one is handled per turn of the reactor (a
  thousand pipelined requests queue behind each other, and behind every
  datagram).  When the client does not read its answers, the transport's
  buffer fills and the connection stops being read (backpressure).
- At most ``max_connections`` at once: a new one closes the one that has
  been quiet longest among those not being answered and quiet for
  ``GRACE`` seconds at least (else the new one is closed), so a scraper
  that asks at once is served while idle connections are held.
- A connection closes when a request's head takes more than
  ``head_timeout`` seconds to come, when none comes for ``idle_timeout``,
  or when its client reads nothing for as long.
- HTTP basic authentication, when a check is given (over TLS, from a
  Twisted ``ssl:`` endpoint, the password is not sent in the clear).

A handler takes a :class:`Request` and returns a :class:`Response`, or a
Deferred of one; when the connection is lost first the Deferred is
cancelled.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IProtocolNegotiationFactory, IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from udpupper.httpwire import (
    MAX_HEAD,
    BadRequest,
    Check,
    Handler,
    Request,
    Response,
    credentials,
    has_body,
    parse_head,
    text,
)

MAX_CONNECTIONS = 64
HEAD_TIMEOUT = 10.0  # seconds for a request's head, from its first byte
IDLE_TIMEOUT = 60.0  # seconds with no request, or with the client not reading
GRACE = 1.0  # seconds a new or answered connection is not closed for a newer one
# Connections closed but not yet let go of (that happens on the reactor's
# next turn) that a burst of accepts may add to the cap before new ones are
# closed as they come: the descriptors HTTP holds are at most the cap and this.
SLACK = 8


@implementer(IPushProducer)
class ScrapeProtocol(protocol.Protocol):
    """One connection: requests in, one at a time; answers out."""

    factory: ScrapeFactory
    # A TCP (or TLS) transport: ITCPTransport, and a consumer and a producer
    # too (registerProducer, pauseProducing), which ITransport does not say.
    transport: Any

    def __init__(self) -> None:
        self.buffer = b""
        self.busy = False  # a request is being answered
        self.paused = False  # the transport's buffer is full: not reading
        self.closing = False
        self.pending: defer.Deferred | None = None
        self.timer = None
        self.next_turn = None
        self.last_active = 0.0

    # -- the connection ------------------------------------------------------

    def connectionMade(self) -> None:
        if not self.factory.admit(self):
            return
        self.transport.registerProducer(self, True)
        self.last_active = self.factory.clock.seconds()
        self.arm(self.factory.idle_timeout)

    def connectionLost(self, reason=None) -> None:
        self.closing = True
        self.factory.forget(self)
        self.factory.alive -= 1
        for call in (self.timer, self.next_turn):
            if call is not None and call.active():
                call.cancel()
        self.timer = self.next_turn = None
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.cancel()

    def close(self, abort: bool = False) -> None:
        if self.closing:
            return
        self.closing = True
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def arm(self, seconds: float | None) -> None:
        """Close the connection in ``seconds`` unless re-armed (None: never)."""
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None if seconds is None else self.factory.clock.callLater(seconds, self.expire)

    def expire(self) -> None:
        self.timer = None
        if self.buffer and not self.busy and not self.paused:
            self.answer(text(408, "the request took too long to come"), keep_alive=False)
        self.close(abort=self.paused)

    # -- the transport as a producer's consumer ---------------------------------

    def pauseProducing(self) -> None:
        """The client does not read what it is sent: stop reading from it."""
        self.paused = True
        self.transport.pauseProducing()
        if not self.busy:
            self.arm(self.factory.idle_timeout)

    def resumeProducing(self) -> None:
        self.paused = False
        if self.closing or self.busy:
            return
        self.arm(self.factory.head_timeout if self.buffer else self.factory.idle_timeout)
        self.read_on()

    def stopProducing(self) -> None:
        self.close(abort=True)

    # -- requests --------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        if not self.buffer and not self.busy:
            self.arm(self.factory.head_timeout)  # a request begins: its head's deadline
        self.buffer += data
        if not self.busy:
            self.handle_next()

    def read_on(self) -> None:
        """After an answer: the next request buffered, on the reactor's next
        turn, or more bytes from the client when none is complete."""
        if b"\r\n\r\n" in self.buffer or len(self.buffer) > MAX_HEAD:
            if self.next_turn is None:
                self.next_turn = self.factory.clock.callLater(0, self.turn)
        else:
            self.transport.resumeProducing()

    def turn(self) -> None:
        self.next_turn = None
        self.handle_next()

    def handle_next(self) -> None:
        if self.busy or self.paused or self.closing:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or end > MAX_HEAD:
            if len(self.buffer) > MAX_HEAD:
                self.answer(
                    text(431, f"a request's head is at most {MAX_HEAD} bytes"), keep_alive=False
                )
            return
        head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
        self.busy = True
        self.arm(None)  # the handler bounds its own time
        self.transport.pauseProducing()  # nothing more is read while answering
        try:
            request, keep_alive = parse_head(head)
        except BadRequest as error:
            self.answer(text(error.status, str(error)), keep_alive=False)
            return
        if has_body(request.headers):
            # Answered before a byte of it is read; the rest is never read.
            self.answer(text(413, "requests with a body are not taken"), keep_alive=False)
            return
        self.factory.requests += 1
        result = self.factory.dispatch(request)
        if isinstance(result, defer.Deferred):
            self.pending = result
            result.addCallbacks(
                self.answered,
                self.failed,
                callbackArgs=(request, keep_alive),
                errbackArgs=(request,),
            )
        else:
            self.answer(result, keep_alive, head_only=request.method == "HEAD")

    def answered(self, response: Response, request: Request, keep_alive: bool) -> None:
        self.pending = None
        if not self.closing:
            self.answer(response, keep_alive, head_only=request.method == "HEAD")

    def failed(self, failure, request: Request) -> None:
        self.pending = None
        if failure.check(defer.CancelledError):
            return None  # the connection went first
        self.factory.log.failure("udpupper could not answer {path}", failure, path=request.path)
        if not self.closing:
            self.answer(text(500, "internal error"), keep_alive=False)
        return None

    def answer(self, response: Response, keep_alive: bool, head_only: bool = False) -> None:
        """Write ``response``; then read on, or close."""
        if self.closing:
            return
        head = response.head(keep_alive)
        self.transport.write(head if head_only else head + response.body)
        self.busy = False
        self.last_active = self.factory.clock.seconds()
        if not keep_alive:
            self.close()
            return
        self.arm(self.factory.head_timeout if self.buffer else self.factory.idle_timeout)
        if not self.paused:
            self.read_on()


@implementer(IProtocolNegotiationFactory)
class ScrapeFactory(protocol.Factory):
    """Serves ``routes`` (path -> handler) on whatever endpoint listens with it.

    Over TLS it says, by ALPN, that it speaks HTTP/1.1: a client that offers
    ALPN (curl, Prometheus) gets no handshake at all from a factory that
    does not say.
    """

    protocol = ScrapeProtocol  # type: ignore[assignment]  # Factory's is loosely typed
    noisy = False
    log = Logger()

    def __init__(
        self,
        routes: dict[str, Handler],
        clock=None,
        max_connections: int = MAX_CONNECTIONS,
        head_timeout: float = HEAD_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        check: Check | None = None,
        realm: str = "udpupper",
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.routes = routes
        self.clock = clock
        self.max_connections = max(1, max_connections)
        self.head_timeout = head_timeout
        self.idle_timeout = idle_timeout
        self.check = check
        self.realm = realm
        self.open: list[ScrapeProtocol] = []
        self.alive = 0  # connections not let go of yet, closing ones included
        self.requests = 0
        self.evicted = 0

    def acceptableProtocols(self) -> list[bytes]:
        return [b"http/1.1"]

    def buildProtocol(self, addr):
        if self.alive >= self.max_connections + SLACK:
            self.evicted += 1
            return None  # closed at once by the listener: no descriptor kept
        self.alive += 1
        return super().buildProtocol(addr)

    def admit(self, connection: ScrapeProtocol) -> bool:
        """Take ``connection`` in, or close it (False); at the cap, close the
        quietest other one that is not being answered (held or idle, for
        GRACE at least) first."""
        if len(self.open) >= self.max_connections:
            quiet_since = self.clock.seconds() - GRACE
            idle = [
                other for other in self.open if not other.busy and other.last_active <= quiet_since
            ]
            victim = min(idle, key=lambda other: other.last_active) if idle else connection
            self.evicted += 1
            victim.close(abort=True)
            if victim is connection:
                return False
            self.forget(victim)
        self.open.append(connection)
        return True

    def forget(self, connection: ScrapeProtocol) -> None:
        if connection in self.open:
            self.open.remove(connection)

    def dispatch(self, request: Request) -> Response | defer.Deferred[Response]:
        if self.check is not None:
            given = credentials(request.headers)
            if given is None or not self.check(*given):
                return Response(
                    401,
                    b"authentication required\n",
                    headers={"WWW-Authenticate": f'Basic realm="{self.realm}"'},
                )
        handler = self.routes.get(request.path)
        if handler is None:
            return text(
                404, f"nothing at {request.path[:100]}; try " + " or ".join(sorted(self.routes))
            )
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"GET or HEAD only\n", headers={"Allow": "GET, HEAD"})
        try:
            return handler(request)
        except Exception:
            self.log.failure("udpupper could not answer {path}", path=request.path)
            return text(500, "internal error")
