"""The token buckets, on a clock that only moves when the test says so."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from tests import tiers
from udpupper.server.protections import ratelimit
from udpupper.server.protections.ratelimit import PythonRateLimiter

A, B = b"\xc0\x00\x02", b"\xc6\x33\x64"  # two /24 prefixes


def replies(limiter, prefix: bytes, count: int, now: float) -> int:
    return sum(limiter.allow(prefix, now) for _ in range(count))


@tiers.unit
class RateLimiterTests(unittest.TestCase):
    RateLimiter = ratelimit.RateLimiter

    def test_burst_then_nothing(self) -> None:
        limiter = self.RateLimiter(rate=10, burst=20)
        self.assertEqual(replies(limiter, A, 100, now=0.0), 20)

    def test_burst_at_a_bucket_boundary(self) -> None:
        """BIND's test shape: the count is right, plus or minus one."""
        limiter = self.RateLimiter(rate=100, burst=200)
        first = replies(limiter, A, 1000, now=0.0)
        # Just before and just after one second has passed: about 100 more.
        before = replies(limiter, A, 1000, now=0.999)
        after = replies(limiter, A, 1000, now=1.001)
        self.assertEqual(first, 200)
        self.assertLessEqual(abs(before + after - 100), 1)

    def test_refill_over_time(self) -> None:
        limiter = self.RateLimiter(rate=5, burst=5)
        replies(limiter, A, 5, now=0.0)
        self.assertFalse(limiter.allow(A, 0.0))
        self.assertTrue(limiter.allow(A, 0.2))  # one token back after 1/5 s
        self.assertFalse(limiter.allow(A, 0.2))
        self.assertEqual(replies(limiter, A, 100, now=100.0), 5)  # capped at burst

    def test_sustained_rate(self) -> None:
        limiter = self.RateLimiter(rate=200, burst=400)
        answered = sum(
            replies(limiter, A, 10, now=tick / 1000) for tick in range(10_000)
        )  # 10,000 a second for 10 s
        self.assertLessEqual(abs(answered - (400 + 200 * 10)), 1)

    def test_flooded_prefix_beside_a_quiet_one(self) -> None:
        limiter = self.RateLimiter(rate=10, burst=20)
        for tick in range(1000):  # A sends 1,000 a second for 10 s
            now = tick / 100
            replies(limiter, A, 10, now)
            if tick % 10 == 0:  # B sends 10 a second: every one answered
                self.assertTrue(limiter.allow(B, now))

    def test_table_stays_bounded_under_a_million_prefixes(self) -> None:
        limiter = self.RateLimiter(rate=1, burst=1, size=1000)
        for n in range(1_000_000):
            limiter.allow(n.to_bytes(3, "big"), now=n / 1e6)
            if n % 997 == 0:
                self.assertLessEqual(len(limiter), 2000)
        self.assertGreaterEqual(len(limiter), 1000)

    def test_a_key_seen_again_keeps_its_bucket(self) -> None:
        limiter = self.RateLimiter(rate=1, burst=1, size=2)
        self.assertTrue(limiter.allow(A, 0))
        self.assertTrue(limiter.allow(B, 0))
        for n in range(100):  # new keys, one at a time, with A between them
            self.assertFalse(limiter.allow(A, 0))  # remembered: still empty
            self.assertTrue(limiter.allow(n.to_bytes(3, "big"), 0))
        self.assertTrue(limiter.allow(B, 0))  # long forgotten: full again

    def test_bad_settings(self) -> None:
        for rate, burst, size in ((0, 1, 1), (1, 0.5, 1), (1, 1, 0)):
            self.assertRaises(ValueError, self.RateLimiter, rate, burst, size)


@tiers.unit
class NewKeyTests(unittest.TestCase):
    """At most ``new_rate`` keys not in the table a second are taken in."""

    RateLimiter = ratelimit.RateLimiter

    def keys(self, count: int, first: int = 0) -> list[bytes]:
        return [(first + n).to_bytes(3, "big") for n in range(count)]

    def test_new_keys_beyond_their_rate_are_refused_and_not_remembered(self) -> None:
        limiter = self.RateLimiter(rate=10, burst=20, size=1000, new_rate=100)
        verdicts = [limiter.allow(key, 0.0) for key in self.keys(500)]
        self.assertEqual(verdicts.count(True), 100)  # a second's worth at once
        self.assertEqual(verdicts.count(None), 400)
        self.assertEqual(len(limiter), 100)
        self.assertTrue(limiter.allow(self.keys(1)[0], 0.0))  # known: its own bucket
        self.assertIsNone(limiter.allow(self.keys(1, 400)[0], 0.0))
        self.assertTrue(limiter.allow(self.keys(1, 400)[0], 0.01))  # one a 1/100 s

    def test_known_keys_keep_their_place_under_a_flood_of_new_ones(self) -> None:
        limiter = self.RateLimiter(rate=10, burst=20, size=1000, new_rate=100)
        self.assertTrue(limiter.allow(A, 0.0))
        for second in range(60):  # 10,000 new keys a second, for a minute
            for key in self.keys(10_000, first=second * 10_000):
                limiter.allow(key, second + 0.5)
            self.assertEqual(replies(limiter, A, 10, second + 0.6), 10)  # its rate
        self.assertLessEqual(len(limiter), 2000)
        self.assertIn(A, limiter)

    def test_a_clock_step_back_does_not_stop_new_keys(self) -> None:
        limiter = self.RateLimiter(rate=10, burst=20, new_rate=10)
        self.assertEqual([limiter.allow(key, 1000.0) for key in self.keys(10)].count(True), 10)
        # An hour back: the new keys' bucket counts as empty from then, no more.
        self.assertIsNone(limiter.allow(b"late", 1000.0 - 3600))
        self.assertTrue(limiter.allow(b"late", 1000.0 - 3600 + 0.1))

    def test_zero_is_no_limit(self) -> None:
        limiter = self.RateLimiter(rate=10, burst=20, size=100_000, new_rate=0)
        self.assertTrue(all(limiter.allow(key, 0.0) for key in self.keys(50_000)))
        self.assertRaises(ValueError, self.RateLimiter, 10, 20, 100, -1)


@tiers.unit
class TrialTests(unittest.TestCase):
    """With the sender given, a key not in the table is on trial until two
    datagrams from addresses that asked before settle it: how new clients
    get in under a flood of spoofed sources, and known ones stay known."""

    RateLimiter = ratelimit.RateLimiter

    def test_the_first_is_answered_and_the_third_settles_the_key(self) -> None:
        limiter = self.RateLimiter(rate=10, burst=20, size=1000, new_rate=100)
        self.assertIs(limiter.allow(A, 0.0, "192.0.2.1"), True)
        self.assertEqual(limiter.where(A), 1)  # on trial
        self.assertIs(limiter.allow(A, 0.0, "192.0.2.1"), True)
        self.assertEqual(limiter.where(A), 1)  # one datagram of an address that asked before
        answered = sum(bool(limiter.allow(A, 0.0, "192.0.2.1")) for _ in range(30))
        self.assertEqual(limiter.where(A), 2)  # settled
        self.assertEqual(2 + answered, 20)  # a burst in all, on trial and settled

    def test_other_addresses_of_a_key_share_its_bucket_and_never_settle_it(self) -> None:
        limiter = self.RateLimiter(rate=10, burst=20, size=1000, new_rate=100)
        self.assertIs(limiter.allow(A, 0.0, "192.0.2.1"), True)
        answered = sum(bool(limiter.allow(A, 0.0, f"192.0.2.{n}")) for n in range(2, 40))
        self.assertEqual(1 + answered, 20)  # a burst in all: exact per key
        self.assertEqual(limiter.where(A), 1)  # each address once: a scan, not a client

    def test_a_key_refused_at_first_gets_in_when_its_address_asks_again(self) -> None:
        limiter = self.RateLimiter(rate=10, burst=20, size=1000, new_rate=1)
        self.assertIs(limiter.allow(B, 0.0, "198.51.100.1"), True)  # the one new key a second
        self.assertIsNone(limiter.allow(A, 0.0, "192.0.2.1"))
        self.assertIsNone(limiter.allow(A, 0.0, "192.0.2.2"))
        self.assertEqual(limiter.where(A), 0)  # not remembered, but its addresses are
        self.assertIs(limiter.allow(A, 0.5, "192.0.2.1"), True)  # .1 asks again: on trial
        self.assertEqual(limiter.where(A), 1)

    def test_probation_ends(self) -> None:
        limiter = self.RateLimiter(rate=10, burst=20, size=1000, new_rate=100)
        self.assertIs(limiter.allow(A, 0.0, "192.0.2.1"), True)
        # Two generations of PROBATION_TIME later, .1 is a stranger again:
        # answered from A's bucket, but it did not ask again.
        later = 2 * ratelimit.PROBATION_TIME + 0.01
        self.assertIs(limiter.allow(A, later, "192.0.2.1"), True)
        self.assertIs(limiter.allow(A, later, "192.0.2.1"), True)
        self.assertEqual(limiter.where(A), 1)
        self.assertIs(limiter.allow(A, later, "192.0.2.1"), True)
        self.assertEqual(limiter.where(A), 2)

    def test_an_address_that_keeps_asking_stays_on_probation(self) -> None:
        """A client asking every 1.5 s is never a stranger again."""
        limiter = self.RateLimiter(rate=10, burst=20, size=1000, new_rate=100, trial=1)
        for n in range(10):
            self.assertIs(limiter.allow(b"other %d" % n, 1.5 * n, "198.51.100.1"), True)
        # Each key was on trial once, pushed out by the next (trial=1): the
        # address is still known, so each new key entered as asked again.
        self.assertIs(limiter.allow(A, 15.0, "198.51.100.1"), True)
        self.assertIs(limiter.allow(A, 15.0, "198.51.100.1"), True)
        self.assertEqual(limiter.where(A), 2)

    def test_a_flood_of_new_sources_leaves_the_table_alone(self) -> None:
        """10,000 new sources a second for a minute: the one known key, quiet
        all along, is still in the table, and nothing else settled."""
        limiter = self.RateLimiter(rate=10, burst=20, size=1000, new_rate=100)
        for _ in range(3):
            limiter.allow(A, 0.0, "192.0.2.1")
        self.assertEqual(limiter.where(A), 2)
        flood = [number.to_bytes(4, "big") for number in range(0, 600_000, 997)]
        for second in range(60):
            for n in range(10_000):
                number = second * 10_000 + n
                limiter.allow(
                    number.to_bytes(4, "big"),
                    second + n / 10_000,
                    f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}",
                )
        self.assertEqual(limiter.where(A), 2)
        self.assertEqual([key for key in flood if limiter.where(key) == 2], [])
        self.assertEqual(replies(limiter, A, 30, 60.0), 20)  # its burst, as it was

    def test_new_clients_that_ask_twice_get_in_under_a_flood(self) -> None:
        """150,000 new sources a second, and 200 new clients among them, each
        asking twice a second apart: every one answered by its second try."""
        limiter = self.RateLimiter(rate=200, burst=400, size=65_536, new_rate=10_000)
        tries = {}  # client -> the times it asks
        for client in range(200):
            first = 0.5 + client * 0.01
            tries[client] = (first, first + 1.0)
        asks = sorted((at, client) for client, times in tries.items() for at in times)
        answered: dict[int, int] = {}
        flood = 0
        for at, client in asks:
            while flood < at * 150_000:  # the flood up to this moment
                limiter.allow(b"f%d" % flood, flood / 150_000, "spoofed %d" % flood)
                flood += 1
            if client not in answered and limiter.allow(b"c%d" % client, at, "client %d" % client):
                answered[client] = tries[client].index(at) + 1
        self.assertEqual(len(answered), 200)

    def test_sources_that_send_twice_never_settle(self) -> None:
        """An attacker who sends twice from each spoofed address has each key
        on trial, none in the table."""
        limiter = self.RateLimiter(rate=10, burst=20, size=100_000, new_rate=100)
        for n in range(5_000):
            limiter.allow(b"k%d" % n, 0.5, "s%d" % n)
        for n in range(5_000):
            limiter.allow(b"k%d" % n, 0.6, "s%d" % n)
        self.assertEqual([n for n in range(5_000) if limiter.where(b"k%d" % n) == 2], [])

    def test_keys_settle_at_most_size_over_settle_time_a_second(self) -> None:
        """Sources that send three times do settle, but no faster than the
        table turns over in SETTLE_TIME: a known key is kept that long."""
        size = 1000
        limiter = self.RateLimiter(rate=10, burst=20, size=size, new_rate=0)
        for n in range(5_000):
            for _ in range(3):
                limiter.allow(b"k%d" % n, 0.5, "s%d" % n)
        settled = sum(limiter.where(b"k%d" % n) == 2 for n in range(5_000))
        # The gate is a second deep: a second's worth at once.
        self.assertEqual(settled, int(size / ratelimit.SETTLE_TIME))


@tiers.unit
class FloodShapeTests(unittest.TestCase):
    """Every shape of flood the attacker of the third round sent, at fifteen
    times ``new_rate``, on a fake clock (the same decisions, scaled down from
    150,000 a second against the defaults): new clients asking as
    ``udpupper-client`` does (a try a second) are answered by their second;
    clients that talked before (three datagrams) and kept quiet for a minute
    are answered at their first."""

    RateLimiter = ratelimit.RateLimiter
    RATE, SIZE, NEW_RATE, FLOOD = 200, 4096, 200, 3000

    def flood(self, shape: str, seconds: float, draw) -> list[tuple[float, bytes, str]]:
        """(when, key, address) of each flood datagram, in order."""
        space, sends, spacing = shape
        datagrams = []
        for n in range(int(seconds * self.FLOOD / sends)):
            at = 1.0 + n * sends / self.FLOOD
            if space == "small":  # every prefix of a space the table's size, new hosts
                prefix = draw.randrange(self.SIZE)
            else:  # a prefix of 2^24, each once at most, nearly
                prefix = draw.getrandbits(24) + self.SIZE
            address = f"host {prefix}.{draw.getrandbits(32)}"
            for k in range(sends):
                datagrams.append((at + k * spacing, prefix.to_bytes(4, "big"), address))
        datagrams.sort()
        return datagrams

    def test_every_shape(self) -> None:
        import random

        shapes = {
            "never the same source": ("large", 1, 0.0),
            "a small space that recurs": ("small", 1, 0.0),
            "each source twice at once": ("large", 2, 0.0),
            "each source twice a second apart": ("large", 2, 1.0),
            "a small space, each source twice": ("small", 2, 0.0),
            "each source three times": ("large", 3, 0.0),
        }
        for name, shape in shapes.items():
            with self.subTest(shape=name):
                draw = random.Random(name)
                limiter = self.RateLimiter(self.RATE, 2 * self.RATE, self.SIZE, self.NEW_RATE)
                known = [(b"known %d" % n, f"known {n}") for n in range(10)]
                for key, address in known:
                    for k in range(3):
                        self.assertTrue(limiter.allow(key, 0.1 * k, address))
                clients = {n: [1.5 + n * 0.5 + k for k in range(4)] for n in range(40)}
                asks = sorted((at, n) for n, times in clients.items() for at in times)
                asks += [(62.0, -1)]  # the known clients, after a minute of flood
                answered: dict[int, int] = {}
                datagrams = iter(self.flood(shape, 62.0, draw))
                pending = next(datagrams, None)
                for at, n in sorted(asks):
                    while pending is not None and pending[0] <= at:
                        limiter.allow(pending[1], pending[0], pending[2])
                        pending = next(datagrams, None)
                    if n == -1:
                        first_tries = [limiter.allow(key, at, address) for key, address in known]
                        self.assertEqual(first_tries, [True] * len(known))
                    elif n not in answered and limiter.allow(b"client %d" % n, at, f"client {n}"):
                        answered[n] = clients[n].index(at) + 1
                self.assertEqual(sorted(answered), list(range(40)))
                self.assertLessEqual(max(answered.values()), 2, answered)


@tiers.unit
class ClockStepTests(unittest.TestCase):
    """Time is the caller's: it may step back or jump ahead (a wall clock
    set by hand or by NTP).  No prefix is starved, none gets past its burst."""

    RateLimiter = ratelimit.RateLimiter

    def test_a_step_back_starves_no_one(self) -> None:
        limiter = self.RateLimiter(rate=10, burst=20)
        self.assertEqual(replies(limiter, A, 100, now=1000.0), 20)
        # The clock steps back an hour: the bucket refills from the new time.
        self.assertEqual(replies(limiter, A, 100, now=-2600.0), 0)
        self.assertEqual(replies(limiter, A, 100, now=-2599.0), 10)
        self.assertEqual(replies(limiter, A, 100, now=-2597.0), 20)

    def test_a_jump_ahead_gives_no_more_than_the_burst(self) -> None:
        limiter = self.RateLimiter(rate=10, burst=20)
        replies(limiter, A, 100, now=0.0)
        self.assertEqual(replies(limiter, A, 100, now=1e9), 20)
        self.assertEqual(replies(limiter, A, 100, now=1e9 + 0.5), 5)

    def test_back_and_forth(self) -> None:
        """Whatever the steps, a prefix never gets more than the burst plus
        the rate times the time that went forward."""
        limiter = self.RateLimiter(rate=10, burst=20)
        times = [0.0, 5.0, 1.0, 1.5, 100.0, 50.0, 50.2, 49.0, 49.0, 60.0]
        forward, answered, last = 0.0, 0, None
        for now in times:
            answered += replies(limiter, A, 1000, now)
            if last is not None and now > last:
                forward += now - last
            last = now
            self.assertLessEqual(answered, 20 + 10 * forward + 1e-9)
        self.assertGreater(answered, 0)


@tiers.unit
class EvictionTests(unittest.TestCase):
    """As an LRU table of ``size`` keys would: a key is forgotten only after
    ``size`` others have been seen since it last was, and by then it is
    forgotten within ``size`` more; in constant time a datagram."""

    RateLimiter = ratelimit.RateLimiter

    def test_forgotten_after_size_others_and_no_later_than_twice(self) -> None:
        size = 1000
        for offset in (0, 1, 499, 999, 1000, 1500):  # where a generation stands
            limiter = self.RateLimiter(rate=1, burst=1, size=size)
            for n in range(offset):
                limiter.allow(("before", n), 0.0)
            self.assertTrue(limiter.allow(A, 0.0))
            others = 0
            while A in limiter:
                limiter.allow(("other", others), 0.0)
                others += 1
            self.assertGreaterEqual(others, size, offset)
            self.assertLessEqual(others, 2 * size, offset)
            self.assertTrue(limiter.allow(A, 0.0))  # forgotten: full again

    def test_a_busy_key_is_never_forgotten(self) -> None:
        limiter = self.RateLimiter(rate=1000, burst=1000, size=100)
        for n in range(50_000):
            limiter.allow(n, 0.0)
            if n % 50 == 0:
                limiter.allow(A, 0.0)
                self.assertIn(A, limiter)
        self.assertLessEqual(len(limiter), 200)


@tiers.unit
class ImplementationsAgreeTests(unittest.TestCase):
    """The C table and the Python one give the same answers, whatever comes."""

    def test_the_c_table_is_the_one_used_where_built(self) -> None:
        try:
            from udpupper.server.protections import _ratelimit
        except ImportError:
            raise unittest.SkipTest("the C rate table is not built here") from None
        self.assertIs(ratelimit.RateLimiter, _ratelimit.RateLimiter)

    @settings(max_examples=500, deadline=None)
    @given(
        rate=st.sampled_from([0.5, 1, 10, 200]),
        burst=st.sampled_from([1, 2.5, 20]),
        size=st.integers(1, 6),
        new_rate=st.sampled_from([0, 0.3, 1, 50]),
        probation=st.integers(1, 5),
        trial=st.one_of(st.none(), st.integers(1, 4)),
        steps=st.lists(
            st.tuples(
                st.integers(0, 9),
                st.one_of(st.none(), st.integers(0, 9)),
                st.floats(-0.5, 2.0, allow_nan=False),
            ),
            max_size=80,
        ),
    )
    def test_same_answers(self, rate, burst, size, new_rate, probation, trial, steps) -> None:
        """Keys alone, and keys with their senders (trial, probation), mixed."""
        ours = ratelimit.RateLimiter(rate, burst, size, new_rate, probation, trial)
        python = PythonRateLimiter(rate, burst, size, new_rate, probation, trial)
        now = 0.0
        for key, sender, step in steps:  # time mostly forward, sometimes back
            now += step
            key = b"prefix %d" % key
            if sender is not None:
                sender = ("192.0.2.%d" % sender, 4000)
            self.assertEqual(
                ours.allow(key, now, sender), python.allow(key, now, sender), (key, sender, now)
            )
            self.assertEqual(len(ours), len(python))
            self.assertEqual(
                [ours.where(b"prefix %d" % k) for k in range(10)],
                [python.where(b"prefix %d" % k) for k in range(10)],
            )

    def test_not_a_number_for_now_is_an_error(self) -> None:
        for limiter in (ratelimit.RateLimiter(1, 1), PythonRateLimiter(1, 1)):
            self.assertRaises(TypeError, limiter.allow, b"key", "now")
            self.assertRaises(TypeError, limiter.allow, [], 0.0)  # unhashable


def in_python(case: type) -> type:
    """``case``'s tests again, on the class that runs without a compiler."""
    return type("Python" + case.__name__, (case,), {"RateLimiter": PythonRateLimiter})


PythonRateLimiterTests = in_python(RateLimiterTests)
PythonNewKeyTests = in_python(NewKeyTests)
PythonClockStepTests = in_python(ClockStepTests)
PythonTrialTests = in_python(TrialTests)
PythonFloodShapeTests = in_python(FloodShapeTests)
PythonEvictionTests = in_python(EvictionTests)
