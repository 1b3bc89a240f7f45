"""What the kernel says of a client socket's datagrams: when each left and
arrived, and what the network said of them.

- **Timestamps.**  With ``SO_TIMESTAMPING`` (software stamps, Linux), the
  kernel stamps each datagram as it leaves (read back from the socket's
  error queue, numbered in sending order: ``SOF_TIMESTAMPING_OPT_ID``) and
  as it arrives (a control message with the datagram): a round trip from
  the two owes nothing to the client's own scheduling, as irtt's and ping's
  do.  The stamps are the kernel's real-time clock, so a round trip is one
  stamp less the other, and only a clock step between the two can bend it
  (:func:`round_trip` then keeps the monotonic one).  Where the kernel
  gives none, the client's own clocks, and it says so.
- **What the network says.**  With ``IP_RECVERR`` and ``IPV6_RECVERR``, an
  ICMP message about a datagram the socket sent (port unreachable, too big
  for a link, time exceeded) is queued on the socket with who sent it and,
  for "too big", the MTU it named: :class:`NetworkError`.

Both come back through the error queue (``recvmsg(MSG_ERRQUEUE)``), which
:func:`read_error_queue` empties.
"""

from __future__ import annotations

import socket
import struct
import sys
from dataclasses import dataclass

SO_TIMESTAMPNS = 35
SO_TIMESTAMPING = 37
SCM_TIMESTAMPING = SO_TIMESTAMPING
SOF_TIMESTAMPING_TX_SOFTWARE = 1 << 1
SOF_TIMESTAMPING_RX_SOFTWARE = 1 << 3
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
SOF_TIMESTAMPING_OPT_ID = 1 << 7
SOF_TIMESTAMPING_OPT_TSONLY = 1 << 11
STAMPING = (
    SOF_TIMESTAMPING_TX_SOFTWARE
    | SOF_TIMESTAMPING_RX_SOFTWARE
    | SOF_TIMESTAMPING_SOFTWARE
    | SOF_TIMESTAMPING_OPT_ID
    | SOF_TIMESTAMPING_OPT_TSONLY
)
IP_RECVERR = 11
IPV6_RECVERR = 25
MSG_ERRQUEUE = getattr(socket, "MSG_ERRQUEUE", 0x2000)
SO_EE_ORIGIN_LOCAL, SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6, SO_EE_ORIGIN_TIMESTAMPING = 1, 2, 3, 4
# struct sock_extended_err: errno, origin, type, code, pad, info, data.
EXTENDED_ERR = struct.Struct("=IBBBBII")
TIMESPEC = struct.Struct("=qq")
# Room for a datagram's control messages: the stamps (three timespecs); and
# for an error, with them, the extended error and the address of whoever
# sent it, after whatever else the socket asked for (the marking, the hop
# limit: the kernel puts them first, and cuts what does not fit).
STAMP_SPACE = socket.CMSG_SPACE(3 * TIMESPEC.size)
ERROR_SPACE = 512

# What ICMP said, by (origin, type, code): a short name, and whether it
# ends a probe (nothing will answer from there).
ICMP = {
    (SO_EE_ORIGIN_ICMP, 3, 0): ("network unreachable", True),
    (SO_EE_ORIGIN_ICMP, 3, 1): ("host unreachable", True),
    (SO_EE_ORIGIN_ICMP, 3, 3): ("port unreachable", True),
    (SO_EE_ORIGIN_ICMP, 3, 4): ("too big: fragmentation needed", False),
    (SO_EE_ORIGIN_ICMP, 3, 13): ("administratively prohibited", True),
    (SO_EE_ORIGIN_ICMP, 11, 0): ("time to live exceeded", False),
    (SO_EE_ORIGIN_ICMP6, 1, 0): ("no route to destination", True),
    (SO_EE_ORIGIN_ICMP6, 1, 1): ("administratively prohibited", True),
    (SO_EE_ORIGIN_ICMP6, 1, 3): ("address unreachable", True),
    (SO_EE_ORIGIN_ICMP6, 1, 4): ("port unreachable", True),
    (SO_EE_ORIGIN_ICMP6, 2, 0): ("too big: packet too big", False),
    (SO_EE_ORIGIN_ICMP6, 3, 0): ("hop limit exceeded", False),
}


@dataclass(frozen=True)
class Departure:
    """The kernel's stamp of the ``index``-th datagram the socket sent."""

    index: int
    at: float  # seconds, the kernel's real-time clock


@dataclass(frozen=True)
class NetworkError:
    """An ICMP message (or the local stack's error) about a datagram sent."""

    errno: int
    origin: int
    type: int
    code: int
    info: int  # for "too big": the MTU named
    offender: str | None  # who said it
    to: tuple[str, int] | None = None  # where the datagram it speaks of was going

    @property
    def what(self) -> str:
        known = ICMP.get((self.origin, self.type, self.code))
        if known is not None:
            return known[0]
        if self.origin == SO_EE_ORIGIN_LOCAL:
            return f"refused here: {_strerror(self.errno)}"
        return f"ICMP type {self.type} code {self.code}"

    @property
    def final(self) -> bool:
        """Whether nothing will answer: the probe, or the lines, can end."""
        known = ICMP.get((self.origin, self.type, self.code))
        return known[1] if known is not None else self.origin == SO_EE_ORIGIN_LOCAL

    @property
    def too_big(self) -> bool:
        return self.what.startswith("too big") or (
            self.origin == SO_EE_ORIGIN_LOCAL and self.errno == 90
        )  # EMSGSIZE

    def describe(self) -> str:
        """``From 192.0.2.1: port unreachable``, as ping says it."""
        said = self.what + (f" (MTU {self.info})" if self.too_big and self.info else "")
        return f"From {self.offender}: {said}" if self.offender else said


def _strerror(number: int) -> str:
    import os

    return os.strerror(number)


def report_errors(sock: socket.socket) -> None:
    """Have ICMP messages about what ``sock`` sends queued on it (both
    families on an IPv6 socket)."""
    for level, option in ((socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)):
        if level == socket.IPPROTO_IPV6 and sock.family != socket.AF_INET6:
            continue
        try:
            sock.setsockopt(level, option, 1)
        except OSError:
            pass


def stamp(sock: socket.socket) -> bool:
    """Ask for software stamps both ways; whether the kernel gives them
    (else the client's own clocks)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, STAMPING)
    except OSError:
        return False
    return True


def stamp_of(ancdata) -> float | None:
    """The kernel's arrival (or departure) stamp among control messages."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPING and len(data) >= 16:
            seconds, nanoseconds = TIMESPEC.unpack_from(data)
            if seconds or nanoseconds:
                return seconds + nanoseconds / 1e9
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanoseconds = TIMESPEC.unpack_from(data)
            return seconds + nanoseconds / 1e9
    return None


def _offender(data: bytes) -> str | None:
    """The address after a sock_extended_err: who sent the ICMP message."""
    tail = data[EXTENDED_ERR.size :]
    if len(tail) < 2:
        return None
    family = int.from_bytes(tail[:2], sys.byteorder)
    try:
        if family == socket.AF_INET and len(tail) >= 8:
            return socket.inet_ntop(socket.AF_INET, tail[4:8])
        if family == socket.AF_INET6 and len(tail) >= 24:
            return socket.inet_ntop(socket.AF_INET6, tail[8:24])
    except (OSError, ValueError):
        return None
    return None


def parse_error(ancdata, to=None) -> Departure | NetworkError | None:
    """One message of the error queue: a departure stamp, or what the
    network said (of a datagram sent ``to``)."""
    stamp = stamp_of(ancdata)
    for level, kind, data in ancdata:
        if (level, kind) in (
            (socket.IPPROTO_IP, IP_RECVERR),
            (socket.IPPROTO_IPV6, IPV6_RECVERR),
        ) and len(data) >= EXTENDED_ERR.size:
            errno, origin, kind_, code, _, info, index = EXTENDED_ERR.unpack_from(data)
            if origin == SO_EE_ORIGIN_TIMESTAMPING:
                return None if stamp is None else Departure(index, stamp)
            address = None
            if to:
                host = to[0].removeprefix("::ffff:") if "." in to[0] else to[0]
                address = (host, to[1])
            return NetworkError(errno, origin, kind_, code, info, _offender(data), address)
    return None


def read_error_queue(sock: socket.socket, budget: int = 256) -> list[Departure | NetworkError]:
    """Everything queued there now (``budget`` messages at most)."""
    found: list[Departure | NetworkError] = []
    for _ in range(budget):
        try:
            _, ancdata, _, to = sock.recvmsg(1, ERROR_SPACE, MSG_ERRQUEUE)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break
        message = parse_error(ancdata, to)
        if message is not None:
            found.append(message)
    return found


def round_trip(
    arrived: float | None, left: float | None, left_wall: float, monotonic: float
) -> tuple[float, str]:
    """A round trip and how it was timed: ``kernel`` (stamped both ways),
    ``kernel arrival`` (the departure from the client's real-time clock), or
    ``client`` (its monotonic clock, where the kernel stamped nothing or a
    clock step bent the stamps by more than a millisecond and a tenth)."""
    for measured, how in (
        (None if arrived is None or left is None else arrived - left, "kernel"),
        (None if arrived is None else arrived - left_wall, "kernel arrival"),
    ):
        if measured is not None and 0 <= measured <= monotonic + 0.001 + 0.1 * monotonic:
            return measured, how
    return monotonic, "client"
