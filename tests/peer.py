"""A one-shot UDP peer to run in another network namespace.

    python -m tests.peer HOST PORT PAYLOAD [--broadcast] [--timeout S]
    python -m tests.peer HOST PORT PAYLOAD --flood SECONDS [--source ADDRESS]
    python -m tests.peer HOST PORT PAYLOAD --burst COUNT [--timeout S]
    python -m tests.peer HOST PORT PAYLOAD --reflect SECONDS [--stamp-at N]

Sends PAYLOAD once and prints one JSON line: the reply and where it came
from, or that none came in time.  With --flood, sends it as fast as the
socket takes it for SECONDS and prints how many datagrams went out.  With
--burst, sends it COUNT times back to back and prints the replies.  With
--reflect, sends it once, then echoes whatever comes, with a counter
written in at byte N (a timestamping reflector), until nothing has come for
a second (the loop ended) or SECONDS have passed; it prints how many it
echoed, how long after the start the last came, and whether the loop ended.
"""

from __future__ import annotations

import argparse
import json
import socket
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("payload")
    parser.add_argument("--broadcast", action="store_true")
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--flood", type=float, metavar="SECONDS")
    parser.add_argument("--source", default="")
    parser.add_argument("--burst", type=int, metavar="COUNT")
    parser.add_argument("--reflect", type=float, metavar="SECONDS")
    parser.add_argument("--stamp-at", type=int)
    args = parser.parse_args()
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    if args.flood:
        print(json.dumps({"sent": flood(args, family)}))
        return
    if args.burst:
        print(json.dumps({"replies": burst(args, family)}))
        return
    if args.reflect:
        print(json.dumps(reflect(args, family)))
        return
    with socket.socket(family, socket.SOCK_DGRAM) as peer:
        peer.bind((args.source, 0))
        peer.settimeout(args.timeout)
        if args.broadcast:
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        peer.sendto(args.payload.encode(), (args.host, args.port))
        try:
            reply, source = peer.recvfrom(65_535)
        except TimeoutError:
            print(json.dumps({"reply": None}))
            return
    print(json.dumps({"reply": reply.decode(), "source": list(source[:2])}))


def flood(args: argparse.Namespace, family: int) -> int:
    """Send for ``args.flood`` seconds; return how many sends succeeded."""
    payload = args.payload.encode()
    destination = (args.host, args.port)
    sent = 0
    with socket.socket(family, socket.SOCK_DGRAM) as peer:
        peer.bind((args.source, 0))
        peer.setblocking(False)
        deadline = time.monotonic() + args.flood
        while time.monotonic() < deadline:
            for _ in range(100):
                try:
                    peer.sendto(payload, destination)
                    sent += 1
                except BlockingIOError:
                    break
            try:
                while peer.recv(65_535):  # replies: read, so they cost no memory
                    pass
            except BlockingIOError:
                pass
    return sent


QUIET = 1.0  # seconds without an echo that end a loop


def reflect(args: argparse.Namespace, family: int) -> dict:
    """Start a loop with one datagram, then echo what comes back."""
    reflected, last, ended = 0, 0.0, False
    with socket.socket(family, socket.SOCK_DGRAM) as peer:
        peer.bind((args.source, 0))
        peer.settimeout(0.05)
        started = time.monotonic()
        peer.sendto(args.payload.encode(), (args.host, args.port))
        while time.monotonic() - started < args.reflect:
            try:
                datagram, source = peer.recvfrom(65_535)
            except TimeoutError:
                if time.monotonic() - started - last >= QUIET:
                    ended = True
                    break
                continue
            reflected += 1
            last = time.monotonic() - started
            if args.stamp_at is not None:
                mark = b"%06d" % (reflected % 1_000_000)
                at = args.stamp_at % max(1, len(datagram) - len(mark) + 1)
                datagram = datagram[:at] + mark + datagram[at + len(mark) :]
            peer.sendto(datagram, source)
    return {"reflected": reflected, "lifetime": last, "ended": ended}


def burst(args: argparse.Namespace, family: int) -> list[str]:
    """Send ``args.burst`` datagrams at once; the replies that come."""
    replies = []
    with socket.socket(family, socket.SOCK_DGRAM) as peer:
        peer.bind((args.source, 0))
        peer.settimeout(args.timeout)
        for _ in range(args.burst):
            peer.sendto(args.payload.encode(), (args.host, args.port))
        try:
            while len(replies) < args.burst:
                replies.append(peer.recv(65_535).decode())
        except TimeoutError:
            pass
    return replies


if __name__ == "__main__":
    main()
