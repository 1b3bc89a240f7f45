"""A UDP relay that delays, duplicates and reorders a share of datagrams.

For the client's tests where ``netem`` is not to be had: the client talks
to the relay's port, the relay to the server from one port of its own, and
each datagram, either way, is passed on at once, or late (``delay`` seconds
for a share ``late``), or twice (a share ``duplicate``), or after a short
random wait that reorders it with its neighbours (a share ``reorder``), or
not at all (a share ``lose``).
The choices come from a seeded generator, so a run can be repeated.

Or, for two tools to be held to one path, the same path twice: each
datagram, either way, waits the next of ``delays`` in turn (a known
distribution), and every ``lose_every``-th is lost (a known loss).
"""

from __future__ import annotations

import heapq
import random
import selectors
import socket
import threading
import time


class Relay:
    """Runs in a thread of its own until :meth:`stop`."""

    def __init__(
        self,
        server: tuple[str, int],
        *,
        late: float = 0.01,
        delay: float = 1.5,
        duplicate: float = 0.01,
        reorder: float = 0.05,
        lose: float = 0.0,
        seed: int = 1,
        delays: list[float] | None = None,
        lose_every: int = 0,
    ) -> None:
        self.server = server
        self.late, self.delay = late, delay
        self.duplicate, self.reorder, self.lose = duplicate, reorder, lose
        self.random = random.Random(seed)
        self.delays, self.lose_every = delays, lose_every
        self.turns = {"out": 0, "back": 0}  # datagrams each way, for the pattern
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        for sock in (self.front, self.back):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            sock.setblocking(False)
        self.port = self.front.getsockname()[1]
        self.client: tuple[str, int] | None = None
        self.pending: list[tuple[float, int, socket.socket, bytes, tuple]] = []
        self.sequence = 0
        self.counts = {"passed": 0, "late": 0, "duplicated": 0, "reordered": 0, "lost": 0}
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.running = False
        self.thread.join(10)
        self.front.close()
        self.back.close()

    def _schedule(self, sock: socket.socket, datagram: bytes, to: tuple) -> None:
        now = time.monotonic()
        if self.delays is not None or self.lose_every:
            self._follow_pattern(now, sock, datagram, to)
            return
        draw = self.random.random()
        copies, wait = 1, 0.0
        if draw < self.late:
            wait = self.delay
            self.counts["late"] += 1
        elif draw < self.late + self.duplicate:
            copies = 2
            self.counts["duplicated"] += 1
        elif draw < self.late + self.duplicate + self.reorder:
            wait = self.random.uniform(0.0005, 0.005)
            self.counts["reordered"] += 1
        elif draw < self.late + self.duplicate + self.reorder + self.lose:
            self.counts["lost"] += 1
            return
        else:
            self.counts["passed"] += 1
        for copy in range(copies):
            self.sequence += 1
            heapq.heappush(
                self.pending, (now + wait + copy * 0.001, self.sequence, sock, datagram, to)
            )

    def _follow_pattern(self, now: float, sock: socket.socket, datagram: bytes, to: tuple) -> None:
        way = "out" if sock is self.back else "back"
        turn = self.turns[way]
        self.turns[way] += 1
        if self.lose_every and turn % self.lose_every == self.lose_every - 1:
            self.counts["lost"] += 1
            return
        wait = self.delays[turn % len(self.delays)] if self.delays else 0.0
        self.counts["late" if wait else "passed"] += 1
        self.sequence += 1
        heapq.heappush(self.pending, (now + wait, self.sequence, sock, datagram, to))

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.front, selectors.EVENT_READ)
        selector.register(self.back, selectors.EVENT_READ)
        while self.running:
            timeout = 0.05
            if self.pending:
                timeout = max(0.0, min(timeout, self.pending[0][0] - time.monotonic()))
            for key, _ in selector.select(timeout):
                sock = key.fileobj
                for _ in range(256):
                    try:
                        datagram, source = sock.recvfrom(65_535)
                    except BlockingIOError:
                        break
                    if sock is self.front:
                        self.client = source
                        self._schedule(self.back, datagram, self.server)
                    elif self.client is not None:
                        self._schedule(self.front, datagram, self.client)
            now = time.monotonic()
            while self.pending and self.pending[0][0] <= now:
                _, _, sock, datagram, to = heapq.heappop(self.pending)
                try:
                    sock.sendto(datagram, to)
                except OSError:
                    pass  # a full buffer: lost, as on a real path
        selector.close()
