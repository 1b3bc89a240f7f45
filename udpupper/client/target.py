"""The server a client mode talks to: ``--host`` and ``--port`` resolved once."""

from __future__ import annotations

import socket
import sys

from udpupper.client.options import COMMAND, EXIT_USAGE


def resolve(host: str, port: int) -> tuple[int, tuple[str, int]]:
    """Resolve ``host`` once: its address family and an IP literal address.

    A name with both IPv4 and IPv6 addresses gives the IPv4 one, as the
    textbook client does, so an IPv4-only server on ``localhost`` works.
    An IPv6 literal may come in brackets (``[::1]``), as the prober's
    targets do.
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    family, _, _, _, sockaddr = min(infos, key=lambda info: info[0] != socket.AF_INET)
    return family, (str(sockaddr[0]), int(sockaddr[1]))


def server_of(options) -> tuple[int, tuple[str, int]]:
    """The options' server, or one line and the usage status."""
    try:
        return resolve(options["host"], options["port"])
    except (OSError, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or error
        print(f"{COMMAND}: cannot resolve {options['host']!r}: {reason}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def interface_for(family: int) -> str:
    return "::" if family == socket.AF_INET6 else "0.0.0.0"
