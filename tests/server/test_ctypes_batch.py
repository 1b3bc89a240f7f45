"""recvmmsg through ctypes: what the daemon reads batches with, without a compiler.

Its datagrams, senders and routes are held to the C helper's on real
sockets, and its edges (a sender that is not IP, truncated ancillary data, a
stale longer name in a slot, a flood of never-repeating senders) to a fake
kernel that writes what recvmmsg would.  The whole daemon runs through it in
``test_service``'s and ``test_port``'s Ctypes* cases.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import socket
import struct
import time

from twisted.trial import unittest

from tests import tiers
from tests.support import NO_IPV6
from udpupper.kernel import IP_PKTINFO, prepare_server_socket
from udpupper.server import ctypes_batch
from udpupper.server.ctypes_batch import (
    BUFFER_SIZE,
    MEMORY,
    META_SIZE,
    NAME_ROOM,
    NO_DESTINATION,
    NOT_IP,
    Receiver,
    format_name,
    parse_control,
)
from udpupper.server.port import HELPER_REFUSALS
from udpupper.server.stats import Reason

try:
    from udpupper import _batch
except ImportError:  # pragma: no cover - depends on the build
    _batch = None

CTYPES = ctypes_batch.load()
NO_CTYPES = None if CTYPES is not None else "no recvmmsg through ctypes here"


def sockaddr_in(host: str, port: int) -> bytes:
    return (
        struct.pack("=H", socket.AF_INET)
        + struct.pack("!H", port)
        + socket.inet_pton(socket.AF_INET, host)
        + bytes(8)
    )


def sockaddr_in6(host: str, port: int) -> bytes:
    return (
        struct.pack("=H", socket.AF_INET6)
        + struct.pack("!HI", port, 0)
        + socket.inet_pton(socket.AF_INET6, host)
        + struct.pack("=I", 0)
    )


def ip_pktinfo(local: str, destination: str) -> bytes:
    """IP_PKTINFO's cmsg, as the kernel writes it."""
    data = bytes(4) + socket.inet_aton(local) + socket.inet_aton(destination)
    header = struct.pack("@Nii", socket.CMSG_LEN(len(data)), socket.IPPROTO_IP, IP_PKTINFO)
    return (header + data).ljust(socket.CMSG_SPACE(len(data)), b"\0")


class FakeKernel:
    """recvmmsg as ctypes calls it, writing ``messages`` into a Receiver:
    each (datagram, name, control, flags), up to ``count`` a call."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bytes, bytes, int]] = []
        self.receiver = Receiver(self)

    def __call__(self, fd, address, count, flags, timeout) -> int:
        taken, self.messages = self.messages[:count], self.messages[count:]
        if not taken:
            ctypes.set_errno(errno.EAGAIN)
            return -1
        receiver = self.receiver
        for i, (datagram, name, control, msg_flags) in enumerate(taken):
            ctypes.memmove(
                ctypes.addressof(receiver.buffers) + i * BUFFER_SIZE, datagram, len(datagram)
            )
            meta = ctypes.addressof(receiver.meta) + i * META_SIZE
            ctypes.memmove(meta, name, len(name))
            ctypes.memmove(meta + NAME_ROOM, control, len(control))
            message = receiver.headers[i]
            message.msg_len = len(datagram)
            message.msg_hdr.msg_namelen = len(name)
            message.msg_hdr.msg_controllen = len(control)
            message.msg_hdr.msg_flags = msg_flags
        return len(taken)

    def read(self, pktinfo: bool = True, dscp: bool = False) -> list:
        return self.receiver.recv_batch(-1, 64, pktinfo, 0, dscp)


@tiers.unit
class CodesTests(unittest.TestCase):
    def test_the_port_reads_both_readers_codes(self) -> None:
        """An int route means the same from the C helper and from ctypes."""
        modules = [ctypes_batch] + ([_batch] if _batch is not None else [])
        for module in modules:
            self.assertEqual(
                {
                    module.NOT_UNICAST: Reason.NOT_UNICAST_DESTINATION,
                    module.NO_DESTINATION: Reason.NO_DESTINATION,
                    module.NOT_IP: Reason.BAD_SOURCE,
                },
                HELPER_REFUSALS,
                module,
            )


@tiers.unit
class FakeKernelTests(unittest.TestCase):
    def test_a_sender_that_is_not_ip(self) -> None:
        kernel = FakeKernel()
        kernel.messages = [(b"unix", struct.pack("=H", socket.AF_UNIX) + b"/x", b"", 0)]
        self.assertEqual(kernel.read(False), [(b"unix", None, NOT_IP)])

    def test_truncated_ancillary_data_fails_closed_every_time(self) -> None:
        kernel = FakeKernel()
        name, control = sockaddr_in("192.0.2.7", 4000), ip_pktinfo("192.0.2.1", "192.0.2.1")
        kernel.messages = [
            (b"cut", name, control, socket.MSG_CTRUNC),
            (b"whole", name, control, 0),
            (b"cut again", name, control, socket.MSG_CTRUNC),
        ]
        batch = kernel.read()
        self.assertEqual(
            [(datagram, sender) for datagram, sender, _ in batch],
            [
                (b"cut", ("192.0.2.7", 4000)),
                (b"whole", ("192.0.2.7", 4000)),
                (b"cut again", ("192.0.2.7", 4000)),
            ],
        )
        self.assertEqual(batch[0][2], NO_DESTINATION)
        self.assertEqual(batch[2][2], NO_DESTINATION)
        ancillary, address = batch[1][2]
        self.assertEqual(address, ("192.0.2.7", 4000))
        self.assertEqual(
            ancillary,
            [(socket.IPPROTO_IP, IP_PKTINFO, bytes(4) + socket.inet_aton("192.0.2.1") + bytes(4))],
        )

    def test_a_broadcast_destination_is_refused(self) -> None:
        kernel = FakeKernel()
        kernel.messages = [
            (b"all", sockaddr_in("192.0.2.7", 4000), ip_pktinfo("192.0.2.1", "192.0.2.255"), 0)
        ] * 2
        self.assertEqual([route for _, _, route in kernel.read()], [ctypes_batch.NOT_UNICAST] * 2)

    def test_a_stale_longer_name_in_the_slot(self) -> None:
        """An IPv6 name, then a shorter IPv4 one in the same slot: the bytes
        past the IPv4 name are the old one's, and must not name its sender."""
        kernel = FakeKernel()
        kernel.messages = [(b"six", sockaddr_in6("2001:db8::1", 5000), b"", 0)]
        kernel.read(False)
        kernel.messages = [(b"four", sockaddr_in("192.0.2.7", 5000)[:16], b"", 0)]
        self.assertEqual(
            kernel.read(False), [(b"four", ("192.0.2.7", 5000), ([], ("192.0.2.7", 5000)))]
        )

    def test_never_repeating_senders_are_bounded(self) -> None:
        kernel = FakeKernel()
        control = ip_pktinfo("192.0.2.1", "192.0.2.1")
        senders = [
            (f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", 1024 + n % 60000)
            for n in range(3 * MEMORY)
        ]
        kernel.messages = [(b"x", sockaddr_in(*sender), control, 0) for sender in senders]
        seen = []
        while kernel.messages:
            seen += [sender for _, sender, _ in kernel.read()]
            self.assertLessEqual(len(kernel.receiver.known[True, False]), MEMORY)
        self.assertEqual(seen, senders)

    def test_counts(self) -> None:
        kernel = FakeKernel()
        counts = mmap.mmap(-1, 32)
        kernel.receiver.count_into(counts)
        kernel.messages = [(b"a" * n, sockaddr_in("192.0.2.7", 4000), b"", 0) for n in (1, 2, 3)]
        kernel.read(False)
        self.assertEqual(memoryview(counts).cast("Q").tolist(), [3, 0, 6, 0])


@tiers.unit
class ParseTests(unittest.TestCase):
    def test_parse_control_as_recvmsg_gives_it(self) -> None:
        tos = struct.pack("@Nii", socket.CMSG_LEN(1), socket.IPPROTO_IP, socket.IP_TOS) + b"\xb8"
        control = ip_pktinfo("192.0.2.1", "192.0.2.2") + tos.ljust(socket.CMSG_SPACE(1), b"\0")
        self.assertEqual(
            parse_control(control),
            [
                (
                    socket.IPPROTO_IP,
                    IP_PKTINFO,
                    bytes(4) + socket.inet_aton("192.0.2.1") + socket.inet_aton("192.0.2.2"),
                ),
                (socket.IPPROTO_IP, socket.IP_TOS, b"\xb8"),
            ],
        )
        # A length that runs past the end, or is shorter than a header: stop.
        self.assertEqual(parse_control(control[:20]), [])
        self.assertEqual(parse_control(struct.pack("@Nii", 3, 0, 0)), [])

    def test_format_name(self) -> None:
        self.assertEqual(
            format_name(sockaddr_in("192.0.2.7", 53)), ("192.0.2.7", ("192.0.2.7", 53))
        )
        self.assertEqual(
            format_name(sockaddr_in6("::ffff:192.0.2.7", 53)),
            ("::ffff:192.0.2.7", ("::ffff:192.0.2.7", 53, 0, 0)),
        )
        self.assertIsNone(format_name(b""))
        self.assertIsNone(format_name(struct.pack("=H", socket.AF_INET6) + bytes(10)))


@tiers.loopback
class RealSocketTests(unittest.TestCase):
    skip = NO_CTYPES

    def listen(self, host: str, pktinfo: bool) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server = socket.socket(family, socket.SOCK_DGRAM)
        self.addCleanup(server.close)
        if family == socket.AF_INET6:
            server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        server.bind((host, 0))
        prepare_server_socket(server, pktinfo, 1 << 20, False)
        return server

    def send(self, server: socket.socket, peers: list[tuple[str, bytes]]) -> None:
        port = server.getsockname()[1]
        for host, payload in peers:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as peer:
                peer.bind((host, 40_000 + len(payload) % 1000))
                peer.sendto(payload, (host, port))
        time.sleep(0.05)

    def test_as_the_c_helper_reads_them(self) -> None:
        if _batch is None:
            raise unittest.SkipTest("the C helper is not built here")
        cases = [("0.0.0.0", True, ["127.0.0.1"]), ("127.0.0.1", False, ["127.0.0.1"])]
        if not NO_IPV6:
            cases += [("::", True, ["127.0.0.1", "::1"]), ("::1", False, ["::1"])]
        for interface, pktinfo, hosts in cases:
            server = self.listen(interface, pktinfo)
            peers = [(host, b"%s %d" % (host.encode(), n)) for n in range(5) for host in hosts]
            peers.append((hosts[0], b""))
            peers.append((hosts[0], b"x" * 65_000))
            read = {}
            for name, module in (("c", _batch), ("ctypes", CTYPES)):
                self.send(server, peers)
                read[name] = module.recv_batch(server.fileno(), 64, pktinfo, 0, False)
            self.assertEqual(
                [(d, s) for d, s, _ in read["ctypes"]], [(d, s) for d, s, _ in read["c"]], interface
            )
            self.assertEqual([d for d, _, _ in read["ctypes"]], [p for _, p in peers])
            for _, _, route in read["ctypes"]:
                self.assertIsInstance(route, tuple)

    def test_spins_for_the_time_asked_then_gives_nothing(self) -> None:
        server = self.listen("127.0.0.1", False)
        started = time.monotonic()
        self.assertEqual(CTYPES.recv_batch(server.fileno(), 64, False, 20_000), [])
        self.assertGreaterEqual(time.monotonic() - started, 0.019)
        self.assertEqual(CTYPES.recv_batch(server.fileno(), 64, False), [])

    def test_a_bad_descriptor_raises_oserror(self) -> None:
        server = self.listen("127.0.0.1", False)
        fd = server.fileno()
        server.close()
        with self.assertRaises(OSError) as caught:
            CTYPES.recv_batch(fd, 64, False)
        self.assertEqual(caught.exception.errno, errno.EBADF)
