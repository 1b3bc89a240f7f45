"""``--ping --sweep``: the bisection on a fake path, then real paths."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess

from twisted.internet import task
from twisted.trial import unittest

from tests import tiers
from tests.netns import Link, why_not
from tests.processes import CLIENT, Daemon, run_client
from tests.support import NO_IPV6
from udpupper.client.sweep import Sweep
from udpupper.client.wire import probe

SERVER = ("192.0.2.1", 12000)


class FakePath:
    """Sends refused above ``local`` with DF set (EMSGSIZE), answered up to
    ``path`` whole, and fragmented ones answered when ``fragments`` pass."""

    def __init__(self, clock: task.Clock, local: int, path: int, fragments: bool) -> None:
        self.clock, self.local, self.path, self.fragments = clock, local, path, fragments
        self.dont_fragment = False
        self.sweep: Sweep | None = None
        self.sizes: list[int] = []

    def write(self, datagram: bytes, addr: tuple) -> None:
        size = len(datagram)
        self.sizes.append(size)
        if self.dont_fragment and size > self.local:
            raise OSError(errno.EMSGSIZE, "Message too long")
        if size <= self.path or (not self.dont_fragment and self.fragments):
            assert self.sweep is not None
            self.clock.callLater(0.01, self.sweep.datagramReceived, datagram.upper(), SERVER)


@tiers.unit
class SweepTests(unittest.TestCase):
    def run_sweep(
        self, local: int, path: int, fragments: bool = True, maximum: int = 65_507
    ) -> tuple[list[str], list[int], FakePath]:
        clock = task.Clock()
        lines: list[str] = []
        statuses: list[int] = []
        fake = FakePath(clock, local, path, fragments)

        def fragmenting(on: bool) -> None:
            fake.dont_fragment = not on

        sweep = Sweep(
            SERVER, clock, lines.append, fragmenting, maximum=maximum, timeout=1.0, tries=2
        )
        fake.sweep = sweep
        sweep.transport = fake  # type: ignore[assignment]
        sweep.when_done = statuses.append
        sweep.start()
        for _ in range(10_000):  # 100 s at most
            clock.advance(0.01)
            if statuses:
                break
        self.assertEqual(clock.getDelayedCalls(), [])
        return lines, statuses, fake

    def test_everything_fits(self) -> None:
        lines, statuses, fake = self.run_sweep(local=65_536, path=65_507)
        self.assertEqual(statuses, [0])
        self.assertEqual(fake.sizes, [65_507])
        self.assertEqual(
            lines[-1],
            "largest answered with the DF bit set: 65507 bytes (65535 with the IP and UDP headers)",
        )

    def test_a_small_mtu_here_and_fragments_through(self) -> None:
        lines, statuses, fake = self.run_sweep(local=1_472, path=1_472)
        self.assertEqual(statuses, [0])
        self.assertIn(
            "largest answered with the DF bit set: 1472 bytes (1500 with the IP and UDP headers)",
            lines,
        )
        self.assertEqual(lines[-1], "65507 bytes fragmented: answered, fragments get through")
        self.assertIn(
            "65507 bytes: too big to send from here unfragmented (this host's route, or a "
            "router's ICMP it keeps)",
            lines,
        )
        self.assertLess(len(fake.sizes), 20)  # bisection, not a walk

    def test_a_smaller_mtu_on_the_path_and_a_fragmentation_black_hole(self) -> None:
        """The host can send 1,472, a link further on carries 1,252; fragments
        are dropped: sizes between time out (twice each), and the verdict
        names the black hole."""
        lines, statuses, fake = self.run_sweep(local=1_472, path=1_252, fragments=False)
        self.assertEqual(statuses, [0])
        self.assertIn(
            "largest answered with the DF bit set: 1252 bytes (1280 with the IP and UDP headers)",
            lines,
        )
        self.assertTrue(
            lines[-1].startswith(
                "65507 bytes fragmented: no answer: fragments are dropped on this path"
            )
        )
        timed_out = [size for size in set(fake.sizes) if 1_252 < size <= 1_472]
        self.assertTrue(timed_out)
        self.assertTrue(all(fake.sizes.count(size) == 2 for size in timed_out))

    def test_a_server_that_reads_less(self) -> None:
        """The textbook's server reads 2,048 bytes and answers those: the
        probe got there whole, so it counts as answered."""
        clock = task.Clock()
        lines: list[str] = []
        sweep = Sweep(SERVER, clock, lines.append, lambda on: None, maximum=65_507)
        fake = FakePath(clock, 65_536, 0, False)
        sweep.transport = fake  # type: ignore[assignment]
        sweep.start()
        sweep.datagramReceived(probe(1, 65_507, sweep.token)[:2048].upper(), SERVER)
        self.assertEqual(
            lines,
            [
                "65507 bytes: answered (with its first 2048 bytes: the server reads no more)",
                "largest answered with the DF bit set: 65507 bytes "
                "(65535 with the IP and UDP headers)",
            ],
        )

    def test_nothing_answers(self) -> None:
        lines, statuses, _ = self.run_sweep(local=65_536, path=0, fragments=False)
        self.assertEqual(statuses, [1])
        self.assertEqual(lines[-1], "no probe answered, from 24 to 65507 bytes")

    def test_late_and_wrong_replies_are_not_answers(self) -> None:
        clock = task.Clock()
        lines: list[str] = []
        sweep = Sweep(SERVER, clock, lines.append, lambda on: None, maximum=100)
        fake = FakePath(clock, 100, 0, False)  # answers nothing by itself
        sweep.transport = fake  # type: ignore[assignment]
        sweep.start()
        sweep.datagramReceived(probe(1, 100, sweep.token), SERVER)  # not upper-cased
        sweep.datagramReceived(
            probe(1, 100, sweep.token).upper(), ("192.0.2.9", 12000)
        )  # a stranger
        sweep.datagramReceived(probe(2, 100, sweep.token).upper(), SERVER)  # another probe
        sweep.datagramReceived(b"", SERVER)  # nothing of it
        self.assertEqual(lines, [])
        sweep.datagramReceived(probe(1, 100, sweep.token).upper(), SERVER)
        self.assertEqual(lines[0], "100 bytes: answered")


@tiers.system
class RealSweepTests(unittest.TestCase):
    def setUp(self) -> None:
        daemon = Daemon("--port", "0")
        self.addCleanup(daemon.stop)
        self.port = daemon.start()

    def test_loopback(self) -> None:
        """Loopback's MTU is 65,536: every IPv4 datagram fits; over IPv6 the
        largest unfragmented one is 65,488 and larger ones go fragmented."""
        result = run_client("--ping", "--sweep", "--host", "127.0.0.1", "--port", str(self.port))
        lines = result.stdout.decode().splitlines()
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(lines[0].startswith("SWEEP 127.0.0.1 (127.0.0.1) port "))
        self.assertEqual(
            lines[-1],
            "largest answered with the DF bit set: 65507 bytes (65535 with the IP and UDP headers)",
        )
        if NO_IPV6:
            return
        lines = (
            run_client(
                "--ping", "--sweep", "--host", "::1", "--port", str(self.port), "--timeout", "0.5"
            )
            .stdout.decode()
            .splitlines()
        )
        self.assertEqual(
            lines[-2:],
            [
                "largest answered with the DF bit set: 65488 bytes "
                "(65536 with the IP and UDP headers)",
                "65527 bytes fragmented: answered, fragments get through",
            ],
        )

    def test_the_textbook_server(self) -> None:
        from tests.client.test_ping import textbook_server

        textbook, port = textbook_server()
        self.addCleanup(textbook.close)
        result = run_client("--ping", "--sweep", "--host", "127.0.0.1", "--port", str(port))
        lines = result.stdout.decode().splitlines()
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(
            lines[1:],
            [
                "65507 bytes: answered (with its first 2048 bytes: the server reads no more)",
                "largest answered with the DF bit set: 65507 bytes "
                "(65535 with the IP and UDP headers)",
            ],
        )

    def test_output_closed_early(self) -> None:
        """``| head -1``: the sweep ends by SIGPIPE, as cat does, saying
        nothing, and sends nothing more (it used to hang)."""
        read, write = os.pipe()
        client = subprocess.Popen(
            [
                *CLIENT,
                "--ping",
                "--sweep",
                "--json",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            stdout=write,
            stderr=subprocess.PIPE,
        )
        os.close(write)
        with os.fdopen(read, "rb") as output:
            output.readline()
        stderr = client.communicate(timeout=60)[1]
        self.assertEqual((client.returncode, stderr), (-signal.SIGPIPE, b""))

    def test_usage(self) -> None:
        for options in (
            ["--sweep"],
            ["--ping", "--sweep", "--count", "3"],
            ["--ping", "--sweep", "--size", "100"],
        ):
            result = run_client(*options, timeout=30)
            self.assertEqual(result.returncode, 2, options)
            self.assertEqual(len(result.stderr.decode().strip().splitlines()), 1, options)


@tiers.system
class PathMTUTests(unittest.TestCase):
    """Over a veth pair with an MTU of 1,280 in network namespaces, and then
    with a firewall on the server's side that drops fragments."""

    skip = why_not() or (None if shutil.which("nft") else "nftables' nft is not installed")

    def setUp(self) -> None:
        self.link = Link(
            "mtu", ["10.78.0.1/24", "2001:db8:78::1/64"], ["10.78.0.3/24", "2001:db8:78::3/64"]
        )
        self.addCleanup(self.link.remove)
        for namespace, device in (
            (self.link.server, self.link.server_device),
            (self.link.client, self.link.client_device),
        ):
            subprocess.run(
                ["ip", "-n", namespace, "link", "set", device, "mtu", "1280"],
                check=True,
                timeout=30,
            )
        daemon = Daemon("--port", "0", "--exempt", "", prefix=tuple(self.link.in_server()))
        self.addCleanup(daemon.stop)
        self.port = daemon.start()

    def sweep(self, host: str) -> list[str]:
        result = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.link.client,
                *CLIENT,
                "--ping",
                "--sweep",
                "--host",
                host,
                "--port",
                str(self.port),
                "--timeout",
                "0.3",
            ],
            capture_output=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout.decode().splitlines()

    def test_mtu_and_fragments(self) -> None:
        for host, largest, maximum in (("10.78.0.1", 1252, 65507), ("2001:db8:78::1", 1232, 65527)):
            lines = self.sweep(host)
            self.assertIn(
                f"largest answered with the DF bit set: {largest} bytes "
                "(1280 with the IP and UDP headers)",
                lines,
                host,
            )
            self.assertEqual(
                lines[-1], f"{maximum} bytes fragmented: answered, fragments get through"
            )
        # Before reassembly (conntrack's is at -400): each fragment, either family.
        rules = """table inet drop_fragments {
            chain in {
                type filter hook prerouting priority -500;
                ip frag-off & 0x3fff != 0 drop
                exthdr frag exists drop
            }
        }"""
        subprocess.run(
            [*self.link.in_server(), "nft", "-f", "-"], input=rules.encode(), check=True, timeout=30
        )
        for host, largest, maximum in (("10.78.0.1", 1252, 65507), ("2001:db8:78::1", 1232, 65527)):
            lines = self.sweep(host)
            self.assertIn(
                f"largest answered with the DF bit set: {largest} bytes "
                "(1280 with the IP and UDP headers)",
                lines,
                host,
            )
            self.assertTrue(
                lines[-1].startswith(
                    f"{maximum} bytes fragmented: no answer: fragments are dropped"
                ),
                lines[-1],
            )
