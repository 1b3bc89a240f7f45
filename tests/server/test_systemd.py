"""Under systemd: an inherited socket, readiness, and the unit files."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from twisted.trial import unittest

from tests import tiers
from tests.netns import ROOT
from tests.processes import TWISTD, Daemon, copy_of_the_tree, outside_environment
from tests.support import NO_IPV6, exchange, free_port
from udpupper.server import systemd


class Activated(Daemon):
    """twistd udpupper started as systemd would: the socket as fd 3."""

    def __init__(self, sock: socket.socket, *options: str, names: bool = True):
        self.sock = sock
        environ = {**os.environ, "LISTEN_FDS": "1"}
        if names:
            environ["LISTEN_FDNAMES"] = "udpupper"
        # LISTEN_PID must be the daemon's own pid: the shell sets it to its
        # own ($$) and then becomes the daemon (exec).
        wrapper = ("sh", "-c", 'LISTEN_PID=$$ exec "$@"', "sh")
        self._environ = environ
        super().__init__(*options, prefix=wrapper)

    def _popen(self, command):
        fd = self.sock.fileno()
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self._environ,
            pass_fds=(3,),
            preexec_fn=lambda: (os.dup2(fd, 3), signal.signal(signal.SIGINT, signal.SIG_DFL)),
        )


@tiers.system
class SocketActivationTests(unittest.TestCase):
    def test_serves_the_inherited_socket(self) -> None:
        inherited = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        inherited.bind(("127.0.0.1", 0))
        self.addCleanup(inherited.close)
        port = inherited.getsockname()[1]
        daemon = Activated(inherited, "--port", "1")  # --port does not apply
        self.addCleanup(daemon.stop)
        self.assertEqual(daemon.start(), port)
        self.assertIn("(socket from systemd)", daemon.log[-1])
        inherited.close()  # only the daemon holds it now
        self.assertEqual(
            exchange("127.0.0.1", port, b"activated"), (b"ACTIVATED", ("127.0.0.1", port))
        )

    def test_without_fd_names(self) -> None:
        """systemd before 227 and systemd-socket-activate set no LISTEN_FDNAMES."""
        if NO_IPV6:
            raise unittest.SkipTest(NO_IPV6)
        inherited = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        inherited.bind(("::1", 0))
        self.addCleanup(inherited.close)
        port = inherited.getsockname()[1]
        daemon = Activated(inherited, names=False)
        self.addCleanup(daemon.stop)
        self.assertEqual(daemon.start(), port)
        inherited.close()
        self.assertEqual(exchange("::1", port, b"six")[0], b"SIX")

    def test_not_for_another_process(self) -> None:
        environ = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "x"}
        self.assertIsNone(systemd.inherited_datagram_socket(environ))


@tiers.system
class SocketActivateToolTests(unittest.TestCase):
    """systemd's own systemd-socket-activate binds, waits, and starts us."""

    skip = None if shutil.which("systemd-socket-activate") else "no systemd-socket-activate"

    def test_first_datagram_starts_and_is_answered(self) -> None:
        port = free_port()
        daemon = Daemon(
            prefix=("systemd-socket-activate", "--datagram", "--listen", f"127.0.0.1:{port}")
        )
        self.addCleanup(daemon.stop)
        daemon.wait_for("Listening on")
        self.assertEqual(exchange("127.0.0.1", port, b"wake up", timeout=15)[0], b"WAKE UP")
        self.assertIn("(socket from systemd)", daemon.find(r"udpupper listening on .*").group(0))

    def test_workers_refuse_an_activated_socket(self) -> None:
        """Before: the activated socket held and never read, nothing said; or,
        on --port's own port, "Address already in use" and a restart loop."""
        port = free_port()
        daemon = Daemon(
            "--workers",
            "2",
            "--port",
            str(port),
            prefix=("systemd-socket-activate", "--datagram", "--listen", f"127.0.0.1:{port}"),
        )
        self.addCleanup(daemon.stop)
        daemon.wait_for("Listening on")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as wake:
            wake.sendto(b"wake up", ("127.0.0.1", port))
        self.assertEqual(daemon.process.wait(30), 1)
        daemon.stop()
        self.assertIn(
            "udpupper: --workers binds a group of sockets of its own and cannot "
            "serve the socket systemd passed: run udpupper-workers.service, "
            "without a .socket unit (contrib/systemd), or drop --workers",
            daemon.log,
        )


@tiers.system
class InstalledRecipeTests(unittest.TestCase):
    """The systemd recipe of docs/operations.md, word for word but for the folder: a venv,
    the project installed into it, and the unit's ExecStart started by
    systemd-socket-activate answers."""

    skip = None if shutil.which("systemd-socket-activate") else "no systemd-socket-activate"

    def test_the_units_exec_start_from_a_venv(self) -> None:
        folder, tree = copy_of_the_tree(self)
        venv = os.path.join(folder, "udpupper")
        clean = outside_environment()
        subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120, env=clean)
        installed = subprocess.run(
            [
                os.path.join(venv, "bin", "pip"),
                "install",
                "--quiet",
                "--disable-pip-version-check",
                tree,
            ],
            capture_output=True,
            timeout=600,
            env=clean,
        )
        if installed.returncode:
            raise unittest.SkipTest(f"cannot install here: {installed.stderr[-300:]!r}")
        with open(os.path.join(ROOT, "contrib", "systemd", "udpupper.service")) as unit:
            exec_start = re.search(r"^ExecStart=(.*)$", unit.read(), re.M).group(1)
        command = exec_start.replace("/opt/udpupper", venv).split()
        port = free_port()
        server = subprocess.Popen(
            ["systemd-socket-activate", "--datagram", "--listen", f"127.0.0.1:{port}", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=clean,
        )
        self.addCleanup(server.stdout.close)
        listening = server.stdout.readline()  # the socket is bound: send
        self.assertIn(b"Listening on", listening)

        def stop() -> None:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

        self.addCleanup(stop)
        # The first datagram starts the daemon, which answers it once up:
        # wait for that answer (the deadline only catches a hang).
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.settimeout(120)
            peer.sendto(b"from the venv", ("127.0.0.1", port))
            try:
                reply = peer.recvfrom(65_535)[0]
            except TimeoutError:
                stop()
                self.fail(f"no answer; the daemon said: {server.stdout.read()[-2000:]!r}")
        self.assertEqual(reply, b"FROM THE VENV")


@tiers.system
class NotifyTests(unittest.TestCase):
    def listener(self) -> tuple[socket.socket, str]:
        """A notify socket, as systemd's: bound, read by the test."""
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        path = os.path.join(folder, "notify")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(path)
        listener.settimeout(15)
        self.addCleanup(listener.close)
        return listener, path

    def daemon(self, path: str, *options: str) -> Daemon:
        old = os.environ.get("NOTIFY_SOCKET")
        os.environ["NOTIFY_SOCKET"] = path
        try:
            daemon = Daemon("--port", "0", *options)
        finally:
            if old is None:
                del os.environ["NOTIFY_SOCKET"]
            else:
                os.environ["NOTIFY_SOCKET"] = old
        self.addCleanup(daemon.stop)
        return daemon

    def fill(self, path: str) -> None:
        """Fill the notify socket's queue, as a stalled systemd would leave it."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as filler:
            filler.setblocking(False)
            filler.connect(path)
            try:
                while True:
                    filler.send(b"X=1")
            except BlockingIOError:
                pass

    def test_ready_then_stopping(self) -> None:
        listener, path = self.listener()
        daemon = self.daemon(path)
        daemon.start()
        self.assertEqual(listener.recv(100), b"READY=1")
        daemon.stop()
        self.assertEqual(listener.recv(100), b"STOPPING=1")

    def test_workers_ready_then_stopping_from_the_parent(self) -> None:
        listener, path = self.listener()
        daemon = self.daemon(path, "--workers", "2")
        daemon.find(r"workers all serving")
        self.assertEqual(listener.recv(100), b"READY=1")
        self.assertEqual(daemon.stop(), -signal.SIGTERM)  # as twistd ends on it
        self.assertEqual(listener.recv(100), b"STOPPING=1")
        listener.setblocking(False)
        with self.assertRaises(BlockingIOError):  # nothing from the workers
            listener.recv(100)

    def test_a_stalled_notify_socket_is_never_waited_on(self) -> None:
        """Its queue full: the notification is dropped, at once."""
        _listener, path = self.listener()
        self.fill(path)
        started = time.monotonic()
        self.assertFalse(systemd.notify("READY=1", {"NOTIFY_SOCKET": path}))
        self.assertLess(time.monotonic() - started, 5)  # only a wait reaches it

    def test_a_stalled_notify_socket_neither_stops_serving_nor_stopping(self) -> None:
        """Before: the lone daemon never served and SIGTERM did not stop it;
        a --workers parent hung at SIGTERM."""
        for options in ((), ("--workers", "2")):
            with self.subTest(options=options):
                _listener, path = self.listener()
                self.fill(path)
                daemon = self.daemon(path, *options)
                port = (
                    daemon.start()
                    if not options
                    else int(daemon.find(r"starting 2 workers on \S+:(\d+)/udp").group(1))
                )
                self.assertEqual(exchange("127.0.0.1", port, b"served")[0], b"SERVED")
                self.assertEqual(daemon.stop(signal.SIGTERM, timeout=30), -signal.SIGTERM)

    def test_no_notify_socket(self) -> None:
        self.assertFalse(systemd.notify("READY=1", {}))

    def test_abstract_socket(self) -> None:
        name = f"udpupper-test-{os.getpid()}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind("\0" + name)
        self.addCleanup(listener.close)
        self.assertTrue(systemd.notify("READY=1", {"NOTIFY_SOCKET": "@" + name}))
        self.assertEqual(listener.recv(100), b"READY=1")


@tiers.system
class UnitFileTests(unittest.TestCase):
    skip = None if shutil.which("systemd-analyze") else "systemd-analyze is not installed"

    def test_the_docs_install_where_the_unit_looks(self) -> None:
        with open(os.path.join(ROOT, "contrib", "systemd", "udpupper.service")) as unit:
            exec_start = re.search(r"^ExecStart=(\S+)/bin/twistd ", unit.read(), re.M)
        with open(os.path.join(ROOT, "docs", "operations.md")) as readme:
            text = readme.read()
        venv = exec_start.group(1)
        self.assertIn(f"python3 -m venv {venv} ", text)
        self.assertIn(f"{venv}/bin/pip install .", text)
        self.assertNotIn("pip install --prefix", text.replace("`pip install --prefix`", ""))

    def test_units_verify(self) -> None:
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        for name in ("udpupper.socket", "udpupper.service", "udpupper-workers.service"):
            with open(os.path.join(ROOT, "contrib", "systemd", name)) as unit:
                text = unit.read()
            # ExecStart must name a program that exists: this test's twistd.
            text = re.sub(r"ExecStart=\S+", f"ExecStart={TWISTD[0]}", text)
            with open(os.path.join(folder, name), "w") as copy:
                copy.write(text)
        result = subprocess.run(
            [
                "systemd-analyze",
                "verify",
                "--man=no",
                os.path.join(folder, "udpupper.socket"),
                os.path.join(folder, "udpupper.service"),
                os.path.join(folder, "udpupper-workers.service"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        problems = [
            line for line in (result.stdout + result.stderr).splitlines() if "udpupper" in line
        ]
        self.assertEqual((result.returncode, problems), (0, []), result.stderr)
