"""The server protocol over a fake transport: no sockets, no real time."""

from __future__ import annotations

import errno

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.error import MessageLengthError
from twisted.internet.testing import FakeDatagramTransport
from twisted.trial import unittest

from udpupper.protocol import UpperProtocol

CLIENT = ("192.0.2.7", 40000)


class FailingTransport:
    """A transport whose every write fails the way ``fail_with`` says."""

    def __init__(self, fail_with: BaseException) -> None:
        self.fail_with = fail_with

    def write(self, datagram: bytes, addr) -> None:
        raise self.fail_with


def connected(transport=None) -> tuple[UpperProtocol, object]:
    protocol = UpperProtocol()
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
        protocol.datagramReceived(payload, CLIENT)
        expected = (
            payload.decode("utf-8", "surrogateescape")
            .upper()
            .encode("utf-8", "surrogateescape")
        )
        self.assertEqual(transport.written, [(expected, CLIENT)])


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
