"""Datagrams from any source address and port, as an attacker sends them.

A raw socket (root) writes the UDP header itself, so the source port is
whatever the test says, a port another daemon listens on included.
"""

from __future__ import annotations

import os
import socket
import struct

IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
IPV6_TRANSPARENT = 75


def why_not() -> str | None:
    """Why spoofed datagrams cannot be sent here, or None when they can."""
    if os.geteuid() != 0:
        return "spoofing a source needs a raw socket (root)"
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP).close()
    except OSError as error:
        return f"no raw sockets here: {error}"
    return None


def send_spoofed(source: tuple[str, int], destination: tuple[str, int], payload: bytes) -> None:
    """Send ``payload`` to ``destination`` as if from ``source`` (host, port)."""
    family = socket.AF_INET6 if ":" in destination[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_UDP) as raw:
        if family == socket.AF_INET6:
            # The kernel fills in the UDP checksum, mandatory over IPv6.
            raw.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_CHECKSUM, 6)
            raw.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
        else:
            raw.setsockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1)
        raw.bind((source[0], 0))  # any address, this host's or not (transparent)
        header = struct.pack("!HHHH", source[1], destination[1], 8 + len(payload), 0)
        raw.sendto(header + payload, (destination[0], 0))
