"""Supervising ``--workers``' processes: start, watch, replace, give up.

The ``--workers`` parent (:mod:`udpupper.server.workers.parent`) is a
:class:`Supervisor`: it spawns each worker with ``reactor.spawnProcess`` and
keeps it serving, on the reactor's clock (monotonic) and its timers only,
so that tests drive it all on a fake reactor:

- a worker that ends unasked is logged, with its last counters and what its
  socket holds, and started again on the same socket: at once the first
  time, then after 0.5, 1, 2 and at most ``MAX_RESTART_DELAY`` seconds while
  it keeps dying young;
- a worker the parent has no news of for ``SILENCE`` seconds (no report, no
  datagram counted in its shared memory) is hung, or stopped with SIGSTOP:
  it is killed and replaced.  News is what the worker does, judged on the
  parent's own watch: when the parent itself did not look for a while
  (stopped, frozen with its group, busy), what it missed is no evidence,
  and every worker gets its time again;
- a worker that cannot be started, or ends, ``GIVE_UP`` times in a row
  without ever reporting cannot start (its tables do not fit in memory, or
  its Python cannot be run): the parent says why in one line and exits 1,
  as a lone daemon would;
- stopping: SIGTERM to each, SIGKILL after ``KILL_TIME``.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any

from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from udpupper.kernel import socket_memory
from udpupper.options import one_line
from udpupper.server.workers.worker import COUNTS, COUNTS_FD, REPORT_FD, SOCKET_FD

if TYPE_CHECKING:
    from twisted.logger import Logger

    from udpupper.server.workers.counters import WorkerCounters
    from udpupper.server.workers.worker import SharedCounts

SILENCE = 2.0  # seconds without news: the worker is hung, and replaced
STARTUP_GRACE = 15.0  # seconds a new worker may take to send its first report
WATCH_INTERVAL = 0.25  # seconds between two looks at the workers
# A look this much later than the last: the parent itself was stopped or
# stalled, and saw nothing of its workers meanwhile.
BLIND = 4 * WATCH_INTERVAL
MAX_RESTART_DELAY = 4.0  # a crash-looping worker is back within this long
YOUNG = 5.0  # a worker that lived less than this died young
GIVE_UP = 3  # failed starts in a row, without a single report: it cannot start
KILL_TIME = 5.0  # seconds between SIGTERM and SIGKILL when stopping


class WorkerProtocol(ProcessProtocol):
    """One worker process: its output lines, logged as the parent's with
    the worker's name, and its counter reports, read from descriptor 4."""

    def __init__(self, workers: Supervisor, name: str) -> None:
        self.workers = workers
        self.name = name
        self.buffers = {1: b"", 2: b"", REPORT_FD: b""}
        self.last_line = ""
        self.killed = False  # by the watchdog, for giving no news

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        *lines, self.buffers[childFD] = (self.buffers.get(childFD, b"") + data).split(b"\n")
        if childFD == REPORT_FD:
            if lines:  # totals: only the newest matters, and whether one answered a SIGHUP
                hangup = any(b'"hangup"' in line for line in lines)
                self.workers.reported(self.name, lines[-1], hangup)
            return
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self.last_line = text
                self.workers.log.info("[{tag}] {line}", tag=self.name, line=text)

    def processEnded(self, reason: Failure) -> None:
        for fd in (1, 2):
            if self.buffers[fd]:
                self.childDataReceived(fd, b"\n")
        self.workers.ended(self.name, self, reason)


class Supervisor:
    """What the ``--workers`` parent does to keep its workers serving.

    The parent service sets: ``reactor``, ``names``, ``command``, ``env``,
    ``sockets`` (one a worker), ``shared`` (their shared counts, or None),
    ``counters``, ``log``, ``running``, ``stopping``; and answers
    ``reported`` (a report line) and ``served`` (a worker's first report).
    """

    # What the parent service provides, declared for the type checker.
    reactor: Any
    names: list[str]
    command: list[str]
    env: dict[str, str]
    sockets: list[socket.socket]
    shared: dict[str, SharedCounts | None]
    counters: WorkerCounters
    log: Logger
    running: bool | int
    stopping: bool

    def reported(self, name: str, line: bytes, hangup: bool = False) -> None:
        raise NotImplementedError  # the parent's

    def all_ended_maybe(self) -> None:
        raise NotImplementedError  # the parent's

    def init_supervision(self) -> None:
        self.protocols: dict[str, WorkerProtocol] = {}
        self.started_at: dict[str, float] = {}
        self.reported_at: dict[str, float | None] = dict.fromkeys(self.names)
        # When the parent last had news of each worker, or gave it time again.
        self.news_at: dict[str, float] = {}
        self.seen_received: dict[str, int] = {}  # its shared count at the last look
        self.delays: dict[str, float] = dict.fromkeys(self.names, 0.0)
        self.failed_starts: dict[str, int] = dict.fromkeys(self.names, 0)
        self.restarts: dict[str, IDelayedCall] = {}
        self.failure: str | None = None
        self.last_look: float | None = None

    def spawn(self, name: str) -> None:
        """Start worker ``name`` on its socket, with its report pipe."""
        self.restarts.pop(name, None)
        if not self.running or name in self.protocols:
            return
        protocol = WorkerProtocol(self, name)
        sock = self.sockets[self.names.index(name)]
        self.protocols[name] = protocol
        self.started_at[name] = self.news_at[name] = self.reactor.seconds()
        self.reported_at[name] = None
        self.seen_received[name] = 0
        child_fds: dict[int, int | str] = {
            0: "w",
            1: "r",
            2: "r",
            SOCKET_FD: sock.fileno(),
            REPORT_FD: "r",
        }
        env = self.env
        shared = self.shared[name]
        if shared is not None:
            shared.reset()
            child_fds[COUNTS_FD] = shared.fd
            env = {**env, COUNTS: str(COUNTS_FD)}
        try:
            self.reactor.spawnProcess(
                protocol,
                self.command[0],
                self.command,
                env=env,
                childFDs=child_fds,
            )
        except OSError as error:
            del self.protocols[name]
            reason = error.strerror or str(error)
            self.log.error("udpupper cannot start {name}: {reason}", name=name, reason=reason)
            if self.failed_start(name, f"cannot start it: {reason}"):
                self.schedule(name, young=True)

    def failed_start(self, name: str, last_line: str) -> bool:
        """Count a start that failed: whether to try again (else the parent ends)."""
        self.failed_starts[name] += 1
        if self.failed_starts[name] >= GIVE_UP:
            self.give_up(name, last_line)
            return False
        return True

    def first_report(self, name: str) -> None:
        """Worker ``name`` serves: its failed starts are forgotten."""
        self.failed_starts[name] = 0

    def heard(self, name: str) -> None:
        self.reported_at[name] = self.news_at[name] = self.reactor.seconds()

    def alive(self) -> int:
        """How many workers answer: those with news within SILENCE."""
        now = self.reactor.seconds()
        return sum(
            1
            for name in self.protocols
            if self.reported_at[name] is not None and now - self.news_at[name] <= SILENCE
        )

    def watch(self) -> None:
        """Kill a worker with no news for SILENCE (hung, or stopped): it is
        replaced.  Judged on what the parent saw: after a look much later
        than the last, every worker has its time again."""
        now = self.reactor.seconds()
        blind = self.last_look is not None and now - self.last_look > BLIND
        self.last_look = now
        for name, protocol in list(self.protocols.items()):
            shared = self.shared[name]
            received = shared.received() if shared is not None else 0
            if blind or received != self.seen_received[name]:
                self.news_at[name] = now  # counting datagrams: it serves
                self.seen_received[name] = received
                continue
            limit = SILENCE if self.reported_at[name] is not None else STARTUP_GRACE
            silent_for = now - self.news_at[name]
            if silent_for > limit and not protocol.killed:
                protocol.killed = True
                self.log.warn(
                    "udpupper {name} has not reported for {seconds:.1f} s: killed, to be replaced",
                    name=name,
                    seconds=silent_for,
                )
                self.send_signal(protocol, signal.SIGKILL)

    def ended(self, name: str, protocol: WorkerProtocol, reason: Failure) -> None:
        """A worker ended: log it, keep its counts, start another (or give up)."""
        if self.protocols.get(name) is protocol:
            del self.protocols[name]
        shared = self.shared[name]
        last = self.counters.retire(name, shared.stats() if shared else None)
        never_served = self.reported_at[name] is None
        if self.stopping or not self.running:
            self.all_ended_maybe()
            return
        status = getattr(reason.value, "status", None)
        signal_number = getattr(reason.value, "signal", None)
        how = (
            f"killed by signal {signal_number}"
            if signal_number
            else f"exit status {getattr(reason.value, 'exitCode', status)}"
        )
        held, drops = socket_memory(self.sockets[self.names.index(name)])
        self.log.warn(
            "udpupper {name} ended ({how}); its last report: {summary}; its "
            "socket, kept for the next {name}, holds {held} bytes of datagrams "
            "and the kernel has dropped {drops} there so far",
            name=name,
            how=how,
            summary=last.summary(),
            held=held,
            drops=drops,
        )
        if never_served and not signal_number and not self.failed_start(name, protocol.last_line):
            return
        lived = self.reactor.seconds() - self.started_at[name]
        self.schedule(name, young=lived < YOUNG, at_once=protocol.killed)

    def schedule(self, name: str, young: bool, at_once: bool = False) -> None:
        """Start ``name`` again: at once, or later while it keeps dying young."""
        if at_once or not young:
            self.delays[name] = 0.0
        else:
            self.delays[name] = min(max(self.delays[name] * 2, 0.5), MAX_RESTART_DELAY)
        self.restarts[name] = self.reactor.callLater(self.delays[name], self.spawn, name)

    def give_up(self, name: str, last_line: str) -> None:
        """Workers that cannot start: one line, and the parent exits 1."""
        if self.failure is not None:
            return
        self.failure = one_line(
            f"udpupper: {name} could not start ({GIVE_UP} times in a row)"
            + (f"; it said: {last_line}" if last_line else "")
        )
        self.log.error("{line}", line=self.failure)
        self.reactor.addSystemEventTrigger("after", "shutdown", self._exit_failed)
        self.reactor.callWhenRunning(self.reactor.stop)

    def _exit_failed(self) -> None:
        """After the reactor has stopped (and the workers with it): exit 1,
        the line on descriptor 2 itself (``sys.stderr`` is twistd's log)."""
        sys.stdout.flush()
        try:
            os.write(2, (self.failure or "").encode("utf-8", "replace") + b"\n")
        except OSError:
            pass
        os._exit(1)

    def send_signal(self, protocol: WorkerProtocol, number: int) -> None:
        if protocol.transport is None:
            return
        try:
            protocol.transport.signalProcess(number)
        except (ProcessExitedAlready, OSError):
            pass

    def cancel_restarts(self) -> None:
        for call in self.restarts.values():
            if call.active():
                call.cancel()
        self.restarts.clear()

    def terminate_all(self) -> IDelayedCall:
        """SIGTERM to every worker now (SIGCONT too: a stopped one takes it only
        once it runs), SIGKILL to those left after KILL_TIME: that timer."""
        for protocol in self.protocols.values():
            self.send_signal(protocol, signal.SIGTERM)
            self.send_signal(protocol, signal.SIGCONT)
        return self.reactor.callLater(KILL_TIME, self._kill_the_rest)

    def _kill_the_rest(self) -> None:
        for protocol in self.protocols.values():
            self.send_signal(protocol, signal.SIGKILL)
