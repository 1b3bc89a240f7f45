"""Steering by prefix: the BPF program, run here and in the kernel."""

from __future__ import annotations

import collections
import ipaddress
import os
import socket
import struct
import sys
import time

from twisted.trial import unittest

from tests import tiers
from udpupper.server.workers import steering
from udpupper.server.workers.steering import SKF_NET_OFF, attach, bind_group, prefix_program


def run_program(program, ip_header: bytes) -> int:
    """A classic BPF interpreter for just what the program uses."""
    a = x = pc = 0

    def load(k: int, size: int) -> int:
        offset = k - (SKF_NET_OFF & 0xFFFFFFFF)
        return int.from_bytes(ip_header[offset : offset + size], "big")

    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == steering.LD_W_ABS:
            a = load(k, 4)
        elif code == steering.LD_B_ABS:
            a = load(k, 1)
        elif code == steering.RSH_K:
            a >>= k
        elif code == steering.MOD_K:
            a %= k
        elif code == steering.XOR_X:
            a ^= x
        elif code == steering.TAX:
            x = a
        elif code == steering.JEQ_K:
            pc += jt if a == k else jf
        elif code == steering.JA:
            pc += k
        elif code == steering.RET_A:
            return a
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


def ipv4_header(source: str) -> bytes:
    return bytes([0x45]) + bytes(11) + socket.inet_aton(source) + socket.inet_aton("192.0.2.1")


def ipv6_header(source: str) -> bytes:
    return bytes([0x60]) + bytes(7) + socket.inet_pton(socket.AF_INET6, source) + bytes(16)


@tiers.unit
class ProgramTests(unittest.TestCase):
    """The program, interpreted: one socket per /24 and per /56."""

    def test_ipv4_by_24(self) -> None:
        program = prefix_program(4)
        for network in ("198.51.100.0/24", "10.1.2.0/24", "127.0.9.0/24"):
            hosts = ipaddress.ip_network(network)
            chosen = {run_program(program, ipv4_header(str(host))) for host in hosts}
            self.assertEqual(len(chosen), 1, network)
            self.assertLess(chosen.pop(), 4)
        spread = {run_program(program, ipv4_header(f"10.0.{n}.1")) for n in range(8)}
        self.assertEqual(spread, {0, 1, 2, 3})  # consecutive /24s take turns

    def test_ipv6_by_56(self) -> None:
        program = prefix_program(3)
        for base in ("2001:db8:0:100::", "2001:db8:ffff:ff00::", "::"):
            prefix = int(ipaddress.IPv6Address(base)) >> 72 << 72
            chosen = {
                run_program(program, ipv6_header(str(ipaddress.IPv6Address(prefix | low))))
                for low in (0, 1, 0xFFFF, 1 << 71, (1 << 72) - 1, 12345 << 40)
            }
            self.assertEqual(len(chosen), 1, base)
        # The next /56 may go elsewhere: the 56 bits all count.
        spread = {run_program(program, ipv6_header(f"2001:db8:0:{n:x}00::1")) for n in range(9)}
        self.assertEqual(spread, {0, 1, 2})


@tiers.loopback
class KernelTests(unittest.TestCase):
    """The program in the kernel: datagrams from many sources, one group."""

    skip = None if sys.platform.startswith("linux") else "SO_REUSEPORT groups are Linux's"

    def spread(self, group: list[socket.socket], sources: list[str]) -> dict[str, set[int]]:
        """Which sockets of the group each source's /24 reached."""
        port = group[0].getsockname()[1]
        for source in sources:
            for _ in range(2):  # two source ports each
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                    sender.bind((source, 0))
                    sender.sendto(b"x", ("127.0.0.1", port))
        seen: dict[str, set[int]] = collections.defaultdict(set)
        deadline = time.monotonic() + 5
        total = 0
        while total < 2 * len(sources) and time.monotonic() < deadline:
            for index, sock in enumerate(group):
                try:
                    _, addr = sock.recvfrom(64)
                except BlockingIOError:
                    continue
                total += 1
                seen[addr[0].removeprefix("::ffff:").rsplit(".", 1)[0]].add(index)
        self.assertEqual(total, 2 * len(sources))
        return dict(seen)

    def bound(self, interface: str, count: int) -> list[socket.socket]:
        group = bind_group(interface, 0, count)
        for sock in group:
            sock.setblocking(False)
            self.addCleanup(sock.close)
        return group

    def test_each_prefix_reaches_one_socket(self) -> None:
        sources = [f"127.0.{net}.{host}" for net in range(9) for host in (1, 7, 200)]
        for interface in ("0.0.0.0", "::"):
            try:
                group = self.bound(interface, 3)
            except OSError:
                continue  # no IPv6 here
            self.assertIsNone(attach(group[0], 3))
            seen = self.spread(group, sources)
            self.assertEqual(len(seen), 9)
            self.assertTrue(all(len(sockets) == 1 for sockets in seen.values()), seen)
            self.assertEqual(set().union(*seen.values()), {0, 1, 2})

    def test_the_order_holds_while_a_worker_closes_its_copy(self) -> None:
        """A worker ends: its copy of the socket closes, the parent's stays,
        and every prefix keeps its socket."""
        group = self.bound("0.0.0.0", 2)
        self.assertIsNone(attach(group[0], 2))
        sources = [f"127.0.{net}.1" for net in range(6)]
        before = self.spread(group, sources)
        os.close(os.dup(group[0].fileno()))
        self.assertEqual(self.spread(group, sources), before)

    def test_refusal_is_said(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as lone:
            reason = attach(lone, 2)  # no SO_REUSEPORT: the kernel refuses
        self.assertIsInstance(reason, str)

    def test_a_port_in_use_is_refused_whole(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            with self.assertRaises(OSError):
                bind_group("127.0.0.1", taken.getsockname()[1], 2)


@tiers.unit
class PackingTests(unittest.TestCase):
    def test_network_offsets(self) -> None:
        self.assertEqual(steering.net(12), struct.unpack("I", struct.pack("i", -0x100000 + 12))[0])
