"""``--workers N``: N processes answering on one port, as one daemon.

The parent binds the N sockets of one reuseport group, each with its
options set before it is bound, and steers each source prefix to one of
them (:mod:`udpupper.server.workers.steering`), so rate limits are exact with any number of
workers.  Each worker is an ordinary ``twistd -n udpupper`` serving socket
*i*, passed as descriptor 3 (:mod:`udpupper.server.workers.worker`); it reports its
counters once a second on descriptor 4, and the parent's metrics and
summary add them up.

The parent supervises them itself (:mod:`udpupper.server.workers.supervisor`:
restarts, the watchdog, giving up), and besides:

- once every worker serves, the parent (the main PID) tells systemd
  ``READY=1``, and ``STOPPING=1`` as it stops; the workers do not;
- at SIGHUP each worker logs its counters, and the parent the totals once
  they have all reported them;
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
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

import udpupper
from udpupper.kernel import socket_memory
from udpupper.server import systemd
from udpupper.server.listening import cannot_listen, claim_for_group, format_endpoint
from udpupper.server.signals import on_hangup, stop_once
from udpupper.server.stats import Stats
from udpupper.server.workers.counters import WorkerCounters
from udpupper.server.workers.steering import attach, bind_group
from udpupper.server.workers.supervisor import WATCH_INTERVAL, Supervisor
from udpupper.server.workers.worker import (
    PARENT,
    REPORT,
    REPORT_FD,
    SOCKET,
    SOCKET_FD,
    SharedCounts,
    worker_log,
)
from udpupper.twisted_privates import queue_stop_signals

# The workers import udpupper from where the parent did: ``python -c`` puts
# the working directory first on sys.path, and a source tree there (``make
# run`` in a clone) would shadow the installed package, without its C helpers.
_IMPORTED_FROM = os.path.dirname(os.path.dirname(os.path.abspath(udpupper.__file__)))
TWISTD = [
    sys.executable,
    "-c",
    f"import sys; sys.path[0] = {_IMPORTED_FROM!r}; from twisted.scripts.twistd import run; run()",
]

HANGUP_WAIT = 2.0  # seconds the parent waits for its workers' counters at SIGHUP


class Workers(Supervisor, service.Service):
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
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID")
        }
        self.env.update({PARENT: str(os.getpid()), SOCKET: str(SOCKET_FD), REPORT: str(REPORT_FD)})
        self.sockets: list[socket.socket] = []
        self.claim: socket.socket | None = None  # says a group serves the port
        # What each worker read and sent, counted in shared memory.
        self.shared = {name: SharedCounts.for_worker(name) for name in self.names}
        self.steered = False
        self.counters = WorkerCounters(self.names)
        self.init_supervision()
        self.ready = False
        self.stopping = False
        self.hangup_waiting: set[str] = set()  # workers whose SIGHUP counters are due
        self.hangup_timer: IDelayedCall | None = None
        self.watchdog = LoopingCall(self.watch)
        self.watchdog.clock = reactor
        self.all_ended: Deferred[None] | None = None

    # -- starting ---------------------------------------------------------

    def privilegedStartService(self) -> None:
        """Bind the group (as root, before twistd drops privileges) and steer it."""
        try:
            self.sockets = bind_group(
                self.interface, self.port, len(self.names), rcvbuf=self.rcvbuf
            )
        except OSError as error:
            cannot_listen(self.interface, self.port, strerror(error.errno or 0))
        self.claim = claim_for_group(self.sockets[0].getsockname()[1])
        refused = attach(self.sockets[0], len(self.sockets))
        self.steered = refused is None
        if refused is not None:
            self.log.warn(
                "udpupper cannot steer by source prefix (the kernel refused its "
                "program: {reason}); the kernel spreads datagrams by address and "
                "port, so a prefix's rate limit is per worker",
                reason=refused,
            )
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

    # -- while running ----------------------------------------------------

    def reported(self, name: str, line: bytes, hangup: bool = False) -> None:
        """A worker's counters: it serves.  ``hangup``: they (or an earlier
        report read with them) answer a SIGHUP."""
        try:
            report = json.loads(line)
            self.counters.update(name, report)
        except (ValueError, TypeError, AttributeError):
            self.log.warn("udpupper {name} sent a report that is not its counters", name=name)
            return
        self.heard(name)
        self.first_report(name)
        if (hangup or report.get("hangup")) and name in self.hangup_waiting:
            self.hangup_waiting.discard(name)
            if not self.hangup_waiting:
                self.say_hangup_totals()
        if not self.ready and all(self.reported_at[n] is not None for n in self.names):
            self.ready = True
            self.log.info("udpupper workers all serving on {endpoint}", endpoint=self.endpoint)
            systemd.notify("READY=1")

    def all_ended_maybe(self) -> None:
        """A worker ended as the parent stops: the stop is done once all have."""
        if not self.protocols and self.all_ended is not None:
            ended, self.all_ended = self.all_ended, None
            ended.callback(None)

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
        self.log.info(
            "udpupper workers' counters: {summary}{late}",
            summary=self.totals().summary(),
            late=f" ({', '.join(late)} did not answer: their last report)" if late else "",
        )

    # -- stopping ---------------------------------------------------------

    def stopService(self) -> Deferred[None]:
        """Signal every worker, wait until they have all ended (SIGKILL after
        a while), say the totals.

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
        self.cancel_restarts()
        ended: Deferred[None] = Deferred()
        if self.protocols:
            self.all_ended = ended
            killer = self.terminate_all()

            def cancel_the_killer(result: object) -> object:
                if killer.active():
                    killer.cancel()
                return result

            ended.addBoth(cancel_the_killer)
        else:
            ended.callback(None)
        ended.addCallback(self._say_totals)
        return ended

    def _say_totals(self, _: None) -> None:
        self.log.info(
            "udpupper workers stopped: {summary} (totals of {count} workers)",
            summary=self.totals().summary(),
            count=len(self.names),
        )
        for sock in self.sockets:
            sock.close()
        if self.claim is not None:
            self.claim.close()
        for shared in self.shared.values():
            if shared is not None:
                shared.close()
