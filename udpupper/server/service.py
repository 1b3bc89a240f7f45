"""The service twistd runs: bind the port, serve, log what happens."""

from __future__ import annotations

import socket
from errno import EADDRNOTAVAIL, EAFNOSUPPORT
from os import strerror

from twisted.application import internet, service
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from udpupper import helpers
from udpupper.abi import RECEIVE_BUFFERS, mebibytes
from udpupper.kernel import socket_drops
from udpupper.options import exit_with
from udpupper.server import systemd
from udpupper.server.droplog import DropLog
from udpupper.server.interfaces import Clock
from udpupper.server.listening import (
    DUAL_STACK,
    cannot_listen,
    format_endpoint,
    interfaces_to_try,
    refuse_to_join_a_group,
)
from udpupper.server.port import DEFAULT_BUSY_POLL, ServerPort
from udpupper.server.protections.policy import Protections
from udpupper.server.protocol import MonotonicClock, UpperProtocol
from udpupper.server.signals import on_hangup, stop_once
from udpupper.server.stats import Stats
from udpupper.server.workers import worker as supervised
from udpupper.twisted_privates import queue_stop_signals

DEFAULT_RCVBUF = 4 * 1024 * 1024  # bytes: rides out bursts at full speed
CHECK_INTERVAL = 1.0  # seconds between two looks at the kernel's drops
DRAIN_TIME = 1.0  # at a stop, answer what waits in the socket this long at most


def start_listening(port: ServerPort) -> None:
    """Start listening on ``port``, or exit with one line when there is no
    memory for its buffers (the hot loop allocates nothing of its own)."""
    try:
        port.startListening()
    except MemoryError:
        exit_with(
            f"udpupper: not enough memory for the receive buffers "
            f"({mebibytes(RECEIVE_BUFFERS)}); "
            "give the daemon more memory, or a smaller --rate-table"
        )


class UpperService(service.MultiService):
    """Listens on one UDP port and answers with :class:`UpperProtocol`.

    The socket is bound in ``privilegedStartService``, so twistd can bind a
    port below 1024 as root before it drops privileges.  Every second (a
    ``TimerService``) it reads the kernel's drops on the socket and logs
    drop reasons (each at most once per 30 seconds); at the end, one summary
    line.  ``reactor`` runs it; rate decisions are made on ``clock``
    (monotonic unless told otherwise).
    """

    name = "udpupper"  # type: ignore[assignment]  # Service declares name as None
    log = Logger()

    def __init__(
        self,
        port: int,
        interface: str | None = None,
        reactor=None,
        protections: Protections = Protections(),
        rcvbuf: int = DEFAULT_RCVBUF,
        reuse_port: bool = False,
        busy_poll: int = DEFAULT_BUSY_POLL,
        clock: Clock | None = None,
        reflect_dscp: bool = False,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.port_number = port
        self.interface = interface
        self.reactor = reactor
        self.rcvbuf = rcvbuf
        self.reuse_port = reuse_port
        self.busy_poll = busy_poll
        self.reflect_dscp = reflect_dscp
        self.stats = Stats()
        self.protocol = UpperProtocol(
            self.stats, MonotonicClock() if clock is None else clock, protections
        )
        self.port: ServerPort | None = None
        self.given_by = ""  # who bound the socket served, when it was not us
        self.reporter: supervised.Reporter | None = None
        self.drop_log = DropLog(self.stats, self.log)
        self.checker = internet.TimerService(CHECK_INTERVAL, self.check)
        self.checker.clock = reactor
        self.checker.setServiceParent(self)

    def privilegedStartService(self) -> None:
        inherited = systemd.inherited_datagram_socket()
        if inherited is not None:
            self.port, self.given_by = self._adopt(inherited), "systemd"
        elif (given := supervised.given_socket()) is not None:
            self.port, self.given_by = self._adopt(given), "its --workers parent"
            self.reporter = supervised.Reporter.from_environment()
            counts = supervised.given_counts()
            if counts is not None:
                self.port.count_into(counts)
        else:
            self.port = self._listen()
        super().privilegedStartService()

    def _adopt(self, inherited: socket.socket) -> ServerPort:
        """Serve a socket bound already: --port and --interface do not apply."""
        port = ServerPort(
            0,
            self.protocol,
            inherited.getsockname()[0],
            self.reactor,
            self.rcvbuf,
            busy_poll=self.busy_poll,
            reflect_dscp=self.reflect_dscp,
        )
        port.adopt(inherited)
        start_listening(port)
        return port

    def _listen(self) -> ServerPort:
        if self.reuse_port:
            refuse_to_join_a_group(self.interface or DUAL_STACK, self.port_number)
        for interface in interfaces_to_try(self.interface):
            port = ServerPort(
                self.port_number,
                self.protocol,
                interface,
                self.reactor,
                self.rcvbuf,
                self.reuse_port,
                self.busy_poll,
                self.reflect_dscp,
            )
            try:
                start_listening(port)
                return port
            except CannotListenError as error:
                errno = getattr(error.socketError, "errno", None)
                if interface == DUAL_STACK and errno in (EAFNOSUPPORT, EADDRNOTAVAIL):
                    continue  # no IPv6 on this host: fall back to IPv4
                # A getaddrinfo error has a negative number: its own text.
                reason = (
                    strerror(errno)
                    if errno and errno > 0
                    else str(getattr(error.socketError, "strerror", None) or error.socketError)
                )
                cannot_listen(interface, self.port_number, reason)
        raise AssertionError("unreachable: the IPv4 fallback binds or exits")

    def startService(self) -> None:
        if self.port is None:  # started without twistd's privileged step
            self.privilegedStartService()
        super().startService()
        # Once the reactor runs, signals are handled too: only then say so.
        self.reactor.callWhenRunning(self._announce)
        stop_once(self.reactor)
        on_hangup(self.reactor, self.log_counters)
        queue_stop_signals(self.reactor)

    def _announce(self) -> None:
        if self.port is None:
            return
        host, port = self.port.socket.getsockname()[:2]
        self.log.info(
            "udpupper listening on {endpoint}{how}",
            endpoint=format_endpoint(host, port),
            how=f" (socket from {self.given_by})" if self.given_by else "",
        )
        systemd.notify("READY=1")
        without = helpers.warning()
        if without is not None:
            self.log.warn("{line}", line=without)
        granted = self.port.rcvbuf_granted
        if granted is not None and granted < self.rcvbuf:
            self.log.warn(
                "udpupper asked for a {requested}-byte receive buffer and the "
                "kernel granted {granted} (raise net.core.rmem_max, or run as root)",
                requested=self.rcvbuf,
                granted=granted,
            )

    def log_counters(self) -> None:
        """SIGHUP: say every counter, as the summary at shutdown does, and go on;
        as a worker, report them at once too (the parent then says the totals)."""
        self.update_kernel_drops()
        self.log.info("udpupper counters: {summary}", summary=self.stats.summary())
        self.report(hangup=True)

    def update_kernel_drops(self) -> None:
        """Read how many datagrams the kernel dropped on our socket."""
        if self.port is not None and self.port.connected:
            drops = socket_drops(self.port.socket)
            if drops is not None:
                self.stats.kernel_drops = drops

    def check(self) -> None:
        """Read the kernel's drops on our socket; log drop reasons; as a
        worker, report the counters to the parent."""
        self.update_kernel_drops()
        self.drop_log.check(self.protocol.clock.seconds())
        self.report()

    def report(self, hangup: bool = False) -> None:
        """As a worker, send the parent the counters."""
        if self.reporter is not None:
            limiter = self.protocol.limiter
            self.reporter.report(self.stats, len(limiter) if limiter is not None else 0, hangup)

    def stopService(self):
        systemd.notify("STOPPING=1")
        if self.port is not None:
            # What was sent before the stop is answered and counted, not
            # thrown away with the socket (bounded: a flood may not end).
            self.port.drain(DRAIN_TIME)
        super().stopService()
        self.check()
        self.log.info("udpupper stopped: {summary}", summary=self.stats.summary())
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None
