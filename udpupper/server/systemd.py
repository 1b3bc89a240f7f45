"""Running under systemd: socket activation and readiness notification.

Socket activation: when systemd started this process with a socket
(``LISTEN_PID``, ``LISTEN_FDS``, ``LISTEN_FDNAMES``; a ``.socket`` unit with
``ListenDatagram=``), the daemon serves that socket instead of binding one.
Readiness: with ``NOTIFY_SOCKET`` set (``Type=notify``), it says ``READY=1``
once it serves and ``STOPPING=1`` when it stops, written straight to the
socket (sd_notify's protocol is one datagram of text).
"""

from __future__ import annotations

import os
import socket
from collections.abc import MutableMapping

from twisted.python.systemd import ListenFDs

LISTEN_FDS_START = 3  # sd_listen_fds(3): the first descriptor passed


def inherited_datagram_socket(
    environ: MutableMapping[str, str] | None = None,
) -> socket.socket | None:
    """The first UDP socket systemd passed to this process, if any.

    Reading the environment consumes it (Twisted's ListenFDs removes the
    variables), so that no child process mistakes it for its own.
    """
    for fd in inherited_descriptors(environ):
        skt = socket.socket(fileno=fd)  # the family and type are read from fd
        if skt.type == socket.SOCK_DGRAM and skt.family in (
            socket.AF_INET,
            socket.AF_INET6,
        ):
            skt.setblocking(False)
            return skt
        skt.detach()  # not ours to close
    return None


def inherited_descriptors(environ: MutableMapping[str, str] | None = None) -> list[int]:
    """The descriptors systemd passed to this process.

    Twisted's ListenFDs first.  A trap: importing twisted.internet.endpoints
    (twistd does, before any service starts) makes a ListenFDs, which removes
    LISTEN_PID and LISTEN_FDS from the environment, and finds nothing when
    LISTEN_FDNAMES is missing (systemd before 227, systemd-socket-activate).
    The environment the process started with still says: on Linux it is in
    /proc/self/environ, which removing a variable does not change.
    """
    descriptors = ListenFDs.fromEnvironment(environ=environ).inheritedDescriptors()
    if descriptors or environ is not None:
        return list(descriptors)
    try:
        with open("/proc/self/environ", "rb") as initial:
            variables = dict(
                entry.decode("utf-8", "replace").partition("=")[::2]
                for entry in initial.read().split(b"\0")
                if entry
            )
    except OSError:
        return []
    if variables.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(variables.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    return list(range(LISTEN_FDS_START, LISTEN_FDS_START + count))


def notify(state: str, environ: MutableMapping[str, str] | None = None) -> bool:
    """Tell systemd ``state`` (``READY=1``, ``STOPPING=1``); whether it was sent.

    Never waited on: a notification that the socket cannot take at once
    (its queue full: a stalled or hostile listener) is dropped, so neither
    serving nor stopping depends on whoever reads it.
    """
    path = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):  # an abstract socket
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notifier:
            notifier.setblocking(False)
            notifier.connect(path)
            notifier.send(state.encode())
    except OSError:  # BlockingIOError included: the queue is full
        return False
    return True
