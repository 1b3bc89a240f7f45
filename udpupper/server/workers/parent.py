"""``--workers N``: N processes answering on one port, as one daemon.

The parent binds the N sockets of one reuseport group, each with its
options set before it is bound, and steers each source prefix to one of
them (:mod:`udpupper.server.workers.steering`), so rate limits are exact with any number of
workers.  Each worker is an ordinary ``twistd -n udpupper`` serving socket
*i*, passed as descriptor 3 (:mod:`udpupper.server.workers.worker`); it reports its
counters once a second on descriptor 4, and the parent's metrics and
summary add them up.

The parent supervises them itself, with ``reactor.spawnProcess`` and timers
on the reactor's clock:

- a worker that ends unasked is logged, with its last counters and what its
  socket holds, and started again on the same socket: at once the first
  time, then after 0.5, 1, 2 and at most ``MAX_RESTART_DELAY`` seconds while
  it keeps dying young;
- a worker that has not reported for ``SILENCE`` seconds (hung, or stopped
  with SIGSTOP) is killed and replaced; ``alive`` counts the workers that
  report, not the processes;
- a worker that ends ``GIVE_UP`` times in a row without ever reporting
  cannot start (its tables do not fit in memory, say): the parent says why
  in one line and exits 1, as a lone daemon would;
- once every worker serves, the parent (the main PID) tells systemd
  ``READY=1``, and ``STOPPING=1`` as it stops; the workers do not;
- stopping the parent (SIGTERM) stops them all and waits for their last
  counters; a parent killed outright takes them with it (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from os import strerror

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

import udpupper
from udpupper.kernel import socket_memory
from udpupper.options import one_line
from udpupper.server import systemd
from udpupper.server.listening import cannot_listen, claim_for_group, format_endpoint
from udpupper.server.signals import on_hangup, stop_once
from udpupper.server.stats import Stats
from udpupper.server.workers.counters import WorkerCounters
from udpupper.server.workers.steering import attach, bind_group
from udpupper.server.workers.worker import (COUNTS, COUNTS_FD, PARENT, REPORT,
                                            REPORT_FD, SOCKET, SOCKET_FD,
                                            SharedCounts, worker_log)
from udpupper.twisted_privates import queue_stop_signals

# The workers import udpupper from where the parent did: ``python -c`` puts
# the working directory first on sys.path, and a source tree there (``make
# run`` in a clone) would shadow the installed package, without its C helpers.
_IMPORTED_FROM = os.path.dirname(os.path.dirname(os.path.abspath(udpupper.__file__)))
TWISTD = [sys.executable, "-c", f"import sys; sys.path[0] = {_IMPORTED_FROM!r}; "
          "from twisted.scripts.twistd import run; run()"]

SILENCE = 2.0  # seconds without a report: the worker is hung, and replaced
STARTUP_GRACE = 15.0  # seconds a new worker may take to send its first report
WATCH_INTERVAL = 0.25  # seconds between two looks at the workers' reports
MAX_RESTART_DELAY = 4.0  # a crash-looping worker is back within this long
YOUNG = 5.0  # a worker that lived less than this died young
GIVE_UP = 3  # ends in a row without a single report: it cannot start
KILL_TIME = 5.0  # seconds between SIGTERM and SIGKILL when stopping
HANGUP_WAIT = 2.0  # seconds the parent waits for its workers' counters at SIGHUP
class WorkerProtocol(ProcessProtocol):
    """One worker process: its output lines, logged as the parent's with
    the worker's name, and its counter reports, read from descriptor 4."""

    def __init__(self, workers: Workers, name: str) -> None:
        self.workers = workers
        self.name = name
        self.buffers = {1: b"", 2: b"", REPORT_FD: b""}
        self.last_line = ""
        self.killed = False  # by the watchdog, for not reporting

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        *lines, self.buffers[childFD] = (self.buffers.get(childFD, b"") + data).split(b"\n")
        if childFD == REPORT_FD:
            if lines:  # totals: only the newest matters
                self.workers.reported(self.name, lines[-1])
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


class Workers(service.Service):
    """Binds the group, supervises the worker processes, adds up their counters."""

    log = Logger()

    def __init__(
        self,
        count: int,
        interface: str,
        port: int,
        options: list[str],
        rcvbuf: int = 0,
        reactor=None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.interface = interface
        self.port = port
        self.rcvbuf = rcvbuf
        self.endpoint = format_endpoint(interface, port)
        self.names = [f"worker-{number}" for number in range(1, count + 1)]
        logger = f"{worker_log.__module__}.worker_log"
        self.command = [*TWISTD, "-n", "--pidfile=", f"--logger={logger}", "udpupper", *options]
        # The workers end with their parent, however it ends (die_with_parent);
        # only the parent speaks to systemd.
        self.env = {key: value for key, value in os.environ.items()
                    if key not in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID")}
        self.env.update({PARENT: str(os.getpid()), SOCKET: str(SOCKET_FD),
                         REPORT: str(REPORT_FD)})
        self.sockets: list[socket.socket] = []
        self.claim: socket.socket | None = None  # says a group serves the port
        # What each worker read and sent, counted in shared memory.
        self.shared = {name: SharedCounts.for_worker(name) for name in self.names}
        self.steered = False
        self.counters = WorkerCounters(self.names)
        self.protocols: dict[str, WorkerProtocol] = {}
        self.started_at: dict[str, float] = {}
        self.reported_at: dict[str, float | None] = dict.fromkeys(self.names)
        self.delays: dict[str, float] = dict.fromkeys(self.names, 0.0)
        self.failed_starts: dict[str, int] = dict.fromkeys(self.names, 0)
        self.restarts: dict[str, IDelayedCall] = {}
        self.ready = False
        self.stopping = False
        self.failure: str | None = None
        self.hangup_waiting: set[str] = set()  # workers whose SIGHUP counters are due
        self.hangup_timer: IDelayedCall | None = None
        self.watchdog = LoopingCall(self.watch)
        self.watchdog.clock = reactor
        self.all_ended: Deferred[None] | None = None

    # -- starting ---------------------------------------------------------

    def privilegedStartService(self) -> None:
        """Bind the group (as root, before twistd drops privileges) and steer it."""
        try:
            self.sockets = bind_group(self.interface, self.port, len(self.names),
                                      rcvbuf=self.rcvbuf)
        except OSError as error:
            cannot_listen(self.interface, self.port, strerror(error.errno or 0))
        self.claim = claim_for_group(self.sockets[0].getsockname()[1])
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
        for name in self.names:
            self.spawn(name)
        self.watchdog.start(WATCH_INTERVAL, now=False)
        on_hangup(self.reactor, self.pass_hangup_on)
        stop_once(self.reactor)
        queue_stop_signals(self.reactor)

    def spawn(self, name: str) -> None:
        """Start worker ``name`` on its socket, with its report pipe."""
        self.restarts.pop(name, None)
        if not self.running or name in self.protocols:
            return
        protocol = WorkerProtocol(self, name)
        sock = self.sockets[self.names.index(name)]
        self.protocols[name] = protocol
        self.started_at[name] = self.reactor.seconds()
        self.reported_at[name] = None
        child_fds: dict[int, int | str] = {
            0: "w", 1: "r", 2: "r", SOCKET_FD: sock.fileno(), REPORT_FD: "r"}
        env = self.env
        shared = self.shared[name]
        if shared is not None:
            shared.reset()
            child_fds[COUNTS_FD] = shared.fd
            env = {**env, COUNTS: str(COUNTS_FD)}
        try:
            self.reactor.spawnProcess(
                protocol, self.command[0], self.command, env=env, childFDs=child_fds,
            )
        except OSError as error:
            del self.protocols[name]
            self.log.error("udpupper cannot start {name}: {error}", name=name, error=error)
            self.schedule(name, young=True)

    # -- while running ----------------------------------------------------

    def reported(self, name: str, line: bytes) -> None:
        """A worker's counters: it serves."""
        try:
            report = json.loads(line)
            self.counters.update(name, report)
        except (ValueError, TypeError, AttributeError):
            self.log.warn("udpupper {name} sent a report that is not its counters",
                          name=name)
            return
        self.reported_at[name] = self.reactor.seconds()
        if report.get("hangup") and name in self.hangup_waiting:
            self.hangup_waiting.discard(name)
            if not self.hangup_waiting:
                self.say_hangup_totals()
        self.failed_starts[name] = 0
        if not self.ready and all(self.reported_at[n] is not None for n in self.names):
            self.ready = True
            self.log.info("udpupper workers all serving on {endpoint}",
                          endpoint=self.endpoint)
            systemd.notify("READY=1")

    def alive(self) -> int:
        """How many workers answer: those that reported within SILENCE."""
        now = self.reactor.seconds()
        return sum(1 for name in self.protocols
                   if (at := self.reported_at[name]) is not None and now - at <= SILENCE)

    def watch(self) -> None:
        """Kill a worker that stopped reporting (hung, or stopped): it is replaced."""
        now = self.reactor.seconds()
        for name, protocol in list(self.protocols.items()):
            at = self.reported_at[name]
            silent = (now - at > SILENCE) if at is not None else (
                now - self.started_at[name] > STARTUP_GRACE)
            if silent and not protocol.killed:
                protocol.killed = True
                self.log.warn("udpupper {name} has not reported for {seconds:.1f} s: "
                              "killed, to be replaced", name=name,
                              seconds=now - (at if at is not None else self.started_at[name]))
                self.send_signal(protocol, signal.SIGKILL)

    def ended(self, name: str, protocol: WorkerProtocol, reason: Failure) -> None:
        """A worker ended: log it, keep its counts, start another (or give up)."""
        if self.protocols.get(name) is protocol:
            del self.protocols[name]
        shared = self.shared[name]
        last = self.counters.retire(name, shared.stats() if shared else None)
        never_served = self.reported_at[name] is None
        if self.stopping or not self.running:
            if not self.protocols and self.all_ended is not None:
                ended, self.all_ended = self.all_ended, None
                ended.callback(None)
            return
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
        if never_served and not signal_number:
            self.failed_starts[name] += 1
            if self.failed_starts[name] >= GIVE_UP:
                self.give_up(name, protocol.last_line)
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
        self.failure = one_line(
            f"udpupper: {name} could not start ({GIVE_UP} times in a row)"
            + (f"; it said: {last_line}" if last_line else ""))
        self.log.error("{line}", line=self.failure)
        self.reactor.addSystemEventTrigger("after", "shutdown", self._exit_failed)
        self.reactor.stop()

    def _exit_failed(self) -> None:
        """After the reactor has stopped (and the workers with it): exit 1,
        the line on descriptor 2 itself (``sys.stderr`` is twistd's log)."""
        sys.stdout.flush()
        try:
            os.write(2, (self.failure or "").encode("utf-8", "replace") + b"\n")
        except OSError:
            pass
        os._exit(1)

    # -- counters ---------------------------------------------------------


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

    def send_signal(self, protocol: WorkerProtocol, number: int) -> None:
        if protocol.transport is None:
            return
        try:
            protocol.transport.signalProcess(number)
        except (ProcessExitedAlready, OSError):
            pass

    def pass_hangup_on(self) -> None:
        """SIGHUP: each worker logs its counters and reports them at once;
        once they all have (HANGUP_WAIT at most), the parent logs the totals."""
        self.hangup_waiting.update(self.protocols)
        for protocol in self.protocols.values():
            self.send_signal(protocol, signal.SIGHUP)
        if self.hangup_timer is None or not self.hangup_timer.active():
            self.hangup_timer = self.reactor.callLater(HANGUP_WAIT, self.say_hangup_totals)
        if not self.hangup_waiting:
            self.say_hangup_totals()

    def say_hangup_totals(self) -> None:
        if self.hangup_timer is not None and self.hangup_timer.active():
            self.hangup_timer.cancel()
        self.hangup_timer = None
        late = sorted(self.hangup_waiting & set(self.protocols))
        self.hangup_waiting.clear()
        self.log.info("udpupper workers' counters: {summary}{late}",
                      summary=self.totals().summary(),
                      late=f" ({', '.join(late)} did not answer: their last report)"
                      if late else "")

    # -- stopping ---------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        """Signal every worker, wait until they have all ended (SIGKILL after
        KILL_TIME), say the totals.

        The reactor must not stop before the workers have logged their
        summaries, reported their last counters and exited.
        """
        self.stopping = True
        systemd.notify("STOPPING=1")  # from the main PID, as a lone daemon does
        super().stopService()
        if self.hangup_timer is not None and self.hangup_timer.active():
            self.hangup_timer.cancel()
        if self.watchdog.running:
            self.watchdog.stop()
        for call in self.restarts.values():
            if call.active():
                call.cancel()
        self.restarts.clear()
        ended: Deferred[None] = Deferred()
        if self.protocols:
            self.all_ended = ended
            for protocol in self.protocols.values():
                # A stopped worker takes SIGTERM only once it runs again.
                self.send_signal(protocol, signal.SIGTERM)
                self.send_signal(protocol, signal.SIGCONT)
            killer = self.reactor.callLater(KILL_TIME, self._kill_the_rest)
            ended.addBoth(lambda result: (killer.active() and killer.cancel(), result)[1])
        else:
            ended.callback(None)
        ended.addCallback(self._say_totals)
        return ended

    def _kill_the_rest(self) -> None:
        for protocol in self.protocols.values():
            self.send_signal(protocol, signal.SIGKILL)

    def _say_totals(self, _: None) -> None:
        self.log.info("udpupper workers stopped: {summary} (totals of {count} workers)",
                      summary=self.totals().summary(), count=len(self.names))
        for sock in self.sockets:
            sock.close()
        if self.claim is not None:
            self.claim.close()
        for shared in self.shared.values():
            if shared is not None:
                shared.close()
