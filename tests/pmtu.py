"""How many fragments a large reply comes in, before and after a stranger
says the path is narrow; run on a client host (network namespace).

    python -m tests.pmtu HOST PORT [--size 65000] [--mtu 552]

Sends one ``size``-byte datagram to the daemon at HOST and PORT from a
socket of its own and counts the fragments of the reply that the host
reassembled (/proc/net/snmp or snmp6); then sends the daemon's host a
spoofed ICMP "fragmentation needed" (IPv4) or "packet too big" (IPv6)
naming ``mtu`` for the path to that socket, and asks again.  Prints one
JSON line: the fragments of each reply.
"""

from __future__ import annotations

import argparse
import json
import socket
import time

from udpupper.bench.spoof import send_too_big


def fragments_reassembled(ipv6: bool) -> int:
    if ipv6:
        with open("/proc/net/snmp6") as counters:
            return next(
                int(line.split()[1]) for line in counters if line.startswith("Ip6ReasmReqds")
            )
    with open("/proc/net/snmp") as counters:
        names, values = [line.split() for line in counters if line.startswith("Ip:")][:2]
    return int(values[names.index("ReasmReqds")])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--size", type=int, default=65_000)
    parser.add_argument("--mtu", type=int, default=552)
    args = parser.parse_args()
    ipv6 = ":" in args.host
    with socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.settimeout(5)
        peer.connect((args.host, args.port))
        client = peer.getsockname()[:2]
        counts = []
        for turn in range(2):
            if turn:
                send_too_big((args.host, args.port), client, args.mtu)
                time.sleep(0.2)  # nothing to wait for: the kernel takes it in as it comes
            before = fragments_reassembled(ipv6)
            peer.send(b"x" * args.size)
            reply = peer.recv(65_535)
            counts.append(
                fragments_reassembled(ipv6) - before if reply == b"X" * args.size else None
            )
    print(json.dumps({"fragments": counts}))


if __name__ == "__main__":
    main()
