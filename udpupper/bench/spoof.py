"""Datagrams from any source address and port, as an attacker sends them,
for the attacks the bench scripts measure (``bench/loops``) and the tests
make.

A raw socket (root) writes the UDP header itself, so the source port is
whatever the caller says, a port another daemon listens on included.
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


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def send_too_big(server: tuple[str, int], client: tuple[str, int], mtu: int) -> None:
    """Tell ``server``'s host, as any stranger can, that the path to
    ``client`` takes only ``mtu`` bytes: an ICMP "fragmentation needed"
    (IPv4) or "packet too big" (IPv6) quoting a datagram from the server's
    port to the client's."""
    (server_host, server_port), (client_host, client_port) = server, client
    udp = struct.pack("!HHHH", server_port, client_port, 1480, 0)
    if ":" in server_host:
        quoted = struct.pack(
            "!IHBB16s16s",
            6 << 28,
            1480,
            socket.IPPROTO_UDP,
            64,
            socket.inet_pton(socket.AF_INET6, server_host),
            socket.inet_pton(socket.AF_INET6, client_host),
        )
        # Type 2, code 0; the kernel fills in an ICMPv6 checksum.
        message = struct.pack("!BBHI", 2, 0, 0, mtu) + quoted + udp
        with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as raw:
            raw.sendto(message, (server_host, 0))
        return
    quoted = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        1500,
        0,
        0x4000,
        64,
        socket.IPPROTO_UDP,
        0,
        socket.inet_aton(server_host),
        socket.inet_aton(client_host),
    )
    body = quoted + udp
    header = struct.pack("!BBHHH", 3, 4, 0, 0, mtu)  # destination unreachable, frag needed
    message = struct.pack("!BBHHH", 3, 4, _checksum(header + body), 0, mtu) + body
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as raw:
        raw.sendto(message, (server_host, 0))
