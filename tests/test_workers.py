"""``--workers``: several processes on one port, supervised."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

from twisted.trial import unittest

from tests.processes import LISTENING, TWISTD, Daemon
from tests.support import CapturedStderr, exchange
from udpupper.tap import Options, makeService
from udpupper.workers import Workers


def children(pid: int) -> set[int]:
    """The processes ``pid`` started, as Linux lists them."""
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return {int(child) for child in listing.read().split()}


def alive(pid: int) -> bool:
    """Whether ``pid`` runs still (a zombie has ended)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return "State:\tZ" not in status.read()
    except FileNotFoundError:
        return False


class WorkersTests(unittest.TestCase):
    skip = None if sys.platform.startswith("linux") else "SO_REUSEPORT sharing is Linux's"

    def start(self, count: int) -> int:
        self.daemon = Daemon("--port", "0", "--interface", "127.0.0.1",
                             "--workers", str(count))
        self.addCleanup(self.daemon.stop)
        port = self.daemon.start()
        for _ in range(count - 1):
            self.daemon.wait_for(LISTENING)
        return port

    def test_many_source_ports_all_answered_by_both(self) -> None:
        port = self.start(2)
        for number in range(60):
            reply, _ = exchange("127.0.0.1", port, b"q%d" % number)
            self.assertEqual(reply, b"Q%d" % number)
        self.daemon.stop()
        received = [int(match.group(1)) for line in self.daemon.log
                    if (match := re.search(r"udpupper stopped: received=(\d+)", line))]
        self.assertEqual(sorted(received) and sum(received), 60, self.daemon.log)
        self.assertEqual(len(received), 2)
        self.assertTrue(all(count > 0 for count in received), received)

    def test_a_killed_worker_comes_back(self) -> None:
        port = self.start(2)
        parent = self.daemon.process.pid
        before = children(parent)
        self.assertEqual(len(before), 2)
        os.kill(min(before), signal.SIGKILL)
        self.daemon.wait_for(LISTENING, timeout=30)  # its successor
        deadline = time.monotonic() + 15
        while len(children(parent)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        after = children(parent)
        self.assertEqual(len(after), 2)
        self.assertNotIn(min(before), after)
        for number in range(20):
            self.assertEqual(exchange("127.0.0.1", port, b"x%d" % number)[0], b"X%d" % number)

    def test_a_second_group_on_the_same_port_is_refused(self) -> None:
        port = self.start(2)
        for extra in (["--workers", "2"], []):  # another group; a plain daemon
            result = subprocess.run(
                [*TWISTD, "-n", "--pidfile=", "udpupper", "--interface", "127.0.0.1",
                 "--port", str(port), *extra], capture_output=True, timeout=60)
            self.assertEqual(result.returncode, 1, extra)
            self.assertEqual(result.stderr.decode(),
                             f"udpupper: cannot listen on 127.0.0.1:{port}/udp: "
                             "Address already in use\n")
        self.assertEqual(len(children(self.daemon.process.pid)), 2)

    def test_sighup_makes_each_worker_say_its_counters(self) -> None:
        port = self.start(2)
        for number in range(10):
            exchange("127.0.0.1", port, b"h%d" % number)
        self.daemon.process.send_signal(signal.SIGHUP)
        said = [int(self.daemon.wait_for(r"udpupper counters: received=(\d+)").group(1))
                for _ in range(2)]
        self.assertEqual(sum(said), 10)
        self.assertEqual(exchange("127.0.0.1", port, b"on")[0], b"ON")
        self.assertEqual(len(children(self.daemon.process.pid)), 2)

    def test_workers_do_not_outlive_a_killed_parent(self) -> None:
        port = self.start(2)
        workers = children(self.daemon.process.pid)
        self.assertEqual(len(workers), 2)
        self.daemon.process.kill()  # SIGKILL: the parent can do nothing
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual([pid for pid in workers if alive(pid)], [])
        with self.assertRaises(TimeoutError):  # nobody answers on the port any more
            exchange("127.0.0.1", port, b"anyone?", timeout=0.5)

    def test_ctrl_c_to_the_whole_group_stops_them_without_a_traceback(self) -> None:
        """A terminal's Ctrl-C reaches the parent and every worker at once;
        the parent then stops the workers too: a second signal each."""
        port = self.start(2)
        exchange("127.0.0.1", port, b"before")
        os.killpg(self.daemon.process.pid, signal.SIGINT)
        self.daemon.stop()
        log = "\n".join(self.daemon.log)
        self.assertNotIn("Traceback", log)
        self.assertEqual(log.count("udpupper stopped:"), 2, log)

    def test_worker_lines_carry_one_time_and_none_is_empty(self) -> None:
        self.start(2)
        self.daemon.stop()
        worker_lines = [line for line in self.daemon.log if "[worker-" in line]
        self.assertGreater(len(worker_lines), 8)
        for line in worker_lines:
            after_tag = line.split("] ", 2)[-1]
            self.assertFalse(re.match(r"\d{4}-\d\d-\d\dT", after_tag), line)  # no second time
            self.assertNotRegex(line, r"\[worker-\d+\]\s*$")  # not empty

    def test_sigterm_stops_them_all(self) -> None:
        self.start(2)
        workers = children(self.daemon.process.pid)
        self.daemon.stop(signal.SIGTERM)
        for pid in workers:
            self.assertFalse(os.path.exists(f"/proc/{pid}/status")
                             and "State:\tZ" not in open(f"/proc/{pid}/status").read())


class WorkersServiceTests(unittest.TestCase):
    def test_options_reach_the_workers(self) -> None:
        options = Options()
        options.parseOptions(["--workers", "3", "--port", "0", "--interface", "127.0.0.1",
                              "--rate", "50", "--exempt", "10.0.0.0/8", "--allow-low-ports"])
        service = makeService(options)
        self.assertIsInstance(service, Workers)
        self.assertEqual(len(service.commands), 3)
        command = service.commands["worker-1"]
        self.assertIn("--reuse-port", command)
        self.assertIn("--rate=50.0", command)
        self.assertIn("--exempt=10.0.0.0/8", command)
        self.assertIn("--allow-low-ports", command)
        port = int(command[command.index("--port") + 1])
        self.assertGreater(port, 0)

    def test_port_taken_without_sharing(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            options = Options()
            options.parseOptions(["--workers", "2", "--interface", "127.0.0.1",
                                  "--port", str(taken.getsockname()[1])])
            with CapturedStderr() as stderr, self.assertRaises(SystemExit) as raised:
                makeService(options)
        self.assertEqual(raised.exception.code, 1)
        self.assertIn("Address already in use", stderr.text)
        self.assertEqual(len(stderr.text.splitlines()), 1)
