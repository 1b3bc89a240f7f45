"""A bounded soak: several senders at full speed, then exact accounting.

Every datagram sent must be explained: answered, dropped by the daemon for
a counted reason, or dropped by the kernel on the daemon's socket.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from twisted.trial import unittest

from tests import tiers
from tests.netns import ROOT
from tests.processes import Daemon
from tests.support import long_run

SECONDS = float(os.environ.get("UDPUPPER_SOAK_SECONDS", "10"))
SOURCES = ["127.0.0.1", "127.1.0.1", "127.2.0.1", "127.3.0.1"]


@tiers.system
class SoakTests(unittest.TestCase):
    @long_run
    def test_every_datagram_is_accounted_for(self) -> None:
        # No exemptions and a small rate, so the limiter drops; a small
        # receive buffer, so the kernel may drop too.
        daemon = Daemon(
            "--port",
            "0",
            "--exempt",
            "",
            "--rate",
            "5000",
            "--rcvbuf",
            "65536",
            "--interface",
            "127.0.0.1",
        )
        self.addCleanup(daemon.stop)
        port = daemon.start()
        senders = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.peer",
                    "127.0.0.1",
                    str(port),
                    "soak payload ü",
                    "--flood",
                    str(SECONDS),
                    "--source",
                    source,
                ],
                stdout=subprocess.PIPE,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": ROOT},
            )
            for source in SOURCES
        ]
        sent = sum(
            json.loads(sender.communicate(timeout=SECONDS + 60)[0])["sent"] for sender in senders
        )
        time.sleep(1.0)  # let the daemon empty its receive queue
        counters = daemon.summary()
        drops = {
            key: value
            for key, value in counters.items()
            if key
            not in ("received", "replied", "bytes_in", "bytes_out", "dropped", "kernel_drops")
        }
        self.assertGreater(sent, 0)
        self.assertEqual(counters["received"] + counters["kernel_drops"], sent, counters)
        self.assertEqual(counters["replied"] + sum(drops.values()), counters["received"])
        self.assertEqual(sum(drops.values()), counters["dropped"])
        self.assertEqual(set(drops) - {"rate_limited", "send_buffer_full"}, set(), drops)
        self.assertGreater(drops.get("rate_limited", 0), 0)
        # 4 prefixes for SECONDS at 5,000 a second, plus the bursts: at most.
        self.assertLessEqual(counters["replied"], 4 * 5000 * (SECONDS + 1) + 4 * 10000)
