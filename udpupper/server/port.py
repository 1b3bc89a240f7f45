"""The daemon's listening port: the transport :class:`UpperProtocol` writes to.

:class:`ServerPort` delivers every datagram to ``protocol.datagramReceived``
and sends what the protocol writes, a batch at a time where the C helper is
built, after the destination check
(:mod:`udpupper.server.protections.destination`).
"""

from __future__ import annotations

import socket
import time
from typing import Any, cast

from twisted.internet.interfaces import IReactorTime

from udpupper import abi, helpers
from udpupper.abi import BYTES_IN, BYTES_OUT, RECEIVED, REPLIED
from udpupper.dscp import receive_marking
from udpupper.kernel import prepare_server_socket
from udpupper.server.interfaces import IServerProtocol
from udpupper.server.protections.destination import (
    CONTROL_SPACE,
    Destination,
    DestinationCache,
    is_wildcard,
)
from udpupper.server.segments import Segmenter
from udpupper.server.stats import Reason
from udpupper.twisted_privates import adopt_socket
from udpupper.udp import MAX_DATAGRAM, READ_BUDGET, UDPPort

_batch: Any = helpers.load("batch")  # recvmmsg/sendmmsg, where it could be built

ctypes_batch: Any
try:  # libc's recvmmsg through ctypes, where the C helper is missing
    from udpupper.server import ctypes_batch
except ImportError:  # pragma: no cover - a Python built without ctypes
    ctypes_batch = None

# What the port reads batches with: the C helper, else recvmmsg through
# ctypes where there is one, else None (a datagram a call).
BATCHES: Any = _batch if _batch is not None or ctypes_batch is None else ctypes_batch.load()

# The reasons of the int routes, by the values both batch readers give.
HELPER_REFUSALS: dict[int, Reason] = {
    abi.NOT_UNICAST: Reason.NOT_UNICAST_DESTINATION,
    abi.NO_DESTINATION: Reason.NO_DESTINATION,
    abi.NOT_IP: Reason.BAD_SOURCE,
}

# Read a datagram a call, replies are sent after at most this many datagrams.
BATCH = abi.BATCH

# After answering, wait this many microseconds for the next datagram before
# going back to the reactor: a request is often one round trip behind its
# reply, and the reactor's way round costs more than the wait.
DEFAULT_BUSY_POLL = 50

# After reading itself failed for a reason of ours (no memory for the
# datagram, say), stop reading for this many seconds: the datagram is still
# queued, and the reactor would call doRead again at once, for ever.
READ_PAUSE = 0.1


class ServerPort(UDPPort):
    """The daemon's port: a transport that batches, for :class:`UpperProtocol`.

    Each datagram read goes to ``protocol.datagramReceived``; what the
    protocol writes back to the datagram's sender is queued with the
    datagram's route (so the reply leaves from the address the request was
    sent to) and the queue goes out in one ``sendmmsg`` at the end of the
    batch.  Without the C helper, one datagram a call each way.  A datagram
    the destination check refuses goes to ``protocol.refuse`` instead, a
    queued reply the kernel refuses to ``protocol.send_failed``, and an
    exception to ``protocol.internal_error``: the port never closes for
    what a datagram did.  The protocol must provide
    :class:`~udpupper.server.interfaces.IServerProtocol`, which says so.

    Bound to a wildcard address, it learns each datagram's destination;
    bound to one address, it needs not (the kernel delivers only unicast
    datagrams sent to that address).  ``rcvbuf`` bytes of receive buffer
    are asked for (0 leaves the kernel's default); ``rcvbuf_granted`` says
    what the kernel gave.  With ``reuse_port``, other processes may bind the
    same address (SO_REUSEPORT).  With the C helper (``batch``) it moves up
    to 64 datagrams per system call, and after answering polls
    ``busy_poll`` microseconds for the next before going back to the
    reactor.  Without it, recvmmsg through ctypes reads the batches
    (:mod:`udpupper.server.ctypes_batch`) and :class:`Segmenter` sends the
    replies, a run to one sender a call.  An IPv4 sender is given to the
    protocol as IPv4, on an IPv6 socket too.  With ``reflect_dscp``, each
    reply leaves with the DSCP its request arrived with (:mod:`udpupper.dscp`).
    """

    batch: Any = BATCHES  # the C helper's module, ctypes_batch's, or None
    protocol: IServerProtocol

    def __init__(
        self,
        port: int,
        protocol,
        interface: str = "",
        reactor=None,
        rcvbuf: int = 0,
        reuse_port: bool = False,
        busy_poll: int = DEFAULT_BUSY_POLL,
        reflect_dscp: bool = False,
    ):
        super().__init__(port, protocol, interface, reactor)
        self.reuse_port = reuse_port
        self.reflect_dscp = reflect_dscp
        self.busy_poll = busy_poll
        self.rcvbuf = rcvbuf
        self.rcvbuf_granted: int | None = None
        self.pktinfo = is_wildcard(interface)
        # While a datagram is delivered: its sender, how to answer it, and
        # (in a batch) the replies waiting to go.
        self._sender: tuple | None = None
        self._route: Any = None  # bytes (the C helper's) or (ancillary, address)
        self._queue: list[tuple[bytes, Any]] | None = None
        self._counts: memoryview | None = None  # see count_into
        self._segmenter: Segmenter | None = None  # without the C helper's send
        self._destinations: DestinationCache | None = None  # a datagram a call

    def count_into(self, counts) -> None:
        """Count every datagram read and every reply sent, and their bytes,
        at once, in ``counts``: four native uint64s of shared memory where a
        ``--workers`` parent reads what a worker killed before it reported
        did."""
        self._counts = memoryview(counts).cast("B").cast("Q")
        if self.batch is not None:
            self.batch.count_into(counts)

    def startListening(self) -> None:
        """Bind (unless adopted) and listen, with the receive buffers allocated
        first: ``MemoryError`` here, at start, never at the first datagram."""
        if self.batch is not None:
            self.batch.reserve()
        super().startListening()

    def createInternetSocket(self) -> socket.socket:
        return self._configure(super().createInternetSocket())

    def adopt(self, skt: socket.socket) -> None:
        """Serve ``skt``, bound already (by systemd), instead of binding one."""
        adopt_socket(self, self._configure(skt))

    def _configure(self, skt: socket.socket) -> socket.socket:
        self._segmenter = Segmenter(skt)
        self._destinations = DestinationCache(pktinfo=self.pktinfo, reflect=self.reflect_dscp)
        granted = prepare_server_socket(skt, self.pktinfo, self.rcvbuf, self.reuse_port)
        if granted is not None:
            self.rcvbuf_granted = granted
        if self.reflect_dscp:
            receive_marking(skt)
        return skt

    # Twisted's udp.Port.write takes (datagram, addr) where FileDescriptor's
    # takes (data): the same override, on the same terms.
    def write(self, datagram: bytes, addr: tuple) -> None:  # type: ignore[override]
        """Send ``datagram`` to ``addr``; ``OSError`` is the caller's.

        To the sender of the datagram being delivered, from the address it
        was sent to: queued in a batch, else at once.  To anyone else, at
        once, as ``udp.Port`` would.
        """
        if addr is self._sender and self._queue is not None:
            self._queue.append((datagram, self._route))  # the hot path
        elif addr == self._sender:
            if self._queue is not None:
                self._queue.append((datagram, self._route))
            else:
                ancillary, raw_addr = self._route
                counts = self._counts
                if counts is None:
                    self.socket.sendmsg((datagram,), ancillary, 0, raw_addr)
                    return
                # Counted before the call (a worker killed in it never returns).
                counts[REPLIED] += 1
                counts[BYTES_OUT] += len(datagram)
                try:
                    self.socket.sendmsg((datagram,), ancillary, 0, raw_addr)
                except BaseException:
                    counts[REPLIED] -= 1
                    counts[BYTES_OUT] -= len(datagram)
                    raise
        else:
            host, port = addr[:2]
            if self.addressFamily == socket.AF_INET6 and ":" not in host:
                host = "::ffff:" + host
            self.socket.sendto(datagram, (host, port))

    def doRead(self) -> None:
        self._read()

    def drain(self, seconds: float) -> int:
        """Answer what waits in the socket, for at most ``seconds``: at a stop,
        so that what was sent before it is answered and counted.  How many
        datagrams were read."""
        deadline = time.monotonic() + seconds
        total = 0
        while self.connected and time.monotonic() < deadline:
            handled = self._read()
            if not handled:
                break
            total += handled
        return total

    def _read(self) -> int:
        """Read and answer up to READ_BUDGET datagrams: how many were read."""
        try:
            if self.batch is not None:
                return self._read_batches()
            return self._read_one_by_one()
        except Exception:
            # Reading itself failed (a datagram's own exceptions are caught
            # where it is delivered): ours, not a stranger's doing.  Log
            # it once in a while, keep the port, and pause, or the reactor
            # spins on the datagram still queued.  (No datagram was read: no
            # drop is counted.)
            self.protocol.log_error()
            self._pause_reading()
            return 0
        finally:
            self._sender = self._route = self._queue = None

    def _pause_reading(self) -> None:
        if self.connected:
            self.stopReading()
            cast(IReactorTime, self.reactor).callLater(READ_PAUSE, self._resume_reading)

    def _resume_reading(self) -> None:
        if self.connected:
            self.startReading()

    def _deliver(self, datagram: bytes, sender: tuple, route) -> None:
        self._sender, self._route = sender, route
        try:
            self.protocol.datagramReceived(datagram, sender)
        except Exception:
            self.protocol.internal_error()

    def _read_batches(self) -> int:
        """The hot loop: a batch in, each datagram delivered, the replies out."""
        fd = self.socket.fileno()
        recv_batch = self.batch.recv_batch
        size = self.batch.BATCH
        protocol = self.protocol
        received, refuse = protocol.datagramReceived, protocol.refuse
        pktinfo, dscp = self.pktinfo, self.reflect_dscp
        send_batch = getattr(self.batch, "send_batch", None)  # else Segmenter's runs
        spin = handled = 0
        while handled < READ_BUDGET:
            try:
                datagrams = recv_batch(fd, size, pktinfo, spin, dscp)
            except OSError as error:
                handled += 1  # a persistent error must not hold the reactor
                if self._receive_failed(error):
                    continue
                return handled
            if not datagrams:
                return handled
            handled += len(datagrams)
            queue: list[tuple[bytes, Any]] = []
            self._queue = queue
            try:
                for datagram, sender, route in datagrams:
                    if route.__class__ is int:
                        refuse(datagram, HELPER_REFUSALS[route])
                        continue
                    # _deliver, inlined: this loop is the daemon's hottest.
                    self._sender, self._route = sender, route
                    try:
                        received(datagram, sender)
                    except Exception:
                        protocol.internal_error()
            finally:
                self._queue = None
                if queue:
                    self._send(queue, fd, send_batch)
            spin = self.busy_poll
        return handled

    def _send(self, queue: list, fd: int = -1, send_batch=None) -> None:
        """Send the batch's replies, with the C helper's ``send_batch`` on
        ``fd`` where given, else a run a call; hand back those the kernel
        refused."""
        try:
            if send_batch is not None:
                _, _, errors = send_batch(fd, queue)
            else:
                errors = cast(Segmenter, self._segmenter).send(queue, self._counts)
        except Exception:
            # A bug of ours: none of them went.  Logged, and each counted.
            self.protocol.log_error()
            errors = [(index, None) for index in range(len(queue))]
        for index, errno in errors:
            self.protocol.send_failed(queue[index][0], errno)

    def _read_one_by_one(self) -> int:
        """Without the C helper: a datagram a system call in, and the replies
        out a run at a time (:class:`Segmenter`), every BATCH datagrams."""
        space = CONTROL_SPACE if self.pktinfo or self.reflect_dscp else 0
        queue: list[tuple[bytes, Any]] = []
        self._queue = queue
        try:
            return self._receive_one_by_one(space, queue)
        finally:
            self._queue = None
            if queue:
                self._send(queue)

    def _receive_one_by_one(self, space: int, queue: list) -> int:
        refuse = self.protocol.refuse
        counts = self._counts
        destinations = cast(DestinationCache, self._destinations)
        handled = 0
        for datagram, ancdata, flags, addr in self._received(
            self.socket.recvmsg, MAX_DATAGRAM, space
        ):
            if len(queue) >= BATCH:
                self._send(queue)
                queue.clear()
            handled += 1
            if counts is not None:
                counts[RECEIVED] += 1
                counts[BYTES_IN] += len(datagram)
            destination = destinations.check(ancdata, flags)
            if destination.__class__ is not Destination:
                refuse(datagram, destination)  # type: ignore[arg-type]  # a Reason
                continue
            ancillary, ipv4 = destination
            host = addr[0]
            if ipv4 and host.startswith("::ffff:"):
                host = host[7:]
            self._deliver(datagram, (host, addr[1]), (ancillary, addr))
        return handled
