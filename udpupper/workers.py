"""``--workers N``: N processes answering on one port, kept alive.

Each worker is an ordinary ``twistd -n udpupper`` with ``--reuse-port``, so
the N sockets share the address (SO_REUSEPORT, Linux) and the kernel spreads
datagrams across them by source address and port.  The parent only
supervises, with Twisted's ProcessMonitor: a worker that dies is logged and
started again (after 1 s, doubling while it keeps dying young), and stopping
the parent (SIGTERM) stops them all.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from errno import EADDRINUSE
from os import strerror

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.task import deferLater
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    Logger,
    formatEventAsClassicLogText,
)
from twisted.runner.procmon import ProcessMonitor

from udpupper.options import exit_with
from udpupper.service import (
    cannot_listen,
    format_endpoint,
    interfaces_to_try,
    on_hangup,
    stop_once,
)

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]

# In a worker's environment: the process id of the parent it must not outlive.
PARENT = "UDPUPPER_PARENT"
PR_SET_PDEATHSIG = 1  # prctl(2), Linux


def die_with_parent(environ=os.environ) -> None:
    """In a worker: be sent SIGTERM when the parent dies (PR_SET_PDEATHSIG).

    A parent killed with SIGKILL cannot stop its workers itself; the kernel
    does it.  Should the parent have died already, before this call, exit.
    """
    parent = environ.get(PARENT)
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return  # nothing more to be done: the parent's SIGTERM still reaches us
    if os.getppid() != int(parent):
        raise SystemExit(0)  # orphaned between the fork and the prctl


def reserve_port(interface: str | None, port: int) -> tuple[str, int]:
    """Check that nothing serves ``port`` yet (pick one when 0); the address.

    Exits with one line, as the single-process daemon does, when the port is
    taken, by a socket that does not share it or by another group of workers.
    """
    candidates = interfaces_to_try(interface)
    for candidate in candidates:
        family = socket.AF_INET6 if ":" in candidate else socket.AF_INET
        try:
            probe = socket.socket(family, socket.SOCK_DGRAM)
        except OSError:
            continue  # no IPv6 here
        with probe:
            # Bound without SO_REUSEPORT: a port that anything serves already,
            # another --workers group included, is in use, not joined.
            try:
                probe.bind((candidate, port))
            except OSError as error:
                if error.errno == EADDRINUSE or candidate == candidates[-1]:
                    cannot_listen(candidate, port, strerror(error.errno))
                continue
            return candidate, probe.getsockname()[1]
    exit_with("udpupper: no address family to listen on")


def worker_log() -> ILogObserver:
    """A worker's log (twistd --logger): its lines without the time, which the
    parent puts in front of each when it logs them as its own."""

    def without_time(event: dict) -> str | None:
        text = formatEventAsClassicLogText(event, formatTime=lambda when: "")
        return text[1:] if text else text  # the space after the missing time

    return FileLogObserver(sys.stdout, without_time)


class WorkerLines(Logger):
    """The parent's logger, which skips the empty line ProcessMonitor adds
    after each worker's last one (it takes ``data[-1]``, an int, for bytes)."""

    def info(self, format=None, **kwargs) -> None:
        if kwargs.get("line") == "" and "tag" in kwargs:
            return
        super().info(format, **kwargs)


class Workers(ProcessMonitor):
    """Supervises the worker processes; logs what the port is."""

    log = WorkerLines()
    threshold = 5  # a worker that lives less is restarting too fast
    maxRestartDelay = 30

    def __init__(self, count: int, interface: str, port: int, options: list[str]) -> None:
        super().__init__()
        self.endpoint = format_endpoint(interface, port)
        self.commands = {
            f"worker-{number}": [
                *TWISTD, "-n", "--pidfile=", f"--logger={__name__}.worker_log",
                "udpupper", "--reuse-port",
                "--interface", interface, "--port", str(port), *options,
            ]
            for number in range(1, count + 1)
        }
        # The workers end with their parent, however it ends (die_with_parent).
        env = {**os.environ, PARENT: str(os.getpid())}
        for name, command in self.commands.items():
            self.addProcess(name, command, env=env)

    def startService(self) -> None:
        self.log.info(
            "udpupper starting {count} workers on {endpoint}",
            count=len(self.commands),
            endpoint=self.endpoint,
        )
        super().startService()
        on_hangup(self._reactor, self.pass_hangup_on)
        self._reactor.callWhenRunning(stop_once, self._reactor)

    def pass_hangup_on(self) -> None:
        """SIGHUP: each worker logs its counters."""
        for name, protocol in self.protocols.items():
            try:
                protocol.transport.signalProcess("HUP")
            except ProcessExitedAlready:
                self.log.info("udpupper {name} has ended", name=name)

    def stopService(self) -> Deferred[None]:
        """Signal every worker, and wait until they have all ended.

        ProcessMonitor sends SIGTERM (SIGKILL after ``killTime``) but does not
        wait; the reactor must not stop before the workers have logged their
        summaries and exited.
        """
        super().stopService()
        return self._all_ended(self._clock.seconds() + self.killTime + 1)

    def _all_ended(self, deadline: float) -> Deferred[None]:
        if not self.protocols or self._clock.seconds() > deadline:
            return succeed(None)
        return deferLater(self._clock, 0.05, self._all_ended, deadline)
