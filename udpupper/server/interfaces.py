"""The contract between the daemon's port and its protocol, declared once.

:class:`~udpupper.server.port.ServerPort` delivers every datagram to
``datagramReceived``; what it will not deliver, and what goes wrong on its
side, it reports with the other four methods.  :class:`UpperProtocol`
declares that it provides this; a protocol for the port must.
"""

from __future__ import annotations

from typing import Protocol

from zope.interface import Interface

from udpupper.server.stats import Reason


class Clock(Protocol):
    """What the policies need of time: seconds that never step back."""

    def seconds(self) -> float: ...


class IServerProtocol(Interface):
    """What :class:`~udpupper.server.port.ServerPort` calls on its protocol."""

    def datagramReceived(datagram: bytes, addr: tuple) -> None:
        """A datagram to answer (or not), from ``addr``, a (host, port) pair."""

    def refuse(datagram: bytes, reason: Reason) -> None:
        """A datagram the port will not deliver (its destination), and why."""

    def send_failed(reply: bytes, errno: int | None) -> None:
        """A reply ``transport.write`` took that the kernel then refused."""

    def internal_error() -> None:
        """An exception while a datagram was handled: count and log it."""

    def log_error() -> None:
        """An exception of the port's own (no datagram lost): log it."""
