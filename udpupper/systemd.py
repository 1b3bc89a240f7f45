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
import sys
from collections.abc import MutableMapping

from twisted.python.systemd import ListenFDs


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

    A trap: importing twisted.internet.endpoints (twistd does, before any
    service starts) makes a ListenFDs from the environment, which removes
    LISTEN_PID and LISTEN_FDS.  When they are gone, that ListenFDs is the
    one that knows.
    """
    descriptors = ListenFDs.fromEnvironment(environ=environ).inheritedDescriptors()
    if descriptors or environ is not None:
        return descriptors
    endpoints = sys.modules.get("twisted.internet.endpoints")
    parser = getattr(endpoints, "_SystemdParser", None)
    earlier = getattr(parser, "_sddaemon", None)
    return list(earlier.inheritedDescriptors()) if earlier is not None else []


def notify(state: str, environ: MutableMapping[str, str] | None = None) -> bool:
    """Tell systemd ``state`` (``READY=1``, ``STOPPING=1``); whether it was sent."""
    path = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):  # an abstract socket
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notifier:
            notifier.connect(path)
            notifier.sendall(state.encode())
    except OSError:
        return False
    return True
