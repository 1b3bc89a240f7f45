"""The server protocol over a fake transport: no sockets, no real time."""

from __future__ import annotations

import errno

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.error import MessageLengthError
from twisted.internet.testing import FakeDatagramTransport
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from tests import tiers
from udpupper.server.droplog import LOG_PERIOD
from udpupper.server.protections.policy import Protections
from udpupper.server.protocol import UpperProtocol
from udpupper.server.stats import Reason
from udpupper.transform import upper

CLIENT = ("192.0.2.7", 40000)  # neither exempt nor suspicious
LOCAL = ("127.0.0.1", 40000)  # exempt by default


class ListeningTransport(FakeDatagramTransport):
    """A fake transport that says which port it listens on, as a port does."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", "0.0.0.0", self.port)


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


@tiers.unit
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
            payload.decode("utf-8", "surrogateescape").upper().encode("utf-8", "surrogateescape")
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


@tiers.unit
class LoopGuardTests(unittest.TestCase):
    def test_low_source_ports_get_no_reply(self) -> None:
        protocol, transport = connected()
        for port in (0, 7, 19, 53, 1023):
            protocol.datagramReceived(b"x", ("192.0.2.1", port))
        protocol.datagramReceived(b"x", ("192.0.2.1", 1024))
        self.assertEqual(transport.written, [(b"X", ("192.0.2.1", 1024))])
        self.assertEqual(protocol.stats.counted(), {Reason.LOW_SOURCE_PORT: 5})

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
        hosts = (
            "0.0.0.0",
            "224.0.0.251",
            "255.255.255.255",
            "240.1.2.3",
            "ff02::1",
            "::ffff:255.255.255.255",
            "::ffff:127.0.0.1",
            "::",
        )
        for host in hosts:
            protocol.datagramReceived(b"x", (host, 5353))
        self.assertEqual(transport.written, [])
        self.assertEqual(protocol.stats.counted(), {Reason.BAD_SOURCE: len(hosts)})

    def test_our_own_port_is_a_loop(self) -> None:
        """Another echo on our port (or ourselves, spoofed) answers from it."""
        protocol = UpperProtocol(clock=task.Clock())
        transport = ListeningTransport(12000)
        protocol.makeConnection(transport)
        for host in ("127.0.0.1", "::1", "192.0.2.1"):
            protocol.datagramReceived(b"x", (host, 12000))
        protocol.datagramReceived(b"x", ("127.0.0.1", 12001))
        self.assertEqual(transport.written, [(b"X", ("127.0.0.1", 12001))])
        self.assertEqual(protocol.stats.counted(), {Reason.LOOP: 3})


@tiers.unit
class RateLimitTests(unittest.TestCase):
    def test_limit_per_prefix_with_refill(self) -> None:
        clock = task.Clock()
        protocol, transport = connected(clock=clock, rate=10, burst=20)
        for _ in range(50):
            protocol.datagramReceived(b"a", ("192.0.2.1", 5000))
            protocol.datagramReceived(b"b", ("192.0.2.200", 5000))  # same /24
        self.assertEqual(len(transport.written), 20)
        self.assertEqual(protocol.stats.drops[Reason.RATE_LIMITED], 80)
        protocol.datagramReceived(b"c", ("198.51.100.1", 5000))  # another /24
        self.assertEqual(transport.written[-1], (b"C", ("198.51.100.1", 5000)))
        clock.advance(1.0)
        for _ in range(50):
            protocol.datagramReceived(b"a", ("192.0.2.1", 5000))
        self.assertEqual(len(transport.written), 21 + 10)

    def test_new_prefixes_beyond_their_rate_are_counted_apart(self) -> None:
        clock = task.Clock()
        protocol, transport = connected(
            clock=clock, rate=10, burst=20, new_prefix_rate=5, exempt=()
        )
        protocol.datagramReceived(b"known", ("192.0.2.1", 5000))
        for n in range(20):  # spoofed: a new /24 each
            protocol.datagramReceived(b"x", (f"10.{n}.0.1", 5000))
        protocol.datagramReceived(b"known", ("192.0.2.1", 5000))
        self.assertEqual(len(transport.written), 1 + 4 + 1)  # 5 new a second, ours first
        self.assertEqual(protocol.stats.counted(), {Reason.NEW_PREFIX_LIMITED: 16})
        clock.advance(1.0)
        protocol.datagramReceived(b"y", ("10.19.0.1", 5000))  # a second later: taken in
        self.assertEqual(transport.written[-1], (b"Y", ("10.19.0.1", 5000)))

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


@tiers.unit
class AmplificationTests(unittest.TestCase):
    GROWS = "\u0390".encode()  # 2 bytes that upper-case to 6

    def test_capped_for_sources_not_exempt(self) -> None:
        protocol, transport = connected()
        protocol.datagramReceived(self.GROWS, CLIENT)
        protocol.datagramReceived("straße".encode(), CLIENT)  # 7 bytes to 7
        self.assertEqual(transport.written, [(b"STRASSE", CLIENT)])
        self.assertEqual(protocol.stats.counted(), {Reason.AMPLIFICATION: 1})

    def test_exempt_sources_get_their_reply(self) -> None:
        protocol, transport = connected()
        protocol.datagramReceived(self.GROWS, LOCAL)
        self.assertEqual(transport.written, [("\u0399\u0308\u0301".encode(), LOCAL)])

    def test_factor(self) -> None:
        protocol, transport = connected(max_amplification=3.0)
        protocol.datagramReceived(self.GROWS, CLIENT)
        self.assertEqual(len(transport.written), 1)

    def test_whole_and_fractional_factors_alike(self) -> None:
        """A whole cap is kept as an int, a fractional one as a float: the
        same comparison either way, at the edge too (2 bytes grow to 6)."""
        for cap, answered in (
            (2.9, False),
            (3, True),
            (3.0, True),
            (3.5, True),
            (0.5, False),
            (float("inf"), True),
        ):
            protocol, transport = connected(max_amplification=cap)
            protocol.datagramReceived(self.GROWS if cap != 0.5 else b"ab", CLIENT)
            self.assertEqual(len(transport.written), int(answered), cap)

    def test_refuse_counts(self) -> None:
        protocol, _ = connected()
        protocol.refuse(b"abc", Reason.NOT_UNICAST_DESTINATION)
        self.assertEqual(
            (protocol.stats.received, protocol.stats.bytes_in, protocol.stats.counted()),
            (1, 3, {Reason.NOT_UNICAST_DESTINATION: 1}),
        )


@tiers.unit
class SendFailureTests(unittest.TestCase):
    """A reply that cannot be sent is counted under its reason, never raised."""

    def assert_dropped_as(self, failure: BaseException, reason: Reason) -> None:
        protocol, _ = connected(FailingTransport(failure))
        protocol.datagramReceived(b"x", CLIENT)
        stats = protocol.stats
        self.assertEqual((stats.received, stats.replied), (1, 0))
        self.assertEqual((stats.bytes_out, stats.counted()), (0, {reason: 1}))

    def test_too_large(self) -> None:
        self.assert_dropped_as(OSError(errno.EMSGSIZE, "too long"), Reason.TOO_LARGE)

    def test_twisted_message_length_error(self) -> None:
        self.assert_dropped_as(MessageLengthError("too long"), Reason.TOO_LARGE)

    def test_send_buffer_full(self) -> None:
        self.assert_dropped_as(BlockingIOError(errno.EAGAIN, "again"), Reason.SEND_BUFFER_FULL)
        self.assert_dropped_as(OSError(errno.ENOBUFS, "no buffers"), Reason.SEND_BUFFER_FULL)

    def test_refused(self) -> None:
        self.assert_dropped_as(ConnectionRefusedError(errno.ECONNREFUSED, "no"), Reason.REFUSED)

    def test_other_error(self) -> None:
        self.assert_dropped_as(OSError(errno.EPERM, "firewall"), Reason.SEND_ERROR)


@tiers.unit
class SentLaterTests(unittest.TestCase):
    def test_a_reply_the_transport_could_not_send_after_all(self) -> None:
        protocol, transport = connected()
        protocol.datagramReceived(b"abc", CLIENT)
        protocol.send_failed(transport.written[0][0], errno.ENOBUFS)
        stats = protocol.stats
        self.assertEqual((stats.received, stats.replied, stats.bytes_out), (1, 0, 0))
        self.assertEqual(stats.counted(), {Reason.SEND_BUFFER_FULL: 1})


@tiers.unit
class InternalErrorTests(unittest.TestCase):
    """A bug while handling one datagram costs that datagram, nothing more."""

    def setUp(self) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def failing_transform(self, fail_on: bytes):
        def transform(payload: bytes) -> bytes:
            if payload == fail_on:
                raise RuntimeError("a bug in the transform")
            return upper(payload)

        return transform

    def test_counted_logged_and_the_next_one_answered(self) -> None:
        clock = task.Clock()
        protocol = UpperProtocol(clock=clock, transform=self.failing_transform(b"boom"))
        transport = FakeDatagramTransport()
        protocol.makeConnection(transport)
        for payload in (b"boom", b"next", b"boom", b"boom", b"last"):
            protocol.datagramReceived(payload, CLIENT)
        self.assertEqual(transport.written, [(b"NEXT", CLIENT), (b"LAST", CLIENT)])
        stats = protocol.stats
        self.assertEqual((stats.received, stats.replied), (5, 2))
        self.assertEqual(stats.counted(), {Reason.INTERNAL_ERROR: 3})
        failures = [event for event in self.events if "log_failure" in event]
        self.assertEqual(len(failures), 1)  # once per period, with its traceback
        self.assertIsInstance(failures[0]["log_failure"].value, RuntimeError)
        self.flushLoggedErrors(RuntimeError)
        clock.advance(LOG_PERIOD)
        protocol.datagramReceived(b"boom", CLIENT)
        self.assertEqual(len([e for e in self.events if "log_failure" in e]), 2)
        self.flushLoggedErrors(RuntimeError)

    def test_a_transport_that_raises_anything(self) -> None:
        protocol, _ = connected(FailingTransport(ValueError("not an OSError")))
        protocol.datagramReceived(b"x", CLIENT)
        self.assertEqual(protocol.stats.counted(), {Reason.INTERNAL_ERROR: 1})
        self.flushLoggedErrors(ValueError)


@tiers.unit
class LoopBreakerTests(unittest.TestCase):
    """Datagrams that are their own upper case and resemble a reply sent to
    their address before: one in ``loop_budget`` of each such chain is not
    answered, which ends any loop, however many run through one address."""

    def run_loop(self, protocol, transport, first: bytes, reflect, addr=LOCAL) -> int:
        """Another service at ``addr`` answers each reply with ``reflect(reply,
        n)``: how many round trips until the loop ends (at most 100,000)."""
        protocol.datagramReceived(first, addr)
        for n in range(100_000):
            if len(transport.written) <= n:
                return n
            protocol.datagramReceived(reflect(transport.written[n][0], n), addr)
        self.fail("the loop did not end")

    def run_loops(self, protocol, transport, firsts: list[bytes], reflect, addr=LOCAL) -> list[int]:
        """Like :meth:`run_loop`, for loops that run side by side through one
        address, their datagrams interleaved: each one's round trips."""
        alive, trips = {}, [0] * len(firsts)
        for n, first in enumerate(firsts):
            before = len(transport.written)
            protocol.datagramReceived(first, addr)
            if len(transport.written) > before:
                alive[n] = transport.written[-1][0]
        for _ in range(100_000):
            if not alive:
                return trips
            for n, reply in list(alive.items()):
                trips[n] += 1
                before = len(transport.written)
                protocol.datagramReceived(reflect(reply, trips[n]), addr)
                if len(transport.written) == before:
                    del alive[n]
                else:
                    alive[n] = transport.written[-1][0]
        self.fail(f"{len(alive)} loops did not end")

    def test_an_exact_echo_dies_within_the_budget(self) -> None:
        protocol, transport = connected(loop_budget=100)
        trips = self.run_loop(protocol, transport, b"loop", lambda reply, n: reply)
        self.assertEqual(trips, 100)  # the first answer, then 99 echoes answered
        self.assertEqual(protocol.stats.counted(), {Reason.LOOP: 1})

    def test_any_number_of_loops_through_one_address_each_die(self) -> None:
        """Loops whose payloads differ everywhere, interleaved (what the
        breaker of one reply per address never saw): each ends within the
        budget of its own round trips, exact echoes and stamped alike."""

        def stamped(reply: bytes, n: int) -> bytes:
            return b"%06d" % n + reply[6:]

        import random

        draw = random.Random(7)
        for count in (2, 3, 16, 200):
            # Upper-case hex: distinct in each of their quarters.
            firsts = [b"%032x" % draw.getrandbits(128) for _ in range(count)]
            for reflect in (lambda reply, n: reply, stamped):
                protocol, transport = connected(loop_budget=100)
                trips = self.run_loops(protocol, transport, firsts, reflect)
                self.assertEqual(max(trips), 100, (count, trips))
                self.assertEqual(protocol.stats.counted(), {Reason.LOOP: count})

    def test_loops_from_a_flood_of_addresses_each_die(self) -> None:
        """As many loops as addresses, more than a generation of keys holds
        at once: each still dies within its budget."""
        protocol, transport = connected(loop_budget=50, rate=0)
        firsts = [b"LOOP NUMBER %06d" % n for n in range(3000)]
        trips = []
        for n, first in enumerate(firsts):
            addr = (f"10.{n >> 16}.{n >> 8 & 255}.{n & 255}", 40000)
            trips.append(self.run_loop(protocol, transport, first, lambda reply, m: reply, addr))
            transport.written.clear()
        # Upper case from the first datagram: 49 answers, the 50th withheld.
        self.assertEqual(set(trips), {49})

    def test_a_reflector_that_stamps_what_it_echoes_dies_too(self) -> None:
        """A counter or a timestamp written in, anywhere, in upper or lower
        case, over a long or a short payload: a stamp of up to a quarter of
        the payload is always seen (a longer one may not be)."""

        def stamp(at):
            def reflect(reply: bytes, n: int) -> bytes:
                mark = b"%08x" % (n * 2654435761 % 2**32)  # lower-case hex
                mark = mark[: max(1, len(reply) // 4)]
                where = at % len(reply) if at >= 0 else len(reply) + at
                return reply[:where] + mark + reply[where + len(mark) :]

            return reflect

        for payload in (b"a loop between two echo services", b"x" * 1400, b"q" * 16):
            for at in (0, 5, len(payload) // 2, -8, -11):
                protocol, transport = connected(loop_budget=50)
                trips = self.run_loop(protocol, transport, payload, stamp(at))
                self.assertLessEqual(trips, 50, (len(payload), at))
                self.assertEqual(protocol.stats.counted(), {Reason.LOOP: 1})

        def both_ends(reply: bytes, n: int) -> bytes:  # sequence in front, time behind
            return b"%04d" % n + reply[4:-6] + b"%06d" % (n * 7)

        protocol, transport = connected(loop_budget=50)
        self.assertLessEqual(self.run_loop(protocol, transport, b"x" * 64, both_ends), 50)

    def test_per_address_any_port(self) -> None:
        """A proxy changes its source port for each datagram: same address."""
        protocol, transport = connected(loop_budget=10)
        for port in range(2000, 2100):
            protocol.datagramReceived(b"HELLO", ("127.0.0.1", port))
        self.assertEqual(len(transport.written), 100 - 100 // 10)
        protocol.datagramReceived(b"HELLO", ("127.0.0.2", 2000))  # another address
        self.assertEqual(transport.written[-1], (b"HELLO", ("127.0.0.2", 2000)))

    def test_lower_case_text_is_never_withheld(self) -> None:
        """A request that upper-casing changes never resembles its reply,
        and is not remembered either."""
        protocol, transport = connected(loop_budget=2)
        requests = [b"hello"] * 10_000 + [b"line %d of a file" % n for n in range(10_000)]
        for request in requests:
            protocol.datagramReceived(request, LOCAL)
        self.assertEqual(len(protocol.loops), 0)
        requests += [b"%016d the quick brown fox" % n for n in range(10_000)]
        for request in requests[20_000:]:
            protocol.datagramReceived(request, LOCAL)
        self.assertEqual(len(transport.written), len(requests))

    def test_what_repeats_itself_loses_one_in_the_budget(self) -> None:
        """The trade-off: identical upper-case or empty requests, and numbered
        ones of digits, look like an echo of an earlier reply."""
        for requests in (
            [b"HELLO"] * 10_000,
            [b""] * 10_000,
            [b"%016d" % n for n in range(10_000)],
            [b"HELLO", b"WORLD"] * 5_000,
        ):
            protocol, _transport = connected(loop_budget=100)
            for request in requests:
                protocol.datagramReceived(request, LOCAL)
            withheld = protocol.stats.counted().get(Reason.LOOP, 0)
            self.assertLessEqual(withheld, len(requests) // 100, requests[:2])
            self.assertGreaterEqual(withheld, len(requests) // 100 - 2, requests[:2])

    def test_different_requests_are_answered(self) -> None:
        protocol, transport = connected(loop_budget=2)
        requests = [
            b"HELLO",
            b"WORLD",
            b"",
            b"A",
            b"SOMETHING ELSE ENTIRELY",
            b"\xff\xfe",
            b"%d" % 12345,
            b"ANOTHER LINE, UPPER CASE",
        ]
        for request in requests:
            protocol.datagramReceived(request, LOCAL)
        self.assertEqual(len(transport.written), len(requests))

    def test_a_budget_of_1_answers_nothing_that_is_its_own_upper_case(self) -> None:
        protocol, transport = connected(loop_budget=1)
        for request in (b"HELLO", b"WORLD", b"", b"hello"):
            protocol.datagramReceived(request, LOCAL)
        self.assertEqual(transport.written, [(b"HELLO", LOCAL)])

    def test_0_turns_it_off(self) -> None:
        protocol, transport = connected(loop_budget=0)
        for _ in range(1000):
            protocol.datagramReceived(b"HELLO", LOCAL)
        self.assertEqual(len(transport.written), 1000)

    def test_strangers_too(self) -> None:
        protocol, _transport = connected(loop_budget=5, rate=0)
        for _ in range(100):
            protocol.datagramReceived(b"HELLO", CLIENT)
        self.assertEqual(protocol.stats.counted(), {Reason.LOOP: 100 // 5})

    def test_bounded(self) -> None:
        from udpupper.server.protections.loops import LoopBreaker

        breaker = LoopBreaker(every=10, size=100)
        for n in range(10_000):
            breaker.allow(f"10.0.{n // 256 % 256}.{n % 256}", b"XYZW", b"XYZW")
        self.assertLessEqual(len(breaker), 200)


@tiers.unit
class ClockStepTests(unittest.TestCase):
    def test_rate_limit_survives_a_clock_that_steps_back(self) -> None:
        clock = task.Clock()
        clock.rightNow = 1_000_000.0
        protocol, transport = connected(clock=clock, rate=10, burst=20, exempt=())
        for _ in range(100):
            protocol.datagramReceived(b"a", CLIENT)
        clock.rightNow -= 3600  # an hour back: the bucket was empty, stays so
        for _ in range(100):
            protocol.datagramReceived(b"a", CLIENT)
        self.assertEqual(len(transport.written), 20)
        clock.advance(1.0)  # and refills from the new time, not in an hour
        for _ in range(100):
            protocol.datagramReceived(b"a", CLIENT)
        self.assertEqual(len(transport.written), 20 + 10)

    def test_the_daemon_decides_on_a_monotonic_clock(self) -> None:
        import time

        protocol = UpperProtocol()
        self.assertIs(protocol.clock.seconds, time.monotonic)
