"""The C helper that moves many datagrams per system call."""

from __future__ import annotations

import errno
import select
import socket
import struct

from twisted.trial import unittest

from tests import tiers
from tests.support import NO_IPV6
from udpupper.kernel import IP_PKTINFO

try:
    from udpupper import _batch
except ImportError:
    _batch = None


@tiers.loopback
class BatchTests(unittest.TestCase):
    skip = None if _batch is not None else "the C helper is not built here"

    def pair(self, host: str = "127.0.0.1", pktinfo: bool = False):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server = socket.socket(family, socket.SOCK_DGRAM)
        self.addCleanup(server.close)
        if family == socket.AF_INET6:
            server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if pktinfo:
            server.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            if family == socket.AF_INET6:
                server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        server.bind((host, 0))
        server.setblocking(False)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(client.close)
        client.settimeout(5)
        client.bind(("127.0.0.1", 0))
        return server, client

    def test_nothing_waiting(self) -> None:
        server, _ = self.pair()
        self.assertEqual(_batch.recv_batch(server.fileno(), 64, False), [])

    def test_spin_waits_a_little_for_the_first(self) -> None:
        import time

        server, _ = self.pair()
        started = time.perf_counter()
        self.assertEqual(_batch.recv_batch(server.fileno(), 64, False, 20_000), [])
        self.assertGreaterEqual(time.perf_counter() - started, 0.019)

    def test_receive_then_answer(self) -> None:
        server, client = self.pair()
        payloads = [b"one", b"", b"x" * 65_507] + [b"n%d" % n for n in range(70)]
        for payload in payloads:
            client.sendto(payload, server.getsockname())
        received = []
        while batch := _batch.recv_batch(server.fileno(), 64, False):
            self.assertLessEqual(len(batch), _batch.BATCH)
            received.extend(batch)
        self.assertEqual([datagram for datagram, *_ in received], payloads)
        _, addr, _route = received[0]
        self.assertEqual(addr, client.getsockname())
        sent, sent_bytes, errors = _batch.send_batch(
            server.fileno(), [(datagram.upper(), route) for datagram, _, route in received]
        )
        self.assertEqual((sent, sent_bytes, errors), (len(payloads), sum(map(len, payloads)), []))
        self.assertEqual(client.recv(65_535), b"ONE")
        self.assertEqual(client.recv(65_535), b"")
        self.assertEqual(client.recv(65_535), b"X" * 65_507)

    def test_large_datagrams_come_fewer_a_batch(self) -> None:
        """After a batch of more than 256 KiB, the next asks for fewer (so
        that a batch stays in the core's cache); after a small one, for all
        it was asked."""
        server, client = self.pair()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        large = [bytes([65 + n]) * 60_000 for n in range(12)]
        for _ in range(2):  # the first batch may take them all; the next cannot
            for payload in large:
                client.sendto(payload, server.getsockname())
            sizes, received = [], []
            while batch := _batch.recv_batch(server.fileno(), 64, False):
                sizes.append(len(batch))
                received += [datagram for datagram, _, _ in batch]
            self.assertEqual(received, large)  # none lost, in order
        self.assertLessEqual(max(sizes), 5, sizes)  # 256 KiB / 60,000, and one
        for n in range(64):
            client.sendto(b"small %d" % n, server.getsockname())
        sizes = []
        while batch := _batch.recv_batch(server.fileno(), 64, False):
            sizes.append(len(batch))
        self.assertEqual(sum(sizes), 64)
        self.assertLessEqual(len(sizes), 2, sizes)  # the one after a large batch, then all

    def test_route_layout(self) -> None:
        route = _batch.route("127.0.0.1", 12000)
        self.assertEqual(route[0], 16)  # the sockaddr_in's length, then it
        self.assertEqual(route[3:5], (12000).to_bytes(2, "big"))
        self.assertEqual(route[5:9], bytes([127, 0, 0, 1]))
        self.assertEqual(len(route), 17)
        self.assertEqual(_batch.route("::1", 1)[0], 28)
        for host, source in (("127.0.0.1", "127.1.2.3"), ("::1", "::1")):
            with_source = _batch.route(host, 1, source)
            control = with_source[1 + with_source[0] :]
            _length, level, kind = struct.unpack_from("@Nii", control)
            expected = (
                (socket.IPPROTO_IP, IP_PKTINFO)
                if ":" not in host
                else (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO)
            )
            self.assertEqual((level, kind), expected)
        for bad in (("nonsense", 1), ("127.0.0.1", 70000), ("127.0.0.1", 1, "::1")):
            self.assertRaises(ValueError, _batch.route, *bad)

    def test_a_route_from_a_source_leaves_from_it(self) -> None:
        server, _ = self.pair()
        sent, _, errors = _batch.send_batch(
            server.fileno(),
            [(b"from elsewhere", _batch.route("127.0.0.1", server.getsockname()[1], "127.1.2.3"))],
        )
        self.assertEqual((sent, errors), (1, []))
        select.select([server], [], [], 5)
        self.assertEqual(
            server.recvfrom(100), (b"from elsewhere", ("127.1.2.3", server.getsockname()[1]))
        )

    def test_counts_into_shared_memory(self) -> None:
        import mmap

        server, client = self.pair()
        counts = mmap.mmap(-1, 32)
        _batch.count_into(counts)
        self.addCleanup(_batch.count_into, None)
        for payload in (b"a", b"bb", b"ccc"):
            client.sendto(payload, server.getsockname())
        received = []
        while len(received) < 3:
            select.select([server], [], [], 5)
            received += _batch.recv_batch(server.fileno(), 64, False)
        replies = [(datagram.upper(), route) for datagram, _, route in received]
        replies.append((b"x" * 70_000, replies[0][1]))
        sent, _sent_bytes, errors = _batch.send_batch(server.fileno(), replies)
        self.assertEqual((sent, len(errors)), (3, 1))  # too large for UDP: not counted
        self.assertEqual(memoryview(counts).cast("Q").tolist(), [3, 3, 6, 6])
        with self.assertRaises(ValueError):
            _batch.count_into(bytearray(8))

    def test_dual_stack_with_pktinfo_answers_from_the_address_asked(self) -> None:
        if NO_IPV6:
            raise unittest.SkipTest(NO_IPV6)
        server, client = self.pair("::", pktinfo=True)
        port = server.getsockname()[1]
        client.sendto(b"hello", ("127.1.0.1", port))
        ((datagram, addr, route),) = self.wait_batch(server, True)
        # An IPv4 sender is given as IPv4, on an IPv6 socket too.
        self.assertEqual((datagram, addr), (b"hello", client.getsockname()))
        self.assertEqual(_batch.send_batch(server.fileno(), [(b"HELLO", route)])[0], 1)
        self.assertEqual(client.recvfrom(100), (b"HELLO", ("127.1.0.1", port)))

    def test_refused_replies_are_listed(self) -> None:
        server, client = self.pair()
        client.sendto(b"big", server.getsockname())
        ((_, _, route),) = self.wait_batch(server, False)
        sent, sent_bytes, errors = _batch.send_batch(
            server.fileno(), [(b"ok", route), (b"x" * 70_000, route), (b"ok", route)]
        )
        self.assertEqual((sent, sent_bytes, errors), (2, 4, [(1, errno.EMSGSIZE)]))
        self.assertEqual(client.recv(100), b"ok")
        self.assertEqual(client.recv(100), b"ok")

    def test_runs_to_one_sender_arrive_as_separate_datagrams(self) -> None:
        """Replies to one route go out as one segmented (UDP GSO) message;
        the peer still gets one datagram per reply, in order."""
        server, client = self.pair()
        client.sendto(b"hi", server.getsockname())
        ((_, _, route),) = self.wait_batch(server, False)
        replies = (
            [b"%04d" % n for n in range(70)]  # more than a batch
            + [b"x" * 1400] * 5
            + [b"yy"]  # a shorter one ends a run
            + [b"", b"zz", b"z" * 2000, b"zz"]
        )  # empty and big: alone
        sent, sent_bytes, errors = _batch.send_batch(
            server.fileno(), [(reply, route) for reply in replies]
        )
        self.assertEqual((sent, sent_bytes, errors), (len(replies), sum(map(len, replies)), []))
        self.assertEqual([client.recv(65_535) for _ in replies], replies)

    def test_runs_across_two_senders(self) -> None:
        server, client = self.pair()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.settimeout(5)
            other.bind(("127.0.0.1", 0))
            client.sendto(b"a", server.getsockname())
            select.select([server], [], [], 5)
            other.sendto(b"b", server.getsockname())
            received = []
            while len(received) < 2:
                select.select([server], [], [], 5)
                received += _batch.recv_batch(server.fileno(), 64, False)
            (_, _, to_client), (_, _, to_other) = received
            order = [to_client, to_client, to_other, to_client, to_other, to_other]
            _batch.send_batch(
                server.fileno(), [(b"%d" % n, route) for n, route in enumerate(order)]
            )
            self.assertEqual([client.recv(100) for _ in range(3)], [b"0", b"1", b"3"])
            self.assertEqual([other.recv(100) for _ in range(3)], [b"2", b"4", b"5"])

    def test_pktinfo_on_one_address_bound(self) -> None:
        """Asked for pktinfo, a socket that gives none fails closed."""
        server, client = self.pair()  # IP_PKTINFO not turned on
        client.sendto(b"hello", server.getsockname())
        ((datagram, addr, route),) = self.wait_batch(server, True)
        self.assertEqual(
            (datagram, addr, route), (b"hello", client.getsockname(), _batch.NO_DESTINATION)
        )

    def test_ipv6_sender_stays_ipv6(self) -> None:
        if NO_IPV6:
            raise unittest.SkipTest(NO_IPV6)
        server, _ = self.pair("::", pktinfo=True)
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as client:
            client.bind(("::1", 0))
            client.sendto(b"six", ("::1", server.getsockname()[1]))
            ((datagram, addr, route),) = self.wait_batch(server, True)
            self.assertEqual((datagram, addr), (b"six", client.getsockname()[:2]))
            self.assertIsInstance(route, bytes)

    def test_one_sender_across_calls_keeps_its_objects(self) -> None:
        """One request at a time from one sender: each call gives the same
        address and route objects (made once); another sender, a family
        or pktinfo changed between calls gets its own, right ones."""
        if NO_IPV6:
            raise unittest.SkipTest(NO_IPV6)
        server, client = self.pair("::", pktinfo=True)
        port = server.getsockname()[1]
        seen = []
        for _ in range(3):
            client.sendto(b"one", ("127.0.0.1", port))
            ((_, addr, route),) = self.wait_batch(server, True)
            seen.append((addr, route))
        self.assertEqual(seen[0][0], client.getsockname())
        self.assertTrue(all(addr is seen[0][0] and route is seen[0][1] for addr, route in seen))
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as six:
            six.bind(("::1", 0))
            six.sendto(b"two", ("::1", port))
            ((_, addr, route),) = self.wait_batch(server, True)
            self.assertEqual(addr, six.getsockname()[:2])
            self.assertNotEqual(route, seen[0][1])
        client.sendto(b"three", ("127.0.0.1", port))
        ((_, addr, _),) = self.wait_batch(server, True)
        self.assertEqual(addr, client.getsockname())
        # The same datagram read without pktinfo has a route without it.
        client.sendto(b"four", ("127.0.0.1", port))
        ((_, addr, route),) = self.wait_batch(server, False)
        self.assertEqual(addr, client.getsockname())
        self.assertLess(len(route), len(seen[0][1]))
        client.sendto(b"five", ("127.0.0.1", port))
        ((_, _, route),) = self.wait_batch(server, True)
        self.assertEqual(route, seen[0][1])

    def test_bad_arguments(self) -> None:
        server, _ = self.pair()
        for replies in ([b"x"], [(b"x", b"")], [(b"x", b"\xff")], [("x", b"\x00")]):
            self.assertRaises(TypeError, _batch.send_batch, server.fileno(), replies)
        self.assertRaises(OSError, _batch.recv_batch, -1, 64, False)
        # The two hot calls parse their own arguments: as "iip|ip" and "iO!" did.
        fd = server.fileno()
        for bad in (
            (),
            (fd, 64),
            (fd, 64, False, 0, False, 0),
            (str(fd), 64, False),
            (fd, 1.5, False),
            (fd, 64, False, "50"),
        ):
            self.assertRaises(TypeError, _batch.recv_batch, *bad)
        self.assertRaises(OverflowError, _batch.recv_batch, 1 << 40, 64, False)
        self.assertRaises(OverflowError, _batch.recv_batch, fd, 64, False, -(1 << 40))
        self.assertEqual(_batch.recv_batch(fd, True, [1], 0, ()), [])  # ints and truths
        for bad in ((fd,), (fd, (), 0), (fd, ()), (None, [])):
            self.assertRaises(TypeError, _batch.send_batch, *bad)
        self.assertEqual(_batch.send_batch(fd, []), (0, 0, []))

    def wait_batch(self, server: socket.socket, pktinfo: bool) -> list:
        import select

        select.select([server], [], [], 5)
        return _batch.recv_batch(server.fileno(), 64, pktinfo)
