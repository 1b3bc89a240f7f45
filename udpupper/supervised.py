"""What a ``--workers`` process does that a lone daemon does not.

It serves the socket its parent bound and passed it (the parent keeps it,
so the socket outlives the worker: see :mod:`udpupper.steering`), it
reports its counters to the parent once a second over a pipe (one JSON line;
the counters are totals, so a report lost when the pipe is full costs
nothing), and it ends with its parent, however the parent ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import MutableMapping

from udpupper.stats import Stats

# In a worker's environment: the parent it must not outlive, the descriptor
# of the socket it serves, and the descriptor it reports its counters on.
PARENT = "UDPUPPER_PARENT"
SOCKET = "UDPUPPER_SOCKET"
REPORT = "UDPUPPER_REPORT"
SOCKET_FD, REPORT_FD = 3, 4  # where the parent puts them
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


class Reporter:
    """Writes the counters to the parent: one JSON line, never blocking."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    def report(self, stats: Stats, prefixes: int = 0) -> None:
        line = json.dumps({**stats.as_dict(), "prefixes": prefixes}) + "\n"
        try:
            os.write(self.fd, line.encode())
        except (BlockingIOError, BrokenPipeError, OSError):
            pass  # the next report carries the same totals, and more

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] = os.environ) -> Reporter | None:
        fd = environ.pop(REPORT, None)
        return None if fd is None else cls(int(fd))
