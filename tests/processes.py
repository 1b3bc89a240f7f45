"""Run the real programs as a user would: twistd, udpupper-client, bench/."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.path.dirname(sys.executable)
BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def command(script: str, fallback: list[str]) -> list[str]:
    """The installed console script beside this Python, else ``fallback``."""
    path = os.path.join(BIN, script)
    return [path] if os.access(path, os.X_OK) else [sys.executable, *fallback]


TWISTD = command("twistd", ["-c", "from twisted.scripts.twistd import run; run()"])
CLIENT = command("udpupper-client", ["-m", "udpupper.client.cli"])

LISTENING = re.compile(r"udpupper listening on (\S+):(\d+)/udp")
METRICS_AT = r"udpupper serving metrics at http://\S+:(\d+)/metrics"  # its port
SUMMARY_FIELD = re.compile(r"(\w+)=(\d+)")


class Daemon:
    """``twistd -n udpupper`` in a subprocess, its log read line by line."""

    def __init__(
        self,
        *options: str,
        prefix: tuple[str, ...] = (),
        before_plugin: bool = False,
        preexec=None,
        cwd: str | None = None,
    ) -> None:
        """``options`` follow ``udpupper``; with ``before_plugin``, they are
        twistd's own and name the plugin themselves.  ``preexec`` runs in
        the child before twistd (to set a resource limit, say); ``cwd`` is
        its working directory."""
        plugin = () if before_plugin else ("udpupper",)
        self.preexec = preexec
        self.cwd = cwd
        self.process = self._popen([*prefix, *TWISTD, "-n", "--pidfile=", *plugin, *options])
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        self.ended = False
        self.eof = False  # the end of its log has been read
        threading.Thread(target=self._read, daemon=True).start()

    def _popen(self, command: list[str]) -> subprocess.Popen:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            # A shell's background job ignores SIGINT, and twistd keeps an
            # ignored SIGINT ignored: give the daemon the default, as a
            # terminal or systemd would.
            preexec_fn=self._before_exec,
            # A process group of its own, as a shell gives a job: a test may
            # signal the whole group as a terminal's Ctrl-C does.
            start_new_session=True,
        )

    def _before_exec(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if self.preexec is not None:
            self.preexec()

    def _read(self) -> None:
        for raw in self.process.stdout:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern: re.Pattern[str] | str, timeout: float = 15.0) -> re.Match:
        """Read the log until a line matches; fail if it ends or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(remaining, 0))
            except queue.Empty:
                raise AssertionError(f"no {pattern!r} in the log: {self.log}") from None
            if line is None:
                self.eof = True
                raise AssertionError(f"twistd ended before {pattern!r}: {self.log}")
            self.log.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def find(self, pattern: str, timeout: float = 15.0) -> re.Match:
        """The first log line so far that matches, else the next one to."""
        for line in self.log:
            match = re.search(pattern, line)
            if match:
                return match
        return self.wait_for(pattern, timeout)

    def start(self) -> int:
        """Wait until it listens; return the port it bound."""
        return int(self.wait_for(LISTENING).group(2))

    def summary(self) -> dict[str, int]:
        """Stop it and read its counters from the summary line it logs."""
        self.stop()
        for line in self.log:
            if "udpupper stopped:" in line:
                return {key: int(value) for key, value in SUMMARY_FIELD.findall(line)}
        raise AssertionError(f"no summary line in the log: {self.log}")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal it, wait for it to end, keep the rest of its log."""
        if self.ended:
            return self.process.returncode
        self.ended = True
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        while not self.eof and (line := self.lines.get(timeout=timeout)) is not None:
            self.log.append(line)
        self.eof = True
        return code


def run_client(*options: str, stdin: bytes = b"", timeout: float = 60.0):
    """Run ``udpupper-client`` with ``stdin`` piped in; a CompletedProcess."""
    return subprocess.run([*CLIENT, *options], input=stdin, capture_output=True, timeout=timeout)


class Terminal:
    """``udpupper-client`` on a pseudo-terminal, as a person would use it."""

    def __init__(self, *options: str) -> None:
        import pty

        self.master, replica = pty.openpty()
        self.process = subprocess.Popen(
            [*CLIENT, *options],
            stdin=replica,
            stdout=replica,
            stderr=replica,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        os.close(replica)
        self.screen = b""

    def read_until(self, expected: bytes, timeout: float = 15.0) -> bytes:
        """Read the terminal until ``expected`` shows; return all read so far."""
        import select

        deadline = time.monotonic() + timeout
        while expected not in self.screen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {expected!r} on the terminal: {self.screen!r}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    self.screen += os.read(self.master, 4096)
                except OSError:  # the client has closed the terminal
                    raise AssertionError(f"no {expected!r}: {self.screen!r}") from None
        return self.screen

    def type(self, text: bytes) -> None:
        os.write(self.master, text)

    def close(self) -> int:
        if self.process.poll() is None:
            self.process.kill()
        code = self.process.wait(15)
        os.close(self.master)
        return code


def run_bench_script(
    name: str, *options: str, timeout: float = 120.0, env: dict[str, str] | None = None
):
    """Run ``bench/NAME`` with this Python; a CompletedProcess, text."""
    return subprocess.run(
        [sys.executable, os.path.join(BENCH_DIR, name), *options],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def hiding(test, module: str, program: str = "") -> dict[str, str]:
    """This environment with ``module`` unimportable in a child's Python, in
    every one or only in ``program``'s (an argument ending with it): a
    sitecustomize first on PYTHONPATH, removed when ``test`` ends.  As a
    machine without it, or a wrong path, would have it."""
    directory = tempfile.mkdtemp(prefix="udpupper-hide-")
    test.addCleanup(shutil.rmtree, directory, True)
    only = f"any(word.endswith({program!r}) for word in sys.argv)" if program else "True"
    with open(os.path.join(directory, "sitecustomize.py"), "w") as site:
        site.write(f"import sys\nif {only}:\n    sys.modules[{module!r}] = None\n")
    return {**os.environ, "PYTHONPATH": directory}


ROOT = os.path.dirname(BENCH_DIR)
# What a copy of the tree leaves out: builds, caches, the venv, the history.
NOT_COPIED = shutil.ignore_patterns(
    ".venv",
    ".git",
    "build",
    "_trial_temp*",
    "*.so",
    "*.egg-info",
    ".hypothesis",
    ".pytest_cache",
    "__pycache__",
    "dropin.cache",
)


def copy_of_the_tree(test) -> tuple[str, str]:
    """A fresh copy of the project's sources in a folder removed when
    ``test`` ends (pip builds in the tree it is given): (folder, copy)."""
    folder = tempfile.mkdtemp(prefix="udpupper-tree-")
    test.addCleanup(shutil.rmtree, folder, True)
    tree = os.path.join(folder, "tree")
    shutil.copytree(ROOT, tree, symlinks=True, ignore=NOT_COPIED)
    return folder, tree


def outside_environment() -> dict[str, str]:
    """This environment without PYTHONPATH: what a user's shell has.  (trial
    -j puts its own sys.path there, and a venv's pip then finds Twisted
    already installed and installs no twistd.)"""
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
