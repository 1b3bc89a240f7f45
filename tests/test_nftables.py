"""contrib/nftables/udpupper-balancer.nft as shipped, in network namespaces:
a client with hosts in three /24s and three /56s, the balancer, three
udpupper hosts behind it.  Every host of a prefix reaches one daemon, whose
--rate holds for the prefix exactly; the daemons see the clients' own
addresses (else every prefix would be one, the balancer's); a loop through
the balancer dies within the loop budget, as at one host."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from twisted.trial import unittest

from tests import tiers
from tests.netns import ROOT, Balanced, why_not
from tests.processes import Daemon
from udpupper.server.protections.policy import DEFAULT_LOOP_BUDGET

RECIPE = os.path.join(ROOT, "contrib", "nftables", "udpupper-balancer.nft")
SERVICE = {4: "192.0.2.10", 6: "2001:db8::10"}  # as shipped
# Each prefix's hosts send this many each: whole prefixes' totals are
# told apart in any sum of them (54, 18 and 6: base three).  The first
# prefix is exempt at the daemons: all 54 answered only if they see the
# clients' own addresses, not the balancer's.
PER_HOST = (9, 3, 1)


@tiers.system
class BalancerTests(unittest.TestCase):
    skip = why_not() or (None if shutil.which("nft") else "nftables' nft is not installed")

    def start(self, *options: str) -> None:
        self.hosts = Balanced("nb")
        self.addCleanup(self.hosts.remove)
        with open(RECIPE) as shipped:
            rules = shipped.read()
        for n, (v4, v6) in enumerate(Balanced.HOSTS, 1):  # the test's hosts for the examples
            rules = rules.replace(f"198.51.100.{n}", v4).replace(f"2001:db8:100::{n}", v6)
        subprocess.run(
            [*self.hosts.run_in(self.hosts.balancer), "nft", "-f", "-"],
            input=rules.encode(),
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.daemons = []
        for host in self.hosts.hosts:
            daemon = Daemon("--port", "12000", *options, prefix=tuple(self.hosts.run_in(host)))
            self.addCleanup(daemon.stop)
            self.daemons.append(daemon)
        for daemon in self.daemons:
            daemon.start()

    def ask(self, *arguments: str) -> dict:
        result = subprocess.run(
            [
                *self.hosts.run_in(self.hosts.client),
                sys.executable,
                "-m",
                "tests.peer",
                *arguments,
            ],
            capture_output=True,
            check=True,
            timeout=60,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
        return json.loads(result.stdout)

    def check_family(self, version: int) -> None:
        prefixes = [p for p in Balanced.PREFIXES if (":" in p) == (version == 6)]
        self.start("--rate", "5", "--burst", "10", "--exempt", prefixes[0])
        totals = {}
        for prefix, per_host in zip(prefixes, PER_HOST):
            started, replies = time.monotonic(), 0
            for host in Balanced.PREFIXES[prefix]:
                replies += len(
                    self.ask(
                        SERVICE[version],
                        "12000",
                        "through the balancer",
                        "--burst",
                        str(per_host),
                        "--timeout",
                        "0.5",
                        "--source",
                        host,
                    )["replies"]
                )
            took = time.monotonic() - started
            totals[prefix] = 6 * per_host
            if prefix == prefixes[0]:  # exempt: the daemon saw whose it was
                self.assertEqual(replies, 6 * per_host, prefix)
                continue
            # The prefix's burst of 10, and what 5 a second refilled: one
            # daemon's allowance, never one per daemon.
            self.assertLessEqual(replies, 10 + 5 * took + 1, (prefix, replies, took))
            self.assertGreaterEqual(replies, min(10, 6 * per_host), (prefix, replies))
        received = sorted(daemon.summary()["received"] for daemon in self.daemons)
        # Each daemon got whole prefixes: its count is a sum of some of them.
        sums = {
            sum(t for t, pick in zip(totals.values(), bits) if pick)
            for bits in [(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)]
        }
        self.assertTrue(set(received) <= sums, (received, totals))
        self.assertEqual(sum(received), sum(totals.values()), received)

    def test_ipv4_prefixes_meet_one_host_each_and_their_rate_holds(self) -> None:
        self.check_family(4)

    def test_ipv6_prefixes_meet_one_host_each_and_their_rate_holds(self) -> None:
        self.check_family(6)

    def test_a_loop_through_the_balancer_dies_within_its_budget(self) -> None:
        self.start("--rate", "0")  # the loop breaker alone
        for version, source in ((4, "10.89.1.2"), (6, "fd00:89:0:102::2")):
            loop = self.ask(
                SERVICE[version],
                "12000",
                "a loop through the balancer",
                "--reflect",
                "20",
                "--source",
                source,
            )
            self.assertTrue(loop["ended"], loop)
            self.assertLessEqual(loop["reflected"], DEFAULT_LOOP_BUDGET, loop)
        loops = sum(daemon.summary().get("loop", 0) for daemon in self.daemons)
        self.assertEqual(loops, 2)
