"""What needs real interfaces: several addresses, broadcast and multicast.

Each test builds two hosts in network namespaces joined by a veth pair (as
root, with iproute2, as CI runs), starts ``twistd -n udpupper`` on one with
its defaults, and sends from the other.  Skipped where that cannot be done.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from twisted.trial import unittest

from tests import tiers
from tests.netns import ROOT, Link, why_not
from tests.processes import Daemon
from tests.support import long_run
from udpupper.bench import spoof

SERVER_ADDRESSES = ["10.77.0.1/24", "10.77.0.2/24", "2001:db8:77::1/64", "2001:db8:77::2/64"]
CLIENT_ADDRESSES = ["10.77.0.3/24", "2001:db8:77::3/64"]


@tiers.system
class NetnsTestCase(unittest.TestCase):
    skip = why_not()
    options: tuple[str, ...] = ()

    def setUp(self) -> None:
        self.link = Link(self.id()[-3:].replace(".", ""), SERVER_ADDRESSES, CLIENT_ADDRESSES)
        self.addCleanup(self.link.remove)
        self.daemon = Daemon("--port", "0", *self.options, prefix=tuple(self.link.in_server()))
        self.addCleanup(self.daemon.stop)
        self.port = self.daemon.start()

    def ask_not_unicast(self) -> list[dict]:
        return [
            self.link.ask("10.77.0.255", self.port, "subnet", broadcast=True, timeout=1),
            self.link.ask("255.255.255.255", self.port, "all", broadcast=True, timeout=1),
            self.link.ask("224.0.0.1", self.port, "all hosts", timeout=1),
            self.link.ask(f"ff02::1%{self.link.client_device}", self.port, "all nodes", timeout=1),
        ]


@tiers.system
class ReplySourceTests(NetnsTestCase):
    def test_each_address_answers_from_itself(self) -> None:
        for address in ("10.77.0.1", "10.77.0.2", "2001:db8:77::1", "2001:db8:77::2"):
            answer = self.link.ask(address, self.port, f"to {address}")
            self.assertEqual(answer["reply"], f"TO {address}".upper(), address)
            self.assertEqual(answer["source"], [address, self.port])
        counters = self.daemon.summary()
        self.assertEqual((counters["received"], counters["replied"]), (4, 4))


@tiers.system
class NoBroadcastTests(NetnsTestCase):
    def test_broadcast_and_multicast_get_no_reply(self) -> None:
        refused = self.ask_not_unicast()
        self.assertEqual([answer["reply"] for answer in refused], [None] * 4)
        # The daemon still answers unicast, and counted what it refused.
        self.assertEqual(self.link.ask("10.77.0.1", self.port, "ok")["reply"], "OK")
        counters = self.daemon.summary()
        # Both broadcasts and ff02::1 reach the dual-stack socket; 224.0.0.1
        # reaches it only if it joined the group, which it has no reason to.
        self.assertGreaterEqual(counters["not_unicast_destination"], 3)
        self.assertEqual(counters["received"] - 1, counters["not_unicast_destination"])
        self.assertEqual(counters["replied"], 1)


@tiers.system
class NoBroadcastIPv4Tests(NetnsTestCase):
    """An IPv4 wildcard socket receives multicast for the host's groups."""

    options = ("--interface", "0.0.0.0")

    def test_broadcast_and_multicast_get_no_reply(self) -> None:
        refused = self.ask_not_unicast()[:3]
        self.assertEqual([answer["reply"] for answer in refused], [None] * 3)
        answer = self.link.ask("10.77.0.2", self.port, "ok")
        self.assertEqual((answer["reply"], answer["source"]), ("OK", ["10.77.0.2", self.port]))
        counters = self.daemon.summary()
        self.assertEqual(counters["not_unicast_destination"], 3)
        self.assertEqual((counters["received"], counters["replied"]), (4, 1))


@tiers.system
class SmallMTUTests(NetnsTestCase):
    """Replies to one client go out as one segmented (GSO) send; on a link
    whose MTU is smaller than a segment the kernel refuses that, and the
    replies go one by one, fragmented, as any UDP server's would."""

    def test_large_replies_in_a_run_over_a_small_mtu(self) -> None:
        for namespace, device in (
            (self.link.server, self.link.server_device),
            (self.link.client, self.link.client_device),
        ):
            subprocess.run(
                ["ip", "-n", namespace, "link", "set", device, "mtu", "1280"],
                check=True,
                timeout=30,
            )
        for host in ("10.77.0.1", "2001:db8:77::1"):
            answer = self.link.ask(host, self.port, "m" * 1400, burst=40, timeout=3)
            self.assertEqual(answer["replies"], ["M" * 1400] * 40, host)
        counters = self.daemon.summary()
        self.assertEqual((counters["received"], counters["replied"]), (80, 80))


@tiers.system
class SpoofedPathMtuTests(NetnsTestCase):
    """A stranger's ICMP "fragmentation needed" (MTU 552) or "packet too
    big" (1280) toward a client does not make the daemon's large replies to
    it leave in more fragments than before (2.8 times the packets, 125 for
    45, before IP_PMTUDISC_OMIT)."""

    options = ("--exempt", "10.77.0.0/24,2001:db8:77::/64")  # 64 KiB replies, no cap

    def test_large_replies_keep_their_fragments(self) -> None:
        if spoof.why_not():
            raise unittest.SkipTest(spoof.why_not())
        for host, mtu in (("10.77.0.1", 552), ("2001:db8:77::1", 1280)):
            run = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.link.client,
                    sys.executable,
                    "-m",
                    "tests.pmtu",
                    host,
                    str(self.port),
                    "--mtu",
                    str(mtu),
                ],
                capture_output=True,
                check=True,
                timeout=60,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": ROOT},
            )
            before, after = json.loads(run.stdout)["fragments"]
            self.assertGreater(before, 40, host)  # 65,000 bytes over 1,500
            self.assertEqual(after, before, host)


@tiers.system
class LoopBetweenHostsTests(unittest.TestCase):
    """Two daemons on two hosts, neither exempt for the other: one spoofed
    datagram from one daemon's address and port to the other starts a loop
    that the rate limit (burst 400) ends long before the loop breaker would."""

    skip = why_not() or spoof.why_not()

    def test_the_rate_limit_ends_it(self) -> None:
        link = Link("lp", ["10.77.0.1/24"], ["10.77.0.3/24"])
        self.addCleanup(link.remove)
        here = Daemon("--port", "0", prefix=tuple(link.in_server()))
        there = Daemon("--port", "0", prefix=("ip", "netns", "exec", link.client))
        for daemon in (here, there):
            self.addCleanup(daemon.stop)
        here_port, there_port = here.start(), there.start()
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                link.client,
                sys.executable,
                "-c",
                "from udpupper.bench.spoof import send_spoofed; "
                f"send_spoofed(('10.77.0.3', {there_port}), ('10.77.0.1', {here_port}), b'x')",
            ],
            check=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": ROOT},
            timeout=60,
        )
        time.sleep(1.5)
        counters = [here.summary(), there.summary()]
        received = sum(counter["received"] for counter in counters)
        self.assertLess(received, 2 * (400 + 2 * 200), counters)  # dead in the burst
        self.assertEqual(sum(counter.get("rate_limited", 0) for counter in counters), 1)


@tiers.system
class LocalSourceFromOutsideTests(NetnsTestCase):
    """A datagram from the wire whose source is one of the host's own
    addresses: Linux drops it for IPv4, not for IPv6; docs/protections.md's nftables
    rule drops it for both, before anything answers it."""

    RULE = ["add rule inet udpupper input iif != lo fib saddr type local drop"]

    def spoof_from_the_server_itself(self, host: str) -> None:
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.link.client,
                sys.executable,
                "-c",
                "from udpupper.bench.spoof import send_spoofed; "
                f"send_spoofed(({host!r}, 40000), ({host!r}, {self.port}), b'loop?')",
            ],
            check=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": ROOT},
            timeout=60,
        )

    def nft(self, *commands: str) -> None:
        for command in commands:
            subprocess.run(
                ["ip", "netns", "exec", self.link.server, "nft", *command.split()],
                check=True,
                capture_output=True,
                timeout=30,
            )

    def test_without_and_with_the_rule(self) -> None:
        if shutil.which("nft") is None:
            raise unittest.SkipTest("nftables is not installed")
        if spoof.why_not():
            raise unittest.SkipTest(spoof.why_not())
        for host in ("10.77.0.1", "2001:db8:77::1"):  # the link is up, neighbours known
            self.assertEqual(self.link.ask(host, self.port, "ready")["reply"], "READY")
        self.spoof_from_the_server_itself("10.77.0.1")  # a martian: dropped
        self.spoof_from_the_server_itself("2001:db8:77::1")  # delivered
        time.sleep(0.5)
        self.nft(
            "add table inet udpupper",
            "add chain inet udpupper input { type filter hook input priority 0 ; }",
            *self.RULE,
        )
        self.spoof_from_the_server_itself("2001:db8:77::1")  # dropped by the rule
        time.sleep(0.5)
        self.assertEqual(self.link.ask("2001:db8:77::1", self.port, "ok")["reply"], "OK")
        counters = self.daemon.summary()
        self.assertEqual((counters["received"], counters["replied"]), (2 + 2, 2 + 2))


# The daemon's --new-prefix-rate here: half its default, so that the flood,
# whose speed is the host's, is ten times it and more on a slow host too.
NEW_PREFIX_RATE = 5_000


@tiers.system
class NewClientsUnderAFloodTests(unittest.TestCase):
    """Floods of spoofed sources (150,000 datagrams a second asked; 94,000 to
    130,000 reached on CI hosts), IPv4 /24s and IPv6 /56s, from a host that
    routes 32.0.0.0/3 and 2001:db8::/32 to itself, at least ten times the
    strangers the daemon answers, in the shapes an attacker who adapts
    sends: never one source twice; a small space whose prefixes recur (every
    /24 of a /8, every /56 of a /32); each source twice.  New clients that
    ask as udpupper-client does are answered by their second try (the
    floods of one datagram a source) or fourth (twice), and known clients
    (three datagrams) that kept quiet are still known."""

    skip = why_not()
    SHAPES = {  # name: (space, sends, spacing) for tests.newclients
        "never the same source": ("large", 1, 0.0),
        "every prefix of a small space": ("small", 1, 0.0),
        "each source twice": ("large", 2, 0.0),
    }

    @long_run
    def test_new_clients_get_in_and_known_ones_stay_known(self) -> None:
        link = Link("nc", ["10.99.0.1/24", "fd00:99::1/64"], ["10.99.0.2/24", "fd00:99::2/64"])
        self.addCleanup(link.remove)
        for command in (
            ["route", "add", "local", "32.0.0.0/3", "dev", "lo"],
            ["-6", "route", "add", "local", "2001:db8::/32", "dev", "lo"],
        ):
            subprocess.run(["ip", "-n", link.client, *command], check=True, timeout=30)
        for command in (
            ["route", "add", "32.0.0.0/3", "via", "10.99.0.2"],
            ["-6", "route", "add", "2001:db8::/32", "via", "fd00:99::2"],
        ):
            subprocess.run(["ip", "-n", link.server, *command], check=True, timeout=30)
        for family in ("ipv4", "ipv6"):  # sysctl net.*.ip_nonlocal_bind=1 there
            subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    link.client,
                    "sh",
                    "-c",
                    f"echo 1 > /proc/sys/net/{family}/ip_nonlocal_bind",
                ],
                check=True,
                timeout=30,
            )
        pin = ["taskset", "-c", "0"] if shutil.which("taskset") and os.cpu_count() > 1 else []
        # A table small enough that the 34 prefixes a second it settles
        # (4,096 in 120 s) would take a known one's place if a flood could
        # settle any.  A buffer that rides out a stall of the daemon's core:
        # with the default 8 MiB (granted for 4), near a flood the daemon
        # answers at most a little faster than it comes, a stall of a few
        # hundred milliseconds (a VM's, or SIGSTOP for 300 ms) overflowed it,
        # and the first tries lost in the kernel made the clients' second
        # tries their first.  What is asked here is the daemon's decisions;
        # what a stall costs is the kernel-drops count below.
        daemon = Daemon(
            "--port",
            "0",
            "--rate-table",
            "4096",
            "--rcvbuf",
            str(64 << 20),
            "--new-prefix-rate",
            str(NEW_PREFIX_RATE),
            prefix=(*link.in_server(), *pin),
        )
        self.addCleanup(daemon.stop)
        port = daemon.start()
        results = []
        for name, (space, sends, spacing) in self.SHAPES.items():
            for host in ("10.99.0.1", "fd00:99::1"):
                self.assertEqual(link.ask(host, port, "ready")["reply"], "READY")  # link up
                run = subprocess.run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        link.client,
                        sys.executable,
                        "-m",
                        "tests.newclients",
                        host,
                        str(port),
                        "--space",
                        space,
                        "--sends",
                        str(sends),
                        "--spacing",
                        str(spacing),
                    ],
                    capture_output=True,
                    check=True,
                    timeout=120,
                    cwd=ROOT,
                    env={**os.environ, "PYTHONPATH": ROOT},
                )
                results.append((name, sends, json.loads(run.stdout)))
        counters = daemon.summary()
        for name, sends, result in results:
            # The flood must dwarf what the daemon answers of strangers: at
            # ten times it, new clients that had to win a place against it
            # would lose nine tries in ten.  (What the flood reaches is the
            # machine's: its kernel carries each datagram into the daemon's
            # namespace on the flood's core; over IPv6, 107,688 a second on
            # one CI host and 94,312 on another, under the 100,000 that ten
            # times the default rate would have needed.)
            self.assertGreaterEqual(result["flood_rate"], 10 * NEW_PREFIX_RATE, results)
            if sends == 1:
                self.assertGreaterEqual(
                    result["answered_within_two_pct"], 99.0, (name, results, counters)
                )
            else:
                self.assertGreaterEqual(
                    result["answered_within_four_pct"], 90.0, (name, results, counters)
                )
            self.assertEqual(result["known_settled"], 20, (name, results))
            self.assertEqual(result["known_answered_first_try_after_quiet"], 20, (name, results))
        # The clients share the daemon's core: some of the flood may wait too
        # long in its buffer (1.4% in a run on a loaded machine), never a
        # share that matters; what matters is above, the clients answered.
        sent = sum(result["flood_sent"] for _, _, result in results)
        self.assertLess(counters["kernel_drops"], sent / 20, counters)
