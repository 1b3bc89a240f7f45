"""The installed programs, run as subprocesses over loopback."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import tempfile
import threading
import time

from twisted.trial import unittest

from tests import tiers
from tests.processes import CLIENT, TWISTD, Daemon, Terminal, run_client
from tests.support import NO_IPV6, exchange
from udpupper.kernel import set_receive_buffer
from udpupper.server import metrics


@tiers.system
class DaemonTestCase(unittest.TestCase):
    def start_daemon(self, *options: str) -> int:
        self.daemon = Daemon("--port", "0", *options)
        self.addCleanup(self.daemon.stop)
        return self.daemon.start()


@tiers.system
class ServerTests(DaemonTestCase):
    def test_textbook_style_client(self) -> None:
        port = self.start_daemon()
        reply, source = exchange("127.0.0.1", port, b"input lowercase sentence")
        self.assertEqual(reply, b"INPUT LOWERCASE SENTENCE")
        self.assertEqual(source, ("127.0.0.1", port))

    def test_default_bind_answers_ipv6_too(self) -> None:
        if NO_IPV6:
            raise unittest.SkipTest(NO_IPV6)
        port = self.start_daemon()
        self.assertEqual(exchange("::1", port, b"six")[0], b"SIX")
        self.assertEqual(exchange("127.0.0.1", port, b"four")[0], b"FOUR")

    def test_largest_datagram_and_bad_bytes(self) -> None:
        port = self.start_daemon()
        self.assertEqual(exchange("127.0.0.1", port, b"q" * 65_507)[0], b"Q" * 65_507)
        self.assertEqual(exchange("127.0.0.1", port, b"\x80\xffok")[0], b"\x80\xffOK")
        self.assertEqual(exchange("127.0.0.1", port, b"alive")[0], b"ALIVE")

    def test_sigterm_stops_it_with_a_summary(self) -> None:
        port = self.start_daemon()
        exchange("127.0.0.1", port, b"abc")
        self.daemon.stop(signal.SIGTERM)
        summary = [line for line in self.daemon.log if "udpupper stopped:" in line]
        self.assertEqual(len(summary), 1, self.daemon.log)
        self.assertIn("received=1 replied=1 bytes_in=3 bytes_out=3 dropped=0", summary[0])
        self.assertFalse(any("Traceback" in line for line in self.daemon.log))

    def test_sigterm_under_load_loses_nothing_it_answered(self) -> None:
        """Every reply the daemon counts as sent reaches the client: a batch
        answered when SIGTERM comes still goes out."""
        port = self.start_daemon()
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(peer.close)
        set_receive_buffer(peer, 8 << 20)  # room for every reply (root: forced)
        peer.connect(("127.0.0.1", port))
        peer.setblocking(False)
        replies = 0
        deadline = time.monotonic() + 1.0
        stopped = False
        while True:
            if not stopped:
                for _ in range(64):
                    try:
                        peer.send(b"load")
                    except OSError:
                        break
            while True:
                try:
                    replies += peer.recv(100) == b"LOAD"
                except BlockingIOError:
                    break
                except ConnectionRefusedError:  # the port has closed
                    continue
            if not stopped and time.monotonic() > deadline:
                self.daemon.process.send_signal(signal.SIGTERM)
                stopped = True
            if stopped and self.daemon.process.poll() is not None:
                break
        counters = self.daemon.summary()
        while True:  # what was still on its way
            try:
                replies += peer.recv(100) == b"LOAD"
            except (BlockingIOError, ConnectionRefusedError):
                break
        self.assertGreater(counters["replied"], 1000)
        self.assertEqual(replies, counters["replied"], counters)

    def test_what_is_queued_at_sigterm_is_answered_and_counted(self) -> None:
        """3,000 datagrams sent while the daemon is stopped, then SIGTERM:
        what its socket held is answered, the rest is the kernel's drops,
        and the summary adds up to what was sent."""
        port = self.start_daemon("--rcvbuf", "262144", "--interface", "127.0.0.1")
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(peer.close)
        set_receive_buffer(peer, 8 << 20)
        self.daemon.process.send_signal(signal.SIGSTOP)
        for number in range(3000):
            peer.sendto(b"queued %d" % number, ("127.0.0.1", port))
        self.daemon.process.send_signal(signal.SIGTERM)
        self.daemon.process.send_signal(signal.SIGCONT)
        counters = self.daemon.summary()
        self.assertGreater(counters["received"], 256, counters)  # more than one read
        self.assertEqual(counters["received"] + counters["kernel_drops"], 3000, counters)
        self.assertEqual(counters["replied"], counters["received"], counters)
        peer.setblocking(False)
        replies = 0
        while True:
            try:
                replies += peer.recv(100).startswith(b"QUEUED ")
            except (BlockingIOError, ConnectionRefusedError):
                break
        self.assertEqual(replies, counters["replied"])

    def test_sighup_logs_the_counters_and_goes_on(self) -> None:
        port = self.start_daemon()
        exchange("127.0.0.1", port, b"abc")
        self.daemon.process.send_signal(signal.SIGHUP)
        line = self.daemon.wait_for(r"udpupper counters: (.*)").group(1)
        self.assertTrue(line.startswith("received=1 replied=1 bytes_in=3 bytes_out=3"), line)
        self.assertEqual(exchange("127.0.0.1", port, b"still")[0], b"STILL")
        self.assertEqual(self.daemon.summary()["received"], 2)

    def test_sigint_stops_it(self) -> None:
        self.start_daemon()
        self.daemon.stop(signal.SIGINT)
        self.assertTrue(
            any("udpupper stopped:" in line for line in self.daemon.log), self.daemon.log
        )

    def test_port_in_use_is_one_clear_line(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            port = taken.getsockname()[1]
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
                ],
                capture_output=True,
                timeout=60,
            )
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr.decode(),
            f"udpupper: cannot listen on 127.0.0.1:{port}/udp: Address already in use\n",
        )
        self.assertNotIn(b"Traceback", result.stdout)

    def test_tables_that_do_not_fit_in_memory_are_one_clear_line(self) -> None:
        # 1.5 GB of address space: Python and Twisted fit, the 2 GiB of
        # tables of the largest --rate-table do not.
        limit = 800_000_000  # less than the 1 GiB table
        result = subprocess.run(
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "udpupper",
                "--interface",
                "127.0.0.1",
                "--port",
                "0",
                "--rate-table",
                "16777216",
            ],
            capture_output=True,
            timeout=60,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
        )
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr.decode(),
            "udpupper: not enough memory for the tables of --rate-table 16777216 "
            "(up to 1,062 MiB); give a smaller --rate-table\n",
        )
        self.assertNotIn(b"Traceback", result.stdout)

    def test_just_too_little_memory_fails_the_start_never_the_first_datagram(self) -> None:
        """At every address-space limit near the least the daemon starts
        with, it either listens and answers, or exits 1 with one line: it
        never listens and then fails (or spins) at the first datagram."""

        def under(limit: int) -> Daemon:
            return Daemon(
                "--interface",
                "127.0.0.1",
                "--port",
                "0",
                "--rate-table",
                "1024",
                preexec=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
            )

        def listens(limit: int) -> bool:
            daemon = under(limit)
            try:
                daemon.start()
                return True
            except AssertionError:
                return False
            finally:
                daemon.stop(signal.SIGKILL)

        step = 1 << 20
        low, high = 16 * step, 512 * step  # Python cannot start / plenty
        self.assertTrue(listens(high))
        while high - low > step // 4:
            middle = (low + high) // 2
            low, high = (low, middle) if listens(middle) else (middle, high)
        # A margin: the least varies from run to run (address-space layout),
        # and the daemon must also have room to stop and log its summary:
        # at 1 MiB it ran out at the stop once in three to six runs on
        # Python 3.10, with the C helpers' malloc settings or without.
        daemon = under(high + 2 * step)
        self.addCleanup(daemon.stop)
        port = daemon.start()
        self.assertEqual(exchange("127.0.0.1", port, b"least")[0], b"LEAST")
        self.assertEqual(daemon.summary()["replied"], 1)
        # Below it, the least is not one number: where the address space
        # is laid out moves it (on Python 3.10, by a MiB either way).  So at
        # each limit below, either outcome may come, but only whole: it
        # listens and answers, or it exits 1 with one line, never listening.
        lines = []
        for limit in (high - step, high - 2 * step, high - 3 * step, high - 4 * step):
            below = under(limit)
            self.addCleanup(below.stop)
            try:
                port = below.start()
            except AssertionError:
                self.assertTrue(below.eof, below.log)  # it ended, it did not hang
                self.assertEqual(below.process.wait(60), 1)
                lines.append(below.log[-1])
                self.assertNotIn("Traceback", "\n".join(below.log))
            else:
                self.assertEqual(exchange("127.0.0.1", port, b"least")[0], b"LEAST")
        self.assertIn(
            "udpupper: not enough memory for the receive buffers (4 MiB); give the "
            "daemon more memory, or a smaller --rate-table",
            lines,
        )

    def test_metrics_endpoint_that_cannot_listen_is_one_clear_line(self) -> None:
        if not metrics.available():
            raise unittest.SkipTest(metrics.MISSING)
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            tcp = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
            for endpoint, workers, reason in (
                (tcp, "1", "Address already in use"),
                (tcp, "2", "Address already in use"),
                ("unix:/nonexistent/metrics.sock", "1", "No such file or directory"),
            ):
                result = subprocess.run(
                    [
                        *TWISTD,
                        "-n",
                        "--pidfile=",
                        "udpupper",
                        "--port",
                        "0",
                        "--workers",
                        workers,
                        "--metrics",
                        endpoint,
                    ],
                    capture_output=True,
                    timeout=60,
                )
                self.assertEqual(result.returncode, 1, endpoint)
                self.assertEqual(
                    result.stderr.decode(),
                    f"udpupper: cannot serve metrics on {endpoint}: {reason}\n",
                )
                self.assertNotIn(b"Traceback", result.stdout)

    def test_bad_options_exit_non_zero_without_traceback(self) -> None:
        for options in (["--port", "70000"], ["--port", "abc"], ["--interface", "nonsense"]):
            result = subprocess.run(
                [*TWISTD, "-n", "--pidfile=", "udpupper", *options],
                capture_output=True,
                timeout=60,
            )
            self.assertEqual(result.returncode, 1, options)
            self.assertEqual(result.stdout, b"", options)
            self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
            self.assertNotIn(b"Traceback", result.stderr)


@tiers.system
class ClientTests(DaemonTestCase):
    def test_piped_lines(self) -> None:
        port = self.start_daemon()
        result = run_client(
            "--port", str(port), stdin=b"hello\r\nstra\xc3\x9fe\n\n\xff\xfeabc\nno newline"
        )
        self.assertEqual(result.stdout, b"HELLO\nSTRASSE\n\n\xff\xfeABC\nNO NEWLINE\n")
        self.assertEqual((result.returncode, result.stderr), (0, b""))

    def test_many_lines_keep_their_order(self) -> None:
        port = self.start_daemon()
        lines = [f"line {n} ü".encode() for n in range(2_000)]
        result = run_client("--port", str(port), stdin=b"\n".join(lines) + b"\n")
        expected = [line.decode().upper().encode() for line in lines]
        self.assertEqual(result.stdout.splitlines(), expected)
        self.assertEqual(result.returncode, 0)

    def test_ipv6_host(self) -> None:
        if NO_IPV6:
            raise unittest.SkipTest(NO_IPV6)
        port = self.start_daemon()
        result = run_client("--host", "::1", "--port", str(port), stdin=b"six\n")
        self.assertEqual((result.stdout, result.returncode), (b"SIX\n", 0))

    def test_line_too_long_is_skipped(self) -> None:
        port = self.start_daemon()
        result = run_client("--port", str(port), stdin=b"a\n" + b"x" * 70_000 + b"\nb\n")
        self.assertEqual(result.stdout, b"A\nB\n")
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"line 2: 70000 bytes is more than the largest datagram", result.stderr)

    def at_the_prompt(self) -> Terminal:
        """udpupper-client on a terminal, against a daemon, at its first prompt."""
        terminal = Terminal("--port", str(self.start_daemon()))
        self.addCleanup(terminal.close)
        terminal.read_until(b"Input lowercase sentence:")
        return terminal

    def test_terminal_prompts_and_ctrl_c_ends_quietly(self) -> None:
        terminal = self.at_the_prompt()
        terminal.type(b"hello tty\n")
        screen = terminal.read_until(b"HELLO TTY\r\nInput lowercase sentence:")
        self.assertEqual(screen.count(b"Input lowercase sentence:"), 2)
        terminal.process.send_signal(signal.SIGINT)
        self.assertEqual(terminal.process.wait(15), 130)
        self.assertNotIn(b"Traceback", terminal.screen)

    def test_output_closed_early(self) -> None:
        """``udpupper-client < big | head -1``: it ends as cat does (SIGPIPE),
        saying nothing, however the replies and the close interleave."""
        port = self.start_daemon()
        for run in range(16):  # the traceback it had came one run in five
            with tempfile.TemporaryFile() as lines:
                # Half without a last newline: stdin's end then sends a line,
                # after the output (and the port) may have closed.
                lines.write(b"line\n" * 100_000 + (b"last" if run % 2 else b""))
                lines.seek(0)
                reader, writer = os.pipe()
                client = subprocess.Popen(
                    [*CLIENT, "--port", str(port)],
                    stdin=lines,
                    stdout=writer,
                    stderr=subprocess.PIPE,
                )
                os.close(writer)
                with os.fdopen(reader, "rb") as output:
                    self.assertEqual(output.readline(), b"LINE\n")
                _, stderr = client.communicate(timeout=60)
            self.assertEqual((client.returncode, stderr), (-signal.SIGPIPE, b""))

    def test_sigterm_exits_143_and_ctrl_c_130(self) -> None:
        port = self.start_daemon()
        for number, status, said in ((signal.SIGTERM, 143, b""), (signal.SIGINT, 130, b"\n")):
            client = subprocess.Popen(
                [*CLIENT, "--port", str(port)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
            client.stdin.write(b"one\n")
            client.stdin.flush()
            self.assertEqual(client.stdout.readline(), b"ONE\n")  # it runs
            client.send_signal(number)
            # Its input still open (communicate would close it: an end of
            # input racing the signal): the signal alone ends it.
            client.wait(timeout=30)
            _, stderr = client.communicate(timeout=30)
            self.assertEqual((client.returncode, stderr), (status, said), number)

    def test_ctrl_d_at_the_prompt_ends_its_line(self) -> None:
        terminal = self.at_the_prompt()
        terminal.type(b"\x04")
        screen = terminal.read_until(b"Input lowercase sentence:\r\n")
        self.assertTrue(screen.endswith(b"Input lowercase sentence:\r\n"), screen)
        self.assertEqual(terminal.process.wait(15), 0)


@tiers.system
class ClientWithoutServerTests(unittest.TestCase):
    def test_silent_port_gives_up_in_time(self) -> None:
        """A socket that reads nothing and answers nothing: only the
        timeouts end the lines."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))
            port = silent.getsockname()[1]
            started = time.monotonic()
            result = run_client(
                "--port", str(port), "--timeout", "0.5", "--retries", "2", stdin=b"a\nb\nc\n"
            )
            elapsed = time.monotonic() - started
        self.assertEqual((result.returncode, result.stdout), (1, b""))
        self.assertLess(elapsed, 3 * 0.5 + 1.0 + 1.0)  # + interpreter start-up
        self.assertEqual(len(result.stderr.splitlines()), 3, result.stderr)
        self.assertIn(b"line 3: no reply from 127.0.0.1:", result.stderr)

    def test_closed_port_ends_at_once(self) -> None:
        """The kernel's port unreachable: one line, at once, though each
        line might have waited an hour."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
        result = run_client("--port", str(port), "--timeout", "3600", stdin=b"a\nb\nc\n")
        self.assertEqual((result.returncode, result.stdout), (1, b""))
        self.assertEqual(
            result.stderr.decode().splitlines(),
            [
                f"udpupper-client: 127.0.0.1:{port}: From 127.0.0.1: port unreachable: "
                "no line can be answered"
            ],
        )

    def test_textbook_style_server(self) -> None:
        """Our client against a blocking loop like the textbook's UDPServer.py."""
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind(("127.0.0.1", 0))
        server.settimeout(30)
        self.addCleanup(server.close)

        def serve(count: int) -> None:
            for _ in range(count):
                message, client = server.recvfrom(2048)
                server.sendto(message.decode().upper().encode(), client)

        thread = threading.Thread(target=serve, args=(2,), daemon=True)
        thread.start()
        result = run_client("--port", str(server.getsockname()[1]), stdin="hello\ngrüße\n".encode())
        self.assertEqual((result.stdout, result.returncode), ("HELLO\nGRÜSSE\n".encode(), 0))

    def test_bad_options_and_hosts(self) -> None:
        for options in (
            ["--port", "0"],
            ["--port", "x"],
            ["--timeout", "0"],
            ["--retries", "-1"],
            ["--bogus"],
            ["--host", "no-such-host.invalid"],
        ):
            result = run_client(*options, stdin=b"a\n")
            self.assertEqual(result.returncode, 2, options)
            self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
            self.assertNotIn(b"Traceback", result.stderr)
            self.assertEqual(result.stdout, b"")

    def test_help(self) -> None:
        result = run_client("--help")
        self.assertEqual(result.returncode, 0)
        for option in (b"--host", b"--port", b"--timeout", b"--retries"):
            self.assertIn(option, result.stdout)


@tiers.system
class ClientOnABadPathTests(DaemonTestCase):
    """``udpupper-client`` through a relay that delays, duplicates and
    reorders datagrams both ways (:mod:`tests.relay`): never a wrong line."""

    def test_100000_lines_and_not_one_printed_for_another(self) -> None:
        from tests.relay import Relay

        port = self.start_daemon()
        relay = Relay(("127.0.0.1", port), late=0.003, delay=1.5, duplicate=0.01, reorder=0.05)
        self.addCleanup(relay.stop)
        # Distinct lines, identical ones, upper-case ones and empty ones.
        lines = []
        for number in range(100_000):
            kind = number % 10
            if kind == 7:
                lines.append(b"the same line")
            elif kind == 8:
                lines.append(b"")
            elif kind == 9:
                lines.append(b"UPPER %d" % (number % 50))
            else:
                lines.append(b"line %d of the run" % number)
        result = run_client(
            "--port",
            str(relay.port),
            "--window",
            "64",
            stdin=b"\n".join(lines) + b"\n",
            timeout=300,
        )
        self.assertGreater(relay.counts["late"], 300)
        self.assertGreater(relay.counts["duplicated"], 500)
        self.assertGreater(relay.counts["reordered"], 2000)
        printed = result.stdout.split(b"\n")[:-1]
        unanswered = {
            int(line.split(b":")[1].split()[1])
            for line in result.stderr.splitlines()
            if line.startswith(b"udpupper-client: line ")
        }
        expected = [
            line.upper() for number, line in enumerate(lines, 1) if number not in unanswered
        ]
        wrong = sum(a != b for a, b in zip(printed, expected))
        self.assertEqual((len(printed), wrong), (len(expected), 0))
        self.assertEqual(result.returncode, 1 if unanswered else 0, result.stderr)
        self.assertNotIn(b"matched no line", result.stderr)
        self.assertNotIn(b"Traceback", result.stderr)

    def test_a_server_that_upper_cases_differently(self) -> None:
        """Its replies are reported, never printed as answers; exit 1."""
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind(("127.0.0.1", 0))
        self.addCleanup(server.close)
        stop = threading.Event()

        def serve() -> None:
            server.settimeout(0.1)
            while not stop.is_set():
                try:
                    datagram, source = server.recvfrom(65_535)
                except OSError:
                    continue
                server.sendto(datagram.swapcase(), source)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        self.addCleanup(thread.join)
        self.addCleanup(stop.set)
        result = run_client(
            "--port",
            str(server.getsockname()[1]),
            "--timeout",
            "0.2",
            "--retries",
            "1",
            stdin=b"Mixed Case\nLower\n123\n",
        )
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, b"123\n")  # the one line it answers rightly
        errors = result.stderr.decode().splitlines()
        self.assertIn("a reply matched no line sent (b'mIXED cASE')", errors[0])
        self.assertEqual(
            errors[1:3],
            [
                f"udpupper-client: line 1: no reply from 127.0.0.1:{server.getsockname()[1]} "
                "after 2 tries",
                f"udpupper-client: line 2: no reply from 127.0.0.1:{server.getsockname()[1]} "
                "after 2 tries",
            ],
        )
        self.assertRegex(errors[-1], r"^udpupper-client: \d+ replies matched no line sent$")


@tiers.system
class WallClockStepTests(unittest.TestCase):
    """Timers run on a monotonic clock: the wall clock stepped back an hour
    (libfaketime, monotonic untouched) changes nothing."""

    def test_client_against_a_dead_port_still_gives_up_in_time(self) -> None:
        import glob

        library = next(iter(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")), None)
        if library is None:
            raise unittest.SkipTest("libfaketime is not installed (apt-get install faketime)")
        # Silent, not closed: a closed port's ICMP message would end it at once.
        dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(dead.close)
        dead.bind(("127.0.0.1", 0))
        port = dead.getsockname()[1]
        folder = tempfile.mkdtemp()
        step = os.path.join(folder, "step")
        with open(step, "w") as offset:
            offset.write("+0\n")
        env = {
            **os.environ,
            "LD_PRELOAD": library,
            "FAKETIME_TIMESTAMP_FILE": step,
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }
        started = time.monotonic()
        client = subprocess.Popen(
            [*CLIENT, "--port", str(port), "--retries", "3"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        client.stdin.write(b"anyone there?\n")
        client.stdin.close()
        time.sleep(0.5)
        with open(step, "w") as offset:
            offset.write("-1h\n")  # the wall clock steps back an hour
        try:
            client.wait(timeout=15)
        finally:
            client.kill()
        took = time.monotonic() - started
        said = client.stderr.read()
        self.assertEqual(client.returncode, 1, said)
        self.assertLess(took, 6.0)  # 4 tries of 1 s, not an hour
        self.assertIn(b"no reply", said)
