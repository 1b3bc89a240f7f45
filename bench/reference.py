"""What the bench scripts share: the yardstick they measure against
(bench/servers/limit.c, the limit of one core, built where there is a C
compiler), how they name a server that failed them, and a daemon run as a
user runs it, its log read as it comes."""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from typing import BinaryIO

HERE = os.path.dirname(os.path.abspath(__file__))
VENV_PYTHON = os.path.join(os.path.dirname(HERE), ".venv", "bin", "python")


def in_the_venv() -> None:
    """Where udpupper cannot be imported by the Python running this script
    (``bench/compare`` run as it stands, by the system's python3), run it
    again with the clone's venv (``make run`` or ``make test`` made it);
    without one, end in one line saying how."""
    try:
        import udpupper  # noqa: F401
    except ImportError:
        pass
    else:
        return
    script = sys.argv[0]
    if os.path.exists(VENV_PYTHON) and not os.environ.get("UDPUPPER_BENCH_IN_VENV"):
        os.environ["UDPUPPER_BENCH_IN_VENV"] = "1"  # once: never a loop
        os.execv(VENV_PYTHON, [VENV_PYTHON, script, *sys.argv[1:]])
    raise SystemExit(
        f"{os.path.basename(script)}: udpupper is not installed for {sys.executable}: "
        f"run `make test` once in the clone (it makes .venv), or run {script} with "
        "the Python udpupper is installed in"
    )


in_the_venv()


def build_limit(directory: str) -> str | None:
    """bench/servers/limit.c built in ``directory``, or None without a compiler."""
    compiler = next(
        (cc for cc in (os.environ.get("CC"), "cc", "gcc", "clang") if cc and shutil.which(cc)), None
    )
    if compiler is None:
        return None
    binary = os.path.join(directory, "limit")
    subprocess.run(
        [compiler, "-O3", "-o", binary, os.path.join(HERE, "servers", "limit.c")], check=True
    )
    return binary


def pinned(command: list[str], core: int) -> list[str]:
    """``command`` run on ``core`` alone, where there are two cores and taskset."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(core), *command]
    return command


def last_line(log: BinaryIO) -> str:
    """The last line a server wrote to ``log`` that is not blank, or ''."""
    log.seek(0)
    said = [
        line.strip() for line in log.read().decode(errors="replace").splitlines() if line.strip()
    ]
    return said[-1] if said else ""


TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


class Daemon:
    """``twistd -n udpupper OPTIONS`` in a subprocess, its log read line by line."""

    def __init__(self, *options: str, prefix: list[str] | None = None) -> None:
        """``prefix``: what runs it (``taskset -c 0``, say)."""
        self.process = subprocess.Popen(
            [*(prefix or []), TWISTD, "-n", "--pidfile=", "udpupper", *options],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self.process.stdout:  # type: ignore[union-attr]
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def find(self, pattern: str, timeout: float = 30.0) -> re.Match:
        """The first log line that matches, waiting for it (a daemon that
        ends or says nothing in ``timeout`` fails, with its log)."""
        for line in self.log:
            if match := re.search(pattern, line):
                return match
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise SystemExit(f"no {pattern!r} from twistd: {self.log[-5:]}") from None
            if line is None:
                raise SystemExit(f"twistd ended: {self.log[-5:]}")
            self.log.append(line)
            if match := re.search(pattern, line):
                return match

    def start(self) -> tuple[int, int | None]:
        """Its UDP port, and its metrics port when it serves them."""
        port = int(self.find(r"udpupper listening on \S+:(\d+)/udp").group(1))
        metrics = next(
            (
                re.search(r"serving metrics at http://\S+:(\d+)/", line)
                for line in self.log
                if "serving metrics at" in line
            ),
            None,
        )
        return port, int(metrics.group(1)) if metrics else None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
