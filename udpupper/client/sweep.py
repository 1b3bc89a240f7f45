"""``udpupper-client --ping --sweep``: the largest probe the path answers whole.

With the don't-fragment bit set (IPv4 ``IP_PMTUDISC_DO``, IPv6
``IPV6_DONTFRAG``), probes of sizes chosen by bisection, from the largest
the protocol carries down, find the largest that comes back answered: the
path's MTU, both ways, less the IP and UDP headers.  A size too big for a
link on the way is refused by the router before it, which says so (ICMP
"fragmentation needed", "packet too big") with its own MTU: the sweep names
that router and goes on below its MTU.  A size the host itself refuses to
send (EMSGSIZE: larger than its route's MTU, or than one an ICMP message
taught it) is too big without a wait; one that gets no answer after
``tries`` sends of ``timeout`` each is too big, or lost.  Then one probe of
the largest size, fragmentation allowed, says whether fragments get
through: a path that drops them (a fragmentation black hole) answers small
datagrams and never large ones.  Any other send error, or a port
unreachable, ends the sweep at once, in one line.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime, IUDPTransport
from twisted.internet.protocol import DatagramProtocol

from udpupper.client import events
from udpupper.client.exits import EXIT_CANNOT_SEND, EXIT_OK, EXIT_UNANSWERED
from udpupper.client.wire import MIN_SIZE, new_token, probe
from udpupper.errqueue import NetworkError
from udpupper.udp import RETRY_LATER

IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DONT, IP_PMTUDISC_DO = 0, 2
IPV6_DONTFRAG = getattr(socket, "IPV6_DONTFRAG", 62)
# Exit statuses: some size answered; none; the sweep could not run (a send
# the host refuses outright, a port unreachable).
ANSWERED, NONE_ANSWERED, CANNOT_SEND = EXIT_OK, EXIT_UNANSWERED, EXIT_CANNOT_SEND


def dont_fragment(sock: socket.socket, on: bool) -> None:
    """Set or clear the don't-fragment bit of what ``sock`` sends."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_DONTFRAG, int(on))
    else:
        sock.setsockopt(
            socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO if on else IP_PMTUDISC_DONT
        )


class Sweep(DatagramProtocol):
    """Finds the largest answered probe up to ``maximum`` bytes; says each
    step to ``say`` (text, or with ``json_lines`` one JSON object a step) and
    calls ``when_done`` with the exit status.  ``fragmenting(on)`` sets the
    don't-fragment bit off (on) or on (off) on the transport's socket."""

    noisy = False
    transport: IUDPTransport

    def __init__(
        self,
        server: tuple[str, int],
        clock: IReactorTime,
        say: Callable[[str], object],
        fragmenting: Callable[[bool], object],
        *,
        maximum: int,
        timeout: float = 1.0,
        tries: int = 2,
        header: int = 28,
        json_lines: bool = False,
        host: str = "",
    ) -> None:
        self.server, self.clock, self.say = server, clock, say
        self.host = host or server[0]
        self.fragmenting = fragmenting
        self.maximum, self.timeout, self.tries, self.header = maximum, timeout, tries, header
        self.json_lines = json_lines
        self.token = new_token()
        self.answered = 0  # the largest size answered whole
        self.refused = maximum + 1  # the smallest size not
        self.seq = 0
        self.size = maximum
        self.sent = 0  # sends of the current size
        self.whole = True  # don't-fragment set (False: the fragment test)
        self.fragments: bool | None = None  # whether fragments got through
        self.path_mtu: tuple[int, str | None] | None = None  # named by a router: (MTU, who)
        self.failed: str | None = None  # why the sweep could not run
        self.timer: IDelayedCall | None = None
        self.abandoned = False  # stopped from outside: send nothing more
        self.started = clock.seconds()
        self.when_done: Callable[[int], object] | None = None

    def _event(self, text: str, kind: str, **fields) -> None:
        if self.json_lines:
            self.say(events.happened(kind, self.clock.seconds() - self.started, **fields))
        else:
            self.say(text)

    def start(self) -> None:
        self.fragmenting(False)
        self._try(self.maximum)

    def _try(self, size: int) -> None:
        self.size, self.sent, self.seq = size, 0, self.seq + 1
        self._send()

    def _send(self) -> None:
        if self.abandoned:
            return
        self.sent += 1
        try:
            self.transport.write(probe(self.seq, self.size, self.token), self.server)
        except OSError as error:
            if error.errno == errno.EMSGSIZE:
                self._event(
                    f"{self.size} bytes: too big to send from here unfragmented "
                    f"(this host's route, or a router's ICMP it keeps)",
                    "too_big",
                    size=self.size,
                    source="this host",
                )
                self._settle(False)
                return
            if error.errno in RETRY_LATER:
                pass  # a full buffer: the timer asks again
            else:
                self._cannot(f"cannot send to {self.server[0]}: {error.strerror or error}")
                return
        self.timer = self.clock.callLater(self.timeout, self._no_answer)

    def _cannot(self, why: str) -> None:
        """The sweep cannot go on: one line, and the end."""
        self.stop()
        self.failed = why
        self._event(why, "error", error=why)
        if self.when_done is not None:
            done, self.when_done = self.when_done, None
            done(CANNOT_SEND)

    def networkError(self, error: NetworkError) -> None:  # noqa: N802 - the ports' name
        """A router's "too big" names it and its MTU, and settles the size; a
        port unreachable ends the sweep."""
        if error.to is not None and tuple(error.to) != tuple(self.server[:2]):
            return
        if error.too_big:
            # What the router carries bounds every size, whichever probe it
            # speaks of (a late one may name a larger size already settled).
            carries = error.info - self.header if error.info else None
            if carries is not None and carries + 1 < self.refused:
                self.refused = carries + 1
                self.path_mtu = (error.info, error.offender)
            if self.timer is None:
                return
            if not self.whole:
                # Fragments too big for a link: the kernel, told its MTU,
                # makes them smaller.  Send again now.
                self.stop()
                self._send()
                return
            if carries is not None and self.size <= carries:
                return
            self._event(
                f"{self.size} bytes: too big for the path: {error.describe()}",
                "too_big",
                size=self.size,
                source=error.offender,
                mtu=error.info or None,
            )
            if self.path_mtu is None:
                self.path_mtu = (error.info, error.offender)
            self.stop()
            self.refused = min(self.refused, self.size)
            self._settle(False, settled=True)
        elif error.final:
            self._cannot(f"{self.server[0]}: {error.describe()}")
        else:
            self._event(error.describe(), "network_error", source=error.offender, said=error.what)

    def _no_answer(self) -> None:
        self.timer = None
        if self.sent < self.tries:
            self._send()
        else:
            self._event(
                f"{self.size} bytes: no answer"
                f"{' with the DF bit set' if self.whole else ', fragmented'}",
                "no_answer",
                size=self.size,
                fragmented=not self.whole,
            )
            self._settle(False)

    def datagramReceived(
        self, datagram: bytes, addr: tuple, tos: int | None = None, stamp: float | None = None
    ) -> None:
        expected = probe(self.seq, self.size, self.token).upper()
        if (
            self.timer is None
            or tuple(addr[:2]) != tuple(self.server)
            or not datagram
            or not expected.startswith(datagram)
        ):
            return  # a stranger's, a late one of a size already settled, or wrong
        self.timer.cancel()
        self.timer = None
        # A server that reads less than the probe (the textbook's reads 2,048
        # bytes) answers its beginning: the probe got there whole all the same.
        cut = (
            ""
            if len(datagram) == self.size
            else f" (with its first {len(datagram)} bytes: the server reads no more)"
        )
        self._event(
            f"{self.size} bytes: answered{'' if self.whole else ', fragmented'}{cut}",
            "answered",
            size=self.size,
            fragmented=not self.whole,
            reply_bytes=len(datagram),
        )
        self._settle(True)

    def _settle(self, answered: bool, settled: bool = False) -> None:
        if not self.whole:
            self.fragments = answered
            self._finish()
            return
        if answered:
            self.answered = self.size
        elif not settled:
            self.refused = self.size
        if self.refused - self.answered > 1 and self.refused > MIN_SIZE:
            self._try(max(MIN_SIZE, (self.answered + self.refused) // 2))
        elif self.answered and self.answered < self.maximum:
            self.whole = False  # larger ones, fragmented: do they get through?
            self.fragmenting(True)
            self._try(self.maximum)
        else:
            self._finish()

    def summary(self) -> dict:
        return {
            "largest_bytes": self.answered or None,
            "path_mtu": self.answered + self.header if self.answered else None,
            "named_by": None if self.path_mtu is None else self.path_mtu[1],
            "fragments_get_through": self.fragments,
            "error": self.failed,
        }

    def _finish(self) -> None:
        if self.json_lines:
            self.say(events.summary(self.host, self.server, mode="sweep", **self.summary()))
        else:
            if self.answered:
                named = (
                    ""
                    if self.path_mtu is None
                    else f"; {self.path_mtu[1] or 'a router'} said its MTU is {self.path_mtu[0]}"
                )
                self.say(
                    f"largest answered with the DF bit set: {self.answered} bytes "
                    f"({self.answered + self.header} with the IP and UDP headers){named}"
                )
            else:
                self.say(f"no probe answered, from {MIN_SIZE} to {self.maximum} bytes")
            if self.fragments is not None:
                self.say(
                    f"{self.maximum} bytes fragmented: "
                    + (
                        "answered, fragments get through"
                        if self.fragments
                        else "no answer: fragments are dropped on this path (a fragmentation "
                        "black hole), or the far end does not reassemble them"
                    )
                )
        if self.when_done is not None:
            done, self.when_done = self.when_done, None
            done(ANSWERED if self.answered else NONE_ANSWERED)

    def abandon(self) -> None:
        """End now, from outside (Ctrl-C, a closed output): nothing more is
        sent, nothing more said to ``when_done``."""
        self.abandoned = True
        self.when_done = None
        self.stop()

    def stop(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
