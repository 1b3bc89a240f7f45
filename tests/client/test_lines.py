"""The client's standard input and output: lines in, replies out."""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from tests import tiers
from tests.client.test_protocol import Harness
from udpupper.client.lines import LineReader


@tiers.unit
class LineReaderTests(unittest.TestCase):
    def reader(self, **options) -> tuple[Harness, LineReader]:
        h = Harness(**options)
        reader = LineReader(h.client)
        reader.makeConnection(StringTransport())
        return h, reader

    def test_lf_and_crlf_and_last_line_without_newline(self) -> None:
        h, reader = self.reader()
        reader.dataReceived(b"one\r\ntw")
        reader.dataReceived(b"o\n\nthree")
        self.assertEqual(h.sent(), [b"one", b"two", b""])
        reader.readConnectionLost()
        self.assertEqual(h.sent(), [b"one", b"two", b"", b"three"])

    def test_overlong_line_is_counted_not_kept(self) -> None:
        h, reader = self.reader(max_datagram=10)
        reader.dataReceived(b"short\n" + b"x" * 8)
        reader.dataReceived(b"x" * 8)
        self.assertEqual(reader.buffer, b"")  # not kept in memory
        reader.dataReceived(b"x" * 4 + b"\r\nok\n")
        self.assertEqual(h.sent(), [b"short", b"ok"])
        self.assertEqual(
            h.errors,
            ["line 2: 20 bytes is more than the largest datagram (10 bytes); skipped"],
        )

    def test_line_of_exactly_the_maximum_with_crlf(self) -> None:
        h, reader = self.reader(max_datagram=10)
        reader.dataReceived(b"z" * 10 + b"\r")
        reader.dataReceived(b"\n")
        self.assertEqual((h.sent(), h.errors), ([b"z" * 10], []))

    def test_end_of_input_ends_the_client(self) -> None:
        h, reader = self.reader()
        reader.dataReceived(b"a\n")
        reader.readConnectionLost()
        self.assertEqual(h.status, [])
        h.answer(b"A")
        self.assertEqual(h.status, [0])

    def test_stdin_is_paused_while_the_queue_is_long(self) -> None:
        h, reader = self.reader(window=1)
        reader.dataReceived(b"x\n" * 10_001)
        self.assertEqual(reader.transport.producerState, "paused")
        for _ in range(9_001):
            h.answer(b"X")
        self.assertEqual(reader.transport.producerState, "producing")

    def test_output_closed_aborts(self) -> None:
        h, reader = self.reader()
        reader.dataReceived(b"a\n")
        reader.writeConnectionLost()
        self.assertEqual(h.status, [1])
        closed = []
        reader.close(then=lambda: closed.append(True))
        self.assertEqual(closed, [True])


@tiers.unit
class OutputClosedTests(unittest.TestCase):
    """Nobody reads the output any more, however Twisted says it."""

    def test_a_broken_stdout_reported_as_the_whole_connection_lost(self) -> None:
        """Twisted 22.10 reports a write that failed as connectionLost."""
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        h = Harness()
        reader = LineReader(h.client)
        reader.makeConnection(StringTransport())
        reader.dataReceived(b"a\n")
        reader.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(reader.output_lost)
        self.assertEqual(h.status, [1])

    def test_a_clean_close_is_not_a_lost_output(self) -> None:
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        h = Harness()
        reader = LineReader(h.client)
        reader.makeConnection(StringTransport())
        closed = []
        reader.close(then=lambda: closed.append(True))
        reader.connectionLost(Failure(ConnectionDone()))
        self.assertFalse(reader.output_lost)
        self.assertEqual(closed, [True])
