"""``udpupper-client --ping --sweep``: the largest probe the path answers whole.

With the don't-fragment bit set (IPv4 ``IP_PMTUDISC_DO``, IPv6
``IPV6_DONTFRAG``), probes of sizes chosen by bisection, from the largest
the protocol carries down, find the largest that comes back answered: the
path's MTU, both ways, less the IP and UDP headers.  A size the host itself
refuses to send (EMSGSIZE: larger than the route's MTU, or than a PMTU an
ICMP message taught it) is too big without a wait; one that gets no answer
after ``tries`` sends of ``timeout`` each is too big, or lost.  Then one
probe of the largest size, fragmentation allowed, says whether fragments
get through: a path that drops them (a fragmentation black hole) answers
small datagrams and never large ones.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime, IUDPTransport
from twisted.internet.protocol import DatagramProtocol

from udpupper.client.ping import MIN_SIZE, new_token, probe

IP_MTU_DISCOVER = getattr(socket, "IP_MTU_DISCOVER", 10)
IP_PMTUDISC_DONT, IP_PMTUDISC_DO = 0, 2
IPV6_DONTFRAG = getattr(socket, "IPV6_DONTFRAG", 62)


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
    step to ``say`` and calls ``when_done`` with the exit status (0 when some
    size was answered).  ``fragmenting(on)`` sets the don't-fragment bit off
    (on) or on (off) on the transport's socket."""

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
    ) -> None:
        self.server, self.clock, self.say = server, clock, say
        self.fragmenting = fragmenting
        self.maximum, self.timeout, self.tries, self.header = maximum, timeout, tries, header
        self.token = new_token()
        self.answered = 0  # the largest size answered whole
        self.refused = maximum + 1  # the smallest size not
        self.seq = 0
        self.size = 0
        self.sent = 0  # sends of the current size
        self.whole = True  # don't-fragment set (False: the fragment test)
        self.fragments: bool | None = None  # whether fragments got through
        self.timer: IDelayedCall | None = None
        self.when_done: Callable[[int], object] | None = None

    def start(self) -> None:
        self.fragmenting(False)
        self._try(self.maximum)

    def _try(self, size: int) -> None:
        self.size, self.sent, self.seq = size, 0, self.seq + 1
        self._send()

    def _send(self) -> None:
        self.sent += 1
        try:
            self.transport.write(probe(self.seq, self.size, self.token), self.server)
        except OSError as error:
            if error.errno != errno.EMSGSIZE:
                raise
            self.say(f"{self.size} bytes: too big to send from here unfragmented (the route's MTU)")
            self._settle(False)
            return
        self.timer = self.clock.callLater(self.timeout, self._no_answer)

    def _no_answer(self) -> None:
        self.timer = None
        if self.sent < self.tries:
            self._send()
        else:
            self.say(
                f"{self.size} bytes: no answer"
                f"{' with the DF bit set' if self.whole else ', fragmented'}"
            )
            self._settle(False)

    def datagramReceived(self, datagram: bytes, addr: tuple, tos: int | None = None) -> None:
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
        self.say(f"{self.size} bytes: answered{'' if self.whole else ', fragmented'}{cut}")
        self._settle(True)

    def _settle(self, answered: bool) -> None:
        if not self.whole:
            self.fragments = answered
            self._finish()
            return
        if answered:
            self.answered = self.size
        else:
            self.refused = self.size
        if self.refused - self.answered > 1 and self.refused > MIN_SIZE:
            self._try(max(MIN_SIZE, (self.answered + self.refused) // 2))
        elif self.answered and self.answered < self.maximum:
            self.whole = False  # larger ones, fragmented: do they get through?
            self.fragmenting(True)
            self._try(self.maximum)
        else:
            self._finish()

    def _finish(self) -> None:
        if self.answered:
            self.say(
                f"largest answered with the DF bit set: {self.answered} bytes "
                f"({self.answered + self.header} with the IP and UDP headers)"
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
            done(0 if self.answered else 1)

    def stop(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


def run_sweep(
    reactor,
    host: str,
    server: tuple[str, int],
    family: int,
    timeout: float,
    say: Callable[[str], object],
) -> int:
    """``--ping --sweep`` from start to end, on ``reactor``: the exit status."""
    from udpupper.transform import max_payload
    from udpupper.udp import UDPPort

    maximum = max_payload(server[0])
    header = 48 if family == socket.AF_INET6 else 28
    outcome: dict[str, int] = {}
    port = UDPPort(0, None, "::" if family == socket.AF_INET6 else "0.0.0.0", reactor)
    sweep = Sweep(
        server,
        reactor,
        say,
        lambda on: dont_fragment(port.socket, not on),
        maximum=maximum,
        timeout=timeout,
        header=header,
    )
    port.protocol = sweep

    def done(status: int) -> None:
        outcome["status"] = status
        if reactor.running:
            reactor.stop()

    sweep.when_done = done
    say(
        f"SWEEP {host} ({server[0]}) port {server[1]}: the largest probe answered with the "
        f"DF bit set, {MIN_SIZE} to {maximum} bytes."
    )
    port.startListening()
    port.connect_socket(server)
    reactor.callWhenRunning(sweep.start)
    reactor.run()
    sweep.stop()
    return outcome.get("status", 1)
