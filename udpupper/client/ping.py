"""``udpupper-client --ping``: probe a server's path as ``ping`` does.

Each probe is :mod:`udpupper.client.wire`'s, and so is the reply it must
get (the probe, its token included, upper-cased).  Lines and summary are
``ping``'s own,
so that people and scripts that read ``ping`` read this too; a third summary
line says what irtt and sockperf do: jitter (IPDV, the mean absolute
difference of the round trips of consecutive probes), percentiles, and
replies reordered (RFC 4737: a lower sequence number than one already
answered), duplicated, late (after their probe was said to have no answer)
and wrong.  With ``json``, every event and the summary are one JSON object a
line instead (docs/client.md has the schema).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime, IUDPTransport
from twisted.internet.protocol import DatagramProtocol

from udpupper.client import events
from udpupper.client.exits import EXIT_CANNOT_SEND, EXIT_OK, EXIT_UNANSWERED
from udpupper.client.summary import PingStats, format_ms
from udpupper.client.wire import SLOTS, UDP_HEADER, WIRE_SEQ, Probe, new_token, probe
from udpupper.errqueue import Departure, NetworkError, round_trip
from udpupper.udp import RETRY_LATER

# After the last probe, once every probe is answered, wait this long at least
# (and twice the longest round trip) for a duplicate of the last reply.
DUPLICATE_GRACE = 0.01


class Ping(DatagramProtocol):
    """Sends a probe every ``interval`` seconds to ``server``, ``count``
    times (None: until stopped), and says what comes back.

    ``say`` takes each line of output; ``when_done`` is called once, with
    the exit status, after the last probe is answered or timed out.  Round
    trips are measured on ``now`` (monotonic); timers run on ``clock``.
    """

    noisy = False
    transport: IUDPTransport  # the client's port, set before start()

    def __init__(
        self,
        server: tuple[str, int],
        clock: IReactorTime,
        say: Callable[[str], object],
        *,
        count: int | None = None,
        interval: float = 1.0,
        size: int = 32,
        timeout: float = 1.0,
        quiet: bool = False,
        json_lines: bool = False,
        ports: int = 1,
        dscp: int | None = None,
        now: Callable[[], float] = time.perf_counter,
        token: bytes | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.server = server
        self.token = new_token() if token is None else token
        self.clock = clock
        self.say = say
        self.count = count
        self.interval = interval
        self.size = size
        self.timeout = timeout
        self.quiet = quiet
        self.json_lines = json_lines
        self.dscp = dscp  # what the probes are marked with (the caller marks them)
        self.now = now
        self.wall = wall
        self.highest: int | None = None  # the highest sequence number answered
        self.stats = PingStats()
        # With several source ports, probe n goes from port n % ports: each
        # port's own figures, for ECMP paths.  ``transports`` are the ports
        # (the caller's); without them, ``transport`` sends every probe.
        self.ports = ports
        self.transports: list[IUDPTransport] = []
        self.by_port = [PingStats() for _ in range(ports)] if ports > 1 else []
        self.probes: dict[int, Probe] = {}  # the last SLOTS probes, by wire number
        self.waiting: deque[Probe] = deque()  # in sending order, until expired
        self.unsettled = 0  # probes neither answered nor timed out
        self.sender: IDelayedCall | None = None
        self.expiry: IDelayedCall | None = None
        self.linger: IDelayedCall | None = None
        self.last_sent = 0.0
        self.last_settled = 0.0  # when a probe was last answered or timed out
        self.started: float | None = None
        self.ended: float | None = None
        self.when_done: Callable[[int], object] | None = None
        # The probes each port sent, in order, by their number on it: the
        # kernel's departure stamps name them so.
        self.sent_on: dict[tuple[int, int], Probe] = {}
        self.sends = [0] * ports
        self.network_said: NetworkError | None = None  # what ended the run, if anything
        self.cannot_send = False  # the host refused a send: the run ended

    @property
    def status(self) -> int:
        """``ping``'s exit status: 0 when some probe was answered, else 1;
        2 when the host refused to send one (as ``ping``'s "other error")."""
        if self.cannot_send:
            return EXIT_CANNOT_SEND
        return EXIT_OK if self.stats.received else EXIT_UNANSWERED

    def start(self) -> None:
        self.started = self.now()
        self._send_next()

    def _send_next(self) -> None:
        stats = self.stats
        seq = stats.transmitted
        now = self.now()
        if self.sender is not None and seq:  # how late the timer fired
            stats.timer_late.append(max(0.0, now - (self.last_sent + self.interval)))
        sent = Probe(seq, now, self.wall())
        self.last_sent = sent.sent_at
        wire = seq % WIRE_SEQ
        self.probes.pop((wire - SLOTS) % WIRE_SEQ, None)
        self.probes[wire] = sent
        stats.transmitted += 1
        self.waiting.append(sent)
        self.unsettled += 1
        transport = self.transport
        index = seq % self.ports
        if self.by_port:
            self.by_port[index].transmitted += 1
            transport = self.transports[index] if self.transports else transport
        try:
            transport.write(probe(seq, self.size, self.token), self.server)
        except OSError as error:
            self._event(
                f"seq={seq}: cannot send: {error.strerror or error}",
                "send_error",
                seq=seq,
                error=str(error.strerror or error),
            )
            if error.errno not in RETRY_LATER:  # the host's "never": no route, say
                self.cannot_send = True
                self.finish()
                return
        else:
            stats.send_calls.append(self.now() - now)
            self.sent_on[(index, self.sends[index])] = sent
            self.sent_on.pop((index, self.sends[index] - SLOTS), None)
            self.sends[index] += 1
        if self.count is None or stats.transmitted < self.count:
            self.sender = self.clock.callLater(self.interval, self._send_next)
        else:
            self.sender = None
        self._arm_expiry()
        self._maybe_done()

    def _arm_expiry(self) -> None:
        if self.expiry is None and self.waiting:
            due = self.waiting[0].sent_at + self.timeout - self.now()
            self.expiry = self.clock.callLater(max(0.0, due), self._expire)

    def _expire(self) -> None:
        self.expiry = None
        self._say_expired()
        self._arm_expiry()
        self._maybe_done()

    def _say_expired(self) -> None:
        """Each probe unanswered for ``timeout``: said once, in order."""
        late = self.now() - self.timeout + 1e-9
        while self.waiting and (self.waiting[0].replies or self.waiting[0].sent_at <= late):
            sent = self.waiting.popleft()
            if not sent.replies:
                sent.expired = True
                self.unsettled -= 1
                self.last_settled = self.now()
                self._event(f"no answer yet for seq={sent.seq}", "timeout", seq=sent.seq)

    def departed(self, port, departure: Departure) -> None:
        """The kernel's stamp of a probe leaving by ``port``."""
        index = self.transports.index(port) if port in self.transports else 0
        sent = self.sent_on.get((index, departure.index))
        if sent is not None:
            sent.left = departure.at

    def networkError(self, error: NetworkError) -> None:  # noqa: N802 - the ports' name
        """What the network said of a probe: said; and a port unreachable
        (nothing will answer) ends the run at once."""
        if error.to is not None and tuple(error.to) != tuple(self.server[:2]):
            return  # of another socket's datagram: not ours to judge
        self.stats.network_errors += 1
        self._event(
            error.describe(),
            "network_error",
            source=error.offender,
            said=error.what,
            mtu=error.info if error.too_big else None,
        )
        if error.final and self.when_done is not None:
            self.network_said = error
            self.finish()

    def datagramReceived(
        self, datagram: bytes, addr: tuple, tos: int | None = None, stamp: float | None = None
    ) -> None:
        """A datagram, the TOS byte it arrived with where the port says, and
        the kernel's stamp of its arrival where it stamps them."""
        arrived = self.now()
        host = addr[0]
        size = len(datagram) + UDP_HEADER
        if tuple(addr[:2]) != tuple(self.server):
            self._event(
                f"{size} bytes from {host}: not from the server, ignored",
                "stranger",
                source=host,
                port=addr[1],
                bytes=size,
            )
            return
        digits = datagram[:7].split(b" ", 1)[0]
        sent = self.probes.get(int(digits)) if digits.isdigit() else None
        if sent is None or datagram != probe(sent.seq, self.size, self.token).upper():
            self.stats.wrong += 1
            which = f"seq={sent.seq} " if sent is not None else ""
            self._event(
                f"{size} bytes from {host}: {which}wrong reply, not this probe upper-cased",
                "wrong",
                seq=None if sent is None else sent.seq,
                bytes=size,
            )
            return
        rtt, timed = round_trip(stamp, sent.left, sent.sent_wall, arrived - sent.sent_at)
        sent.replies += 1
        text = f"{size} bytes from {host}: seq={sent.seq} time={format_ms(rtt)} ms"
        path = self.by_port[sent.seq % self.ports] if self.by_port else None
        if sent.replies > 1:
            self.stats.duplicates += 1
            if path is not None:
                path.duplicates += 1
            self._event(
                text + " (DUP!)",
                "duplicate",
                seq=sent.seq,
                bytes=size,
                rtt_ms=round(rtt * 1000, 6),
                path=sent.seq % self.ports,
            )
            return
        stats = self.stats
        stats.add(rtt)
        stats.timed[timed] = stats.timed.get(timed, 0) + 1
        if path is not None:
            path.add(rtt)
        sent.rtt = rtt
        self._count_ipdv(sent)
        reordered = self.highest is not None and sent.seq < self.highest
        if reordered:
            stats.reordered += 1
        else:
            self.highest = sent.seq
        self.last_settled = arrived
        if sent.expired:
            stats.late += 1
        else:
            self.unsettled -= 1
        notes = [
            note for note, present in (("reordered", reordered), ("late", sent.expired)) if present
        ]
        marking = {}
        if tos is not None:
            marking = {"dscp": tos >> 2, "ecn": tos & 3}
            stats.dscp_seen[tos >> 2] = stats.dscp_seen.get(tos >> 2, 0) + 1
            if self.dscp is not None and tos >> 2 != self.dscp:
                notes.append(f"dscp {tos >> 2}, sent {self.dscp}")
        self._event(
            text + "".join(f" ({note})" for note in notes),
            "reply",
            seq=sent.seq,
            bytes=size,
            rtt_ms=round(rtt * 1000, 6),
            reordered=reordered,
            late=sent.expired,
            path=sent.seq % self.ports,
            **marking,
        )
        self._maybe_done()

    def _count_ipdv(self, answered: Probe) -> None:
        """Each pair of consecutive probes, once both are answered (in any order)."""
        wire = answered.seq % WIRE_SEQ
        for neighbour in ((wire - 1) % WIRE_SEQ, (wire + 1) % WIRE_SEQ):
            other = self.probes.get(neighbour)
            if other is not None and other.rtt is not None and abs(other.seq - answered.seq) == 1:
                self.stats.ipdv_sum += abs(answered.rtt - other.rtt)  # type: ignore[operator]
                self.stats.ipdv_count += 1

    def _event(self, text: str, kind: str, **fields) -> None:
        """Say ``text``, or with ``json_lines`` the event as one JSON object."""
        if self.json_lines:
            since = 0.0 if self.started is None else self.now() - self.started
            self.say(events.happened(kind, since, **fields))
        elif not self.quiet:
            self.say(text)

    def _maybe_done(self) -> None:
        """After the last probe: finish once late replies can no longer come.

        As ``ping`` does, wait twice the longest round trip seen after the
        last probe, so a reply slower than ``--timeout`` still counts as
        received (its probe was said to have no answer yet): at least
        ``timeout`` while a probe is unanswered, and DUPLICATE_GRACE once all
        are, for a duplicate of the last reply.
        """
        if self.sender is not None or self.when_done is None:
            return
        longest = 2 * self.stats.rtt_max
        wait = max(longest, DUPLICATE_GRACE if self.unsettled == 0 else self.timeout)
        due = self.last_sent + wait - self.now()
        if self.linger is not None and self.linger.active():
            self.linger.cancel()
        self.linger = None
        if due <= 1e-9:
            self._say_expired()  # its timer may be due at the same moment
            # The time ping reports: to the last answer or timeout, not the wait.
            self.ended = max(self.last_settled, self.last_sent)
            self.finish()
        else:
            self.linger = self.clock.callLater(due, self._maybe_done)

    def finish(self) -> None:
        """Stop probing and waiting (the end, or Ctrl-C): say ``when_done``."""
        for timer in (self.sender, self.expiry, self.linger):
            if timer is not None and timer.active():
                timer.cancel()
        self.sender = self.expiry = self.linger = None
        if self.ended is None:
            self.ended = self.now()
        if self.when_done is not None:
            done, self.when_done = self.when_done, None
            done(self.status)

    def summary(self, host: str, costs: bool = False) -> list[str]:
        """``ping``'s closing lines, timed from the first probe to the end;
        with ``json_lines``, one JSON object."""
        if self.started is None:
            elapsed = 0.0
        else:
            ended = self.now() if self.ended is None else self.ended
            elapsed = ended - self.started
        if self.json_lines:
            paths = (
                {
                    "ports": [
                        {"source_port": self._source_port(index), **path.figures(elapsed)}
                        for index, path in enumerate(self.by_port)
                    ]
                }
                if self.by_port
                else {}
            )
            marking = {
                "dscp_sent": self.dscp,
                "dscp_received": {
                    str(dscp): count for dscp, count in sorted(self.stats.dscp_seen.items())
                },
            }
            return [
                events.summary(
                    host,
                    self.server,
                    size=self.size,
                    **self.stats.figures(elapsed),
                    **marking,
                    **paths,
                )
            ]
        dscp = [] if self.dscp is None else [self.stats.dscp_line(self.dscp)]
        costing = [self.stats.costs_line()] if costs else []
        return (
            self.stats.summary(host, elapsed)
            + dscp
            + costing
            + [
                f"port {index + 1} of {self.ports}, from {self._source_port(index)}: "
                + path.path_line()
                for index, path in enumerate(self.by_port)
            ]
        )

    def _source_port(self, index: int) -> int | None:
        get_host = (
            getattr(self.transports[index], "getHost", None)
            if index < len(self.transports)
            else None
        )
        return get_host().port if get_host is not None else None
