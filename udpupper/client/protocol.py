"""The client protocol: send lines as datagrams, print replies in order.

Several lines may be in flight at once (the window), so piped input goes at
the speed of the network rather than one round trip per line.  A reply is
matched to its line by content alone: the client knows what the upper-cased
line should be, and prints a reply only as the answer to a line it answers.
A late reply to a line already settled (the original, after its resend was
answered) is recognised and dropped; a reply that matches no line sent (a
server that upper-cases differently) is reported, never attributed to a line
by its position, and the lines it did not answer are reported as unanswered.

A line unanswered for a few round trips (measured as TCP does, RFC 6298) is
sent once more at once; then, as before, every ``timeout`` seconds.  So a
datagram lost on a fast path costs a few milliseconds, not a second: the
server's loop breaker withholds one in so many replies that repeat the one
before (a file of identical upper-case lines), and that costs the client
little.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol

from udpupper.client.exits import EXIT_CANNOT_SEND
from udpupper.transform import upper
from udpupper.udp import RETRY_LATER

PROMPT = b"Input lowercase sentence:"

# At most this many bytes of requests in flight (one line always may go),
# so a window of large lines does not overflow the server's receive buffer.
MAX_BYTES_IN_FLIGHT = 128 * 1024

# Above this many queued lines stdin is paused, below the low mark resumed:
# piping a huge file does not read it all into memory.
QUEUE_HIGH, QUEUE_LOW = 10_000, 1_000

# The quick resend waits at least this long (seconds): a datagram's round
# trip on a busy host varies by more than the loopback's few microseconds.
MIN_RESEND = 0.01

# Settled lines whose late replies are recognised (their expected replies'
# hashes): far more than can be in flight.
SETTLED_MEMORY = 65_536


@dataclass(eq=False)
class Request:
    """One line on its way: what was sent, what should come back."""

    number: int
    line: bytes
    expected: bytes
    tries: int = 0
    sent_at: float = 0.0  # when it was first sent
    resent: bool = False  # sent again before its reply came
    reply: bytes | None = None
    failed: bool = False
    timer: IDelayedCall | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        return self.reply is not None or self.failed


class UpperClient(DatagramProtocol):
    """Sends each line to ``server`` and writes each reply, in input order.

    ``write_out`` takes each reply line (with its newline); ``report`` takes
    a message for the user about a line that got no answer; ``on_idle`` is
    called whenever every line so far is settled and more input may come
    (the moment to prompt), and ``when_done`` with the exit status once the
    input has ended and every line is settled.
    """

    noisy = False

    def __init__(
        self,
        server: tuple[str, int],
        clock: IReactorTime,
        write_out: Callable[[bytes], object],
        report: Callable[[str], object],
        timeout: float = 1.0,
        retries: int = 3,
        window: int = 32,
        max_datagram: int = 65_507,
        on_idle: Callable[[], object] | None = None,
    ) -> None:
        self.server = server
        self.clock = clock
        self.write_out = write_out
        self.report = report
        self.timeout = timeout
        self.retries = retries
        self.window = window
        self.max_datagram = max_datagram
        self.on_idle = on_idle
        self.queue: deque[Request] = deque()
        self.in_flight: deque[Request] = deque()
        # Lines in flight and unanswered, by the reply each expects.
        self.waiting: dict[bytes, deque[Request]] = {}
        self.paused = False
        self.bytes_in_flight = 0
        # Hashes of the replies expected by lines already settled, oldest
        # first, with how many of each: what a late reply may be.
        self.settled: deque[int] = deque()
        self.settled_count: dict[int, int] = {}
        # Round-trip estimates (RFC 6298), from lines sent only once.
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.lines = 0
        self.unanswered = 0
        self.resent = 0  # lines answered after being sent again
        self.unmatched = 0  # replies that matched no line sent
        self.input_ended = False
        self.stopped = False  # aborted: nothing more is sent
        self.when_done: Callable[[int], object] | None = None
        self.on_drain: Callable[[], object] | None = None
        self.on_busy: Callable[[], object] | None = None

    # -- input side -------------------------------------------------------

    def start(self) -> None:
        """Say that the client is ready for its first line."""
        if self.on_idle is not None:
            self.on_idle()

    def send_line(self, line: bytes) -> None:
        """Queue one line (without its line ending) to be sent."""
        if self.stopped:
            return
        if len(line) > self.max_datagram:
            self.skip_line(len(line))
            return
        self.lines += 1
        self.queue.append(Request(self.lines, line, upper(line)))
        if len(self.queue) >= QUEUE_HIGH and not self.paused and self.on_busy:
            self.paused = True
            self.on_busy()
        self._pump()

    def skip_line(self, length: int) -> None:
        """Report a line too long for one datagram; it counts as unanswered."""
        self.lines += 1
        self.unanswered += 1
        self.report(
            f"line {self.lines}: {length} bytes is more than the largest "
            f"datagram ({self.max_datagram} bytes); skipped"
        )
        self._settle()

    def end_input(self) -> None:
        """No more lines will come: finish when the last one is settled."""
        if self.stopped:
            return
        self.input_ended = True
        self._settle()

    # -- network side -----------------------------------------------------

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        if addr != self.server:
            return  # not our server's: ignore it
        same = self.waiting.get(datagram)
        if not same:
            if hash(datagram) not in self.settled_count:
                self._unmatched(datagram)
            return  # else a late answer to a line already settled
        request = same[0]
        request.reply = datagram
        if request.resent:
            self.resent += 1
        else:  # sent once: a round trip to learn from (Karn's rule)
            self._measure(self.clock.seconds() - request.sent_at)
        self._finish(request)
        self._settle()

    def _unmatched(self, datagram: bytes) -> None:
        """A reply that is no line's: say so the first time, count the rest."""
        self.unmatched += 1
        if self.unmatched == 1:
            shown = datagram[:60] + (b"..." if len(datagram) > 60 else b"")
            self.report(
                f"a reply matched no line sent ({shown!r}): the server does not "
                f"upper-case as udpupper does, or is not the server"
            )

    def _measure(self, rtt: float) -> None:
        """One round-trip sample, as TCP takes them (RFC 6298, 2.2 and 2.3)."""
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    def resend_after(self) -> float:
        """How long a line waits before its quick resend: ``timeout`` until a
        round trip has been measured, then a few round trips."""
        if self.srtt is None:
            return self.timeout
        return min(self.timeout, max(MIN_RESEND, self.srtt + 4 * self.rttvar))

    def _pump(self) -> None:
        while self.queue and len(self.in_flight) < self.window:
            request = self.queue[0]
            if self.in_flight and (self.bytes_in_flight + len(request.line) > MAX_BYTES_IN_FLIGHT):
                break
            self.queue.popleft()
            self.in_flight.append(request)
            self.waiting.setdefault(request.expected, deque()).append(request)
            self.bytes_in_flight += len(request.line)
            self._send(request)
        if self.paused and len(self.queue) <= QUEUE_LOW and self.on_drain:
            self.paused = False
            self.on_drain()

    def _send(self, request: Request) -> None:
        if self.transport is None or self.stopped:
            return  # the port is gone: we are stopping
        request.tries += 1
        if request.tries == 1:
            request.sent_at = self.clock.seconds()
            quick = self.resend_after()
            if quick < self.timeout and self.retries:  # --retries 0: never again
                request.timer = self.clock.callLater(quick, self._resend, request)
        if request.timer is None:
            request.timer = self.clock.callLater(self.timeout, self._timed_out, request)
        self._write(request)

    def _resend(self, request: Request) -> None:
        """The quick resend: once, then the usual timeout from the first send."""
        request.resent = True
        due = request.sent_at + self.timeout - self.clock.seconds()
        request.timer = self.clock.callLater(max(0.0, due), self._timed_out, request)
        self._write(request)

    def _write(self, request: Request) -> None:
        """Send ``request``'s line, unless the port is gone; a send error is
        left to the timer, which asks again (e.g. a full send buffer)."""
        transport = self.transport
        if transport is None or self.stopped:
            return
        try:
            transport.write(request.line, self.server)
        except OSError as error:
            if error.errno in RETRY_LATER:
                return
            self.report(
                f"cannot send to {format_address(self.server)}: "
                f"{error.strerror or error}: no line can be answered"
            )
            self.unanswered += len(self.in_flight) + len(self.queue)
            self.abort(EXIT_CANNOT_SEND)

    def _timed_out(self, request: Request) -> None:
        request.timer = None
        if request.tries <= self.retries:
            request.resent = True
            self._send(request)
            return
        request.failed = True
        self.unanswered += 1
        self._finish(request)
        self.report(
            f"line {request.number}: no reply from {format_address(self.server)} "
            f"after {request.tries} tries"
        )
        self._settle()

    def _finish(self, request: Request) -> None:
        if request.timer is not None:
            request.timer.cancel()
            request.timer = None
        same = self.waiting[request.expected]
        same.remove(request)
        if not same:
            del self.waiting[request.expected]
        self._remember(hash(request.expected))
        self.bytes_in_flight -= len(request.line)

    def _remember(self, key: int) -> None:
        """Keep ``key`` among the settled lines' replies; forget the oldest."""
        self.settled.append(key)
        counts = self.settled_count
        counts[key] = counts.get(key, 0) + 1
        if len(self.settled) > SETTLED_MEMORY:
            old = self.settled.popleft()
            if counts[old] == 1:
                del counts[old]
            else:
                counts[old] -= 1

    def _settle(self) -> None:
        """Print what is answered, in order; send more; end when all is."""
        while self.in_flight and self.in_flight[0].done:
            request = self.in_flight.popleft()
            if request.reply is not None:
                self.write_out(request.reply + b"\n")
        self._pump()
        if self.in_flight or self.queue:
            return
        if self.input_ended:
            if self.when_done is not None:
                done, self.when_done = self.when_done, None
                self._say_what_slowed()
                done(1 if self.unanswered else 0)
        elif self.on_idle is not None:
            self.on_idle()

    def _say_what_slowed(self) -> None:
        """At the end, one line when replies were missing or matched nothing."""
        if self.unmatched > 1:
            self.report(f"{self.unmatched} replies matched no line sent")
        if self.resent:
            self.report(
                f"{self.resent} of {self.lines} lines were answered only after "
                f"being sent again (lost on the way, or withheld by the server's "
                f"rate limit or loop breaker, which holds back one in so many "
                f"replies that repeat the one before)"
            )

    def networkError(self, error) -> None:  # noqa: N802 - the ports' name
        """What the network said of a line sent: where nothing will answer
        (a port unreachable from the server), say so and end at once."""
        if (
            self.stopped
            or not error.final
            or (error.to is not None and tuple(error.to) != tuple(self.server[:2]))
        ):
            return
        self.report(f"{format_address(self.server)}: {error.describe()}: no line can be answered")
        self.unanswered += len(self.in_flight) + len(self.queue)
        self.abort()

    def abort(self, status: int = 1) -> None:
        """Give up: cancel every timer, send nothing more, finish with
        ``status`` (1: lines unanswered; EXIT_CANNOT_SEND: the host refuses)."""
        self.stopped = True
        for request in self.in_flight:
            if request.timer is not None:
                request.timer.cancel()
                request.timer = None
        self.in_flight.clear()
        self.waiting.clear()
        self.queue.clear()
        if self.when_done is not None:
            done, self.when_done = self.when_done, None
            done(status)


def format_address(addr: tuple[str, int]) -> str:
    host, port = addr[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
