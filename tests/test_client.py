"""The client protocol and its stdin reader, with a fake clock and transport."""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.testing import FakeDatagramTransport, StringTransport
from twisted.trial import unittest

from udpupper.client import LineReader, UpperClient

SERVER = ("127.0.0.1", 12000)


class Harness:
    """A client wired to a fake clock, transport, stdout and stderr."""

    def __init__(self, **options) -> None:
        self.clock = task.Clock()
        self.out: list[bytes] = []
        self.errors: list[str] = []
        self.idle = 0
        self.status: list[int] = []
        self.client = UpperClient(
            SERVER,
            self.clock,
            write_out=self.out.append,
            report=self.errors.append,
            on_idle=self.count_idle,
            **options,
        )
        self.client.when_done = self.status.append
        self.transport = FakeDatagramTransport()
        self.client.makeConnection(self.transport)

    def count_idle(self) -> None:
        self.idle += 1

    def sent(self) -> list[bytes]:
        return [datagram for datagram, _ in self.transport.written]

    def answer(self, datagram: bytes, addr=SERVER) -> None:
        self.client.datagramReceived(datagram, addr)


class ClientTests(unittest.TestCase):
    def test_sends_and_prints_in_order(self) -> None:
        h = Harness()
        for line in (b"one", b"two", b"three"):
            h.client.send_line(line)
        self.assertEqual(h.sent(), [b"one", b"two", b"three"])
        self.assertEqual({addr for _, addr in h.transport.written}, {SERVER})
        h.answer(b"TWO")
        h.answer(b"THREE")
        self.assertEqual(h.out, [])  # line one still waits: order is kept
        h.answer(b"ONE")
        self.assertEqual(h.out, [b"ONE\n", b"TWO\n", b"THREE\n"])
        h.client.end_input()
        self.assertEqual(h.status, [0])

    def test_bytes_go_through_unchanged(self) -> None:
        h = Harness()
        h.client.send_line(b"\xff\xfeabc")
        self.assertEqual(h.sent(), [b"\xff\xfeabc"])
        h.answer(b"\xff\xfeABC")
        self.assertEqual(h.out, [b"\xff\xfeABC\n"])

    def test_window_limits_lines_in_flight(self) -> None:
        h = Harness(window=2)
        for line in (b"a", b"b", b"c"):
            h.client.send_line(line)
        self.assertEqual(h.sent(), [b"a", b"b"])
        h.answer(b"A")
        self.assertEqual(h.sent(), [b"a", b"b", b"c"])

    def test_retries_then_reports_and_goes_on(self) -> None:
        h = Harness(timeout=1.0, retries=2, window=1)
        h.client.send_line(b"lost")
        h.client.send_line(b"next")
        h.clock.advance(1.0)
        h.clock.advance(1.0)
        self.assertEqual(h.sent(), [b"lost"] * 3)
        self.assertEqual(h.errors, [])
        h.clock.advance(1.0)
        self.assertEqual(
            h.errors, ["line 1: no reply from 127.0.0.1:12000 after 3 tries"]
        )
        self.assertEqual(h.sent(), [b"lost"] * 3 + [b"next"])
        h.answer(b"NEXT")
        h.client.end_input()
        self.assertEqual((h.out, h.status), ([b"NEXT\n"], [1]))
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_reply_to_a_retry_is_printed_once(self) -> None:
        h = Harness(timeout=1.0, window=1)
        h.client.send_line(b"slow")
        h.clock.advance(1.0)  # asked again
        h.client.send_line(b"slow?")
        h.answer(b"SLOW")
        h.answer(b"SLOW")  # the answer to the first try, late
        h.answer(b"SLOW?")
        self.assertEqual(h.out, [b"SLOW\n", b"SLOW?\n"])

    def test_late_reply_is_never_the_answer_to_a_later_line(self) -> None:
        h = Harness(timeout=1.0, retries=0, window=1)
        h.client.send_line(b"first")
        h.clock.advance(1.0)  # given up
        h.client.send_line(b"second")
        h.answer(b"FIRST")  # too late for line 1, and not line 2's answer
        self.assertEqual(h.out, [])
        h.answer(b"SECOND")
        self.assertEqual(h.out, [b"SECOND\n"])

    def test_unexpected_reply_is_taken_for_the_oldest_line(self) -> None:
        """A server that upper-cases differently still gets its replies printed."""
        h = Harness()
        h.client.send_line(b"a")
        h.client.send_line(b"b")
        h.answer(b"something else")
        self.assertEqual(h.out, [b"something else\n"])

    def test_datagrams_from_elsewhere_are_ignored(self) -> None:
        h = Harness()
        h.client.send_line(b"x")
        h.answer(b"X", ("127.0.0.1", 12001))
        h.answer(b"X", ("127.0.0.2", 12000))
        self.assertEqual(h.out, [])
        h.answer(b"X")
        self.assertEqual(h.out, [b"X\n"])

    def test_line_too_long_is_reported_and_skipped(self) -> None:
        h = Harness(max_datagram=10)
        h.client.send_line(b"x" * 11)
        h.client.send_line(b"y" * 10)
        self.assertEqual(h.sent(), [b"y" * 10])
        self.assertEqual(
            h.errors,
            ["line 1: 11 bytes is more than the largest datagram (10 bytes); skipped"],
        )
        h.answer(b"Y" * 10)
        h.client.end_input()
        self.assertEqual(h.status, [1])

    def test_idle_when_everything_is_settled(self) -> None:
        h = Harness()
        h.client.start()
        self.assertEqual(h.idle, 1)
        h.client.send_line(b"q")
        self.assertEqual(h.idle, 1)
        h.answer(b"Q")
        self.assertEqual(h.idle, 2)

    def test_no_input_finishes_at_once(self) -> None:
        h = Harness()
        h.client.end_input()
        self.assertEqual(h.status, [0])

    def test_abort_cancels_timers(self) -> None:
        h = Harness()
        h.client.send_line(b"x")
        h.client.abort()
        self.assertEqual((h.status, h.clock.getDelayedCalls()), ([1], []))

    def test_full_send_buffer_is_retried_by_the_timer(self) -> None:
        h = Harness(timeout=1.0)

        class Full:
            def write(self, datagram, addr):
                raise BlockingIOError(11, "again")

        h.client.transport = Full()
        h.client.send_line(b"x")
        h.client.transport = h.transport
        h.clock.advance(1.0)
        self.assertEqual(h.sent(), [b"x"])


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
