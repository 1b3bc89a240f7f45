"""``--workers``: several processes on one port, supervised."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from twisted.trial import unittest

from tests import tiers
from tests.processes import LISTENING, METRICS_AT, TWISTD, Daemon
from tests.server.test_metrics import parse
from tests.support import CapturedStderr, exchange, long_run
from udpupper.kernel import set_receive_buffer
from udpupper.server import metrics
from udpupper.server.port import _batch
from udpupper.server.tap import PARENT_ONLY, Options, makeService, worker_options
from udpupper.server.workers.parent import Workers


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


@tiers.system
class WorkersTests(unittest.TestCase):
    skip = None if sys.platform.startswith("linux") else "SO_REUSEPORT sharing is Linux's"

    def start(self, count: int) -> int:
        self.daemon = Daemon("--port", "0", "--interface", "127.0.0.1", "--workers", str(count))
        self.addCleanup(self.daemon.stop)
        port = self.daemon.start()
        for _ in range(count - 1):
            self.daemon.wait_for(LISTENING)
        return port

    def test_workers_import_what_the_parent_imported(self) -> None:
        """A source tree in the working directory (``make run`` in a clone,
        where the C helpers are built into the venv, not the tree) must not
        shadow the package the parent runs: the workers would run without
        the helpers, or not at all."""
        # Outside the clone: trial's mktemp() is relative to the working
        # directory, which under pytest is the clone itself.
        decoy = tempfile.mkdtemp(prefix="udpupper-decoy-")
        self.addCleanup(shutil.rmtree, decoy, True)
        os.makedirs(os.path.join(decoy, "udpupper"))
        with open(os.path.join(decoy, "udpupper", "__init__.py"), "w") as module:
            module.write("raise ImportError('the udpupper in the working directory')\n")
        daemon = Daemon("--port", "0", "--interface", "127.0.0.1", "--workers", "2", cwd=decoy)
        self.addCleanup(daemon.stop)
        port = daemon.start()
        daemon.wait_for(LISTENING)
        self.assertEqual(exchange("127.0.0.1", port, b"parent's")[0], b"PARENT'S")
        log = "\n".join(daemon.log)
        self.assertNotIn("working directory", log)
        self.assertEqual(log.count("without its C helper"), 0 if _batch is not None else 2)

    def test_many_prefixes_all_answered_by_both(self) -> None:
        port = self.start(2)
        for number in range(60):
            source = f"127.0.{number % 12}.{1 + number // 12}"
            reply, _ = exchange("127.0.0.1", port, b"q%d" % number, source=source)
            self.assertEqual(reply, b"Q%d" % number)
        self.daemon.stop()
        received = [
            int(match.group(1))
            for line in self.daemon.log
            if (match := re.search(r"udpupper stopped: received=(\d+)", line))
        ]
        self.assertEqual(sorted(received) and sum(received), 60, self.daemon.log)
        self.assertEqual(len(received), 2)
        self.assertTrue(all(count > 0 for count in received), received)

    def burst(self, port: int, network: int, count: int = 16) -> int:
        """Send ``count`` datagrams at once from one /24, each from its own
        source port; how many were answered."""
        peers = []
        for _ in range(count):
            peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            peer.bind((f"127.0.{network}.1", 0))
            peer.setblocking(False)
            peers.append(peer)
        try:
            for peer in peers:
                peer.sendto(b"b", ("127.0.0.1", port))
            time.sleep(0.4)
            answered = 0
            for peer in peers:
                try:
                    answered += peer.recv(16) == b"B"
                except BlockingIOError:
                    pass
            return answered
        finally:
            for peer in peers:
                peer.close()

    def start_metered(self, *options: str) -> int:
        """Two workers on 127.0.0.1 with metrics; wait until both listen."""
        if not metrics.available():
            raise unittest.SkipTest(metrics.MISSING)
        self.daemon = Daemon(
            "--port",
            "0",
            "--interface",
            "127.0.0.1",
            "--workers",
            "2",
            "--metrics",
            "tcp:0:interface=127.0.0.1",
            *options,
        )
        self.addCleanup(self.daemon.stop)
        port = self.daemon.start()
        self.daemon.wait_for(LISTENING)
        return port

    def scrape(self) -> dict:
        import urllib.request

        http_port = int(self.daemon.find(METRICS_AT).group(1))
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as page:
            return parse_workers(page.read().decode())

    def scrape_when(self, *counts: tuple[object, float]) -> dict:
        """The parent's figures once the workers have reported ``counts``
        ((name, value) pairs): a report comes once a second."""
        deadline = time.monotonic() + 30  # only workers that never report reach it
        while True:
            figures = self.scrape()
            if all(figures.get(name) == value for name, value in counts):
                return figures
            self.assertLess(time.monotonic(), deadline, (counts, figures))
            time.sleep(0.1)

    def test_exact_limits_across_workers(self) -> None:
        """One prefix from 16 source ports gets rate x t + burst, as from one
        worker; two prefixes, each on its own worker, get theirs each."""
        port = self.start_metered("--exempt", "", "--rate", "2", "--burst", "5")
        self.daemon.find("each source prefix to one of them")
        started = time.monotonic()
        first = [self.burst(port, 0), self.burst(port, 1)]
        time.sleep(max(0.0, started + 2.0 - time.monotonic()))
        elapsed = time.monotonic() - started
        second = [self.burst(port, 0), self.burst(port, 1)]
        for network in (0, 1):
            self.assertEqual(first[network], 5, (network, first, second))
            # Refilled at 2 a second since the first burst, within 1.
            self.assertLessEqual(abs(second[network] - 2 * elapsed), 1.5, (second, elapsed))
        figures = self.scrape_when(("udpupper_datagrams_received_total", 64))
        # 127.0.0/24 and 127.0.1/24 on different workers, all of each on one.
        self.assertEqual(figures[("udpupper_worker_datagrams_received_total", "1")], 32)
        self.assertEqual(figures[("udpupper_worker_datagrams_received_total", "2")], 32)
        self.assertEqual(figures["udpupper_datagrams_replied_total"], sum(first + second))

    def test_metrics_add_up_and_a_killed_worker_is_accounted_for(self) -> None:
        port = self.start_metered("--exempt", "127.0.0.0/24", "--rate", "1", "--burst", "2")
        for number in range(10):  # 127.0.0/24, exempt, to worker-1: all answered
            exchange("127.0.0.1", port, b"e%d" % number)
        answered = 0
        for _ in range(4):  # 127.0.1/24, to worker-2: a burst of 2
            try:
                exchange("127.0.0.1", port, b"r", source="127.0.1.1", timeout=0.3)
                answered += 1
            except TimeoutError:
                pass
        self.assertIn(answered, (2, 3))
        figures = self.scrape_when(
            ("udpupper_datagrams_received_total", 14), ("udpupper_workers_alive", 2)
        )
        self.assertEqual(figures["udpupper_datagrams_received_total"], 14)
        self.assertEqual(figures["udpupper_datagrams_replied_total"], 10 + answered)
        self.assertEqual(
            figures[("udpupper_datagrams_dropped_total", "rate_limited")], 4 - answered
        )
        self.assertEqual(figures[("udpupper_worker_datagrams_received_total", "1")], 10)
        self.assertEqual(figures[("udpupper_worker_datagrams_replied_total", "2")], answered)
        self.assertEqual(figures["udpupper_workers_alive"], 2)

        # Stop both workers, send to worker-1's prefix, kill them: what waits
        # in the socket is said, and answered by the next worker-1.
        workers = children(self.daemon.process.pid)
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        waiting = []
        for number in range(3):
            peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            peer.settimeout(20)
            self.addCleanup(peer.close)
            peer.sendto(b"w%d" % number, ("127.0.0.1", port))
            waiting.append(peer)
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        held = int(
            self.daemon.wait_for(
                r"worker-1 ended \(killed by signal 9\); its last report: received=10 .* "
                r"holds (\d+) bytes"
            ).group(1)
        )
        self.assertGreater(held, 0)
        self.daemon.find(r"worker-2 ended \(killed by signal 9\).* holds 0 bytes")
        for number, peer in enumerate(waiting):
            self.assertEqual(peer.recv(16), b"W%d" % number)  # nothing lost
        figures = self.scrape_when((("udpupper_worker_datagrams_received_total", "1"), 3))
        self.assertEqual(figures["udpupper_datagrams_received_total"], 17)  # kept
        self.assertEqual(figures[("udpupper_worker_datagrams_received_total", "1")], 3)
        self.assertEqual(figures[("udpupper_worker_datagrams_received_total", "2")], 0)
        self.daemon.stop()
        self.daemon.find(rf"udpupper workers stopped: received=17 replied={13 + answered} ")

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

    def test_held_metrics_connections_do_not_keep_a_worker_from_coming_back(self) -> None:
        """The parent at its descriptor limit (ulimit -n 128) with 200 idle
        metrics connections held: a killed worker is replaced and every
        prefix answered (before: 12 "cannot start" lines, and 32 of 64
        prefixes unanswered for 10 s and more)."""
        import resource

        if not metrics.available():
            raise unittest.SkipTest(metrics.MISSING)

        def descriptors() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

        self.daemon = Daemon(
            "--port",
            "0",
            "--interface",
            "127.0.0.1",
            "--workers",
            "2",
            "--metrics",
            "tcp:0:interface=127.0.0.1",
            preexec=descriptors,
        )
        self.addCleanup(self.daemon.stop)
        port = self.daemon.start()
        self.daemon.wait_for(LISTENING)
        http_port = int(self.daemon.find(METRICS_AT).group(1))
        held = []
        self.addCleanup(lambda: [connection.close() for connection in held])
        for _ in range(200):
            try:  # the attacker's: one the parent closes at once is no matter
                held.append(socket.create_connection(("127.0.0.1", http_port), timeout=10))
            except OSError:
                pass
        before = children(self.daemon.process.pid)
        os.kill(min(before), signal.SIGKILL)
        self.daemon.wait_for(LISTENING, timeout=30)  # its successor
        for number in range(64):  # a prefix each: both workers
            reply, _ = exchange("127.0.0.1", port, b"p%d" % number, source=f"127.{number + 1}.0.1")
            self.assertEqual(reply, b"P%d" % number)
        self.assertEqual([line for line in self.daemon.log if "cannot start" in line], [])

    def test_a_second_group_on_the_same_port_is_refused(self) -> None:
        port = self.start(2)
        for extra in (["--workers", "2"], []):  # another group; a plain daemon
            result = subprocess.run(
                [
                    *TWISTD,
                    "-n",
                    "--pidfile=",
                    "udpupper",
                    "--interface",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    *extra,
                ],
                capture_output=True,
                timeout=60,
            )
            self.assertEqual(result.returncode, 1, extra)
            self.assertEqual(
                result.stderr.decode(),
                f"udpupper: cannot listen on 127.0.0.1:{port}/udp: Address already in use\n",
            )
        # A lone daemon that would share the port (before: it said it
        # listened, and the group's steering gave it nothing, 0 of 20,000).
        result = subprocess.run(
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "udpupper",
                "--interface",
                "127.0.0.1",
                "--port",
                str(port),
                "--reuse-port",
            ],
            capture_output=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr.decode(),
            f"udpupper: cannot listen on 127.0.0.1:{port}/udp: a --workers group "
            "serves this port, and its steering would give this process "
            "nothing; stop the group, or give another --port\n",
        )
        self.assertEqual(len(children(self.daemon.process.pid)), 2)

    def test_sighup_makes_each_worker_say_its_counters(self) -> None:
        port = self.start(2)
        for number in range(10):
            exchange("127.0.0.1", port, b"h%d" % number)
        self.daemon.process.send_signal(signal.SIGHUP)
        said = [
            int(self.daemon.wait_for(r"udpupper counters: received=(\d+)").group(1))
            for _ in range(2)
        ]
        self.assertEqual(sum(said), 10)
        # The parent's line waits for what the workers said (before: received=0).
        totals = self.daemon.find(r"udpupper workers' counters: received=(\d+)")
        self.assertEqual(int(totals.group(1)), 10)
        self.assertNotIn("did not answer", totals.string)
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
            self.assertFalse(
                os.path.exists(f"/proc/{pid}/status")
                and "State:\tZ" not in open(f"/proc/{pid}/status").read()
            )


def parse_workers(text: str) -> dict:
    """Prometheus text: {name, (name, worker), (name, reason) or
    (name, worker, reason): value}."""
    figures = parse(text)
    for line in text.splitlines():
        match = re.match(r'^(\w+)\{(?:reason="(\w+)",)?worker="(\d+)"\} (\S+)$', line)
        if match:
            name, reason, worker, value = match.groups()
            key = (name, worker, reason) if reason else (name, worker)
            figures[key] = float(value)
    return figures


@tiers.loopback
class WorkersServiceTests(unittest.TestCase):
    # A value for every option (not its default): a new option fails here
    # until it has one, and then it is checked to reach the workers.
    SAMPLES = {
        "port": "0",
        "interface": "127.0.0.1",
        "rate": "7.5",
        "burst": "9",
        "rate-table": "1000",
        "new-prefix-rate": "123",
        "loop-budget": "3",
        "exempt": "10.0.0.0/8,2001:db8::/32",
        "max-amplification": "2.5",
        "rcvbuf": "65536",
        "workers": "3",
        "busy-poll": "0",
        "metrics": "tcp:0",
        "allow-low-ports": True,
        "reuse-port": True,
        "reflect-dscp": True,
    }

    def test_every_option_reaches_the_workers(self) -> None:
        names = {option[0] for option in Options.optParameters + Options.optFlags}
        self.assertEqual(set(self.SAMPLES), names, "give the new option a sample")
        samples = dict(self.SAMPLES)
        if not metrics.available():
            del samples["metrics"]
        argv = [
            f"--{name}" if value is True else f"--{name}={value}" for name, value in samples.items()
        ]
        parent = Options()
        parent.parseOptions(argv)
        forwarded = worker_options(parent)
        worker = Options()
        worker.parseOptions(forwarded)
        defaults = Options()
        defaults.parseOptions([])
        for name in names - PARENT_ONLY:
            self.assertEqual(worker[name], parent[name], name)
            self.assertNotEqual(worker[name], defaults[name], name)  # not by chance
        for name in PARENT_ONLY:
            self.assertFalse(any(option.startswith(f"--{name}") for option in forwarded), name)

    def test_a_worker_is_an_ordinary_daemon_on_its_given_socket(self) -> None:
        options = Options()
        options.parseOptions(
            [
                "--workers",
                "3",
                "--port",
                "0",
                "--interface",
                "127.0.0.1",
                "--rate",
                "50",
                "--exempt",
                "10.0.0.0/8",
                "--allow-low-ports",
            ]
        )
        service = makeService(options)
        self.assertIsInstance(service, Workers)
        self.assertEqual(service.names, ["worker-1", "worker-2", "worker-3"])
        command = service.command
        self.assertEqual(
            command[command.index("udpupper") :],
            [
                "udpupper",
                "--allow-low-ports",
                "--rate=50",
                "--rate-table=65536",
                "--new-prefix-rate=10000",
                "--loop-budget=1000",
                "--exempt=10.0.0.0/8",
                "--max-amplification=1.0",
                "--rcvbuf=4194304",
                "--busy-poll=50",
            ],
        )
        self.assertGreater(service.port, 0)

    def test_a_kernel_that_refuses_the_program_is_said_once(self) -> None:
        """Where the kernel will not steer, one line says so, and the group
        is still bound: the kernel spreads datagrams by address and port."""
        from unittest import mock

        from twisted.logger import capturedLogs

        options = Options()
        options.parseOptions(["--workers", "2", "--port", "0", "--interface", "127.0.0.1"])
        service = makeService(options)
        with (
            mock.patch("udpupper.server.workers.parent.attach", return_value="Invalid argument"),
            capturedLogs() as events,
        ):
            service.privilegedStartService()
        self.addCleanup(lambda: [sock.close() for sock in service.sockets])
        self.assertFalse(service.steered)
        self.assertEqual(len(service.sockets), 2)
        said = [event for event in events if "cannot steer" in event.get("log_format", "")]
        self.assertEqual(len(said), 1)
        self.assertEqual(said[0]["reason"], "Invalid argument")

    def test_port_taken_without_sharing(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            options = Options()
            options.parseOptions(
                [
                    "--workers",
                    "2",
                    "--interface",
                    "127.0.0.1",
                    "--port",
                    str(taken.getsockname()[1]),
                ]
            )
            with CapturedStderr() as stderr, self.assertRaises(SystemExit) as raised:
                makeService(options)
        self.assertEqual(raised.exception.code, 1)
        self.assertIn("Address already in use", stderr.text)
        self.assertEqual(len(stderr.text.splitlines()), 1)


@tiers.system
class DependableWorkersTests(unittest.TestCase):
    """Workers as dependable as one daemon: hung, crash-looping, orphaned,
    unable to start, and telling systemd when they serve."""

    skip = WorkersTests.skip
    start = WorkersTests.start

    def test_every_socket_has_its_options_before_it_is_bound(self) -> None:
        from udpupper.kernel import IP_PKTINFO
        from udpupper.server.workers.steering import bind_group

        for sock in bind_group("::", 0, 2, rcvbuf=1 << 20):
            with sock:
                self.assertEqual(sock.getsockopt(socket.IPPROTO_IP, IP_PKTINFO), 1)
                self.assertEqual(sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO), 1)
                self.assertGreaterEqual(
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), 1 << 20
                )

    def wait(self, condition, timeout: float, what: str) -> float:
        """Wait until ``condition()``; how long it took."""
        started = time.monotonic()
        while not condition():
            if time.monotonic() - started > timeout:
                self.fail(f"{what}: not within {timeout} s")
            time.sleep(0.05)
        return time.monotonic() - started

    def test_a_hung_worker_is_killed_and_replaced_within_3_s(self) -> None:
        port = self.start(2)
        parent = self.daemon.process.pid
        hung = min(children(parent))
        os.kill(hung, signal.SIGSTOP)
        self.addCleanup(lambda: alive(hung) and os.kill(hung, signal.SIGKILL))
        took = self.wait(lambda: not alive(hung), 3.0, "the hung worker killed")
        self.daemon.wait_for(r"has not reported for \d+\.\d s: killed, to be replaced")
        self.wait(lambda: len(children(parent)) == 2, 3.0 - took, "its successor started")
        self.daemon.wait_for(LISTENING, timeout=10)
        for number in range(20):  # every prefix answered again
            source = f"127.0.{number}.1"
            self.assertEqual(exchange("127.0.0.1", port, b"x", source=source)[0], b"X")

    def test_a_paused_parent_or_group_kills_no_worker(self) -> None:
        """The parent stopped for 1.5 s, the whole group for 3 s (Ctrl-Z, a
        cgroup freeze): no worker is killed (before: both, in all three
        tries).  Checked once both have reported since, at a SIGHUP."""
        port = self.start(2)
        parent = self.daemon.process.pid
        workers = children(parent)
        for pause, group in ((1.5, False), (3.0, True)):
            (os.killpg if group else os.kill)(parent, signal.SIGSTOP)
            time.sleep(pause)  # the pause is the test, not a wait for something
            (os.killpg if group else os.kill)(parent, signal.SIGCONT)
            self.daemon.process.send_signal(signal.SIGHUP)
            line = self.daemon.wait_for(r"udpupper workers' counters: ")
            self.assertNotIn("did not answer", line.string)
        self.assertEqual(children(parent), workers)
        self.assertEqual([line for line in self.daemon.log if "killed, to be replaced" in line], [])
        self.assertEqual(exchange("127.0.0.1", port, b"on")[0], b"ON")

    @long_run
    def test_a_crash_looping_worker_is_back_within_5_s(self) -> None:
        port = self.start(2)
        parent = self.daemon.process.pid
        first, survivor = sorted(children(parent))
        for _ in range(6):  # one worker, killed within a second of each start
            (victim,) = children(parent) - {survivor}
            os.kill(victim, signal.SIGKILL)
            self.wait(
                lambda victim=victim: len(children(parent)) == 2 and victim not in children(parent),
                5.0,
                "restarted",
            )
            time.sleep(0.2)
        self.assertNotIn(first, children(parent))
        self.assertIn(survivor, children(parent))  # the other worker never moved
        self.daemon.wait_for(LISTENING, timeout=10)
        for number in range(20):
            source = f"127.0.{number}.1"
            self.assertEqual(exchange("127.0.0.1", port, b"x", source=source)[0], b"X")

    @long_run
    def test_counts_survive_a_kill_loop_exactly(self) -> None:
        """Load from 32 prefixes while both workers are killed six times, each
        soon after it starts: what was sent is received or the kernel's drop;
        every reply that came back is counted as replied, and what a killed
        worker read and neither answered nor reported is ``worker_ended``.

        The one gap is the kernel's: a worker killed inside ``recvmmsg`` dies
        as the call returns, and the batch the kernel handed it is in no
        counter, up to 64 datagrams a kill (a few a run in practice)."""
        from udpupper.kernel import socket_drops

        port = self.start(2)
        parent = self.daemon.process.pid
        senders = []
        for number in range(32):
            peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.addCleanup(peer.close)
            set_receive_buffer(peer, 4 << 20)
            peer.bind((f"127.0.{number}.1", 0))
            peer.setblocking(False)
            senders.append(peer)
        sent = replies = 0
        stop = threading.Event()

        def load() -> None:
            nonlocal sent, replies
            while not stop.is_set():
                for peer in senders:  # 32 a round, about 20,000 a second
                    peer.sendto(b"load", ("127.0.0.1", port))
                    sent += 1
                    try:
                        while True:
                            replies += peer.recv(16) == b"LOAD"
                    except BlockingIOError:
                        pass
                time.sleep(0.0015)

        thread = threading.Thread(target=load)
        thread.start()
        try:
            listening = 2
            for _ in range(6):
                time.sleep(0.4)
                for pid in children(parent):
                    os.kill(pid, signal.SIGKILL)
                listening += 2
                while sum("udpupper listening" in line for line in self.daemon.log) < listening:
                    self.daemon.wait_for(LISTENING, timeout=15)
        finally:
            stop.set()
            thread.join()
        time.sleep(0.5)  # the workers answer what waits
        for peer in senders:
            try:
                while True:
                    replies += peer.recv(16) == b"LOAD"
            except BlockingIOError:
                pass
        lost_here = sum(socket_drops(peer) or 0 for peer in senders)
        self.daemon.stop()
        line = self.daemon.find(r"udpupper workers stopped: (.*)").group(1)
        counters = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}
        self.assertGreater(sent, 20_000)
        unseen = sent - counters["received"] - counters["kernel_drops"]
        self.assertGreaterEqual(unseen, 0, line)
        self.assertLessEqual(unseen, 64 * 12, line)  # at most a batch a kill
        self.assertLessEqual(counters["replied"], replies + lost_here, line)
        self.assertLessEqual(replies, counters["replied"], line)
        self.assertEqual(counters["bytes_in"], 4 * counters["received"], line)
        self.assertEqual(counters["bytes_out"], 4 * counters["replied"], line)
        self.assertEqual(
            counters["received"], counters["replied"] + counters.get("worker_ended", 0), line
        )

    def test_a_stopped_worker_dies_with_a_killed_parent(self) -> None:
        port = self.start(2)
        workers = children(self.daemon.process.pid)
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        self.daemon.process.kill()
        self.wait(lambda: not any(alive(pid) for pid in workers), 5.0, "workers gone")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", port))  # the port is free again

    def test_workers_that_cannot_start_end_the_parent_with_one_line(self) -> None:
        import resource

        def small_memory() -> None:  # too little for a table of 2 GiB
            limit = 600 << 20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        result = subprocess.run(
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "udpupper",
                "--port",
                "0",
                "--interface",
                "127.0.0.1",
                "--workers",
                "2",
                "--rate-table",
                "16777216",
            ],
            capture_output=True,
            timeout=120,
            preexec_fn=small_memory,
        )
        self.assertEqual(result.returncode, 1, result.stdout[-3000:] + result.stderr)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertRegex(
            result.stderr.decode(),
            r"udpupper: worker-\d could not start \(3 times in a row\); "
            r"it said: .*not enough memory",
        )

    def test_ready_comes_from_the_main_pid_once_every_worker_serves(self) -> None:
        import tempfile

        folder = tempfile.mkdtemp()
        path = os.path.join(folder, "notify")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(listener.close)
        listener.bind(path)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        listener.settimeout(30)
        os.environ["NOTIFY_SOCKET"] = path
        try:
            self.start(2)
        finally:
            del os.environ["NOTIFY_SOCKET"]
        import struct

        message, ancillary, _, _ = listener.recvmsg(100, socket.CMSG_SPACE(12))
        pid = struct.unpack("3i", ancillary[0][2][:12])[0]
        self.assertEqual((message, pid), (b"READY=1", self.daemon.process.pid))
        self.daemon.find("udpupper workers all serving")  # said before READY=1
