"""What a ``--workers`` process does that a lone daemon does not.

It serves the socket its parent bound and passed it (the parent keeps it,
so the socket outlives the worker: see :mod:`udpupper.server.workers.steering`), it
reports its counters to the parent once a second over a pipe (one JSON line;
the counters are totals, so a report lost when the pipe is full costs
nothing), and it ends with its parent, however the parent ends.
"""

from __future__ import annotations

import json
import mmap
import os
import signal
import socket
import sys
from collections.abc import MutableMapping

from twisted.logger import FileLogObserver, ILogObserver, formatEventAsClassicLogText

from udpupper.abi import BYTES_IN, BYTES_OUT, COUNT_SLOTS, COUNTS_SIZE, RECEIVED, REPLIED
from udpupper.server.stats import Stats

# In a worker's environment: the parent it must not outlive, the descriptor
# of the socket it serves, and the descriptor it reports its counters on.
PARENT = "UDPUPPER_PARENT"
SOCKET = "UDPUPPER_SOCKET"
REPORT = "UDPUPPER_REPORT"
# And the shared memory where it counts what it reads and sends, as it does:
# four native uint64s, datagrams read, replies sent, bytes read, bytes sent.
COUNTS = "UDPUPPER_COUNTS"
SOCKET_FD, REPORT_FD, COUNTS_FD = 3, 4, 5  # where the parent puts them
PR_SET_PDEATHSIG = 1  # prctl(2), Linux


def die_with_parent(environ: MutableMapping[str, str] = os.environ) -> None:
    """In a worker: be sent SIGKILL when the parent dies (PR_SET_PDEATHSIG).

    A parent killed with SIGKILL cannot stop its workers itself; the kernel
    does it.  SIGKILL, not SIGTERM: a worker stopped with SIGSTOP would hold
    SIGTERM until it runs again, and keep the port meanwhile.  (A parent
    that stops normally sends SIGTERM itself and waits for each summary.)
    Should the parent have died already, before this call, exit.
    """
    parent = environ.get(PARENT)
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # nothing more to be done: the parent's SIGTERM still reaches us
    if os.getppid() != int(parent):
        raise SystemExit(0)  # orphaned between the fork and the prctl


def given_socket(environ: MutableMapping[str, str] = os.environ) -> socket.socket | None:
    """The socket the parent passed, if this is a worker (read once)."""
    fd = environ.pop(SOCKET, None)
    if fd is None:
        return None
    sock = socket.socket(fileno=int(fd))  # family and type are read from fd
    sock.setblocking(False)
    return sock


class SharedCounts:
    """In the parent: what worker ``name`` has read and sent, counted by the
    worker in shared memory as it does it (a memfd passed as COUNTS_FD)."""

    def __init__(self, name: str) -> None:
        self.fd = os.memfd_create(f"udpupper-{name}-counts", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, COUNTS_SIZE)
        self.memory = mmap.mmap(self.fd, COUNTS_SIZE)
        self.view = memoryview(self.memory).cast("Q")

    def reset(self) -> None:
        """Before a new worker starts: it counts from 0."""
        for slot in range(COUNT_SLOTS):
            self.view[slot] = 0

    def received(self) -> int:
        """What the worker has read so far."""
        return self.view[RECEIVED]

    def stats(self) -> Stats:
        """What the worker read and sent: received, replied, bytes_in, bytes_out."""
        counted = Stats()
        counts = self.view.tolist()
        counted.received, counted.replied = counts[RECEIVED], counts[REPLIED]
        counted.bytes_in, counted.bytes_out = counts[BYTES_IN], counts[BYTES_OUT]
        return counted

    def close(self) -> None:
        self.view.release()
        self.memory.close()
        os.close(self.fd)

    @classmethod
    def for_worker(cls, name: str) -> SharedCounts | None:
        """None where there is no memfd_create (not Linux)."""
        return cls(name) if hasattr(os, "memfd_create") else None


def given_counts(environ: MutableMapping[str, str] = os.environ) -> mmap.mmap | None:
    """In a worker: the memory where it counts what it reads and sends (read once)."""
    fd = environ.pop(COUNTS, None)
    if fd is None:
        return None
    counts = mmap.mmap(int(fd), COUNTS_SIZE)
    os.close(int(fd))  # the mapping stays
    return counts


class Reporter:
    """Writes the counters to the parent: one JSON line, never blocking."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    def report(self, stats: Stats, prefixes: int = 0, hangup: bool = False) -> None:
        """``hangup``: this report answers a SIGHUP, which the parent waits
        for before it says the totals."""
        report = {**stats.as_dict(), "prefixes": prefixes}
        if hangup:
            report["hangup"] = True
        line = json.dumps(report) + "\n"
        try:
            os.write(self.fd, line.encode())
        except (BlockingIOError, BrokenPipeError, OSError):
            pass  # the next report carries the same totals, and more

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] = os.environ) -> Reporter | None:
        fd = environ.pop(REPORT, None)
        return None if fd is None else cls(int(fd))


def worker_log() -> ILogObserver:
    """A worker's log (twistd --logger): its lines without the time, which the
    parent puts in front of each when it logs them as its own."""

    def without_time(event: dict) -> str | None:
        text = formatEventAsClassicLogText(event, formatTime=lambda when: "")
        return text[1:] if text else text  # the space after the missing time

    return FileLogObserver(sys.stdout, without_time)
