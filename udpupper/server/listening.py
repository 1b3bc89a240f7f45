"""Where the daemon listens, and the one line it says when it cannot.

Shared by the lone daemon (:mod:`.service`) and the ``--workers`` parent
(:mod:`.workers.parent`), which bind their sockets each their own way.
"""

from __future__ import annotations

import socket
from errno import EADDRINUSE
from os import strerror
from typing import NoReturn

from udpupper.options import exit_with

# Serve IPv4 and IPv6 together when the host has IPv6, else IPv4 alone.
DUAL_STACK = "::"
IPV4_ANY = "0.0.0.0"


def format_endpoint(host: str, port: int) -> str:
    """``[::]:12000/udp`` or ``127.0.0.1:12000/udp``, as the logs show it."""
    return f"[{host}]:{port}/udp" if ":" in host else f"{host}:{port}/udp"


def interfaces_to_try(interface: str | None) -> list[str]:
    """The address asked for, or both stacks, then IPv4 alone as a fallback."""
    return [interface] if interface else [DUAL_STACK, IPV4_ANY]


def cannot_listen(interface: str, port: int, reason: str) -> NoReturn:
    """Exit, status 1, with one line on stderr: the daemon cannot bind."""
    exit_with(f"udpupper: cannot listen on {format_endpoint(interface, port)}: {reason}")


def group_name(port: int) -> str:
    """The abstract socket a ``--workers`` parent holds for its ``port``."""
    return f"\0udpupper-workers:{port}"


def claim_for_group(port: int) -> socket.socket | None:
    """In a ``--workers`` parent: say, while the socket returned stays open,
    that a group serves ``port`` on this host (an abstract UNIX socket: per
    network namespace, gone with the process)."""
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        claim.bind(group_name(port))
    except OSError:
        claim.close()
        return None
    return claim


def refuse_to_join_a_group(interface: str, port: int) -> None:
    """A lone ``--reuse-port`` daemon would join a group's port and answer
    nothing (the group's steering never picks it): exit with one line."""
    if port == 0 or not hasattr(socket, "AF_UNIX"):
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(group_name(port))
        except OSError:
            cannot_listen(
                interface,
                port,
                "a --workers group serves this port, and its "
                "steering would give this process nothing; stop the group, or "
                "give another --port",
            )


def reserve_port(interface: str | None, port: int, reuse_port: bool = False) -> tuple[str, int]:
    """Check that nothing serves ``port`` yet (pick one when 0); the address.

    Exits with one line, as the single-process daemon does, when the port is
    taken, by a socket that does not share it or by another group of workers;
    or, ``reuse_port``, by one that does not share it (SO_REUSEPORT).
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
            if reuse_port:
                refuse_to_join_a_group(candidate, port)
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                probe.bind((candidate, port))
            except OSError as error:
                if error.errno == EADDRINUSE or candidate == candidates[-1]:
                    cannot_listen(candidate, port, strerror(error.errno or 0))
                continue
            return candidate, probe.getsockname()[1]
    exit_with("udpupper: no address family to listen on")
