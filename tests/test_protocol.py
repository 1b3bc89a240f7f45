"""The server protocol over a fake transport: no sockets, no real time."""

from __future__ import annotations

import errno

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.error import MessageLengthError
from twisted.internet.testing import FakeDatagramTransport
from twisted.trial import unittest

from udpupper.policy import Protections
from udpupper.protocol import UpperProtocol

CLIENT = ("192.0.2.7", 40000)  # neither exempt nor suspicious
LOCAL = ("127.0.0.1", 40000)  # exempt by default


class FailingTransport:
    """A transport whose every write fails the way ``fail_with`` says."""

    def __init__(self, fail_with: BaseException) -> None:
        self.fail_with = fail_with

    def write(self, datagram: bytes, addr) -> None:
        raise self.fail_with


def connected(transport=None, **options) -> tuple[UpperProtocol, object]:
    clock = options.pop("clock", task.Clock())
    protocol = UpperProtocol(clock=clock, protections=Protections(**options))
    transport = FakeDatagramTransport() if transport is None else transport
    protocol.makeConnection(transport)
    return protocol, transport


class AnswerTests(unittest.TestCase):
    def test_replies_upper_case_to_sender(self) -> None:
        protocol, transport = connected()
        protocol.datagramReceived(b"hello", CLIENT)
        self.assertEqual(transport.written, [(b"HELLO", CLIENT)])

    def test_empty_datagram_gets_empty_reply(self) -> None:
        protocol, transport = connected()
        protocol.datagramReceived(b"", CLIENT)
        self.assertEqual(transport.written, [(b"", CLIENT)])

    def test_invalid_utf8_round_trips(self) -> None:
        protocol, transport = connected()
        protocol.datagramReceived(b"\xffabc\xfe", ("2001:db8::1", 5353))
        self.assertEqual(transport.written, [(b"\xffABC\xfe", ("2001:db8::1", 5353))])

    def test_counts(self) -> None:
        protocol, _ = connected()
        protocol.datagramReceived(b"abc", CLIENT)
        protocol.datagramReceived("ß".encode(), CLIENT)
        stats = protocol.stats
        self.assertEqual((stats.received, stats.replied), (2, 2))
        self.assertEqual((stats.bytes_in, stats.bytes_out), (5, 5))
        self.assertEqual(stats.dropped, 0)

    @given(st.binary(max_size=4096))
    def test_any_bytes_get_the_transform(self, payload: bytes) -> None:
        protocol, transport = connected()
        protocol.datagramReceived(payload, LOCAL)
        expected = (
            payload.decode("utf-8", "surrogateescape")
            .upper()
            .encode("utf-8", "surrogateescape")
        )
        self.assertEqual(transport.written, [(expected, LOCAL)])

    @given(
        st.binary(max_size=2048),
        st.one_of(st.ip_addresses().map(str), st.just("::ffff:224.0.0.1")),
        st.integers(0, 65535),
        st.booleans(),
    )
    def test_nothing_a_stranger_sends_raises(self, payload, host, port, exempt):
        protocol, transport = connected(exempt=() if not exempt else Protections.exempt, rate=5)
        for _ in range(3):
            protocol.datagramReceived(payload, (host, port))
        stats = protocol.stats
        self.assertEqual(stats.received, 3)
        self.assertEqual(stats.replied + stats.dropped, 3)
        self.assertEqual(len(transport.written), stats.replied)


class LoopGuardTests(unittest.TestCase):
    def test_low_source_ports_get_no_reply(self) -> None:
        protocol, transport = connected()
        for port in (0, 7, 19, 53, 1023):
            protocol.datagramReceived(b"x", ("192.0.2.1", port))
        protocol.datagramReceived(b"x", ("192.0.2.1", 1024))
        self.assertEqual(transport.written, [(b"X", ("192.0.2.1", 1024))])
        self.assertEqual(dict(protocol.stats.drops), {"low_source_port": 5})

    def test_allow_low_ports_still_refuses_port_0(self) -> None:
        protocol, transport = connected(allow_low_ports=True)
        protocol.datagramReceived(b"x", ("192.0.2.1", 7))
        protocol.datagramReceived(b"x", ("192.0.2.1", 0))
        self.assertEqual(transport.written, [(b"X", ("192.0.2.1", 7))])

    def test_loopback_low_ports_are_refused_too(self) -> None:
        protocol, transport = connected()
        protocol.datagramReceived(b"x", ("127.0.0.1", 7))
        self.assertEqual(transport.written, [])

    def test_impossible_sources(self) -> None:
        protocol, transport = connected()
        for host in ("0.0.0.0", "224.0.0.251", "255.255.255.255", "ff02::1",
                     "::ffff:255.255.255.255"):
            protocol.datagramReceived(b"x", (host, 5353))
        self.assertEqual(transport.written, [])
        self.assertEqual(dict(protocol.stats.drops), {"bad_source": 5})


class RateLimitTests(unittest.TestCase):
    def test_limit_per_prefix_with_refill(self) -> None:
        clock = task.Clock()
        protocol, transport = connected(clock=clock, rate=10, burst=20)
        for _ in range(50):
            protocol.datagramReceived(b"a", ("192.0.2.1", 5000))
            protocol.datagramReceived(b"b", ("192.0.2.200", 5000))  # same /24
        self.assertEqual(len(transport.written), 20)
        self.assertEqual(protocol.stats.drops["rate_limited"], 80)
        protocol.datagramReceived(b"c", ("198.51.100.1", 5000))  # another /24
        self.assertEqual(transport.written[-1], (b"C", ("198.51.100.1", 5000)))
        clock.advance(1.0)
        for _ in range(50):
            protocol.datagramReceived(b"a", ("192.0.2.1", 5000))
        self.assertEqual(len(transport.written), 21 + 10)

    def test_exempt_sources_are_not_limited(self) -> None:
        protocol, transport = connected(rate=1, burst=1)
        for _ in range(100):
            protocol.datagramReceived(b"x", LOCAL)
            protocol.datagramReceived(b"x", ("::1", 5000))
        self.assertEqual(len(transport.written), 200)

    def test_rate_0_turns_it_off(self) -> None:
        protocol, transport = connected(rate=0)
        for _ in range(1000):
            protocol.datagramReceived(b"x", CLIENT)
        self.assertEqual(len(transport.written), 1000)

    def test_no_exemptions(self) -> None:
        protocol, transport = connected(rate=1, burst=2, exempt=())
        for _ in range(10):
            protocol.datagramReceived(b"x", LOCAL)
        self.assertEqual(len(transport.written), 2)


class AmplificationTests(unittest.TestCase):
    GROWS = "\u0390".encode()  # 2 bytes that upper-case to 6

    def test_capped_for_sources_not_exempt(self) -> None:
        protocol, transport = connected()
        protocol.datagramReceived(self.GROWS, CLIENT)
        protocol.datagramReceived("straße".encode(), CLIENT)  # 7 bytes to 7
        self.assertEqual(transport.written, [(b"STRASSE", CLIENT)])
        self.assertEqual(dict(protocol.stats.drops), {"amplification": 1})

    def test_exempt_sources_get_their_reply(self) -> None:
        protocol, transport = connected()
        protocol.datagramReceived(self.GROWS, LOCAL)
        self.assertEqual(transport.written, [("\u0399\u0308\u0301".encode(), LOCAL)])

    def test_factor(self) -> None:
        protocol, transport = connected(max_amplification=3.0)
        protocol.datagramReceived(self.GROWS, CLIENT)
        self.assertEqual(len(transport.written), 1)

    def test_refuse_counts(self) -> None:
        protocol, _ = connected()
        protocol.refuse(b"abc", "not_unicast_destination")
        self.assertEqual(
            (protocol.stats.received, protocol.stats.bytes_in, dict(protocol.stats.drops)),
            (1, 3, {"not_unicast_destination": 1}),
        )


class SendFailureTests(unittest.TestCase):
    """A reply that cannot be sent is counted under its reason, never raised."""

    def assert_dropped_as(self, failure: BaseException, reason: str) -> None:
        protocol, _ = connected(FailingTransport(failure))
        protocol.datagramReceived(b"x", CLIENT)
        stats = protocol.stats
        self.assertEqual((stats.received, stats.replied), (1, 0))
        self.assertEqual((stats.bytes_out, dict(stats.drops)), (0, {reason: 1}))

    def test_too_large(self) -> None:
        self.assert_dropped_as(OSError(errno.EMSGSIZE, "too long"), "too_large")

    def test_twisted_message_length_error(self) -> None:
        self.assert_dropped_as(MessageLengthError("too long"), "too_large")

    def test_send_buffer_full(self) -> None:
        self.assert_dropped_as(BlockingIOError(errno.EAGAIN, "again"), "send_buffer_full")
        self.assert_dropped_as(OSError(errno.ENOBUFS, "no buffers"), "send_buffer_full")

    def test_refused(self) -> None:
        self.assert_dropped_as(ConnectionRefusedError(errno.ECONNREFUSED, "no"), "refused")

    def test_other_error(self) -> None:
        self.assert_dropped_as(OSError(errno.EPERM, "firewall"), "send_error")
