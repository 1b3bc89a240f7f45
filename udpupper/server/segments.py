"""Send a batch's replies without the C helper: one ``sendmsg`` per run.

Where ``_batch`` could not be built, the daemon reads one datagram a system
call, and used to answer one a call too.  Replies to one sender of one size
go out instead as one UDP GSO message (``UDP_SEGMENT``, Linux 4.18) that the
kernel cuts into datagrams, as ``_batch.send_batch`` sends them: the peer
still gets one datagram per reply, in order.  Where the kernel or the route
refuses a segmented send, that run goes out one datagram at a time, and
where the kernel cannot segment at all, every run after it too.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

from udpupper.abi import BYTES_OUT, REPLIED

SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)

# As _batch.c: at most this many datagrams a segmented send (the kernel's
# limit), below 64 KiB in all, each at most what fits an Ethernet frame.
MAX_SEGMENTS = 64
MAX_GSO_BYTES = 65_000
MAX_SEGMENT = 1_472

# Errors that may be the segmenting's, not the replies': a segment larger
# than the route's MTU (EMSGSIZE, EINVAL), or no segmenting at all (the rest).
SEGMENTING_REFUSED = frozenset(
    {errno.EMSGSIZE, errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP}
)
_SEGMENT_SIZES = [struct.pack("=H", size) for size in range(MAX_SEGMENT + 1)]

Route = tuple[list[tuple[int, int, bytes]], Any]  # (ancillary data, the sender's address)


class Segmenter:
    """Sends ``[(reply, route), ...]`` on ``sock``, a run of replies a call."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.segmenting = hasattr(sock, "sendmsg")

    def send(self, queue: list[tuple[bytes, Route]], counts=None) -> list[tuple[int, int | None]]:
        """Send every reply; return those the kernel refused, as ``(index, errno)``.

        With ``counts`` (see ``ServerPort.count_into``), add the replies and
        their bytes before each call and take off those that failed after.
        """
        failed: list[tuple[int, int | None]] = []
        total = len(queue)
        start = 0
        while start < total:
            reply, route = queue[start]
            size = len(reply)
            end = start + 1
            if self.segmenting and 0 < size <= MAX_SEGMENT:
                limit = min(total, start + MAX_SEGMENTS, start + MAX_GSO_BYTES // size)
                while end < limit:
                    other, other_route = queue[end]
                    length = len(other)
                    if (
                        not length
                        or length > size
                        or (other_route is not route and other_route != route)
                    ):
                        break
                    end += 1
                    if length < size:
                        break  # a shorter one ends the run
            self._send_run(queue, start, end, failed, counts)
            start = end
        return failed

    def _send_run(self, queue, start: int, end: int, failed: list, counts) -> None:
        ancillary, address = queue[start][1]
        replies = [reply for reply, _ in queue[start:end]]
        sent_bytes = sum(map(len, replies))
        if counts is not None:  # before the call: a worker killed in it never returns
            counts[REPLIED] += end - start
            counts[BYTES_OUT] += sent_bytes
        if end - start == 1:
            try:
                self.sock.sendmsg(replies, ancillary, 0, address)
            except OSError as error:
                self._uncount(counts, 1, sent_bytes)
                failed.append((start, error.errno))
            return
        segment = [(SOL_UDP, UDP_SEGMENT, _SEGMENT_SIZES[len(replies[0])])]
        try:
            self.sock.sendmsg(replies, ancillary + segment, 0, address)
            return
        except OSError as error:
            if error.errno not in SEGMENTING_REFUSED:
                self._uncount(counts, end - start, sent_bytes)
                failed.extend((index, error.errno) for index in range(start, end))
                return
            if error.errno not in (errno.EMSGSIZE, errno.EINVAL):
                self.segmenting = False  # the kernel or the device cannot
        for index in range(start, end):  # this run one by one
            reply = replies[index - start]
            try:
                self.sock.sendmsg((reply,), ancillary, 0, address)
            except OSError as error:
                self._uncount(counts, 1, len(reply))
                failed.append((index, error.errno))

    @staticmethod
    def _uncount(counts, replies: int, sent_bytes: int) -> None:
        if counts is not None:
            counts[REPLIED] -= replies
            counts[BYTES_OUT] -= sent_bytes
