"""``recv_batch`` without a compiler: recvmmsg(2) through ctypes.

Where ``udpupper._batch`` could not be built, the daemon used to read one
datagram a ``recvmsg`` call.  Each call is a system call, a 64 KiB bytes
object made and shrunk, a list of ancillary data and an address formatted
by ``inet_ntop``: about as much as the rest of the datagram's way.  ctypes
and the C library ship with Python, so this module reads up to ``BATCH``
datagrams a call with libc's ``recvmmsg``, as ``_batch.recv_batch`` does,
and turns each sender's address and each kind of ancillary data into Python
objects once, not once a datagram.  Replies go out as the pure path sends
them (:mod:`udpupper.server.segments`).

``recv_batch`` takes and gives what the C helper's does, except that a
route is ``(ancillary, address)`` for ``Segmenter``, not bytes.  ``load()``
is None where ctypes or ``recvmmsg`` is missing (not Linux, say); then the
port reads a datagram a call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import struct
import sys
import time
from typing import Any

from udpupper.abi import (
    BATCH,
    BUFFER_SIZE,
    BYTES_IN,
    NO_DESTINATION,
    NOT_IP,
    NOT_UNICAST,
    RECEIVE_BUFFERS,
    RECEIVED,
)
from udpupper.server.protections.destination import (
    CONTROL_SPACE,
    Destination,
    reply_route,
)
from udpupper.server.stats import Reason

# Why a datagram gets no route: the C helper's values, defined once.
_REFUSAL = {Reason.NOT_UNICAST_DESTINATION: NOT_UNICAST, Reason.NO_DESTINATION: NO_DESTINATION}

NAME_SIZE = 28  # sizeof(struct sockaddr_in6)
NAME_ROOM = 32  # the name's room, before the ancillary data (aligned for it)
META_SIZE = NAME_ROOM + CONTROL_SPACE
# At most this many senders (with their kind of ancillary data) are
# remembered; then the memory starts over (a spoofed flood brings a new
# sender a datagram).
MEMORY = 4_096

_MSG_CTRUNC = int(getattr(socket, "MSG_CTRUNC", 8))
_MSG_DONTWAIT = int(getattr(socket, "MSG_DONTWAIT", 0x40))
_CMSG_HEADER = socket.CMSG_LEN(0)
_CMSG_ALIGN = socket.CMSG_SPACE(1) - socket.CMSG_SPACE(0)
_CMSG_FORMAT = "@Nii"  # struct cmsghdr: size_t cmsg_len, int cmsg_level, int cmsg_type
_NATIVE_U16 = struct.Struct("=H")
_NATIVE_U32 = struct.Struct("=I")
_BIG_U16 = struct.Struct("!H")
_BIG_U32 = struct.Struct("!I")


class _IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


def _native_offset(field: str, size: int) -> int:
    """A header field's offset, in units of its own size (a memoryview cast)."""
    if field == "msg_len":
        offset = _MMsgHdr.msg_len.offset
    else:
        offset = _MMsgHdr.msg_hdr.offset + getattr(_MsgHdr, field).offset
    assert offset % size == 0
    return offset // size


def parse_control(control: bytes) -> list[tuple[int, int, bytes]]:
    """Raw ancillary data as ``socket.recvmsg`` gives it: (level, type, data)s."""
    found = []
    offset = 0
    while offset + _CMSG_HEADER <= len(control):
        length, level, kind = struct.unpack_from(_CMSG_FORMAT, control, offset)
        if length < _CMSG_HEADER or offset + length > len(control):
            break
        found.append((level, kind, control[offset + _CMSG_HEADER : offset + length]))
        offset += (length + _CMSG_ALIGN - 1) & -_CMSG_ALIGN
    return found


def format_name(name: bytes) -> tuple[str, tuple] | None:
    """A raw sockaddr: (host, the address ``sendmsg`` takes), or None if not IP."""
    if len(name) < 2:
        return None
    family = _NATIVE_U16.unpack_from(name)[0]
    if family == socket.AF_INET and len(name) >= 8:
        host = socket.inet_ntop(socket.AF_INET, name[4:8])
        return host, (host, _BIG_U16.unpack_from(name, 2)[0])
    if family == socket.AF_INET6 and len(name) >= 28:
        host = socket.inet_ntop(socket.AF_INET6, name[8:24])
        return host, (
            host,
            _BIG_U16.unpack_from(name, 2)[0],
            _BIG_U32.unpack_from(name, 4)[0],
            _NATIVE_U32.unpack_from(name, 24)[0],
        )
    return None


def reply_control(control: bytes, pktinfo: bool, dscp: bool) -> Destination | int:
    """:func:`reply_route` for raw ancillary data, a refusal as its int."""
    destination = reply_route(parse_control(control), 0, pktinfo, dscp)
    if destination.__class__ is not Destination:
        return _REFUSAL[destination]  # type: ignore[index]
    return destination


class Receiver:
    """recvmmsg's buffers and headers, made once, and what it has learnt.

    Each message's sender address and ancillary data lie side by side, so
    that one slice of bytes is the key to both: a sender already seen, with
    ancillary data already seen, costs one dictionary look-up.
    """

    def __init__(self, recvmmsg) -> None:
        self.recvmmsg = recvmmsg
        # Any: a slice of a char array is bytes, where typeshed says a list.
        self.buffers: Any = ctypes.create_string_buffer(BATCH * BUFFER_SIZE)
        self.meta: Any = ctypes.create_string_buffer(BATCH * META_SIZE)  # names, then controls
        self.vectors = (_IOVec * BATCH)()
        self.headers = (_MMsgHdr * BATCH)()
        self.counts: memoryview | None = None
        base, meta = ctypes.addressof(self.buffers), ctypes.addressof(self.meta)
        for i in range(BATCH):
            self.vectors[i].iov_base, self.vectors[i].iov_len = base + i * BUFFER_SIZE, BUFFER_SIZE
            header = self.headers[i].msg_hdr
            header.msg_name = meta + i * META_SIZE
            header.msg_iov, header.msg_iovlen = ctypes.addressof(self.vectors[i]), 1
            header.msg_control = meta + i * META_SIZE + NAME_ROOM
        self.address = ctypes.addressof(self.headers)
        # The headers as made, with and without room for ancillary data: the
        # kernel writes the lengths back, and one memmove sets them again.
        self.made = {}
        for control in (False, True):
            for i in range(BATCH):
                self.headers[i].msg_hdr.msg_namelen = NAME_SIZE
                self.headers[i].msg_hdr.msg_controllen = CONTROL_SPACE if control else 0
            self.made[control] = bytes(self.headers)
        self.words = memoryview(self.headers).cast("B").cast("I")
        self.sizes = memoryview(self.headers).cast("B").cast("N")  # type: ignore[call-overload]
        self.stride = ctypes.sizeof(_MMsgHdr) // 4
        self.size_stride = ctypes.sizeof(_MMsgHdr) // ctypes.sizeof(ctypes.c_size_t)
        # By (pktinfo, dscp): raw sender address and ancillary data ->
        # (the sender as the protocol is given it, the route or an int refusal).
        self.known: dict[tuple[bool, bool], dict[bytes, tuple[Any, Any]]] = {
            (pktinfo, dscp): {} for pktinfo in (False, True) for dscp in (False, True)
        }
        # And the ancillary data alone -> reply_control's answer: a new
        # sender (a spoofed flood's) costs its address, not its ancillary data.
        self.routes: dict[tuple[bool, bool], dict[bytes, Any]] = {
            (pktinfo, dscp): {} for pktinfo in (False, True) for dscp in (False, True)
        }

    def count_into(self, counts) -> None:
        self.counts = None if counts is None else memoryview(counts).cast("B").cast("Q")

    def recv_batch(
        self, fd: int, count: int, pktinfo: bool, spin_us: int = 0, dscp: bool = False
    ) -> list[tuple[bytes, tuple | None, Any]]:
        """As ``_batch.recv_batch``: up to ``count`` datagrams, without blocking."""
        control = bool(pktinfo or dscp)
        count = count if 0 < count <= BATCH else BATCH
        made = self.made[control]
        ctypes.memmove(self.address, made, len(made))
        received = self.recvmmsg(fd, self.address, count, _MSG_DONTWAIT, None)
        if received < 0 and spin_us > 0:
            deadline = time.monotonic_ns() + spin_us * 1000
            while received < 0 and ctypes.get_errno() in _AGAIN and time.monotonic_ns() < deadline:
                received = self.recvmmsg(fd, self.address, count, _MSG_DONTWAIT, None)
        if received < 0:
            error = ctypes.get_errno()
            if error in _AGAIN:
                return []
            raise OSError(error, os.strerror(error))
        return self._unpack(received, pktinfo, dscp, control)

    def _unpack(self, received: int, pktinfo: bool, dscp: bool, control: bool) -> list:
        stride, size_stride = self.stride, self.size_stride
        lengths = self.words[_LEN : _LEN + received * stride : stride].tolist()
        if control:
            # Where the key ends: the whole sockaddr_in6 room (past a shorter
            # name lies only a stale one), then the ancillary data.
            ends = [
                NAME_ROOM + size
                for size in self.sizes[
                    _CONTROLLEN : _CONTROLLEN + received * size_stride : size_stride
                ].tolist()
            ]
        else:
            ends = [NAME_SIZE] * received
        flags = self.words[_FLAGS : _FLAGS + received * stride : stride].tolist()
        truncated = control and any(flag & _MSG_CTRUNC for flag in flags)
        buffers, meta = self.buffers, self.meta
        known = self.known[pktinfo, dscp]
        batch: list[tuple[bytes, Any, Any]] = []
        append = batch.append
        for i, length in enumerate(lengths):
            start = i * META_SIZE
            found = known.get(meta[start : start + ends[i]])
            if found is None or truncated:
                found = self._learn(i, ends[i], pktinfo, dscp, truncated and flags[i] & _MSG_CTRUNC)
            start = i * BUFFER_SIZE
            append((buffers[start : start + length], found[0], found[1]))
        counts = self.counts
        if counts is not None:
            counts[RECEIVED] += received
            counts[BYTES_IN] += sum(lengths)
        return batch

    def _learn(
        self, index: int, end: int, pktinfo: bool, dscp: bool, truncated: int
    ) -> tuple[Any, Any]:
        """(sender, route or int refusal) of message ``index``, remembered
        unless its ancillary data was truncated or its address is not IP."""
        start = index * META_SIZE
        name_length = self.words[index * self.stride + _NAMELEN]
        formatted = format_name(self.meta[start : start + min(name_length, NAME_SIZE)])
        if formatted is None:
            return None, NOT_IP
        host, address = formatted
        if truncated:
            return (host, address[1]), NO_DESTINATION  # fails closed
        control = self.meta[start + NAME_ROOM : start + end]
        routes = self.routes[pktinfo, dscp]
        reply = routes.get(control)
        if reply is None:
            reply = reply_control(control, pktinfo, dscp)
            if len(routes) >= MEMORY:
                routes.clear()
            routes[control] = reply
        route: Any = reply
        if reply.__class__ is not int:
            ancillary, ipv4 = reply  # type: ignore[misc]
            if ipv4 and host.startswith("::ffff:"):
                host = host[7:]
            route = (ancillary, address)
        found = (host, address[1]), route
        known = self.known[pktinfo, dscp]
        if len(known) >= MEMORY:
            known.clear()
        known[self.meta[start : start + end]] = found
        return found


_AGAIN = frozenset({errno.EAGAIN, errno.EWOULDBLOCK})
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_LEN = _native_offset("msg_len", 4)
_NAMELEN = _native_offset("msg_namelen", 4)
_FLAGS = _native_offset("msg_flags", 4)
_CONTROLLEN = _native_offset("msg_controllen", ctypes.sizeof(ctypes.c_size_t))


class CtypesBatch:
    """What the port takes from ``_batch`` to receive, with libc's recvmmsg."""

    BATCH = BATCH
    NOT_UNICAST, NO_DESTINATION, NOT_IP = NOT_UNICAST, NO_DESTINATION, NOT_IP

    def __init__(self, recvmmsg, mallopt=None) -> None:
        self._recvmmsg = recvmmsg
        self._mallopt = mallopt
        self._receiver: Receiver | None = None
        self._counts = None

    def reserve(self) -> None:
        """Make the buffers (4 MiB) now: too little memory fails the start.

        With glibc, also keep freed memory for reuse, as ``_batch.reserve``
        does: a batch of 64 KiB datagrams makes and frees 8 MiB of bytes
        objects, and glibc would give them back and fault them in again
        every batch.
        """
        if self._receiver is None:
            self._receiver = Receiver(self._recvmmsg)
            self._receiver.count_into(self._counts)
        if self._mallopt is not None:
            self._mallopt(_M_TRIM_THRESHOLD, 4 * RECEIVE_BUFFERS)
            self._mallopt(_M_MMAP_THRESHOLD, 256 * 1024)

    def count_into(self, counts) -> None:
        """Count what is read in ``counts`` (see ``_batch.count_into``)."""
        self._counts = counts
        if self._receiver is not None:
            self._receiver.count_into(counts)

    def recv_batch(
        self, fd: int, count: int, pktinfo: bool, spin_us: int = 0, dscp: bool = False
    ) -> list:
        if self._receiver is None:
            self.reserve()
        return self._receiver.recv_batch(fd, count, pktinfo, spin_us, dscp)  # type: ignore[union-attr]


def load() -> CtypesBatch | None:
    """A CtypesBatch, or None where there is no ctypes recvmmsg to call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        recvmmsg = libc.recvmmsg
    except (OSError, AttributeError):
        return None
    recvmmsg.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_void_p,
    ]
    recvmmsg.restype = ctypes.c_int
    mallopt = getattr(libc, "gnu_get_libc_version", None) and getattr(libc, "mallopt", None)
    if mallopt:
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return CtypesBatch(recvmmsg, mallopt or None)
