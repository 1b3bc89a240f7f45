"""The client protocol and its stdin reader, with a fake clock and transport."""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.testing import FakeDatagramTransport
from twisted.trial import unittest

from tests import tiers
from udpupper.client.protocol import UpperClient

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


@tiers.unit
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
        self.assertEqual(h.errors, ["line 1: no reply from 127.0.0.1:12000 after 3 tries"])
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

    def test_a_reply_no_line_expects_is_reported_never_printed(self) -> None:
        """A server that upper-cases differently: nothing printed as an answer,
        the first odd reply said, the lines reported unanswered, exit 1."""
        h = Harness(timeout=1.0, retries=0)
        h.client.send_line(b"a")
        h.client.send_line(b"b")
        h.answer(b"something else")
        h.answer(b"and more")
        self.assertEqual(h.out, [])
        self.assertEqual(len(h.errors), 1)
        self.assertIn("a reply matched no line sent (b'something else')", h.errors[0])
        h.client.end_input()
        h.clock.advance(1.0)
        self.assertEqual(h.out, [])
        self.assertEqual(h.status, [1])
        self.assertEqual(
            h.errors[1:],
            [
                "line 1: no reply from 127.0.0.1:12000 after 1 tries",
                "line 2: no reply from 127.0.0.1:12000 after 1 tries",
                "2 replies matched no line sent",
            ],
        )

    def test_late_original_after_many_lines_is_not_another_lines_answer(self) -> None:
        """The bug seen: a late reply to a line settled long ago, given to the
        oldest line waiting.  It is recognised as late, and dropped."""
        h = Harness(timeout=1.0, window=4)
        h.client.send_line(b"slow")
        h.clock.advance(1.0)  # asked again
        h.answer(b"SLOW")  # the retry's answer
        for number in range(1000):  # far more than 4 x window lines settle
            h.client.send_line(b"line %d" % number)
            h.answer(b"LINE %d" % number)
        h.client.send_line(b"waiting")
        h.answer(b"SLOW")  # the first try's answer, very late
        self.assertEqual(h.out[-1], b"LINE 999\n")
        self.assertEqual(h.errors, [])
        h.answer(b"WAITING")
        self.assertEqual(h.out[-1], b"WAITING\n")

    def test_quick_resend_after_a_few_round_trips(self) -> None:
        """Once round trips are known, a lost line is sent again after a few
        of them (at least MIN_RESEND), then every timeout as before."""
        from udpupper.client.protocol import MIN_RESEND

        h = Harness(timeout=1.0, retries=1)
        h.client.send_line(b"first")
        h.clock.advance(0.001)
        h.answer(b"FIRST")
        self.assertAlmostEqual(h.client.resend_after(), MIN_RESEND)
        h.client.send_line(b"lost")
        h.clock.advance(MIN_RESEND)
        self.assertEqual(h.sent(), [b"first", b"lost", b"lost"])
        h.clock.advance(1.0 - MIN_RESEND)  # the timeout, from the first send
        self.assertEqual(h.sent(), [b"first", b"lost", b"lost", b"lost"])
        h.answer(b"LOST")
        h.client.end_input()
        self.assertEqual(h.out, [b"FIRST\n", b"LOST\n"])
        self.assertEqual(h.status, [0])
        self.assertEqual(len(h.errors), 1)
        self.assertIn("1 of 2 lines were answered only after being sent again", h.errors[0])

    def test_a_dead_server_is_given_up_as_before(self) -> None:
        """The quick resend adds a datagram, not a try: the patience stays
        (retries + 1) x timeout."""
        h = Harness(timeout=1.0, retries=3)
        h.client.send_line(b"a")
        h.clock.advance(0.001)
        h.answer(b"A")
        h.client.send_line(b"b")
        h.client.end_input()
        h.clock.pump([0.5] * 7)
        self.assertEqual(h.status, [])
        h.clock.advance(0.501)  # 4 timeouts after the first send
        self.assertEqual(h.status, [1])
        self.assertEqual(h.sent().count(b"b"), 5)

    def test_nothing_is_sent_once_aborted_or_the_port_is_gone(self) -> None:
        """| head -1: stdin's last line may come after the port has closed."""
        h = Harness()
        h.client.transport = None
        h.client.send_line(b"x")  # no AttributeError
        h.client.abort()
        h.client.send_line(b"y")
        h.client.end_input()
        self.assertEqual(h.status, [1])
        self.assertEqual(h.clock.getDelayedCalls(), [])

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

    def test_a_send_the_host_refuses_ends_at_once_in_one_line(self) -> None:
        """No route, or broadcast without leave: never, not retried for
        each line's timeouts; status 2, as ping's for "cannot send"."""
        h = Harness(timeout=1.0)

        class Refuses:
            def write(self, datagram, addr):
                raise PermissionError(13, "Permission denied")

        h.client.transport = Refuses()
        for line in (b"a", b"b", b"c"):
            h.client.send_line(line)
        h.client.end_input()
        self.assertEqual(h.status, [2])
        self.assertEqual(len(h.errors), 1, h.errors)
        self.assertIn("cannot send to", h.errors[0])
        self.assertIn("Permission denied: no line can be answered", h.errors[0])
        self.assertEqual(h.clock.getDelayedCalls(), [])


@tiers.unit
class UnreliablePathTests(unittest.TestCase):
    """Against a correct server on a path that loses, duplicates, delays and
    reorders datagrams both ways, every line printed is its own line's reply."""

    @staticmethod
    def run_through(lines, fates, window, retries):
        """``fates`` says, datagram by datagram, each way: (copies, delay)."""
        from itertools import cycle

        h = Harness(timeout=1.0, retries=retries, window=window)
        fate = cycle(fates)

        def carry(datagram: bytes, deliver) -> None:
            copies, delay = next(fate)
            for copy in range(copies):
                h.clock.callLater(delay * (copy + 1), deliver, datagram)

        def server(datagram: bytes) -> None:
            carry(datagram.upper(), h.answer)

        class Path:
            def write(self, datagram, addr):
                carry(datagram, server)

        h.client.transport = Path()
        for line in lines:
            h.client.send_line(line)
        h.client.end_input()
        for _ in range(100_000):
            if h.status:
                break
            h.clock.advance(0.01)
        return h

    def test_every_printed_line_is_its_own_lines_reply(self) -> None:
        from hypothesis import given, settings
        from hypothesis import strategies as st

        @settings(max_examples=200, deadline=None)
        @given(
            lines=st.lists(
                st.sampled_from([b"a", b"A", b"b", b"", b"ab", b"AB"]), min_size=1, max_size=60
            ),
            fates=st.lists(
                st.tuples(st.sampled_from([0, 1, 1, 1, 2]), st.floats(0.0, 2.5)),
                min_size=1,
                max_size=30,
            ),
            window=st.integers(1, 8),
            retries=st.integers(0, 3),
        )
        def check(lines, fates, window, retries):
            h = self.run_through(lines, fates, window, retries)
            self.assertTrue(h.status, "the client never finished")
            failed = {
                int(error.split(":")[0].split()[1])
                for error in h.errors
                if error.startswith("line ")
            }
            expected = [
                line.upper() + b"\n" for number, line in enumerate(lines, 1) if number not in failed
            ]
            self.assertEqual(h.out, expected)
            self.assertEqual(h.status, [1 if failed else 0])
            self.assertFalse([e for e in h.errors if "matched no line" in e])

        check()
