"""What the Linux kernel can tell and grant about a UDP socket."""

from __future__ import annotations

import os
import socket
import struct
import sys

# Linux values that Python's socket module does not name on every version.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IPV6_MTU_DISCOVER = getattr(socket, "IPV6_MTU_DISCOVER", 23)
IP_PMTUDISC_OMIT = 5  # and IPV6_PMTUDISC_OMIT: <linux/in.h>, <linux/in6.h>


def prepare_server_socket(
    sock: socket.socket, destinations: bool, rcvbuf: int = 0, reuse_port: bool = False
) -> int | None:
    """Set what a server socket needs before it is bound; the buffer granted.

    ``destinations``: have the kernel say where each datagram was sent
    (IP_PKTINFO, and IPV6_RECVPKTINFO on an IPv6 socket), which a socket on
    a wildcard address needs to answer from the right address; ``rcvbuf``
    bytes of receive buffer (0: the kernel's default, and None is returned);
    ``reuse_port``: other sockets may bind the same address (SO_REUSEPORT).
    The daemon's port and ``--workers``' group both prepare theirs here.

    Replies leave at the interface's MTU whatever path MTU the kernel has
    learnt for their destination (IP_PMTUDISC_OMIT, as Unbound and Knot
    set): a spoofed ICMP "fragmentation needed" or "packet too big" toward
    a client would otherwise have each large reply leave in many more
    fragments than its request came in.
    """
    omit_path_mtu(sock)
    if destinations:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    granted = set_receive_buffer(sock, rcvbuf) if rcvbuf else None
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return granted


def omit_path_mtu(sock: socket.socket) -> None:
    """Send at the interface's MTU, deaf to ICMP about the path's (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_OMIT)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IP_PMTUDISC_OMIT)


def set_receive_buffer(sock: socket.socket, size: int) -> int:
    """Ask for a ``size``-byte receive buffer; return the size granted.

    As root (CAP_NET_ADMIN) SO_RCVBUFFORCE goes past net.core.rmem_max, as
    Unbound does; otherwise the kernel caps SO_RCVBUF at rmem_max.  Linux
    reports twice the size it was asked for (the double is its bookkeeping).
    A buffer already larger (a socket unit's ReceiveBuffer=) is never made
    smaller.
    """
    linux = sys.platform.startswith("linux")

    def current() -> int:
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        return granted // 2 if linux else granted

    granted = current()
    if granted >= size:
        return granted
    try:
        if not linux:
            raise PermissionError
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return current()


# getsockopt(SO_MEMINFO) gives the socket's memory counters, the drops among
# them (Linux 4.12, SK_MEMINFO_DROPS since 4.15): one call, no file to open,
# so it works after twistd has dropped privileges too.
SO_MEMINFO = 55
SK_MEMINFO_RMEM_ALLOC, SK_MEMINFO_DROPS = 0, 8
_MEMINFO = struct.Struct("=9I")


def socket_memory(sock: socket.socket) -> tuple[int, int]:
    """What ``sock`` holds unread (bytes, as the kernel accounts them) and
    how many datagrams the kernel has dropped there; zeros where unknown."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO.size)
        fields = _MEMINFO.unpack_from(raw)
    except (OSError, struct.error):
        return 0, proc_socket_drops(sock) or 0
    return fields[SK_MEMINFO_RMEM_ALLOC], fields[SK_MEMINFO_DROPS]


def socket_drops(sock: socket.socket) -> int | None:
    """Datagrams the kernel dropped on ``sock`` (its receive buffer was full).

    From SO_MEMINFO where the kernel has it, else from the ``drops`` column
    of /proc/net/udp or /proc/net/udp6, found by the socket's inode; None
    where there is neither.
    """
    if sys.platform.startswith("linux"):
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO.size)
        except OSError:
            pass
        else:
            if len(raw) >= _MEMINFO.size:
                return _MEMINFO.unpack_from(raw)[SK_MEMINFO_DROPS]
    return proc_socket_drops(sock)


def proc_socket_drops(sock: socket.socket) -> int | None:
    """The ``drops`` column of /proc/net/udp{,6} for ``sock``, or None."""
    inode = str(os.fstat(sock.fileno()).st_ino)
    name = "udp6" if sock.family == socket.AF_INET6 else "udp"
    try:
        with open(f"/proc/net/{name}", encoding="ascii") as table:
            next(table)  # the header
            for line in table:
                fields = line.split()
                if fields[9] == inode:
                    return int(fields[-1])
    except (OSError, StopIteration, IndexError, ValueError, LookupError):
        return None
    return None
