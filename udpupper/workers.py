"""``--workers N``: N processes answering on one port, as one daemon.

The parent binds the N sockets of one reuseport group and steers each
source prefix to one of them (:mod:`udpupper.steering`), so rate limits are
exact with any number of workers.  Each worker is an ordinary ``twistd -n
udpupper`` serving socket *i*, passed as descriptor 3 (:mod:`udpupper.
supervised`); it reports its counters once a second on descriptor 4, and
the parent's metrics and summary add them up.  The parent supervises with
Twisted's ProcessMonitor: a worker that dies is logged, with its last
counters and what its socket holds, and started again on the same socket
(after 1 s, doubling while it keeps dying young); stopping the parent
(SIGTERM) stops them all.
"""

from __future__ import annotations

import json
import os
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
from twisted.python.failure import Failure
from twisted.runner.procmon import LoggingProtocol, ProcessMonitor

from udpupper.kernel import set_receive_buffer, socket_memory
from udpupper.options import exit_with
from udpupper.service import (
    cannot_listen,
    format_endpoint,
    interfaces_to_try,
    on_hangup,
    stop_once,
)
from udpupper.stats import Stats
from udpupper.steering import attach, bind_group
from udpupper.supervised import PARENT, REPORT, REPORT_FD, SOCKET, SOCKET_FD

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


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


class WorkerCounters:
    """Every worker's counters as last reported, and what its earlier runs
    counted before they ended: the totals never go back."""

    def __init__(self, names: list[str]) -> None:
        self.current = {name: Stats() for name in names}
        self.retired = {name: Stats() for name in names}
        self.prefixes = dict.fromkeys(names, 0)

    def update(self, name: str, report: dict) -> None:
        stats = self.current[name] = Stats.from_dict(report)
        stats.kernel_drops = 0  # the socket's: the parent reads them itself
        self.prefixes[name] = int(report.get("prefixes", 0))

    def retire(self, name: str) -> Stats:
        """A worker ended: keep its counts in the totals; its own start over."""
        last = self.current[name]
        self.retired[name].add(last)
        self.current[name] = Stats()
        self.prefixes[name] = 0
        return last

    def totals(self) -> Stats:
        total = Stats()
        for name in self.current:
            total.add(self.retired[name])
            total.add(self.current[name])
        return total


class WorkerProtocol(LoggingProtocol):
    """A worker's log lines, as ProcessMonitor logs them, and its counter
    reports, read from descriptor 4."""

    def connectionMade(self) -> None:
        super().connectionMade()
        self.reports = b""

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD != REPORT_FD:
            super().childDataReceived(childFD, data)
            return
        *lines, self.reports = (self.reports + data).split(b"\n")
        if lines:  # totals: only the newest matters
            try:
                self.service.counters.update(self.name, json.loads(lines[-1]))
            except (ValueError, TypeError, AttributeError):
                self.service.log.warn("udpupper {name} sent a report that is not "
                                      "its counters", name=self.name)

    def processEnded(self, reason: Failure) -> None:
        self.service.worker_ended(self.name, reason)
        super().processEnded(reason)


class Workers(ProcessMonitor):
    """Binds the group, supervises the worker processes, adds up their counters."""

    log = WorkerLines()
    threshold = 5  # a worker that lives less is restarting too fast
    maxRestartDelay = 30

    def __init__(
        self, count: int, interface: str, port: int, options: list[str], rcvbuf: int = 0
    ) -> None:
        super().__init__()
        self.interface = interface
        self.port = port
        self.rcvbuf = rcvbuf
        self.endpoint = format_endpoint(interface, port)
        self.names = [f"worker-{number}" for number in range(1, count + 1)]
        self.commands = {
            name: [*TWISTD, "-n", "--pidfile=", f"--logger={__name__}.worker_log",
                   "udpupper", *options]
            for name in self.names
        }
        self.sockets: list[socket.socket] = []
        self.steered = False
        self.counters = WorkerCounters(self.names)
        # The workers end with their parent, however it ends (die_with_parent).
        env = {**os.environ, PARENT: str(os.getpid()), SOCKET: str(SOCKET_FD),
               REPORT: str(REPORT_FD)}
        for name, command in self.commands.items():
            self.addProcess(name, command, env=env)

    def privilegedStartService(self) -> None:
        """Bind the group (as root, before twistd drops privileges) and steer it."""
        try:
            self.sockets = bind_group(self.interface, self.port, len(self.names))
        except OSError as error:
            cannot_listen(self.interface, self.port, strerror(error.errno))
        for sock in self.sockets:
            if self.rcvbuf:
                set_receive_buffer(sock, self.rcvbuf)
        refused = attach(self.sockets[0], len(self.sockets))
        self.steered = refused is None
        if refused is not None:
            self.log.warn(
                "udpupper cannot steer by source prefix (the kernel refused its "
                "program: {reason}); the kernel spreads datagrams by address and "
                "port, so a prefix's rate limit is per worker", reason=refused)
        super().privilegedStartService()

    def startService(self) -> None:
        if not self.sockets:  # started without twistd's privileged step
            self.privilegedStartService()
        self.log.info(
            "udpupper starting {count} workers on {endpoint}{how}",
            count=len(self.names),
            endpoint=self.endpoint,
            how=", each source prefix to one of them" if self.steered else "",
        )
        super().startService()
        on_hangup(self._reactor, self.pass_hangup_on)
        self._reactor.callWhenRunning(stop_once, self._reactor)

    def startProcess(self, name: str) -> None:
        """ProcessMonitor's, with the worker's socket and report pipe passed."""
        if name in self.protocols:
            return
        process = self._processes[name]
        protocol = WorkerProtocol()
        protocol.service = self
        protocol.name = name
        self.protocols[name] = protocol
        self.timeStarted[name] = self._clock.seconds()
        sock = self.sockets[self.names.index(name)]
        try:
            self._reactor.spawnProcess(
                protocol, process.args[0], process.args, uid=process.uid,
                gid=process.gid, env=process.env, path=process.cwd,
                childFDs={0: "w", 1: "r", 2: "r", SOCKET_FD: sock.fileno(), REPORT_FD: "r"},
            )
        except OSError:
            self._monitoredProcessExited(name, Failure())

    def worker_ended(self, name: str, reason: Failure) -> None:
        """Log a worker that ended unasked, with what it leaves behind."""
        last = self.counters.retire(name)
        if not self.running:
            return  # stopping: each worker has said its own summary
        status = getattr(reason.value, "status", None)
        signal_number = getattr(reason.value, "signal", None)
        how = (f"killed by signal {signal_number}" if signal_number
               else f"exit status {getattr(reason.value, 'exitCode', status)}")
        held, drops = socket_memory(self.sockets[self.names.index(name)])
        self.log.warn(
            "udpupper {name} ended ({how}); its last report: {summary}; its "
            "socket, kept for the next {name}, holds {held} bytes of datagrams "
            "and the kernel has dropped {drops} there so far",
            name=name, how=how, summary=last.summary(), held=held, drops=drops,
        )

    def kernel_drops(self) -> dict[str, int]:
        """The kernel's drops on each worker's socket (the parent holds them all)."""
        return {name: socket_memory(sock)[1] for name, sock in zip(self.names, self.sockets)}

    def totals(self, kernel_drops: dict[str, int] | None = None) -> Stats:
        """Every worker's counts, with the kernel's drops on every socket
        (read now, unless the caller has just read them)."""
        total = self.counters.totals()
        if kernel_drops is None:
            kernel_drops = self.kernel_drops()
        total.kernel_drops = sum(kernel_drops.values())
        return total

    def pass_hangup_on(self) -> None:
        """SIGHUP: each worker logs its counters, and the parent the totals."""
        for name, protocol in self.protocols.items():
            try:
                protocol.transport.signalProcess("HUP")
            except ProcessExitedAlready:
                self.log.info("udpupper {name} has ended", name=name)
        self.log.info("udpupper workers' counters: {summary}", summary=self.totals().summary())

    def stopService(self) -> Deferred[None]:
        """Signal every worker, wait until they have all ended, say the totals.

        ProcessMonitor sends SIGTERM (SIGKILL after ``killTime``) but does not
        wait; the reactor must not stop before the workers have logged their
        summaries, reported their last counters and exited.
        """
        super().stopService()
        ended = self._all_ended(self._clock.seconds() + self.killTime + 1)
        ended.addCallback(self._say_totals)
        return ended

    def _say_totals(self, _: None) -> None:
        self.log.info("udpupper workers stopped: {summary} (totals of {count} workers)",
                      summary=self.totals().summary(), count=len(self.names))
        for sock in self.sockets:
            sock.close()

    def _all_ended(self, deadline: float) -> Deferred[None]:
        if not self.protocols or self._clock.seconds() > deadline:
            return succeed(None)
        return deferLater(self._clock, 0.05, self._all_ended, deadline)
