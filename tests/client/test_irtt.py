"""``udpupper-client --ping`` and irtt, the tool users will hold it against,
measure one path alike (issue 33): through the tests' relay, each datagram
either way waits the next of a known list of delays and every 23rd is lost,
once in front of ``irtt server`` and once in front of the daemon; the two
tools' p50, p90, p99 and loss agree within 10% (or 50 us, whichever is
larger)."""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess

from twisted.trial import unittest

from tests import tiers
from tests.processes import Daemon, run_client
from tests.relay import Relay

# 17 delays, 1 to 5 ms evenly, in an order that is not monotonic: a round
# trip is two of them, whatever the probe's number.
DELAYS = [0.001 + 0.004 * ((index * 7) % 17) / 16 for index in range(17)]
LOSE_EVERY = 23
PROBES, INTERVAL = 1500, 0.004


def nearest_rank(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def agree(ours: float, theirs: float, floor: float) -> bool:
    return abs(ours - theirs) <= max(0.1 * abs(theirs), floor)


@tiers.system
class SamePathTests(unittest.TestCase):
    skip = None if shutil.which("irtt") else "irtt is not installed (apt-get install irtt)"

    def relay(self, port: int) -> Relay:
        relay = Relay(("127.0.0.1", port), delays=DELAYS, lose_every=LOSE_EVERY)
        self.addCleanup(relay.stop)
        return relay

    def irtt(self) -> dict:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen(
            ["irtt", "server", "-b", f"127.0.0.1:{port}", "-i", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.addCleanup(server.wait, 15)
        self.addCleanup(server.terminate)
        while b"listener on" not in (line := server.stdout.readline()):  # bound: go
            self.assertTrue(line, "irtt server ended before it listened")
        relay = self.relay(port)
        result = subprocess.run(
            [
                "irtt",
                "client",
                "-Q",
                "-i",
                f"{INTERVAL * 1000:g}ms",
                "-d",
                f"{PROBES * INTERVAL * 1000:g}ms",
                "--wait=1s",
                "-o",
                "-",
                f"127.0.0.1:{relay.port}",
            ],
            capture_output=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        run = json.loads(result.stdout)
        rtts = [
            trip["delay"]["rtt"] / 1e6
            for trip in run["round_trips"]
            if trip["lost"] == "false" and "rtt" in trip.get("delay", {})
        ]
        sent = run["stats"]["packets_sent"]
        return {
            "p50": nearest_rank(rtts, 0.5),
            "p90": nearest_rank(rtts, 0.9),
            "p99": nearest_rank(rtts, 0.99),
            "loss": 100 * (sent - len(rtts)) / sent,
        }

    def ours(self) -> dict:
        daemon = Daemon("--port", "0")
        self.addCleanup(daemon.stop)
        relay = self.relay(daemon.start())
        result = run_client(
            "--ping",
            "--json",
            "--host",
            "127.0.0.1",
            "--port",
            str(relay.port),
            "--count",
            str(PROBES),
            "--interval",
            str(INTERVAL),
            "--timeout",
            "1",
            timeout=120,
        )
        summary = json.loads(result.stdout.decode().splitlines()[-1])
        return {
            "p50": summary["rtt_p50_ms"],
            "p90": summary["rtt_p90_ms"],
            "p99": summary["rtt_p99_ms"],
            "loss": summary["loss_pct"],
        }

    def test_p50_p90_p99_and_loss_agree(self) -> None:
        theirs, ours = self.irtt(), self.ours()
        # Either way 1 in 23 is lost: 1 - (22/23)^2 of the round trips, 8.5%.
        expected_loss = 100 * (1 - (1 - 1 / LOSE_EVERY) ** 2)
        for figures in (theirs, ours):
            self.assertTrue(agree(figures["loss"], expected_loss, 0.0), (figures, expected_loss))
        for figure in ("p50", "p90", "p99"):
            self.assertTrue(
                agree(ours[figure], theirs[figure], 0.05),
                f"{figure}: udpupper-client {ours[figure]:.3f} ms, irtt {theirs[figure]:.3f} ms",
            )
        self.assertTrue(agree(ours["loss"], theirs["loss"], 0.0), (ours, theirs))
