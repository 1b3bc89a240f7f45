"""``--workers``' sockets: one reuseport group, steered by source prefix.

The parent binds one socket per worker, all sharing the port
(SO_REUSEPORT), and attaches a classic BPF program to the group
(SO_ATTACH_REUSEPORT_CBPF, Linux 4.5+) that picks the socket from the
source's rate-limiting prefix: the /24 of IPv4 (on a dual-stack socket too:
the program reads the version from the IP header), the /56 of IPv6.  Every
datagram of one prefix reaches one worker, so that worker's buckets are the
whole truth, and ``--rate`` means the same with any number of workers.

The parent keeps every socket for its whole life and hands socket *i* to
worker *i*, again after a restart: the group's order never changes, so a
prefix never moves, and what arrives while a worker restarts waits in its
socket's buffer for the next one.
"""

from __future__ import annotations

import ctypes
import socket

from udpupper.kernel import prepare_server_socket
from udpupper.server.protections.destination import is_wildcard

SO_ATTACH_REUSEPORT_CBPF = 51  # asm-generic/socket.h
SKF_NET_OFF = -0x100000  # offsets from the network header; the program sees the UDP payload

# Classic BPF opcodes (linux/filter.h).
LD_W_ABS, LD_B_ABS = 0x20, 0x30
RSH_K, MOD_K, XOR_X = 0x74, 0x94, 0xAC
JEQ_K, JA = 0x15, 0x05
TAX, RET_A = 0x07, 0x16


class SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def net(offset: int) -> int:
    """``k`` for a load at ``offset`` bytes into the IP header."""
    return (SKF_NET_OFF + offset) & 0xFFFFFFFF


def prefix_program(count: int) -> list[tuple[int, int, int, int]]:
    """The program: which of ``count`` sockets a datagram's prefix goes to."""
    return [
        (LD_B_ABS, 0, 0, net(0)),  # A = the IP header's first byte
        (RSH_K, 0, 0, 4),  # A = the IP version
        (JEQ_K, 0, 3, 4),  # IPv4: on; else to IPv6
        (LD_W_ABS, 0, 0, net(12)),  # A = the IPv4 source
        (RSH_K, 0, 0, 8),  # A = its /24
        (JA, 0, 0, 5),  # to the choice
        (LD_W_ABS, 0, 0, net(12)),  # IPv6: A = source bytes 4-7
        (RSH_K, 0, 0, 8),  # A = source bytes 4-6 (the /56's last three)
        (TAX, 0, 0, 0),  # X = A
        (LD_W_ABS, 0, 0, net(8)),  # A = source bytes 0-3
        (XOR_X, 0, 0, 0),  # A = the /56, folded to 32 bits
        (MOD_K, 0, 0, count),  # A = the socket's place in the group
        (RET_A, 0, 0, 0),
    ]


def attach(sock: socket.socket, count: int) -> str | None:
    """Steer ``sock``'s group by prefix; None, or why the kernel would not."""
    program = prefix_program(count)
    filters = (SockFilter * len(program))(*(SockFilter(*op) for op in program))
    fprog = SockFprog(len(program), filters)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, bytes(fprog))
    except OSError as error:
        return error.strerror or str(error)
    return None


def bind_group(interface: str, port: int, count: int, rcvbuf: int = 0) -> list[socket.socket]:
    """``count`` sockets on ``interface``:``port``, in one reuseport group,
    in the order the kernel numbers them (the order of binding).

    Every option a worker's port relies on is set before the socket is
    bound, so no datagram can arrive without it: on a wildcard address the
    destination of each datagram (IP_PKTINFO, IPV6_RECVPKTINFO), without
    which the worker would refuse it as ``not_unicast_destination``; and
    ``rcvbuf`` bytes of receive buffer (0: the kernel's default).
    """
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    group: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            group.append(sock)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            # As a worker's port would (it sets them again, unchanged).
            prepare_server_socket(sock, is_wildcard(interface), rcvbuf, reuse_port=True)
            sock.bind((interface, port))
            port = sock.getsockname()[1]  # 0 picked one: the others join it
    except OSError:
        for sock in group:
            sock.close()
        raise
    return group
