"""Started as root, the daemon binds a port below 1024, then drops privileges."""

from __future__ import annotations

import os
import signal
import socket

from twisted.trial import unittest

from tests import tiers
from tests.processes import Daemon
from tests.support import exchange

NOBODY = 65534


def free_low_port() -> int:
    for port in range(990, 900, -1):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise unittest.SkipTest("no free port below 1024")


def ids(pid: int) -> tuple[int, int]:
    """The real user and group of a process."""
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    return int(fields["Uid"].split()[0]), int(fields["Gid"].split()[0])


@tiers.system
class PrivilegeTests(unittest.TestCase):
    skip = None if hasattr(os, "geteuid") and os.geteuid() == 0 else "needs root"

    def test_low_port_then_nobody(self) -> None:
        port = free_low_port()
        daemon = Daemon(
            "--uid",
            str(NOBODY),
            "--gid",
            str(NOBODY),
            "udpupper",
            "--interface",
            "127.0.0.1",
            "--port",
            str(port),
            before_plugin=True,
        )
        self.addCleanup(daemon.stop)
        self.assertEqual(daemon.start(), port)
        self.assertEqual(ids(daemon.process.pid), (NOBODY, NOBODY))
        self.assertEqual(exchange("127.0.0.1", port, b"as nobody")[0], b"AS NOBODY")
        # The kernel's drops are read (every second, at SIGHUP and at the
        # end) after the privileges are dropped: with SO_MEMINFO, not a file
        # that nobody may not be able to open (the interpreter's home here
        # may be root's alone).
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_for(r"udpupper counters: received=1 .*kernel_drops=0")
        counters = daemon.summary()
        self.assertEqual((counters["received"], counters["replied"]), (1, 1))
        self.assertIn("kernel_drops", counters)
        self.assertFalse(
            [line for line in daemon.log if "Traceback" in line or "LookupError" in line],
            daemon.log,
        )
