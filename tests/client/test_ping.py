"""``udpupper-client --ping``: the arithmetic on a fake clock, then real runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading

from twisted.internet import task
from twisted.internet.testing import FakeDatagramTransport
from twisted.trial import unittest

from tests import tiers
from tests.processes import CLIENT, Daemon, run_client
from tests.relay import Relay
from tests.support import NO_IPV6
from udpupper.client.ping import Ping
from udpupper.client.wire import MIN_SIZE, probe

# The last line: how the round trips were timed, and what the client's own
# timing cost (its send calls, its timer's lateness).
COSTS = (
    r"^round trips timed by \d+ (kernel|kernel arrival|client)(, \d+ [a-z ]+)*"
    r"; send call [\d.]+ us median, [\d.]+ max(; timer late [\d.]+ us median, [\d.]+ max)?$"
)

SERVER = ("127.0.0.1", 12000)


@tiers.unit
class ProbeTests(unittest.TestCase):
    def test_size_and_sequence_number(self) -> None:
        token = b"ABCDEFGHIJKLMNOP"
        self.assertEqual(probe(3, 29, token), b"3 ABCDEFGHIJKLMNOP udpupper p")
        self.assertEqual(probe(1234567, MIN_SIZE, token), b"1234567 ABCDEFGHIJKLMNOP")
        self.assertEqual(probe(10**7 + 5, 24, token), b"5 ABCDEFGHIJKLMNOP udpup")
        for size in (MIN_SIZE, 32, 1000, 65527):
            self.assertEqual(len(probe(9999999, size, token)), size)
        self.assertNotEqual(probe(1, 32, token), probe(1, 32, token).upper())  # upper-casing
        self.assertEqual(probe(3, 12), b"3 udpupper p")  # no token: no room for one

    def test_a_token_a_run_that_upper_casing_keeps(self) -> None:
        from udpupper.client.wire import TOKEN_LENGTH, new_token

        tokens = {new_token() for _ in range(100)}
        self.assertEqual(len(tokens), 100)
        for token in tokens:
            self.assertEqual((len(token), token.upper()), (TOKEN_LENGTH, token))


@tiers.unit
class PingTests(unittest.TestCase):
    """A Ping on a fake clock and transport, with replies scripted."""

    def make(self, **options) -> Ping:
        self.clock = task.Clock()
        self.lines: list[str] = []
        self.statuses: list[int] = []
        pinger = Ping(
            SERVER,
            self.clock,
            self.lines.append,
            now=self.clock.seconds,
            **{"interval": 1.0, "timeout": 2.5, "size": 16, **options},
        )
        pinger.transport = FakeDatagramTransport()
        pinger.when_done = self.statuses.append
        pinger.start()
        return pinger

    def sent(self, pinger: Ping) -> list[bytes]:
        return [datagram for datagram, addr in pinger.transport.written]

    def answer(self, pinger: Ping, seq: int, mangle=bytes.upper, addr=SERVER) -> None:
        pinger.datagramReceived(mangle(probe(seq, pinger.size, pinger.token)), addr)

    def test_every_reply_answered(self) -> None:
        pinger = self.make(count=3)
        for seq in range(3):
            self.clock.advance(0.25)
            self.answer(pinger, seq)
            self.clock.advance(0.75)
        self.assertEqual(self.sent(pinger), [probe(seq, 16, pinger.token) for seq in range(3)])
        self.assertEqual(
            self.lines, [f"24 bytes from 127.0.0.1: seq={seq} time=250 ms" for seq in range(3)]
        )
        self.assertEqual(self.statuses, [0])
        self.assertEqual(
            pinger.summary("h")[1:],
            [
                "3 packets transmitted, 3 received, 0% packet loss, time 2250ms",
                "rtt min/avg/max/mdev = 250.000/250.000/250.000/0.000 ms",
                "jitter 0.000 ms, rtt p50/p90/p99 = 250.000/250.000/250.000 ms, "
                "0 reordered, 0 duplicates, 0 late, 0 wrong",
            ],
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_loss_late_duplicate_and_wrong(self) -> None:
        pinger = self.make(count=4, size=32)  # lower-case filler after the token
        self.clock.advance(0.5)
        self.answer(pinger, 0)  # seq 0: 0.5 s
        self.answer(pinger, 0)  # and again: a duplicate
        self.clock.advance(0.5)  # seq 1 sent at 1.0
        self.answer(pinger, 1, mangle=lambda data: data)  # echoed, not upper-cased
        self.clock.advance(1.0)  # seq 2 sent at 2.0
        self.answer(pinger, 2, mangle=lambda data: b"12345678 NOT A PROBE")
        self.clock.advance(1.0)  # seq 3 sent at 3.0 (the last); seq 1 times out at 3.5
        self.clock.advance(0.5)
        self.assertIn("no answer yet for seq=1", self.lines)
        self.answer(pinger, 1)  # late, after its line: it still counts, as in ping
        self.clock.advance(1.0)  # seq 2 times out at 4.5
        self.answer(pinger, 3)  # at 4.5: 1.5 s
        self.clock.advance(5)
        self.assertEqual(
            self.lines,
            [
                "40 bytes from 127.0.0.1: seq=0 time=500 ms",
                "40 bytes from 127.0.0.1: seq=0 time=500 ms (DUP!)",
                "40 bytes from 127.0.0.1: seq=1 wrong reply, not this probe upper-cased",
                "28 bytes from 127.0.0.1: wrong reply, not this probe upper-cased",
                "no answer yet for seq=1",
                "40 bytes from 127.0.0.1: seq=1 time=2500 ms (late)",
                "no answer yet for seq=2",
                "40 bytes from 127.0.0.1: seq=3 time=1500 ms",
            ],
        )
        self.assertEqual(self.statuses, [0])
        stats = pinger.stats
        self.assertEqual(
            (stats.transmitted, stats.received, stats.duplicates, stats.wrong), (4, 3, 1, 2)
        )
        self.assertEqual(
            pinger.summary("h")[1],
            "4 packets transmitted, 3 received, +1 duplicates, +2 errors, "
            "25% packet loss, time 4500ms",
        )
        # Jitter over the answered consecutive pairs, (0, 1): |2.5 - 0.5| = 2 s.
        self.assertEqual((stats.reordered, stats.late, stats.wrong), (0, 1, 2))
        self.assertAlmostEqual(stats.jitter, 2.0)
        self.assertTrue(
            pinger.summary("h")[3].endswith("ms, 0 reordered, 1 duplicates, 1 late, 2 wrong")
        )

    def test_a_reply_without_the_run_s_token_is_wrong(self) -> None:
        """A forger who knows the format but not the token: every guess wrong."""
        pinger = self.make(count=1, size=32)
        for guess in (b"", b"AAAAAAAAAAAAAAAA", pinger.token[:-1] + b"X"):
            pinger.datagramReceived(probe(0, 32, guess).upper(), SERVER)
        self.assertEqual((pinger.stats.received, pinger.stats.wrong), (0, 3))
        self.answer(pinger, 0)
        self.assertEqual(pinger.stats.received, 1)

    def test_a_path_slower_than_the_timeout_loses_nothing(self) -> None:
        """Every reply 1.5 s late with --timeout 1: each probe is said to have
        no answer yet, then counted when its reply comes, the last ones too."""
        pinger = self.make(count=6, timeout=1.0)
        for tick in range(1, 40):
            self.clock.advance(0.25)
            for seq in range(6):
                if abs(seq * 1.0 + 1.5 - tick * 0.25) < 1e-9:
                    self.answer(pinger, seq)
        self.assertEqual(self.statuses, [0])
        self.assertEqual(
            pinger.summary("h")[1:],
            [
                "6 packets transmitted, 6 received, 0% packet loss, time 6500ms",
                "rtt min/avg/max/mdev = 1500.000/1500.000/1500.000/0.000 ms",
                "jitter 0.000 ms, rtt p50/p90/p99 = 1500.000/1500.000/1500.000 ms, "
                "0 reordered, 0 duplicates, 6 late, 0 wrong",
            ],
        )
        self.assertEqual(self.lines.count("no answer yet for seq=5"), 1)

    def test_a_duplicate_of_the_last_reply_counts(self) -> None:
        pinger = self.make(count=2, timeout=1.0)
        self.clock.advance(0.002)
        self.answer(pinger, 0)
        self.clock.advance(0.998)  # seq 1 sent at 1.0
        self.clock.advance(0.002)
        self.answer(pinger, 1)
        self.assertEqual(self.statuses, [])  # a duplicate may still come
        self.clock.advance(0.003)
        self.answer(pinger, 1)
        self.clock.advance(0.004)
        self.assertEqual(self.statuses, [])
        self.clock.advance(0.0011)  # 10 ms after the last probe: done
        self.assertEqual(self.statuses, [0])
        self.assertEqual(
            pinger.summary("h")[1],
            "2 packets transmitted, 2 received, +1 duplicates, 0% packet loss, time 1002ms",
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_nothing_answered_ends_after_the_last_timeout_with_1(self) -> None:
        pinger = self.make(count=2)
        self.clock.advance(1.0)
        self.clock.advance(2.49)
        self.assertEqual(self.statuses, [])
        self.clock.advance(0.01)  # the last probe, sent at 1.0, times out at 3.5
        self.assertEqual(self.statuses, [1])
        self.assertEqual(self.lines, ["no answer yet for seq=0", "no answer yet for seq=1"])
        self.assertEqual(
            pinger.summary("h")[1:],
            [
                "2 packets transmitted, 0 received, 100% packet loss, time 3500ms",
                "0 reordered, 0 duplicates, 0 late, 0 wrong",
            ],
        )

    def test_reordering_and_jitter_as_rfc_4737_and_irtt_count_them(self) -> None:
        """Round trips 0.6, 0.45, 0.2, 0.4 s for probes 0 to 3, sent 0.1 s
        apart, arrive as 2, 1, 0, 3: 1 and 0 came after 2 was answered, so two
        are reordered (RFC 4737); IPDV is over the consecutive pairs (0,1),
        (1,2), (2,3), whatever the arrival order: (0.15 + 0.25 + 0.2) / 3."""
        pinger = self.make(count=4, interval=0.1, timeout=5.0)
        rtts = {0: 0.6, 1: 0.45, 2: 0.2, 3: 0.4}
        events = sorted((seq * 0.1 + rtt, seq) for seq, rtt in rtts.items())
        self.assertEqual([seq for _, seq in events], [2, 1, 0, 3])
        for tick in range(1, 200):  # 5 ms ticks: the clock fires one timer an advance
            self.clock.advance(0.005)
            for at, seq in events:
                if abs(at - tick * 0.005) < 1e-9:
                    self.answer(pinger, seq)
        stats = pinger.stats
        self.assertEqual((stats.received, stats.reordered, stats.late), (4, 2, 0))
        self.assertAlmostEqual(stats.jitter, 0.2)
        self.assertEqual(
            [line.endswith("(reordered)") for line in self.lines], [False, True, True, False]
        )
        self.assertTrue(pinger.summary("h")[3].startswith("jitter 200.000 ms, rtt p50/p90/p99 = "))
        self.assertTrue(
            pinger.summary("h")[3].endswith(
                "/600.000/600.000 ms, 2 reordered, 0 duplicates, 0 late, 0 wrong"
            )
        )

    def test_json_lines(self) -> None:
        """With json_lines, every event is one JSON object, the summary too,
        with the same figures as the text."""
        pinger = self.make(count=3, timeout=1.0, json_lines=True)
        self.clock.advance(0.25)
        self.answer(pinger, 0)
        self.answer(pinger, 0)
        self.clock.advance(0.75)  # seq 1 sent; never answered
        self.answer(pinger, 5, mangle=lambda data: b"0 WRONG")
        self.clock.advance(1.0)  # seq 2 sent at 2.0; seq 1 times out at 2.0
        self.clock.advance(0.5)
        self.answer(pinger, 2)
        self.clock.advance(5)
        events = [json.loads(line) for line in self.lines]
        self.assertEqual(
            [event["event"] for event in events],
            ["reply", "duplicate", "wrong", "timeout", "reply"],
        )
        self.assertEqual(
            events[0],
            {
                "event": "reply",
                "elapsed_s": 0.25,
                "seq": 0,
                "bytes": 24,
                "rtt_ms": 250.0,
                "reordered": False,
                "late": False,
                "path": 0,
            },
        )
        self.assertEqual((events[2]["seq"], events[3]["seq"]), (0, 1))
        (summary,) = [json.loads(line) for line in pinger.summary("h")]
        self.assertEqual(
            {
                key: summary[key]
                for key in (
                    "event",
                    "transmitted",
                    "received",
                    "duplicates",
                    "wrong",
                    "late",
                    "reordered",
                    "rtt_min_ms",
                    "rtt_max_ms",
                    "jitter_ms",
                    "time_ms",
                )
            },
            {
                "event": "summary",
                "transmitted": 3,
                "received": 2,
                "duplicates": 1,
                "wrong": 1,
                "late": 0,
                "reordered": 0,
                "rtt_min_ms": 250.0,
                "rtt_max_ms": 500.0,
                "jitter_ms": None,
                "time_ms": 2500.0,
            },
        )
        self.assertAlmostEqual(summary["loss_pct"], 100 / 3, places=4)

    def test_ports_in_turn_each_reported(self) -> None:
        """--ports 3: probe n from port n % 3; a path that loses everything
        from one port shows as that port's loss, in the text and the JSON."""
        self.clock = task.Clock()
        self.lines = []
        pinger = Ping(
            SERVER,
            self.clock,
            self.lines.append,
            now=self.clock.seconds,
            count=6,
            ports=3,
            timeout=0.5,
            size=16,
        )
        transports = [FakeDatagramTransport() for _ in range(3)]
        pinger.transport, pinger.transports = transports[0], transports
        pinger.when_done = lambda status: None
        pinger.start()
        for tick in range(1, 80):
            self.clock.advance(0.125)  # exact in binary: no drift
            for seq in range(6):
                if seq % 3 != 1 and seq * 1.0 + 0.25 == tick * 0.125:
                    self.answer(pinger, seq)
        self.assertEqual(
            [[probe_ for probe_, _ in t.written] for t in transports],
            [
                [probe(n, 16, pinger.token) for n in (0, 3)],
                [probe(n, 16, pinger.token) for n in (1, 4)],
                [probe(n, 16, pinger.token) for n in (2, 5)],
            ],
        )
        summary = pinger.summary("h")
        self.assertEqual(
            summary[1], "6 packets transmitted, 4 received, 33.3333% packet loss, time 5250ms"
        )
        self.assertEqual(
            summary[-3:],
            [
                "port 1 of 3, from None: 2 transmitted, 2 received, 0% packet loss, "
                "rtt min/avg/max = 250.000/250.000/250.000 ms",
                "port 2 of 3, from None: 2 transmitted, 0 received, 100% packet loss",
                "port 3 of 3, from None: 2 transmitted, 2 received, 0% packet loss, "
                "rtt min/avg/max = 250.000/250.000/250.000 ms",
            ],
        )
        pinger.json_lines = True
        paths = json.loads(pinger.summary("h")[0])["ports"]
        self.assertEqual(
            [(path["transmitted"], path["received"], path["loss_pct"]) for path in paths],
            [(2, 2, 0.0), (2, 0, 100.0), (2, 2, 0.0)],
        )

    def test_dscp_each_reply_and_in_the_summary(self) -> None:
        pinger = self.make(count=3, dscp=46)
        for seq, tos in ((0, 46 << 2), (1, 0), (2, 46 << 2 | 2)):
            self.clock.advance(0.25)
            pinger.datagramReceived(probe(seq, 16, pinger.token).upper(), SERVER, tos)
            self.clock.advance(0.75)
        self.assertEqual(
            self.lines,
            [
                "24 bytes from 127.0.0.1: seq=0 time=250 ms",
                "24 bytes from 127.0.0.1: seq=1 time=250 ms (dscp 0, sent 46)",
                "24 bytes from 127.0.0.1: seq=2 time=250 ms",
            ],
        )
        self.assertEqual(
            pinger.summary("h")[-1], "dscp sent 46, replies came back with 0 (1), 46 (2)"
        )
        pinger.json_lines = True
        summary = json.loads(pinger.summary("h")[0])
        self.assertEqual((summary["dscp_sent"], summary["dscp_received"]), (46, {"0": 1, "46": 2}))

    def test_strangers_are_not_replies(self) -> None:
        pinger = self.make(count=1)
        self.answer(pinger, 0, addr=("127.0.0.2", 12000))
        self.answer(pinger, 0, addr=("127.0.0.1", 12001))
        self.assertEqual(pinger.stats.received, 0)
        self.assertEqual(len(self.lines), 2)
        self.assertTrue(all("not from the server, ignored" in line for line in self.lines))

    def test_until_stopped_and_quiet(self) -> None:
        pinger = self.make(quiet=True, interval=0.001, timeout=0.5)
        for seq in range(10_000):
            self.answer(pinger, seq)
            self.clock.advance(0.001)
        self.assertEqual(self.statuses, [])
        pinger.finish()  # Ctrl-C
        self.assertEqual(self.statuses, [0])
        self.assertEqual(self.lines, [])  # quiet: the summary is the caller's
        self.assertEqual(pinger.stats.received, 10_000)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertLessEqual(len(pinger.probes), 100_000)

    def test_a_send_the_host_refuses_ends_the_run_with_2(self) -> None:
        """No route: said once, and the end (as ping's "other error"), not
        a timeout a probe for ever."""
        pinger = self.make(count=None, timeout=1)

        def refuse(datagram, addr):
            raise OSError(101, "Network is unreachable")

        pinger.transport.write = refuse
        self.clock.advance(1.0)  # the second probe
        self.assertEqual(self.lines, ["seq=1: cannot send: Network is unreachable"])
        self.assertEqual(self.statuses, [2])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_full_send_buffer_is_said_and_the_run_goes_on(self) -> None:
        pinger = self.make(count=3, timeout=5)
        writes = []

        def full_once(datagram, addr):
            writes.append(datagram)
            if len(writes) == 1:
                raise BlockingIOError(11, "Resource temporarily unavailable")

        pinger.transport.write = full_once
        self.clock.advance(1.0)
        self.assertEqual(self.lines, ["seq=1: cannot send: Resource temporarily unavailable"])
        self.clock.advance(1.0)
        self.assertEqual(len(writes), 2)
        self.assertEqual(self.statuses, [])


def textbook_server() -> tuple[socket.socket, int]:
    """A blocking loop like the textbook's UDPServer.py, in a thread."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(30)

    def serve() -> None:
        try:
            while True:
                message, client = server.recvfrom(2048)
                server.sendto(message.decode().upper().encode(), client)
        except OSError:
            pass  # closed at the end of the test

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


@tiers.system
class RealPingTests(unittest.TestCase):
    """``udpupper-client --ping`` as a user runs it."""

    def setUp(self) -> None:
        daemon = Daemon("--port", "0")
        self.addCleanup(daemon.stop)
        self.port = daemon.start()

    def ping(self, *options: str, timeout: float = 60.0):
        return run_client("--ping", "--interval", "0.01", *options, timeout=timeout)

    def check_answered(self, result, host: str, count: int, size: int = 32) -> None:
        lines = result.stdout.decode().splitlines()
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(lines[0].startswith(f"PING {host} ("), lines[0])
        replies = [line for line in lines if " bytes from " in line]
        self.assertEqual(len(replies), count, lines)
        self.assertTrue(all(line.startswith(f"{size + 8} bytes from ") for line in replies))
        header = lines.index(f"--- {host} ping statistics ---")
        self.assertRegex(
            lines[header + 1],
            rf"^{count} packets transmitted, {count} received, "
            r"0% packet loss, time \d+ms$",
        )
        self.assertRegex(
            lines[header + 2], r"^rtt min/avg/max/mdev = [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms$"
        )
        self.assertRegex(
            lines[header + 3],
            r"^jitter [\d.]+ ms, rtt p50/p90/p99 = [\d.]+/[\d.]+/[\d.]+ "
            r"ms, 0 reordered, 0 duplicates, 0 late, 0 wrong$",
        )
        self.assertEqual(len(lines), header + 5, lines)
        self.assertRegex(lines[-1], COSTS)

    def test_ipv4_and_a_name(self) -> None:
        for host in ("127.0.0.1", "localhost"):
            result = self.ping("--host", host, "--port", str(self.port), "--count", "5")
            self.check_answered(result, host, 5)

    def test_ipv6_and_sizes(self) -> None:
        if NO_IPV6:
            raise unittest.SkipTest(NO_IPV6)
        for size in ("24", "1400", "65527"):
            result = self.ping(
                "--host", "::1", "--port", str(self.port), "--count", "2", "--size", size
            )
            self.check_answered(result, "::1", 2, int(size))

    def test_textbook_server(self) -> None:
        server, port = textbook_server()
        self.addCleanup(server.close)
        self.check_answered(self.ping("--port", str(port), "--count", "3"), "localhost", 3)

    def test_quiet(self) -> None:
        result = self.ping("--port", str(self.port), "--count", "3", "--quiet")
        lines = result.stdout.decode().splitlines()
        # PING, blank, four summary lines, what the client's timing cost
        self.assertEqual(len(lines), 7, lines)
        self.assertEqual(result.returncode, 0)

    def test_a_closed_port_ends_it_at_once(self) -> None:
        """The kernel's ICMP port unreachable ends the run, said as ping says
        it, long before the timeout (an hour) would have."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        result = self.ping("--port", str(port), "--count", "5", "--timeout", "3600", timeout=60)
        lines = result.stdout.decode().splitlines()
        self.assertEqual((result.returncode, result.stderr), (1, b""))
        self.assertIn("From 127.0.0.1: port unreachable", lines)
        header = lines.index("--- localhost ping statistics ---")
        self.assertRegex(
            lines[header + 1], r"^1 packets transmitted, 0 received, \+1 errors, 100% packet loss,"
        )
        self.assertEqual(lines[header + 2], "0 reordered, 0 duplicates, 0 late, 0 wrong")

    def test_ports(self) -> None:
        result = self.ping("--port", str(self.port), "--count", "8", "--ports", "4")
        lines = result.stdout.decode().splitlines()
        self.assertEqual(result.returncode, 0, result.stderr)
        paths = lines[-4:]
        self.assertEqual(
            [line.split(",")[0].split(" from ")[0] for line in paths],
            [f"port {n} of 4" for n in range(1, 5)],
        )
        sources = {line.split(" from ")[1].split(":")[0] for line in paths}
        self.assertEqual(len(sources), 4, paths)  # four source ports
        self.assertTrue(
            all(
                "2 transmitted, 2 received, 0% packet loss, rtt min/avg/max = " in line
                for line in paths
            ),
            paths,
        )
        events = [
            json.loads(line)
            for line in self.ping(
                "--port", str(self.port), "--count", "4", "--ports", "2", "--json"
            )
            .stdout.decode()
            .splitlines()
        ]
        self.assertEqual([event.get("path") for event in events[1:5]], [0, 1, 0, 1])
        self.assertEqual(len({path["source_port"] for path in events[-1]["ports"]}), 2)

    def test_dscp_both_ways(self) -> None:
        """--dscp 46 to a daemon that reflects it, one that does not and the
        textbook's server: the marking each reply came back with."""
        reflecting = Daemon("--port", "0", "--reflect-dscp")
        self.addCleanup(reflecting.stop)
        reflecting_port = reflecting.start()
        textbook, textbook_port = textbook_server()
        self.addCleanup(textbook.close)
        hosts = ["127.0.0.1"] + ([] if NO_IPV6 else ["::1"])
        for host in hosts:
            for port, came_back in ((reflecting_port, 46), (self.port, 0)):
                events = [
                    json.loads(line)
                    for line in self.ping(
                        "--host",
                        host,
                        "--port",
                        str(port),
                        "--count",
                        "3",
                        "--dscp",
                        "46",
                        "--json",
                    )
                    .stdout.decode()
                    .splitlines()
                ]
                self.assertEqual(
                    {
                        (event["dscp"], event["ecn"])
                        for event in events
                        if event["event"] == "reply"
                    },
                    {(came_back, 0)},
                    host,
                )
                self.assertEqual(events[-1]["dscp_received"], {str(came_back): 3})
        text = (
            self.ping(
                "--host", "127.0.0.1", "--port", str(textbook_port), "--count", "2", "--dscp", "46"
            )
            .stdout.decode()
            .splitlines()
        )
        self.assertTrue(text[1].endswith("ms (dscp 0, sent 46)"), text)
        self.assertIn("dscp sent 46, replies came back with 0 (2)", text)

    def test_json_lines(self) -> None:
        result = self.ping("--port", str(self.port), "--count", "4", "--json")
        self.assertEqual(result.returncode, 0, result.stderr)
        events = [json.loads(line) for line in result.stdout.decode().splitlines()]
        self.assertEqual(
            [event["event"] for event in events], ["start"] + ["reply"] * 4 + ["summary"]
        )
        self.assertEqual(
            (events[0]["port"], events[0]["size"], events[0]["count"]), (self.port, 32, 4)
        )
        self.assertEqual([event["seq"] for event in events[1:5]], [0, 1, 2, 3])
        summary = events[-1]
        self.assertEqual(
            (summary["transmitted"], summary["received"], summary["loss_pct"], summary["wrong"]),
            (4, 4, 0, 0),
        )
        rtts = [event["rtt_ms"] for event in events[1:5]]
        self.assertAlmostEqual(summary["rtt_max_ms"], max(rtts), places=3)
        self.assertAlmostEqual(
            summary["jitter_ms"], sum(abs(b - a) for a, b in zip(rtts, rtts[1:])) / 3, places=3
        )
        self.assertLessEqual(summary["rtt_p50_ms"], summary["rtt_p99_ms"])

    def test_usage_errors_exit_2(self) -> None:
        for options in (
            ["--ping", "--interval", "0.0001"],
            ["--ping", "--size", "7"],
            ["--ping", "--count", "0"],
            ["--ping", "--size", "65528"],
            ["--ping", "--host", "127.0.0.1", "--size", "65508"],
            ["--count", "3"],
            ["--quiet"],
            ["--size", "40"],
            ["--json"],
            ["--ports", "2"],
            ["--ping", "--ports", "0"],
            ["--ping", "--ports", "65"],
            ["--ping", "--dscp", "64"],
            ["--ping", "--dscp", "-1"],
            ["--dscp", "46"],
        ):
            result = run_client(*options)
            self.assertEqual(result.returncode, 2, options)
            self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
            self.assertEqual(result.stdout, b"", options)

    def test_ctrl_c_gives_the_summary_and_sigterm_143(self) -> None:
        for signum, status in ((signal.SIGINT, 0), (signal.SIGTERM, 143)):
            client = subprocess.Popen(
                [*CLIENT, "--ping", "--port", str(self.port), "--interval", "0.05"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
            first = b"".join(client.stdout.readline() for _ in range(4))
            self.assertEqual(first.count(b"bytes from"), 3, first)
            client.send_signal(signum)
            rest, stderr = client.communicate(timeout=15)
            lines = (first + rest).decode().splitlines()
            self.assertEqual((client.returncode, stderr), (status, b""), signum)
            header = lines.index("--- localhost ping statistics ---")
            self.assertRegex(lines[header + 1], r" 0% packet loss")

    def test_output_closed_early(self) -> None:
        read, write = os.pipe()
        client = subprocess.Popen(
            [*CLIENT, "--ping", "--port", str(self.port), "--interval", "0.01"],
            stdout=write,
            stderr=subprocess.PIPE,
        )
        os.close(write)
        with os.fdopen(read, "rb") as output:
            output.readline()
        stderr = client.communicate(timeout=15)[1]
        self.assertEqual((client.returncode, stderr), (-signal.SIGPIPE, b""))


@tiers.system
class ImpairedPathTests(unittest.TestCase):
    """--ping through a relay told to lose, duplicate, delay or reorder a
    share of datagrams each way (netem is not in every kernel): the summary's
    counts are what the relay did."""

    def setUp(self) -> None:
        daemon = Daemon("--port", "0")
        self.addCleanup(daemon.stop)
        self.port = daemon.start()

    def through(self, probes: int = 400, timeout: str = "1", **impairments) -> tuple[dict, dict]:
        relay = Relay(
            ("127.0.0.1", self.port),
            **{
                "late": 0.0,
                "duplicate": 0.0,
                "reorder": 0.0,
                "lose": 0.0,
                "seed": 7,
                **impairments,
            },
        )
        self.addCleanup(relay.stop)
        result = run_client(
            "--ping",
            "--json",
            "--host",
            "127.0.0.1",
            "--port",
            str(relay.port),
            "--count",
            str(probes),
            "--interval",
            "0.003",
            "--timeout",
            timeout,
        )
        events = [json.loads(line) for line in result.stdout.decode().splitlines()]
        self.assertEqual(events[-1]["event"], "summary", result.stderr)
        return events[-1], dict(relay.counts)

    def test_loss(self) -> None:
        summary, relay = self.through(lose=0.05)
        self.assertGreater(relay["lost"], 10)
        # Each probe crosses once each way: each datagram lost is a probe lost.
        self.assertEqual(summary["transmitted"] - summary["received"], relay["lost"])
        self.assertAlmostEqual(summary["loss_pct"], 100 * relay["lost"] / 400, places=3)
        self.assertEqual((summary["duplicates"], summary["wrong"]), (0, 0))

    def test_duplication(self) -> None:
        summary, relay = self.through(duplicate=0.05)
        self.assertGreater(relay["duplicated"], 10)
        # Each copy made, either way, is one more reply.
        self.assertEqual(summary["duplicates"], relay["duplicated"])
        self.assertEqual((summary["received"], summary["wrong"]), (400, 0))

    def test_late_replies(self) -> None:
        """Delayed 0.3 s past a 0.1 s timeout: late, still received, and
        reordered behind the probes that overtook them."""
        summary, relay = self.through(late=0.03, delay=0.3, timeout="0.1")
        self.assertGreater(relay["late"], 10)
        self.assertEqual(summary["received"], 400)
        # A probe delayed both ways is one late reply.
        self.assertLessEqual(summary["late"], relay["late"])
        self.assertGreaterEqual(summary["late"], relay["late"] - relay["late"] // 4)
        self.assertEqual(summary["reordered"], summary["late"])
        self.assertGreater(summary["rtt_max_ms"], 300)
        self.assertGreater(summary["rtt_p99_ms"], 300)
        self.assertLess(summary["rtt_p50_ms"], 50)

    def test_reordering(self) -> None:
        """Held 0.5 to 5 ms, 3 ms apart: some overtaken, none lost; jitter
        rises with the spread of the waits."""
        summary, relay = self.through(reorder=0.2)
        self.assertGreater(relay["reordered"], 50)
        self.assertEqual((summary["received"], summary["duplicates"]), (400, 0))
        self.assertGreater(summary["reordered"], 0)
        self.assertLess(summary["reordered"], relay["reordered"])
        quiet, _ = self.through(probes=100)
        self.assertGreater(summary["jitter_ms"], quiet["jitter_ms"])
