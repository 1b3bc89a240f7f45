"""``twistd udpupper`` without ``-n``: twistd's default, a daemon in the
background.  A start that fails says so and ends; one that works returns
and can be stopped by its pidfile's PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time

from twisted.trial import unittest

from tests import tiers
from tests.processes import TWISTD
from tests.support import free_port
from udpupper.server import metrics


@tiers.system
class BackgroundStartTests(unittest.TestCase):
    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="udpupper-background-")
        self.pidfile = os.path.join(self.directory, "twistd.pid")
        self.logfile = os.path.join(self.directory, "twistd.log")

    def twistd(self, *options: str) -> subprocess.CompletedProcess:
        """Start it in the background; what the terminal saw (a deadline only
        catches a start that hangs: before, one waited for ever)."""
        result = subprocess.run(
            [
                *TWISTD,
                f"--pidfile={self.pidfile}",
                f"--logfile={self.logfile}",
                "udpupper",
                *options,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            cwd=self.directory,
        )
        self.addCleanup(self.stop)
        return result

    def stop(self) -> None:
        try:
            with open(self.pidfile) as pidfile:
                os.kill(int(pidfile.read()), signal.SIGKILL)
        except (OSError, ValueError):
            pass

    def log(self) -> str:
        try:
            with open(self.logfile) as log:
                return log.read()
        except FileNotFoundError:
            return ""

    def assert_fails_with(self, line: str, *options: str) -> None:
        result = self.twistd(*options)
        self.assertEqual(result.returncode, 1, result)
        self.assertEqual(result.stderr, line + "\n")
        self.assertEqual(result.stdout, "")
        self.assertFalse(os.path.exists(self.pidfile))
        self.assertIn(line, self.log())

    def test_a_busy_udp_port(self) -> None:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as busy:
            busy.bind(("::", 0))
            port = busy.getsockname()[1]
            self.assert_fails_with(
                f"udpupper: cannot listen on [::]:{port}/udp: Address already in use",
                "--port",
                str(port),
            )

    def test_an_address_not_on_the_host(self) -> None:
        self.assert_fails_with(
            "udpupper: cannot listen on 192.0.2.123:12000/udp: Cannot assign requested address",
            "--interface",
            "192.0.2.123",
        )

    def test_a_busy_metrics_port(self) -> None:
        if not metrics.available():
            raise unittest.SkipTest(metrics.MISSING)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            endpoint = f"tcp:{port}:interface=127.0.0.1"
            self.assert_fails_with(
                f"udpupper: cannot serve metrics on {endpoint}: Address already in use",
                "--port",
                "0",
                "--metrics",
                endpoint,
            )

    def test_workers_on_a_busy_port(self) -> None:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as busy:
            busy.bind(("::", 0))
            port = busy.getsockname()[1]
            self.assert_fails_with(
                f"udpupper: cannot listen on [::]:{port}/udp: Address already in use",
                "--port",
                str(port),
                "--workers",
                "2",
            )

    def test_a_good_start_returns_and_stops_by_its_pid(self) -> None:
        port = free_port()
        result = self.twistd("--port", str(port))
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        with open(self.pidfile) as pidfile:
            pid = int(pidfile.read())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(10)
            client.sendto(b"in the background", ("127.0.0.1", port))
            self.assertEqual(client.recv(100), b"IN THE BACKGROUND")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30  # only a daemon that does not stop reaches it
        while os.path.exists(self.pidfile) or _alive(pid):
            self.assertLess(time.monotonic(), deadline, "SIGTERM did not stop it")
            time.sleep(0.05)
        self.assertIn("udpupper stopped:", self.log())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
