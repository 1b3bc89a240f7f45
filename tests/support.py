"""What several test modules need: a plain-socket peer and IPv6 detection."""

from __future__ import annotations

import socket

from twisted.internet import threads


def ipv6_loopback_available() -> bool:
    """Whether this host can bind a UDP socket to ::1."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


NO_IPV6 = None if ipv6_loopback_available() else "this host has no IPv6 loopback"


def exchange(
    host: str,
    port: int,
    payload: bytes,
    timeout: float = 5.0,
    source: str | None = None,
    source_port: int = 0,
) -> tuple[bytes, tuple]:
    """Send one datagram and read one reply, as the textbook client does.

    Returns the reply and the address it came from; raises ``TimeoutError``
    (an ``OSError``) when no reply comes within ``timeout`` seconds.
    ``source`` and ``source_port`` choose where it is sent from.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as peer:
        peer.settimeout(timeout)
        if source is not None or source_port:
            peer.bind((source or "", source_port))
        peer.sendto(payload, (host, port))
        return peer.recvfrom(65_535)


def exchange_in_thread(*args, **kwargs):
    """:func:`exchange`, off the reactor thread: a Deferred of its result."""
    return threads.deferToThread(exchange, *args, **kwargs)


def can_bind_low_ports() -> bool:
    """Whether this process may bind a port below 1024 (root may)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 1000))
    except OSError:
        return False
    return True
