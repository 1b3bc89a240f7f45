"""New clients beside a flood of never-seen sources, run on a client host.

    python -m tests.newclients HOST PORT [--rate 150000] [--seconds 6]
                               [--clients 60] [--known 20] [--quiet 3]
                               [--space large|small] [--sends 1] [--spacing 0]

Meant for a network namespace where ``SPACE`` is routed to the host itself
(``ip route add local ...``) and ``ip_nonlocal_bind`` is on, so that one
socket can send from any address in it and get the replies.  From the
start, a flood of ``rate`` datagrams a second from spoofed sources: with
``--space large``, a new /24 (IPv4 HOST) or /56 (IPv6 HOST) each source,
never one prefix twice; with ``--space small``, every /24 of one /8 or
every /56 of one /32, drawn at random (so they recur), a new host each
time.  Each source sends ``sends`` times, ``spacing`` seconds apart.
``known`` clients each ask three times (their prefixes are then known),
keep quiet for ``quiet`` seconds of flood, and ask once more.  From the
second second, ``clients`` new clients, each from a prefix of its own, ask
as ``udpupper-client`` does: a try, a second after it another, four at
most.  Prints one JSON line: which try answered each new client, and what
the flood sent.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import multiprocessing
import os
import select
import socket
import time

from udpupper import _batch

# Routed to the client host itself: the flood's sources, then the clients'.
SPACE = {socket.AF_INET: "32.0.0.0/3", socket.AF_INET6: "2001:db8::/32"}
FLOOD_PREFIXES = 1 << 20  # /24s of 32.0.0.0/4, /56s of 2001:db8::/36
PAYLOAD = b"flood from a spoofed source!"
V6_BASE = int(ipaddress.IPv6Address("2001:db8::"))
FLOOD_CORE, CLIENTS_CORE = 1, 0  # the daemon's is 0 too
BURST = 16  # datagrams a system call: the flood comes nearly evenly
RETRY = 1.0  # udpupper-client's default --timeout
TRIES = 4  # and its retries + 1


def flood_source(family: int, number: int, small: bool = False) -> bytes:
    """The ``number``-th flood source, packed.  A prefix of its own, any host
    in it; or, ``small``, a prefix drawn from every /24 of 33.0.0.0/8 or
    every /56 of 2001:db8::/32, with a host drawn anew."""
    draw = (number * 0x9E3779B97F4A7C15) % (1 << 64)  # spread, as a draw would be
    if small:
        if family == socket.AF_INET:
            return ((33 << 24) + ((draw >> 48) << 8) + 1 + draw % 254).to_bytes(4, "big")
        return (V6_BASE + ((draw >> 40) << 72) + (draw * 2654435761) % (1 << 64)).to_bytes(
            16, "big"
        )
    prefix = (number * 0x9E3779B1) % FLOOD_PREFIXES  # each prefix once
    if family == socket.AF_INET:
        return ((32 << 24) + (prefix << 8) + 1 + number % 254).to_bytes(4, "big")
    return (V6_BASE + (prefix << 72) + number * 2654435761 % (1 << 64)).to_bytes(16, "big")


def client_source(family: int, number: int, known: bool) -> str:
    """A client's address: a prefix no flood datagram comes from."""
    block = 1 if known else 2
    if family == socket.AF_INET:
        return f"48.{block}.{number}.1"
    return f"2001:db8:f00{block}:{number:x}00::1"


def flood(
    family: int,
    host: str,
    port: int,
    rate: float,
    seconds: float,
    sent,
    small: bool = False,
    sends: int = 1,
    spacing: float = 0.0,
) -> None:
    """In a process and on a core of its own: a flood that pauses while the
    clients ask (a thread, or a process on their core) favours them.  Each
    source sends ``sends`` times, ``spacing`` seconds apart."""
    from collections import deque

    pin(FLOOD_CORE)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setblocking(False)
    start = time.perf_counter()
    number = datagrams = 0
    again: deque = deque()  # (when, source, sends left) of sources to send again
    while (now := time.perf_counter()) - start < seconds:
        if datagrams > (now - start) * rate:
            continue  # paced: the next batch's time has not come
        batch = []
        while len(batch) < BURST:
            if again and again[0][0] <= now:
                _, source, left = again.popleft()
            else:
                source = socket.inet_ntop(family, flood_source(family, number, small))
                number, left = number + 1, sends
            batch.append((PAYLOAD, _batch.route(host, port, source)))
            if left > 1:
                again.append((now + spacing, source, left - 1))
        datagrams += BURST
        sent.value += _batch.send_batch(sock.fileno(), batch)[0]
    sock.close()


class Client:
    """One client asking as ``udpupper-client`` does: a try a second."""

    def __init__(self, family: int, source: str, host: str, port: int, text: bytes):
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.sock.setblocking(False)
        self.server, self.text = (host, port), text
        self.tries = 0
        self.answered_at: int | None = None  # which try was answered
        self.next_try = 0.0
        self.first_try = 0.0  # when, for a report

    def ask(self, now: float) -> None:
        self.tries += 1
        if self.tries == 1:
            self.first_try = now
        self.sock.sendto(self.text, self.server)
        self.next_try = now + RETRY

    def read(self) -> None:
        try:
            while True:
                if self.sock.recv(100) == self.text.upper() and self.answered_at is None:
                    self.answered_at = self.tries
        except BlockingIOError:
            pass


def serve_clients(clients: list[Client], starts: list[float], until: float) -> None:
    """Each client asks from its start, and again while unanswered."""
    for client, start in zip(clients, starts):
        client.next_try = start
    while (now := time.perf_counter()) < until:
        for client in clients:
            if client.answered_at is None and client.tries < TRIES and now >= client.next_try:
                client.ask(now)
        select.select([client.sock for client in clients], [], [], 0.005)
        for client in clients:
            client.read()


def pin(core: int) -> None:
    if (os.cpu_count() or 1) > core and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--rate", type=float, default=150_000)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--clients", type=int, default=60)
    parser.add_argument("--known", type=int, default=20)
    parser.add_argument("--quiet", type=float, default=3.0)
    parser.add_argument("--space", choices=("large", "small"), default="large")
    parser.add_argument("--sends", type=int, default=1)
    parser.add_argument("--spacing", type=float, default=0.0)
    args = parser.parse_args()
    pin(CLIENTS_CORE)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    known = [
        Client(family, client_source(family, n, True), args.host, args.port, b"known client %d" % n)
        for n in range(args.known)
    ]
    for client in known:  # asked three times: in the table
        for _ in range(3):
            client.ask(0.0)
            time.sleep(0.01)
    time.sleep(0.5)
    for client in known:
        client.read()
    settled = sum(client.answered_at is not None for client in known)
    sent = multiprocessing.Value("q", 0, lock=False)
    process = multiprocessing.get_context("fork").Process(
        target=flood,
        args=(
            family,
            args.host,
            args.port,
            args.rate,
            args.seconds,
            sent,
            args.space == "small",
            args.sends,
            args.spacing,
        ),
    )
    began = time.perf_counter()
    process.start()
    new = [
        Client(family, client_source(family, n, False), args.host, args.port, b"new client %d" % n)
        for n in range(args.clients)
    ]
    window = max(args.seconds - 1.0 - TRIES * RETRY, 0.5)
    starts = [began + 1.0 + window * n / max(args.clients, 1) for n in range(args.clients)]
    for client in known:  # quiet, then once more
        client.answered_at, client.tries = None, 0
    serve_clients(
        new + known, starts + [began + args.quiet] * len(known), began + args.seconds + 0.5
    )
    process.join()
    elapsed = time.perf_counter() - began
    within_two = sum(1 for client in new if client.answered_at in (1, 2))
    within_four = sum(1 for client in new if client.answered_at is not None)
    print(
        json.dumps(
            {
                "family": 6 if family == socket.AF_INET6 else 4,
                "flood_sent": sent.value,
                "flood_rate": round(sent.value / min(elapsed, args.seconds), 1),
                "new_clients": len(new),
                "answered_by_try": [
                    sum(client.answered_at == k for client in new) for k in range(1, TRIES + 1)
                ],
                "never_answered": sum(client.answered_at is None for client in new),
                "answered_within_two_pct": round(100 * within_two / max(len(new), 1), 2),
                "answered_within_four_pct": round(100 * within_four / max(len(new), 1), 2),
                # When the clients not answered by their second try first asked, in
                # seconds from the flood's start: together, a moment the daemon lost
                # what came (a stall); spread out, its decisions.
                "late_first_tries": [
                    round(client.first_try - began, 3)
                    for client in new
                    if client.answered_at not in (1, 2)
                ],
                "known_settled": settled,
                "known_answered_first_try_after_quiet": sum(
                    client.answered_at == 1 for client in known
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
