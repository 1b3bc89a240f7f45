"""What several test modules need: a plain-socket peer, IPv6 detection and a
reactor that stops as Twisted's does."""

from __future__ import annotations

import os
import socket

from twisted.internet import threads
from twisted.internet.error import ReactorNotRunning


def can_bind(host: str, port: int = 0) -> bool:
    """Whether this process may bind a UDP socket to ``host`` and ``port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((host, port))
    except OSError:
        return False
    return True


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port on 127.0.0.1 that is free now, for a program that binds it
    itself (UDP by default, TCP with ``socket.SOCK_STREAM``)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


NO_IPV6 = None if can_bind("::1") else "this host has no IPv6 loopback"

from tests.tiers import long_run  # noqa: E402,F401  (where the tests found it)


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
    return can_bind("127.0.0.1", 1000)


class CapturedStderr:
    """File descriptor 2, captured: what ``options.exit_with`` writes there."""

    def __enter__(self) -> CapturedStderr:
        import tempfile

        self.file = tempfile.TemporaryFile()
        self.saved = os.dup(2)
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc_info) -> None:

        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.seek(0)
        self.text = self.file.read().decode()
        self.file.close()


class StoppingReactor:
    """Stops once; a second stop raises, as Twisted's does.  Records what is
    queued with ``callFromThread``, run by ``run_queued``."""

    def __init__(self) -> None:
        self.stops = 0
        self.queued: list = []

    def stop(self) -> None:
        self.stops += 1
        if self.stops > 1:
            raise ReactorNotRunning("Can't stop reactor that isn't running.")

    def callFromThread(self, f, *args) -> None:
        self.queued.append((f, args))

    def run_queued(self) -> None:
        queued, self.queued = self.queued, []
        for f, args in queued:
            f(*args)
