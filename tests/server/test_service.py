"""The service over real sockets on loopback, in this process's reactor."""

from __future__ import annotations

import socket

from twisted.internet import defer, reactor, task, threads
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from tests import tiers
from tests.support import (
    NO_IPV6,
    CapturedStderr,
    can_bind_low_ports,
    exchange,
    exchange_in_thread,
)
from udpupper import kernel
from udpupper.server import ctypes_batch
from udpupper.server import port as port_module
from udpupper.server.port import ServerPort
from udpupper.server.protections.policy import Protections, parse_networks
from udpupper.server.service import UpperService
from udpupper.server.stats import Reason


@tiers.loopback
class ServiceTests(unittest.TestCase):
    def start(self, interface: str | None = None) -> int:
        service = UpperService(0, interface, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.service = service
        return service.port.getHost().port

    @defer.inlineCallbacks
    def test_ipv4(self):
        port = self.start("127.0.0.1")
        reply, source = yield exchange_in_thread("127.0.0.1", port, b"hello")
        self.assertEqual((reply, source), (b"HELLO", ("127.0.0.1", port)))

    @defer.inlineCallbacks
    def test_default_bind_serves_ipv4_and_ipv6(self):
        port = self.start()
        reply, _ = yield exchange_in_thread("127.0.0.1", port, b"four")
        self.assertEqual(reply, b"FOUR")
        if NO_IPV6:
            raise unittest.SkipTest(NO_IPV6)
        reply, _ = yield exchange_in_thread("::1", port, b"six")
        self.assertEqual(reply, b"SIX")

    @defer.inlineCallbacks
    def test_ipv6_loopback(self):
        if NO_IPV6:
            raise unittest.SkipTest(NO_IPV6)
        port = self.start("::1")
        reply, source = yield exchange_in_thread("::1", port, b"x" * 65_527)
        self.assertEqual(reply, b"X" * 65_527)
        self.assertEqual(source[:2], ("::1", port))

    @defer.inlineCallbacks
    def test_largest_ipv4_datagram_arrives_whole(self):
        port = self.start("127.0.0.1")
        reply, _ = yield exchange_in_thread("127.0.0.1", port, b"a" * 65_507)
        self.assertEqual(reply, b"A" * 65_507)

    @defer.inlineCallbacks
    def test_mixed_scripts_10000_bytes(self):
        port = self.start("127.0.0.1")
        text = ("Grüße ελληνικά кириллица 日本語 abc ß " * 400).encode()[:10_000]
        text = text.decode("utf-8", "ignore").encode()
        reply, _ = yield exchange_in_thread("127.0.0.1", port, text)
        self.assertEqual(reply, text.decode().upper().encode())

    @defer.inlineCallbacks
    def test_invalid_utf8_then_keeps_serving(self):
        port = self.start("127.0.0.1")
        reply, _ = yield exchange_in_thread("127.0.0.1", port, b"\xff\xc3(abc")
        self.assertEqual(reply, b"\xff\xc3(ABC")
        reply, _ = yield exchange_in_thread("127.0.0.1", port, b"still here")
        self.assertEqual(reply, b"STILL HERE")

    @defer.inlineCallbacks
    def test_reply_too_large_is_dropped_and_counted(self):
        port = self.start("127.0.0.1")
        # 30,000 x U+0390 is 60,000 bytes; upper-cased it is 180,000.
        with self.assertRaises(TimeoutError):
            yield exchange_in_thread("127.0.0.1", port, "\u0390".encode() * 30_000, 0.5)
        reply, _ = yield exchange_in_thread("127.0.0.1", port, b"next")
        self.assertEqual(reply, b"NEXT")
        stats = self.service.stats
        self.assertEqual(stats.counted(), {Reason.TOO_LARGE: 1})
        self.assertEqual((stats.received, stats.replied), (2, 1))

    def burst(self, port: int, payloads: list[bytes], replies: int) -> list[bytes]:
        """Send ``payloads`` back to back (one batch, as a rule); read replies."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.settimeout(5)
            for payload in payloads:
                peer.sendto(payload, ("127.0.0.1", port))
            return [peer.recv(65_535) for _ in range(replies)]

    @defer.inlineCallbacks
    def test_an_exception_in_the_middle_of_a_batch(self):
        port = self.start("127.0.0.1")

        def transform(payload: bytes) -> bytes:
            if payload == b"boom":
                raise RuntimeError("a bug in the transform")
            return payload.upper()

        self.service.protocol.transform = transform
        replies = yield threads.deferToThread(
            self.burst, port, [b"a", b"boom", b"b", b"boom", b"c"], 3
        )
        self.assertEqual(replies, [b"A", b"B", b"C"])
        reply, _ = yield exchange_in_thread("127.0.0.1", port, b"later")
        self.assertEqual(reply, b"LATER")
        stats = self.service.stats
        self.assertEqual(stats.counted(), {Reason.INTERNAL_ERROR: 2})
        self.assertEqual((stats.received, stats.replied), (6, 4))
        self.assertTrue(self.service.port.connected)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)  # once a period

    @defer.inlineCallbacks
    def test_a_protocol_that_raises_does_not_close_the_port(self):
        port = self.start("127.0.0.1")
        protocol = self.service.protocol
        answer = protocol.datagramReceived

        def received(datagram, addr):
            if datagram == b"boom":
                raise RuntimeError("a bug outside the protocol's own guard")
            answer(datagram, addr)

        protocol.datagramReceived = received
        replies = yield threads.deferToThread(self.burst, port, [b"boom", b"after"], 1)
        self.assertEqual(replies, [b"AFTER"])
        self.assertEqual(protocol.stats.drops[Reason.INTERNAL_ERROR], 1)
        self.flushLoggedErrors(RuntimeError)

    @defer.inlineCallbacks
    def test_a_send_that_raises_loses_only_its_batch_counted(self):
        port = self.start("127.0.0.1")
        batch = self.service.port.batch
        if not hasattr(batch, "send_batch"):
            raise unittest.SkipTest("the C helper's send: with it only")

        class Failing:
            BATCH, recv_batch = batch.BATCH, batch.recv_batch
            failures = 1

            def send_batch(self, fd, replies):
                if self.failures:
                    self.failures -= 1
                    raise RuntimeError("a bug in the send")
                return batch.send_batch(fd, replies)

        self.service.port.batch = Failing()
        with self.assertRaises(TimeoutError):
            yield exchange_in_thread("127.0.0.1", port, b"lost", 0.5)
        reply, _ = yield exchange_in_thread("127.0.0.1", port, b"next")
        self.assertEqual(reply, b"NEXT")
        stats = self.service.stats
        self.assertEqual((stats.received, stats.replied, stats.bytes_out), (2, 1, 4))
        self.assertEqual(stats.counted(), {Reason.SEND_ERROR: 1})
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    @defer.inlineCallbacks
    def test_a_read_that_fails_pauses_instead_of_spinning(self):
        """No memory for the datagram, say: it stays queued, and the reactor
        would call doRead again at once.  The port pauses, then answers it."""
        port = self.start("127.0.0.1")
        server = self.service.port
        name = "_read_batches" if server.batch is not None else "_read_one_by_one"
        read = getattr(server, name)
        calls = []

        def failing() -> None:
            calls.append(reactor.seconds())
            if len(calls) <= 2:
                raise MemoryError
            read()

        setattr(server, name, failing)
        reply, _ = yield exchange_in_thread("127.0.0.1", port, b"late but whole", 5)
        self.assertEqual(reply, b"LATE BUT WHOLE")
        self.assertEqual(len(calls), 3, "a read that fails is retried after a pause")
        self.assertGreaterEqual(calls[2] - calls[0], 2 * port_module.READ_PAUSE * 0.9)
        stats = self.service.stats
        self.assertEqual((stats.received, stats.replied, stats.dropped), (1, 1, 0))
        self.assertEqual(len(self.flushLoggedErrors(MemoryError)), 1)  # once a period

    def test_no_memory_for_the_buffers_fails_the_start_in_one_line(self):
        class NoMemory:
            BATCH = 64

            def reserve(self) -> None:
                raise MemoryError

        self.patch(ServerPort, "batch", NoMemory())
        service = UpperService(0, "127.0.0.1", reactor)
        with CapturedStderr() as stderr, self.assertRaises(SystemExit) as raised:
            service.startService()
        self.assertEqual(raised.exception.code, 1)
        self.assertEqual(
            stderr.text,
            "udpupper: not enough memory for the receive buffers (4 MiB); give the "
            "daemon more memory, or a smaller --rate-table\n",
        )

    @defer.inlineCallbacks
    def test_no_destination_information_no_reply(self):
        """Fail closed: on a wildcard bind, a datagram that comes without
        its destination (pktinfo turned off under us) is not answered."""
        port = self.start()
        skt = self.service.port.socket
        skt.setsockopt(socket.IPPROTO_IP, kernel.IP_PKTINFO, 0)
        skt.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 0)
        with self.assertRaises(TimeoutError):
            yield exchange_in_thread("127.0.0.1", port, b"where to?", 0.5)
        self.assertEqual(self.service.stats.counted(), {Reason.NO_DESTINATION: 1})

    def test_port_in_use_exits_with_one_line(self):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            port = taken.getsockname()[1]
            service = UpperService(port, "127.0.0.1", reactor)
            with CapturedStderr() as stderr, self.assertRaises(SystemExit) as raised:
                service.startService()
        self.assertEqual(raised.exception.code, 1)
        self.assertEqual(
            stderr.text,
            f"udpupper: cannot listen on 127.0.0.1:{port}/udp: Address already in use\n",
        )

    @defer.inlineCallbacks
    def test_listening_line_names_the_bound_port(self):
        seen: list[str] = []

        def observer(event):
            if "endpoint" in event:
                seen.append(event["endpoint"])

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        port = self.start("127.0.0.1")
        yield task.deferLater(reactor, 0, lambda: None)  # the reactor runs
        self.assertEqual(seen, [f"127.0.0.1:{port}/udp"])

    def test_blocking_helper_times_out(self):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))
            with self.assertRaises(TimeoutError):
                exchange("127.0.0.1", silent.getsockname()[1], b"x", timeout=0.2)


@tiers.loopback
class ProtectionTests(unittest.TestCase):
    """The protections over real sockets: 127.0.0.0/8 is all local on Linux,
    so 127.0.0.1 and 127.1.0.1 are two sources in two /24 prefixes."""

    def start(self, rcvbuf: int = 0, **options) -> UpperService:
        service = UpperService(0, None, reactor, Protections(**options), rcvbuf)
        service.startService()
        self.addCleanup(service.stopService)
        self.port = service.port.getHost().port
        return service

    def ask(self, payload: bytes = b"x", source: str = "127.0.0.1", **kwargs):
        kwargs.setdefault("timeout", 2.0)
        return exchange_in_thread("127.0.0.1", self.port, payload, source=source, **kwargs)

    @defer.inlineCallbacks
    def test_reply_comes_from_the_address_asked(self):
        self.start()
        for destination in ("127.0.0.1", "127.1.0.1", "127.0.0.53"):
            reply, source = yield exchange_in_thread(destination, self.port, b"where")
            self.assertEqual((reply, source), (b"WHERE", (destination, self.port)))

    @defer.inlineCallbacks
    def test_low_source_port_refused(self):
        if not can_bind_low_ports():
            raise unittest.SkipTest("binding a port below 1024 needs root")
        service = self.start()
        with self.assertRaises(TimeoutError):
            yield self.ask(source_port=1000, timeout=0.5)
        self.assertEqual(service.stats.counted(), {Reason.LOW_SOURCE_PORT: 1})

    @defer.inlineCallbacks
    def test_allow_low_ports(self):
        if not can_bind_low_ports():
            raise unittest.SkipTest("binding a port below 1024 needs root")
        self.start(allow_low_ports=True)
        reply, _ = yield self.ask(b"low", source_port=1001)
        self.assertEqual(reply, b"LOW")

    @defer.inlineCallbacks
    def test_rate_limit_without_exemptions(self):
        service = self.start(exempt=(), rate=1, burst=3)
        answered = 0
        for _ in range(6):
            try:
                yield self.ask(timeout=0.3)
                answered += 1
            except TimeoutError:
                pass
        self.assertIn(answered, (3, 4))  # the burst, plus one refilled token at most
        # Another /24 prefix still gets full service.
        reply, _ = yield self.ask(b"other", source="127.1.0.1")
        self.assertEqual(reply, b"OTHER")
        self.assertEqual(service.stats.drops[Reason.RATE_LIMITED], 6 - answered)

    @defer.inlineCallbacks
    def test_amplification_cap(self):
        grows = "\u0390".encode()  # 2 bytes, 6 upper-cased
        service = self.start(exempt=tuple(parse_networks("127.0.0.1/32")))
        reply, _ = yield self.ask(grows)  # exempt: answered
        self.assertEqual(reply, "\u0390".upper().encode())
        with self.assertRaises(TimeoutError):
            yield self.ask(grows, source="127.1.0.1", timeout=0.5)
        self.assertEqual(service.stats.counted(), {Reason.AMPLIFICATION: 1})

    @defer.inlineCallbacks
    def test_a_smaller_receive_buffer_is_said_once(self):
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.patch(kernel, "set_receive_buffer", lambda skt, size: 212_992)
        self.start(rcvbuf=4 << 20)
        yield task.deferLater(reactor, 0, lambda: None)  # the reactor runs
        said = [event for event in events if "granted" in event]
        self.assertEqual(len(said), 1)
        self.assertEqual((said[0]["requested"], said[0]["granted"]), (4 << 20, 212_992))

    @defer.inlineCallbacks
    def test_receive_buffer(self):
        service = self.start(rcvbuf=1 << 20)
        self.assertGreater(service.port.rcvbuf_granted, 0)
        reply, _ = yield self.ask(b"ok")
        self.assertEqual(reply, b"OK")


@tiers.loopback
class WithoutHelperTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_says_so_once_at_start(self):
        """What runs without its helper, and why, in one line at start."""
        from udpupper import helpers

        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.patch(helpers, "missing", {"batch": "not built", "ratelimit": "no compiler"})
        service = UpperService(0, "127.0.0.1", reactor)
        service.startService()
        self.addCleanup(service.stopService)
        yield task.deferLater(reactor, 0, lambda: None)  # the reactor runs
        said = [
            event["line"] for event in events if "without its C helpers" in event.get("line", "")
        ]
        self.assertEqual(len(said), 1)
        self.assertIn("udpupper._batch (not built)", said[0])
        self.assertIn("udpupper.server.protections._ratelimit (no compiler)", said[0])
        reply = yield exchange_in_thread("127.0.0.1", service.port.getHost().port, b"still answers")
        self.assertEqual(reply[0], b"STILL ANSWERS")

    @defer.inlineCallbacks
    def test_nothing_said_with_every_helper(self):
        from udpupper import helpers

        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.patch(helpers, "missing", {})
        service = UpperService(0, "127.0.0.1", reactor)
        service.startService()
        self.addCleanup(service.stopService)
        yield task.deferLater(reactor, 0, lambda: None)
        self.assertEqual([e for e in events if "without its C" in e.get("line", "")], [])


class OneByOneMixin:
    """The same tests without the C helper and without ctypes: one system
    call per datagram."""

    def setUp(self) -> None:
        self.patch(ServerPort, "batch", None)


@tiers.loopback
class OneByOneServiceTests(OneByOneMixin, ServiceTests):
    pass


@tiers.loopback
class OneByOneProtectionTests(OneByOneMixin, ProtectionTests):
    pass


CTYPES = ctypes_batch.load()


class CtypesMixin:
    """The same tests without the C helper: batches read through ctypes."""

    skip = None if CTYPES is not None else "no recvmmsg through ctypes here"

    def setUp(self) -> None:
        self.patch(ServerPort, "batch", CTYPES)


@tiers.loopback
class CtypesServiceTests(CtypesMixin, ServiceTests):
    pass


@tiers.loopback
class CtypesProtectionTests(CtypesMixin, ProtectionTests):
    pass
