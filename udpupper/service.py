"""The service twistd runs: bind the port, serve, log a summary at the end."""

from __future__ import annotations

from errno import EADDRNOTAVAIL, EAFNOSUPPORT
from os import strerror

from twisted.application import service
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from udpupper.port import UpperPort
from udpupper.protocol import UpperProtocol
from udpupper.stats import Stats

# Serve IPv4 and IPv6 together when the host has IPv6, else IPv4 alone.
DUAL_STACK = "::"
IPV4_ANY = "0.0.0.0"


def format_endpoint(host: str, port: int) -> str:
    """``[::]:12000/udp`` or ``127.0.0.1:12000/udp``, as the logs show it."""
    return f"[{host}]:{port}/udp" if ":" in host else f"{host}:{port}/udp"


class UpperService(service.Service):
    """Listens on one UDP port and answers with :class:`UpperProtocol`.

    The socket is bound in ``privilegedStartService``, so twistd can bind a
    port below 1024 as root before it drops privileges.
    """

    name = "udpupper"
    log = Logger()

    def __init__(
        self, port: int, interface: str | None = None, reactor=None
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.port_number = port
        self.interface = interface
        self.reactor = reactor
        self.stats = Stats()
        self.protocol = UpperProtocol(self.stats)
        self.port: UpperPort | None = None

    def privilegedStartService(self) -> None:
        self.port = self._listen()
        super().privilegedStartService()

    def _listen(self) -> UpperPort:
        interfaces = [self.interface] if self.interface else [DUAL_STACK, IPV4_ANY]
        for interface in interfaces:
            port = UpperPort(self.port_number, self.protocol, interface, self.reactor)
            try:
                port.startListening()
                return port
            except CannotListenError as error:
                errno = getattr(error.socketError, "errno", None)
                if interface == DUAL_STACK and errno in (EAFNOSUPPORT, EADDRNOTAVAIL):
                    continue  # no IPv6 on this host: fall back to IPv4
                reason = strerror(errno) if errno else str(error.socketError)
                endpoint = format_endpoint(interface, self.port_number)
                raise SystemExit(f"udpupper: cannot listen on {endpoint}: {reason}")
        raise AssertionError("unreachable: the IPv4 fallback either binds or exits")

    def startService(self) -> None:
        if self.port is None:  # started without twistd's privileged step
            self.privilegedStartService()
        super().startService()
        # Once the reactor runs, signals are handled too: only then say so.
        self.reactor.callWhenRunning(self._announce)

    def _announce(self) -> None:
        if self.port is None:
            return
        host, port = self.port.socket.getsockname()[:2]
        self.log.info(
            "udpupper listening on {endpoint}", endpoint=format_endpoint(host, port)
        )

    def stopService(self):
        super().stopService()
        self.log.info("udpupper stopped: {summary}", summary=self.stats.summary())
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None
