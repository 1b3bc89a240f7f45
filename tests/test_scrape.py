"""The scrape server on a string transport and a fake clock: every rule a
client can break, and what it costs the process."""

from __future__ import annotations

import base64

from twisted.internet import defer, task
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from tests import tiers
from udpupper.scrape import (
    GRACE,
    HEAD_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_HEAD,
    SLACK,
    Response,
    ScrapeFactory,
    parse_head,
)

GET = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


class TurnClock(task.Clock):
    """task.Clock, with ``turn``: run what is due now, and not what that
    schedules for now in its turn, as the reactor does (its next turn comes
    after it has polled the sockets)."""

    def turn(self) -> None:
        due = [call for call in self.calls if call.getTime() <= self.seconds()]
        for call in due:
            self.calls.remove(call)
            call.called = 1
            call.func(*call.args, **call.kw)


class ClosingTransport(StringTransport):
    """Lets go of its connection on the clock's next turn, as a reactor's
    transport does once it is closed."""

    def __init__(self, clock) -> None:
        super().__init__()
        self.clock = clock

    def loseConnection(self) -> None:
        if not self.disconnecting:
            super().loseConnection()
            self.clock.callLater(0, self.protocol.connectionLost, None)

    def abortConnection(self) -> None:
        self.loseConnection()


class Connection:
    """One client's connection to ``factory``: what it was sent, as text.
    ``refused`` when the factory would not even build it (closed at accept)."""

    def __init__(self, factory: ScrapeFactory) -> None:
        self.transport = ClosingTransport(factory.clock)
        self.protocol = factory.buildProtocol(None)
        self.refused = self.protocol is None
        if self.refused:
            self.transport.disconnecting = True
            return
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def answers(self) -> list[str]:
        """The status lines written so far."""
        return [
            line
            for line in self.transport.value().decode("latin-1").split("\r\n")
            if line.startswith("HTTP/1.1 ")
        ]

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting or self.refused or self.protocol.closing


@tiers.unit
class ScrapeTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = TurnClock()
        self.served = 0
        self.factory = self.make_factory()

    def make_factory(self, **options) -> ScrapeFactory:
        return ScrapeFactory({"/metrics": self.metrics}, self.clock, **options)

    def metrics(self, request) -> Response:
        self.served += 1
        return Response(200, b"udpupper_up 1\n", "text/plain; version=0.0.4")


@tiers.unit
class RequestTests(ScrapeTestCase):
    def test_a_scrape(self) -> None:
        connection = Connection(self.factory)
        connection.send(GET)
        written = connection.transport.value()
        self.assertTrue(written.startswith(b"HTTP/1.1 200 OK\r\n"), written)
        self.assertIn(b"Content-Length: 14\r\n", written)
        self.assertTrue(written.endswith(b"\r\n\r\nudpupper_up 1\n"))
        self.assertFalse(connection.closed)  # kept alive for the next scrape

    def test_head_has_no_body(self) -> None:
        connection = Connection(self.factory)
        connection.send(b"HEAD /metrics HTTP/1.1\r\n\r\n")
        self.assertTrue(connection.transport.value().endswith(b"Content-Length: 14\r\n\r\n"))

    def test_http_1_0_and_connection_close_end_the_connection(self) -> None:
        for request in (
            b"GET /metrics HTTP/1.0\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n",
        ):
            connection = Connection(self.factory)
            connection.send(request)
            self.assertEqual(connection.answers(), ["HTTP/1.1 200 OK"])
            self.assertTrue(connection.closed)

    def test_what_is_refused(self) -> None:
        cases = {
            b"POST /metrics HTTP/1.1\r\n\r\n": "405",
            b"GET /other HTTP/1.1\r\n\r\n": "404",
            b"GET /metrics\r\n\r\n": "400",
            b"GARBAGE\r\n\r\n": "400",
            b"GET /metrics HTTP/1.1\r\nno colon\r\n\r\n": "400",
            b"GET /metrics HTTP/1.1\r\n folded: x\r\n\r\n": "400",
            b"GET /metrics?"
            + b"&".join(b"a%d=1" % n for n in range(40))
            + b" HTTP/1.1\r\n\r\n": "400",
            b"GET /metrics?x=%ff HTTP/1.1\r\n\r\n": "400",
        }
        for request, status in cases.items():
            connection = Connection(self.factory)
            connection.send(request)
            self.assertEqual(
                [answer.split()[1] for answer in connection.answers()], [status], request
            )
        self.assertEqual(self.served, 0)

    def test_a_body_is_refused_before_it_is_read(self) -> None:
        for header in (
            b"Content-Length: 536870912",
            b"Transfer-Encoding: chunked",
            b"Content-Length: x",
        ):
            connection = Connection(self.factory)
            connection.send(b"POST /metrics HTTP/1.1\r\n" + header + b"\r\n\r\n")
            self.assertEqual(connection.answers(), ["HTTP/1.1 413 Content Too Large"])
            self.assertTrue(connection.closed)
            connection.send(b"x" * 65536)  # what follows is not kept
            self.assertEqual(connection.protocol.buffer, b"")
        connection = Connection(self.factory)
        connection.send(b"GET /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(connection.answers(), ["HTTP/1.1 200 OK"])

    def test_a_head_too_large(self) -> None:
        connection = Connection(self.factory)
        connection.send(b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: " + b"p" * MAX_HEAD)
        self.assertEqual(connection.answers(), ["HTTP/1.1 431 Request Header Fields Too Large"])
        self.assertTrue(connection.closed)

    def test_headers_as_the_handler_sees_them(self) -> None:
        request, keep_alive = parse_head(
            b"GET /probe?target=127.0.0.1%3A9&count=3 HTTP/1.1\r\n"
            b"X-Prometheus-Scrape-Timeout-Seconds: 10\r\nAccept: a\r\naccept: b"
        )
        self.assertEqual(request.query, {"target": ["127.0.0.1:9"], "count": ["3"]})
        self.assertEqual(request.headers["x-prometheus-scrape-timeout-seconds"], "10")
        self.assertEqual(request.headers["accept"], "a, b")
        self.assertTrue(keep_alive)


@tiers.unit
class PipelineTests(ScrapeTestCase):
    def test_one_request_a_turn(self) -> None:
        """A thousand pipelined requests: one answered as they come, then
        one each time the reactor turns, so datagrams go between them."""
        connection = Connection(self.factory)
        connection.send(GET * 1000)
        self.assertEqual(self.served, 1)
        self.assertEqual(connection.transport.producerState, "paused")  # not reading
        for turn in range(1, 1000):
            self.clock.turn()
            self.assertEqual(self.served, 1 + turn)
        self.clock.turn()
        self.assertEqual(self.served, 1000)
        self.assertEqual(connection.transport.producerState, "producing")  # reading again

    def test_a_client_that_does_not_read_is_not_read(self) -> None:
        connection = Connection(self.factory)
        connection.send(GET * 100)
        connection.protocol.pauseProducing()  # the transport's buffer is full
        for _ in range(10):
            self.clock.turn()
        self.assertEqual(self.served, 1)
        self.assertEqual(connection.transport.producerState, "paused")
        connection.protocol.resumeProducing()  # it read: on again
        self.clock.turn()
        self.assertEqual(self.served, 2)
        connection.protocol.pauseProducing()
        self.clock.advance(IDLE_TIMEOUT)  # and never again: dropped
        self.assertTrue(connection.transport.disconnecting or connection.protocol.closing)

    def test_what_is_buffered_is_bounded(self) -> None:
        """While requests wait, the connection is not read: what it holds is
        what came in one read at most."""
        connection = Connection(self.factory)
        connection.send(GET * 10)
        self.assertEqual(connection.transport.producerState, "paused")
        self.clock.turn()
        self.assertEqual(connection.transport.producerState, "paused")


@tiers.unit
class TimeoutTests(ScrapeTestCase):
    def test_idle_connections_close(self) -> None:
        connection = Connection(self.factory)
        self.clock.advance(IDLE_TIMEOUT - 1)
        self.assertFalse(connection.closed)
        connection.send(GET)  # a scrape: idle from now
        self.clock.advance(IDLE_TIMEOUT - 1)
        self.assertFalse(connection.closed)
        self.clock.advance(1)
        self.assertTrue(connection.closed)

    def test_a_request_that_trickles_in_is_cut_off(self) -> None:
        """A byte every 5 s keeps no connection open past the head's deadline."""
        connection = Connection(self.factory)
        for byte in GET[:-4]:
            if connection.closed:
                break
            connection.send(bytes([byte]))
            self.clock.advance(5)
        self.assertTrue(connection.closed)
        self.assertEqual(connection.answers(), ["HTTP/1.1 408 Request Timeout"])
        self.assertLessEqual(self.clock.seconds(), HEAD_TIMEOUT + 5)


@tiers.unit
class ConnectionCapTests(ScrapeTestCase):
    def test_the_quietest_gives_way(self) -> None:
        factory = self.make_factory(max_connections=3)
        held = [Connection(factory) for _ in range(3)]
        for _n, connection in enumerate(held):
            self.clock.advance(1)
            connection.send(GET)  # the first is quietest, the last the latest
        self.clock.advance(GRACE)
        newcomer = Connection(factory)
        self.assertTrue(held[0].closed)
        self.assertFalse(any(connection.closed for connection in held[1:]))
        newcomer.send(GET)
        self.assertEqual(newcomer.answers(), ["HTTP/1.1 200 OK"])
        self.assertEqual((len(factory.open), factory.evicted), (3, 1))

    def test_a_scrape_gets_in_past_a_thousand_held_connections(self) -> None:
        factory = self.make_factory(max_connections=64)
        for n in range(1100):
            Connection(factory)
            if n % 50 == 0:
                self.clock.turn()  # accepted 50 at a time
            self.assertLessEqual(factory.alive, 64 + SLACK)  # the descriptors held
        self.clock.advance(GRACE)
        scraper = Connection(factory)
        scraper.send(GET)
        self.assertEqual(scraper.answers(), ["HTTP/1.1 200 OK"])
        self.assertEqual(len(factory.open), 64)

    def test_a_storm_of_new_connections_closes_newcomers(self) -> None:
        """Within their first GRACE, connections are not closed for newer
        ones: a scraper's, just accepted, is not lost to a storm behind it."""
        factory = self.make_factory(max_connections=3)
        first = [Connection(factory) for _ in range(3)]
        storm = [Connection(factory) for _ in range(10)]
        self.assertFalse(any(connection.closed for connection in first))
        self.assertTrue(all(connection.closed for connection in storm))
        first[-1].send(GET)
        self.assertEqual(first[-1].answers(), ["HTTP/1.1 200 OK"])

    def test_connections_being_answered_are_not_closed(self) -> None:
        waiting: list[defer.Deferred] = []
        factory = ScrapeFactory(
            {"/slow": lambda request: waiting.append(defer.Deferred()) or waiting[-1]},
            self.clock,
            max_connections=2,
        )
        busy = [Connection(factory) for _ in range(2)]
        for connection in busy:
            connection.send(b"GET /slow HTTP/1.1\r\n\r\n")
        newcomer = Connection(factory)
        self.assertTrue(newcomer.closed)
        self.assertFalse(any(connection.closed for connection in busy))
        waiting[0].callback(Response(200, b"done\n"))
        self.assertEqual(busy[0].answers(), ["HTTP/1.1 200 OK"])


@tiers.unit
class DeferredTests(ScrapeTestCase):
    def test_a_lost_connection_cancels_what_it_waited_for(self) -> None:
        cancelled = []
        factory = ScrapeFactory(
            {"/slow": lambda request: defer.Deferred(cancelled.append)}, self.clock
        )
        connection = Connection(factory)
        connection.send(b"GET /slow HTTP/1.1\r\n\r\n")
        connection.protocol.connectionLost(None)
        self.assertEqual(len(cancelled), 1)

    def test_a_handler_that_fails(self) -> None:
        def broken(request):
            raise RuntimeError("boom")

        factory = ScrapeFactory(
            {"/broken": broken, "/later": lambda request: defer.fail(RuntimeError("later"))},
            self.clock,
        )
        for path in (b"/broken", b"/later"):
            connection = Connection(factory)
            connection.send(b"GET " + path + b" HTTP/1.1\r\n\r\n")
            self.assertEqual(connection.answers(), ["HTTP/1.1 500 Internal Server Error"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)


@tiers.unit
class AuthTests(ScrapeTestCase):
    def test_basic_auth(self) -> None:
        factory = self.make_factory(
            check=lambda user, password: (user, password) == ("prometheus", "s3cret:x")
        )

        def ask(authorization: bytes | None) -> str:
            connection = Connection(factory)
            header = b"Authorization: " + authorization + b"\r\n" if authorization else b""
            connection.send(b"GET /metrics HTTP/1.1\r\n" + header + b"\r\n")
            return connection.answers()[0]

        token = base64.b64encode(b"prometheus:s3cret:x")
        self.assertEqual(ask(b"Basic " + token), "HTTP/1.1 200 OK")
        for wrong in (
            None,
            b"Basic " + base64.b64encode(b"prometheus:nope"),
            b"Basic !!!",
            b"Bearer " + token,
            b"Basic " + base64.b64encode(b"no colon"),
        ):
            self.assertEqual(ask(wrong), "HTTP/1.1 401 Unauthorized", wrong)
        connection = Connection(factory)
        connection.send(GET)
        self.assertIn(b'WWW-Authenticate: Basic realm="udpupper"', connection.transport.value())
